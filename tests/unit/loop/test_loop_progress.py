"""Following the unattended loop: the lifecycle from ModelEvents, the options, the views."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from prefloop.errors import PrefloopError
from prefloop.loop.demo.options import LoopOptions, loop_overrides, loop_settings
from prefloop.loop.demo.progress import ArmView, Lifecycle, render, status_line
from prefloop.loop.users.crowd import CrowdStats
from prefloop.model_registry import candidate_version
from prefloop.settings import Settings

T0 = 1_800_000_000_000


def event(kind: str, version: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"{kind}-{version}-{ts}", "kind": kind, "model_version": version,
            "ts": ts, "detail": extra.pop("detail", None), "metrics": {}, **extra}  # fmt: skip


def requested(life: Lifecycle, version: str, ts: int) -> str:
    """A retrain request of ``version``; returns the candidate it names."""
    request = event("RETRAIN_REQUESTED", version, ts)
    life.on_event(request)
    return candidate_version(version, request["event_id"])


def test_a_request_then_its_gates_ab_and_promotion_make_one_generation() -> None:
    life = Lifecycle("v1")
    candidate = requested(life, "v1", T0)
    assert life.current() is not None and life.current().candidate == candidate  # type: ignore[union-attr]
    life.on_event(event("TRAINING_STARTED", candidate, T0 + 1))
    life.on_event(event("GATES_PASSED", candidate, T0 + 2, metrics={"win_rate": 0.9}))
    life.on_event(event("AB_STARTED", candidate, T0 + 3, experiment_id=f"ab-{candidate}"))
    (attempt,) = life.attempts
    assert (attempt.stage, attempt.experiment, attempt.metrics) == (
        "AB_STARTED", f"ab-{candidate}", {"win_rate": 0.9},
    )  # fmt: skip
    life.on_event(event("PROMOTED", candidate, T0 + 4, detail="implicit_score better"))
    assert life.serving == candidate and life.promotions == 1 and life.current() is None
    assert life.outcomes() == [("v1", candidate, "PROMOTED")]
    kinds = ("RETRAIN_REQUESTED", "TRAINING_STARTED", "GATES_PASSED", "AB_STARTED", "PROMOTED")
    assert attempt.times == {kind: T0 + i for i, kind in enumerate(kinds)}
    # the next generation trains from the promoted version, and only from it
    requested(life, "v1", T0 + 5)
    assert len(life.attempts) == 1
    grandchild = requested(life, candidate, T0 + 6)
    assert life.current() is not None and life.current().parent == candidate  # type: ignore[union-attr]
    assert grandchild.startswith(candidate[:20])


def test_a_request_of_a_candidate_in_its_ab_is_the_next_generation_once_it_is_promoted() -> None:
    life = Lifecycle("v1")
    v2 = requested(life, "v1", T0)
    life.on_event(event("AB_STARTED", v2, T0 + 1, experiment_id=f"ab-{v2}"))
    v3 = requested(life, v2, T0 + 2)  # v2's own pairs reach the threshold during its A/B
    assert life.current() is life.attempts[0]  # users still get v1: v2's A/B is what runs
    life.on_event(event("TRAINING_STARTED", v3, T0 + 3))
    life.on_event(event("PROMOTED", v2, T0 + 4))
    assert life.serving == v2 and life.current() is life.attempts[1]
    assert life.attempts[1].stage == "TRAINING_STARTED" and life.attempts[1].outcome is None


def test_a_failed_or_rolled_back_candidate_leaves_users_on_its_parent() -> None:
    life = Lifecycle("v1")
    first = requested(life, "v1", T0)
    life.on_event(event("GATES_FAILED", first, T0 + 1, detail="win_rate 0.2 < 0.5"))
    second = requested(life, "v1", T0 + 2)
    life.on_event(event("GATES_PASSED", second, T0 + 3))
    life.on_event(event("ROLLED_BACK", second, T0 + 4))
    life.on_event(event("PROMOTED", second, T0 + 5))  # after its outcome: ignored
    assert life.serving == "v1" and life.promotions == 0
    assert life.outcomes() == [("v1", first, "GATES_FAILED"), ("v1", second, "ROLLED_BACK")]
    lines = life.summary_lines()
    assert "failed its gates" in lines[0] and "win_rate 0.2 < 0.5" in lines[0]
    assert "ROLLED BACK" in lines[1] and "users stay on v1" in lines[1]


def test_two_requests_of_one_version_are_followed_apart_and_the_furthest_is_current() -> None:
    life = Lifecycle("v1")
    first = requested(life, "v1", T0)
    second = requested(life, "v1", T0 + 1)  # a forced training beside the trigger's
    life.on_event(event("GATES_PASSED", "someone-else", T0 + 2))
    requested(life, "v7", T0 + 3)  # not what users get
    assert [a.candidate for a in life.attempts] == [first, second]
    life.on_event(event("TRAINING_STARTED", second, T0 + 4))
    assert life.current() is life.attempts[1]
    life.on_event(event("GATES_PASSED", second, T0 + 5))
    life.on_event(event("TRAINING_STARTED", first, T0 + 6))
    assert life.current() is life.attempts[1]  # further along
    life.on_event(event("AB_STARTED", second, T0 + 7, experiment_id="ab"))
    life.on_event(event("PROMOTED", second, T0 + 8))
    assert life.outcomes() == [("v1", first, "SUPERSEDED"), ("v1", second, "PROMOTED")]
    assert life.current() is None


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [("users", 1, "--users 1"), ("minutes", 0, "--minutes 0"), ("threshold", 3, "--threshold 3"),
     ("generations", 0, "--generations 0")],
)  # fmt: skip
def test_options_out_of_range_are_named(field: str, value: float, named: str) -> None:
    with pytest.raises(PrefloopError, match=named):
        LoopOptions(**{field: value})


def test_the_loop_settings_lower_the_production_defaults_unless_the_environment_sets_one() -> None:
    options = LoopOptions(users=40, threshold=120)
    environ = {"PREFLOOP_AB_START_SPLIT": "10", "PREFLOOP_RETRAIN_THRESHOLD": "500"}
    settings = loop_settings(Settings(), options, environ=environ)
    assert settings.retrain_threshold == 120  # --threshold is the option's, whatever the env
    assert settings.ab_verdict_interval_s == 10.0
    assert settings.eval_judge == "prefloop.loop.users.preference:judge"
    assert settings.ab_start_split == Settings().ab_start_split  # the environment's to set
    assert settings.ab_min_users == 10
    assert loop_overrides(LoopOptions(users=6))["ab_min_users"] == 2


def _watcher(life: Lifecycle, **state: Any) -> Any:
    base = {"lifecycle": life, "options": LoopOptions(users=12, threshold=50), "since_ms": T0,
            "settings": Settings(), "pairs": Counter({("v1", "IMPLICIT"): 30, ("v1", "RATING"): 2}),
            "interactions": Counter({"v1": 90}), "toward": 32, "toward_version": "v1",
            "rate": 2.5, "arms": [], "verdict": None, "note": ""}  # fmt: skip
    return SimpleNamespace(**{**base, **state})


def test_the_views_show_the_pairs_against_the_threshold_then_the_ab_and_its_verdict() -> None:
    stats = CrowdStats(sessions=20, answers=90, by_version=Counter({"v1": 90}))
    life = Lifecycle("v1")
    console = Console(width=160, record=True)
    console.print(render(_watcher(life), stats))
    shown = console.export_text()
    assert "32/50 on v1" in shown and "IMPLICIT 30, RATING 2" in shown and "90 answers" in shown
    assert "32/50 on v1" in status_line(_watcher(life), stats)

    candidate = requested(life, "v1", T0)
    life.on_event(event("AB_STARTED", candidate, T0 + 1, experiment_id="ab-x"))
    arms = [ArmView("A", "v1", 11, -0.2, -0.6, 0.2), ArmView("B", candidate, 12, 0.9, 0.5, 1.3)]
    verdict = {"decision": "PROMOTE", "estimate": 1.1, "p_sequential": 0.012, "users_a": 11,
               "users_b": 12, "reason": "implicit_score better"}  # fmt: skip
    watcher = _watcher(life, arms=arms, verdict=verdict)
    console.print(render(watcher, stats))
    shown = console.export_text()
    assert f"B {candidate}: +0.90 [+0.50, +1.30] (12 users)" in shown
    assert "always-valid p 0.012" in shown and "PROMOTE" in shown
    line = status_line(watcher, stats)
    assert "ab-x at" in line and "PROMOTE" in line


def test_the_chaos_plan_kills_each_target_once_in_its_window_the_same_for_a_seed() -> None:
    from prefloop.loop.demo.chaos import TARGETS, WINDOW_S, Chaos

    plan = Chaos(Settings(), seed=4).kills
    assert sorted(k.target for k in plan) == sorted(TARGETS)
    assert all(WINDOW_S[0] <= k.at_s <= WINDOW_S[1] for k in plan)
    assert [k.at_s for k in plan] == sorted(k.at_s for k in plan)
    assert [(k.target, k.at_s) for k in Chaos(Settings(), seed=4).kills] == [
        (k.target, k.at_s) for k in plan
    ]
    assert [k.at_s for k in Chaos(Settings(), seed=5).kills] != [k.at_s for k in plan]
    assert loop_overrides(LoopOptions(chaos=True))["serve_replicas"] == 2
    assert "serve_replicas" not in loop_overrides(LoopOptions())


def test_a_ledger_says_lost_when_an_id_is_missing_and_twice_when_rows_outnumber_ids() -> None:
    from prefloop.loop.demo.audit import Ledger

    assert Ledger("pairs", records=12, ids=10, rows=10, row_ids=10, missing=0).ok
    lost = Ledger("pairs", records=10, ids=10, rows=9, row_ids=9, missing=1)
    assert lost.lost and not lost.twice and not lost.ok
    twice = Ledger("pairs", records=10, ids=10, rows=11, row_ids=10, missing=0)
    assert twice.twice and not twice.lost and not twice.ok
