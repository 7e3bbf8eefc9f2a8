"""prefloop.testing.tiny_model: an offline model directory, built once, the same every time."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefloop.testing import tiny_model


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_the_directory_loads_as_a_chat_model(built: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built)
    assert (built / "model.safetensors").is_file()
    assert model.config.vocab_size == len(tokenizer)
    assert 0.5e6 < model.num_parameters() < 3e6
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == (
        "<pad>",
        "<s>",
        "</s>",
    )
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello there"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<s><|user|>\nHello there</s>\n<|assistant|>\n"
    ids = tokenizer("héllo 🙂 wörld")["input_ids"]  # byte level: any text encodes
    assert tokenizer.decode(ids) == "héllo 🙂 wörld"


def test_it_is_reused_and_the_same_seed_gives_the_same_weights(built: Path, tmp_path: Path):
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert tiny_model(built) == built
    assert (built / "model.safetensors").stat().st_mtime_ns == stamp
    again = tiny_model(tmp_path / "again")
    other = tiny_model(tmp_path / "other", seed=1)
    weights = (built / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights
    assert (again / "tokenizer.json").read_text() == (built / "tokenizer.json").read_text()


def test_it_never_overwrites_another_directory(built: Path, tmp_path: Path):
    with pytest.raises(FileExistsError, match="built with"):
        tiny_model(built, layers=2)
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="something other than a tiny model"):
        tiny_model(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
