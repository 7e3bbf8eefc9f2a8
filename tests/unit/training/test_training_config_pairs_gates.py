"""The DPO job's config, the choice and split of a request's pairs, and the gates."""

from __future__ import annotations

import pytest
from training_pairs import preference_pairs

from prefloop.training.config import DPOJobConfig
from prefloop.training.exceptions import PairsError, TrainingConfigError
from prefloop.training.gates import check_gates, describe_failures
from prefloop.training.pairs import select, split


def test_the_defaults_are_the_products() -> None:
    config = DPOJobConfig()
    assert (config.learning_rate, config.epochs, config.beta) == (5e-7, 1.0, 0.1)
    assert DPOJobConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"learning_rate": 0}, "learning_rate=0"),
        ({"learning_rate": float("nan")}, "learning_rate=nan"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"max_steps": 0}, "max_steps=0"),
        ({"heldout_fraction": 1.0}, "heldout_fraction=1.0"),
        ({"lora": "yes"}, "lora='yes'"),
        ({"sft_weight": -0.5}, "sft_weight=-0.5"),
        ({"learnig_rate": 1e-6}, "no parameter learnig_rate"),
    ],
)
def test_a_bad_value_is_refused_naming_it(values: dict[str, object], named: str) -> None:
    with pytest.raises(TrainingConfigError, match=named.replace("(", r"\(")):
        DPOJobConfig.from_mapping(values)


def test_config_json_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(TrainingConfigError, match="not JSON"):
        DPOJobConfig.from_json("{learning_rate: 1}")
    with pytest.raises(TrainingConfigError, match="not a JSON object"):
        DPOJobConfig.from_json("[1]")


def test_select_keeps_the_base_versions_pairs_once() -> None:
    ours = preference_pairs("v1", 5)
    records = [*ours, *preference_pairs("v2", 3), ours[0], ours[3]]
    chosen = select(records, "v1")
    assert [p.pair_id for p in chosen.pairs] == [r["pair_id"] for r in ours]
    assert (chosen.read, chosen.other_versions, chosen.duplicates) == (10, 3, 2)
    assert chosen.sources() == {"IMPLICIT": 5}


def test_a_pair_with_empty_text_fails_the_request_naming_it() -> None:
    records = preference_pairs("v1", 3)
    records[1] = {**records[1], "rejected": "  "}
    with pytest.raises(PairsError, match=records[1]["pair_id"]):
        select(records, "v1")


def test_the_split_is_deterministic_by_pair_id_and_near_the_fraction() -> None:
    pairs = select(preference_pairs("v1", 2000), "v1").pairs
    train, heldout = split(pairs, 0.2)
    _, again_heldout = split(list(reversed(pairs)), 0.2)
    assert {p.pair_id for p in heldout} == {p.pair_id for p in again_heldout}
    assert len(train) + len(heldout) == 2000
    assert 0.17 < len(heldout) / 2000 < 0.23


def test_the_gates_name_what_failed() -> None:
    good = {"heldout_accuracy": 0.8, "reward_margin": 0.3, "win_rate": 0.5, "safety": 1.0,
            "regressions": 0.0}  # fmt: skip
    assert all(g.passed for g in check_gates(good))
    assert describe_failures(check_gates(good)) == "every gate passed"
    bad = {**good, "safety": 0.9, "regressions": 2.0}
    gates = check_gates(bad)
    assert [g.name for g in gates if not g.passed] == ["safety", "regressions"]
    assert (
        describe_failures(gates) == "failed: safety 0.9 (needs >= 0.95), regressions 2 (needs == 0)"
    )
    assert not all(g.passed for g in check_gates({"win_rate": 1.0}))  # no evaluation: fails
