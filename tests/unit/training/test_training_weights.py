"""Per-pair weights: a pair of weight 0 has no effect, others are drawn by weight."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_pairs import preference_pairs

from prefloop.tiny_model import tiny_model
from prefloop.training.config import DPOJobConfig
from prefloop.training.dpo import train_dpo, weighted_trainer_class
from prefloop.training.pairs import Pair, select

CONFIG = DPOJobConfig(learning_rate=3e-3, max_steps=3, batch_size=4, max_length=96)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _pairs(count: int) -> list[Pair]:
    return select(preference_pairs("v1", count), "v1").pairs


def test_a_pair_of_weight_zero_has_no_effect(base: Path, tmp_path: Path) -> None:
    pairs = _pairs(12)
    # the opposite preference, weight 0: it would pull the model the other way
    flipped = Pair("flipped", pairs[0].prompt, pairs[0].rejected, pairs[0].chosen, 0.0,
                   "RATING", "v1")  # fmt: skip
    without = train_dpo(base, pairs, CONFIG, tmp_path / "without")
    with_zero = train_dpo(base, [*pairs[:6], flipped, *pairs[6:]], CONFIG, tmp_path / "with")
    assert with_zero.zero_weight_pairs == 1 and without.zero_weight_pairs == 0
    a = load_file(str(tmp_path / "without" / "model.safetensors"))
    b = load_file(str(tmp_path / "with" / "model.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a)
    before = load_file(str(base / "model.safetensors"))
    assert any(not torch.equal(a[name], before[name]) for name in a)  # it did train


def test_unequal_weights_draw_pairs_in_proportion(base: Path, tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig

    pairs = _pairs(4)
    rows = [{**p.as_row(), "weight": w} for p, w in zip(pairs, (1.0, 1.0, 2.0, 4.0), strict=True)]
    trainer = weighted_trainer_class()(
        model=str(base),
        args=DPOConfig(
            output_dir=str(tmp_path),
            report_to=[],
            use_cpu=True,
            seed=3,
            precompute_ref_log_probs=False,
            max_length=96,
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(base),
    )
    sampler = trainer._get_train_sampler()
    draws: Counter[int] = Counter()
    for _ in range(2000):
        draws.update(iter(sampler))
    total = sum(draws.values())
    shares = [draws[i] / total for i in range(4)]
    for share, expected in zip(shares, (1 / 8, 1 / 8, 2 / 8, 4 / 8), strict=True):
        assert abs(share - expected) < 0.02, shares


def test_lora_trains_an_adapter_and_saves_a_plain_merged_model(base: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    config = DPOJobConfig(learning_rate=3e-2, max_steps=2, batch_size=4, max_length=96,
                          lora=True, lora_r=4, lora_alpha=8)  # fmt: skip
    result = train_dpo(base, _pairs(8), config, tmp_path / "lora")
    assert result.steps == 2
    saved = load_file(str(tmp_path / "lora" / "model.safetensors"))
    assert not any("lora" in name for name in saved)  # merged: no adapter weights remain
    before = load_file(str(base / "model.safetensors"))
    assert set(saved) == set(before)
    assert any(not torch.equal(saved[n], before[n]) for n in before if "proj" in n)
    AutoModelForCausalLM.from_pretrained(tmp_path / "lora")  # loads like any model
