"""Sticky A/B assignment: stable buckets, nested splits, validation."""

from __future__ import annotations

import math

import pytest

from prefloop.serving.assignment import BUCKETS, Split, bucket_of
from prefloop.serving.exceptions import SplitError

USERS = [f"user-{i}" for i in range(20_000)]


def test_buckets_are_pinned_across_processes_and_releases() -> None:
    # changing these reshuffles every live experiment's users: never do it silently
    assert [bucket_of("exp-1", u) for u in ("alice", "bob", "carol")] == [2610, 1694, 1516]
    assert all(0 <= bucket_of("exp-1", u) < BUCKETS for u in USERS[:1000])


def test_a_user_keeps_the_arm_across_requests() -> None:
    split = Split("exp-1", a="v1", b="v2", split=50)
    first = {u: split.assign(u) for u in USERS[:2000]}
    again = Split.from_config(split.to_config())
    assert all(again.assign(u) == first[u] for u in USERS[:2000])
    assert {a.model_version for a in first.values()} == {"v1", "v2"}
    assert all((a.arm == "B") == (a.model_version == "v2") for a in first.values())


@pytest.mark.parametrize("percent", [1, 10, 50, 90])
def test_the_observed_split_is_within_the_binomial_bound(percent: float) -> None:
    split = Split("exp-share", a="v1", b="v2", split=percent)
    in_b = sum(split.assign(u).arm == "B" for u in USERS)
    p = percent / 100
    sigma = math.sqrt(len(USERS) * p * (1 - p))
    assert abs(in_b - len(USERS) * p) < 4 * sigma


def test_raising_the_split_moves_users_only_from_a_to_b() -> None:
    ten = Split("exp-1", a="v1", b="v2", split=10)
    fifty = ten.with_split(50)
    before = {u: ten.assign(u).arm for u in USERS}
    after = {u: fifty.assign(u).arm for u in USERS}
    assert all(after[u] == "B" for u in USERS if before[u] == "B"), "a B user went back to A"
    moved = sum(before[u] == "A" and after[u] == "B" for u in USERS)
    assert 0.35 * len(USERS) < moved < 0.45 * len(USERS)
    lowered = {u: fifty.with_split(10).assign(u).arm for u in USERS}
    assert lowered == before


def test_the_ends_of_the_range_send_everyone_to_one_arm() -> None:
    assert {Split("e", "v1", "v2", 0).assign(u).arm for u in USERS[:500]} == {"A"}
    assert {Split("e", "v1", "v2", 100).assign(u).arm for u in USERS[:500]} == {"B"}


def test_experiments_split_users_independently_unless_they_share_a_salt() -> None:
    one = Split("exp-1", "v1", "v2", 50)
    other = Split("exp-2", "v1", "v2", 50)
    same_salt = Split("exp-2", "v1", "v2", 50, salt="exp-1")
    agree = sum(one.assign(u).arm == other.assign(u).arm for u in USERS) / len(USERS)
    assert 0.47 < agree < 0.53
    assert all(one.assign(u).arm == same_salt.assign(u).arm for u in USERS[:2000])


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"split": 101}, "between 0 and 100"),
        ({"split": -1}, "between 0 and 100"),
        ({"split": 12.345}, "round it"),
        ({"b": "v1"}, "with itself"),
        ({"experiment_id": " "}, "name the experiment"),
        ({"a": ""}, "name both model versions"),
    ],
)
def test_a_split_that_cannot_be_served_is_refused_with_the_fix(
    kwargs: dict[str, object], names: str
) -> None:
    values: dict[str, object] = {"experiment_id": "exp-1", "a": "v1", "b": "v2", "split": 10}
    values.update(kwargs)
    with pytest.raises(SplitError, match=names):
        Split(**values)


def test_a_request_without_a_user_is_refused() -> None:
    with pytest.raises(SplitError, match="X-Prefloop-User"):
        Split("exp-1", "v1", "v2", 10).assign("")


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"experiment_id": "e", "a": "v1", "b": "v2"}, "'split' must be a number"),
        ({"experiment_id": "e", "a": "v1", "b": "v2", "split": "50"}, "'split' must be"),
        ({"experiment_id": "e", "a": "v1", "b": "v2", "split": True}, "'split' must be"),
        ({"experiment_id": "e", "a": 1, "b": "v2", "split": 5}, "'a' must be a string"),
        ({"experiment_id": "e", "a": "v1", "b": "v2", "split": 5, "salt": 3}, "'salt'"),
        ({"experiment_id": "e", "a": "v1", "b": "v2", "split": 5, "arms": 2}, "unknown"),
    ],
)
def test_a_bad_user_config_names_the_field(config: dict[str, object], names: str) -> None:
    with pytest.raises(SplitError, match=names):
        Split.from_config(config)
