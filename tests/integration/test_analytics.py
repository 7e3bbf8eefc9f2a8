"""The verdict against scipy on the same rows, in the embedded store of its own process.

Synthetic experiments (``prefloop.analytics.simulate``) are loaded into the typed
tables; every statistic of ``analyze`` is recomputed here from the raw arrays with
numpy and scipy, and the decisions checked on experiments with a known truth.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import scipy.stats as sps
from clickhouse_connect.driver.client import Client

from prefloop.analytics.exceptions import AnalysisError
from prefloop.analytics.simulate import (
    Simulated,
    load_simulated,
    record_model_event,
    simulate_experiment,
)
from prefloop.analytics.stats import JointMoments, msprt_from_estimate, ratio_delta
from prefloop.analytics.verdict import (
    analyze,
    compare_ratio,
    prior_tau2,
    sequential_p,
)
from prefloop.clickhouse.client import connect
from prefloop.infra.testing import start_store
from prefloop.settings import Settings, child_environment
from prefloop.testing import isolated_settings

START = datetime(2026, 11, 1, tzinfo=UTC)
RTOL = 1e-6
EXPERIMENTS = {  # id -> simulate_experiment arguments
    "better": {"users": 3000, "effect": 0.3, "seed": 1},
    "same": {"users": 3000, "seed": 2},
    "broken-split": {"users": 3000, "assigned_b_share": 55.0, "seed": 3},
    "more-regenerates": {"users": 3000, "regenerate_effect": 0.05, "seed": 4},
}


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, dict[str, Simulated]]]:
    settings = isolated_settings(tmp_path_factory.mktemp("analytics"), ab_min_users=100)
    process = start_store(settings)
    try:
        client = connect(settings)
        simulated = {}
        for n, (experiment, kwargs) in enumerate(EXPERIMENTS.items()):
            sim = simulate_experiment(experiment, user_prefix=f"u{n}-", start=START, **kwargs)
            load_simulated(client, sim)
            record_model_event(
                client, experiment, "SPLIT_CHANGED", START - timedelta(hours=1), 50.0
            )
            simulated[experiment] = sim
        yield settings, simulated
    finally:
        process.stop()


def per_user(
    sim: Simulated,
    values: np.ndarray,
    weights: np.ndarray | None = None,
    keep: np.ndarray | None = None,
) -> dict[int, JointMoments]:
    """JointMoments(Σ values, Σ weights) over the users of each arm, from the raw arrays
    (the responses ``keep`` marks, default all)."""
    weights = np.ones(len(values)) if weights is None else weights
    keep = np.ones(len(values), bool) if keep is None else keep
    out = {}
    for arm in (0, 1):
        mask = keep & (sim.arm == arm)
        users = np.unique(sim.user[mask], return_inverse=True)[1]
        x = np.bincount(users, weights=values[mask])
        y = np.bincount(users, weights=weights[mask])
        out[arm] = JointMoments.of(x, y)
    return out


def test_each_statistic_matches_numpy_and_scipy_on_the_same_rows(
    store: tuple[Settings, dict[str, Simulated]],
) -> None:
    settings, simulated = store
    sim = simulated["better"]
    verdict = analyze(connect(settings), settings, "better", record=False)
    # ratio metrics clustered by user: the delta method on per-user sums from the raw arrays
    rated = ~np.isnan(sim.rating)
    raw = {
        "implicit_score": (sim.score, None),
        "rating": (np.nan_to_num(sim.rating), rated.astype(float)),
        "continue_rate": (sim.continued.astype(float), None),
        "copy_rate": (sim.copied.astype(float), None),
        "regenerate_rate": (sim.regenerated.astype(float), None),
        "report_rate": (sim.reported.astype(float), None),
    }
    for name, (values, weights) in raw.items():
        arms = per_user(sim, values, weights)
        expected = ratio_delta(arms[0], arms[1], 0.95)
        got = verdict.metric(name)
        assert got.n_a == arms[0].n and got.n_b == arms[1].n
        assert got.value_a == pytest.approx(arms[0].sum_x / arms[0].sum_y, rel=RTOL)
        assert got.difference == pytest.approx(expected.estimate, rel=RTOL), name
        assert (got.ci_low, got.ci_high) == pytest.approx(
            (expected.ci_low, expected.ci_high), rel=RTOL
        )
        if got.role == "guardrail":
            assert got.p_value == pytest.approx(sps.norm.sf(expected.statistic), rel=RTOL)
        else:
            assert got.p_value == pytest.approx(expected.p_value, rel=RTOL), name
    # sessions: seconds per session clustered by user, each session's span from the rows
    spans: dict[int, dict[int, list[float]]] = {0: {}, 1: {}}
    for session in np.unique(sim.session):
        rows = sim.session == session
        arm, user = int(sim.arm[rows][0]), int(sim.user[rows][0])
        spans[arm].setdefault(user, []).append(
            (sim.ts_ms[rows].max() - sim.ts_ms[rows].min()) / 1000
        )
    per_arm = [
        JointMoments.of(
            [sum(v) for v in spans[arm].values()], [len(v) for v in spans[arm].values()]
        )
        for arm in (0, 1)
    ]
    expected = ratio_delta(per_arm[0], per_arm[1], 0.95)
    sessions = verdict.metric("session_seconds")
    assert sessions.p_value == pytest.approx(expected.p_value, rel=RTOL)
    assert sessions.difference == pytest.approx(expected.estimate, rel=RTOL)
    # Mann-Whitney U on each user's mean score: ClickHouse's mannWhitneyUTest against scipy
    means = {}
    for arm in (0, 1):
        mask = sim.arm == arm
        index = np.unique(sim.user[mask], return_inverse=True)[1]
        means[arm] = np.bincount(index, sim.score[mask]) / np.bincount(index)
    u, p = sps.mannwhitneyu(means[0], means[1], alternative="two-sided", method="asymptotic")
    assert verdict.mann_whitney == pytest.approx((u, p), rel=RTOL)
    # the sample ratio check: scipy's chi-square of the first exposures against 50/50
    exposed = sim.exposures.column("arm").to_pylist()
    counts = [exposed.count("A"), exposed.count("B")]
    chi = sps.chisquare(counts, [len(exposed) / 2] * 2)
    assert verdict.srm is not None
    assert verdict.srm.statistic == pytest.approx(chi.statistic, rel=RTOL)
    assert verdict.srm.p_value == pytest.approx(chi.pvalue, rel=RTOL)
    # the descriptive numbers
    assert verdict.arms["A"].users == len(np.unique(sim.user[sim.arm == 0]))
    assert verdict.arms["B"].responses == int((sim.arm == 1).sum())
    for arm in (0, 1):  # exact, interpolated as numpy does
        quantiles = np.quantile(sim.latency_ms[sim.arm == arm], [0.5, 0.95, 0.99])
        assert verdict.arms["AB"[arm]].latency_ms == pytest.approx(quantiles, rel=RTOL)


def test_decisions_follow_the_truth_of_each_experiment(
    store: tuple[Settings, dict[str, Simulated]],
) -> None:
    settings, _ = store
    client = connect(settings)
    better = analyze(client, settings, "better", record=False)
    assert better.decision == "PROMOTE", better.reason
    assert better.metric("implicit_score").lift is not None
    assert better.metric("implicit_score").lift > 0
    same = analyze(client, settings, "same", record=False)
    assert same.decision == "CONTINUE", same.reason
    worse = analyze(client, settings, "more-regenerates", record=False)
    assert worse.decision == "ROLLBACK", worse.reason
    assert "regenerate_rate" in worse.reason


def test_a_broken_split_is_flagged_and_blocks_every_decision(
    store: tuple[Settings, dict[str, Simulated]],
) -> None:
    settings, _ = store
    verdict = analyze(connect(settings), settings, "broken-split", record=False)
    assert verdict.srm is not None and verdict.srm.flagged
    assert verdict.srm.p_value < 0.001
    assert verdict.decision == "CONTINUE"
    assert "sample ratio mismatch" in verdict.reason
    # against the split it really had, the same exposures pass
    honest = analyze(connect(settings), settings, "broken-split", split=55.0, record=False)
    assert honest.srm is not None and not honest.srm.flagged


def test_a_late_revision_and_a_duplicate_count_once_at_their_latest(
    store: tuple[Settings, dict[str, Simulated]], tmp_path: Path
) -> None:
    settings, _ = store
    client = connect(settings)
    sim = simulate_experiment("revised", 300, seed=9, user_prefix="rev-", start=START)
    load_simulated(client, sim)
    before = analyze(client, settings, "revised", record=False).metric("implicit_score")
    scores = sim.scores.slice(0, 1).to_pylist()[0]
    revised = {**scores, "revision": 1, "implicit_score": scores["implicit_score"] + 100.0}
    client.insert("scores", [list(revised.values())], column_names=list(revised))
    client.insert_arrow("interactions", sim.interactions.slice(0, 50))  # a client's duplicates
    after = analyze(client, settings, "revised", record=False)
    arm = "A" if sim.arm[0] == 0 else "B"
    n = after.arms[arm].responses
    assert n == int((sim.arm == sim.arm[0]).sum())  # duplicates counted once
    shift = 100.0 / n
    moved = after.metric("implicit_score")
    got = moved.value_a if arm == "A" else moved.value_b
    was = before.value_a if arm == "A" else before.value_b
    assert got == pytest.approx(was + shift, rel=RTOL)


def test_users_moved_between_arms_are_left_out_of_every_metric(
    store: tuple[Settings, dict[str, Simulated]],
) -> None:
    settings, _ = store
    client = connect(settings)
    sim = simulate_experiment("ramped", 600, seed=11, user_prefix="mv-", start=START)
    load_simulated(client, sim)
    # a ramp moves ten of arm A's users to B: each answers once more, on arm B, later
    moved = np.unique(sim.user[sim.arm == 0])[:10]
    rows = sim.interactions.filter(pa.array(np.isin(sim.user, moved) & (sim.arm == 0)))
    later = {row["user_id"]: row for row in rows.to_pylist()}  # one response each
    extra = [
        {
            **row,
            "interaction_id": f"moved-{n}",
            "response_id": f"moved-{n}",
            "arm": "B",
            "model_version": "v2",
            "ts": row["ts"] + timedelta(days=8),
        }
        for n, row in enumerate(later.values())
    ]
    client.insert_arrow("interactions", pa.Table.from_pylist(extra, rows.schema))
    score_rows = sim.scores.filter(pc.is_in(sim.scores["response_id"], rows["response_id"]))
    by_user = {r["user_id"]: r for r in score_rows.to_pylist()}
    scores = [
        {
            **by_user[e["user_id"]],
            "response_id": e["response_id"],
            "interaction_id": e["interaction_id"],
            "arm": "B",
            "ts": e["ts"],
        }
        for e in extra
    ]
    client.insert_arrow("scores", pa.Table.from_pylist(scores, sim.scores.schema))

    verdict = analyze(client, settings, "ramped", record=False)
    assert verdict.moved_users == 10
    assert any("10 user(s) with data in both arms" in note for note in verdict.notes)
    kept = ~np.isin(sim.user, moved)
    assert verdict.arms["A"].users == len(np.unique(sim.user[kept & (sim.arm == 0)]))
    assert verdict.arms["A"].responses == int((kept & (sim.arm == 0)).sum())
    assert verdict.arms["B"].users == len(np.unique(sim.user[sim.arm == 1]))
    for name, values in (("implicit_score", sim.score), ("copy_rate", sim.copied * 1.0)):
        arms = per_user(sim, values, keep=kept)
        expected = ratio_delta(arms[0], arms[1], 0.95)
        got = verdict.metric(name)
        assert (got.n_a, got.n_b) == (arms[0].n, arms[1].n)
        assert got.difference == pytest.approx(expected.estimate, rel=RTOL)
        assert got.p_value == pytest.approx(expected.p_value, rel=RTOL)


def test_the_first_recorded_look_fixes_the_prior_and_the_latency_threshold(
    store: tuple[Settings, dict[str, Simulated]],
) -> None:
    settings, _ = store
    client = connect(settings)
    sim = simulate_experiment("frozen", 600, seed=12, user_prefix="fz-", start=START)
    load_simulated(client, sim)
    record_model_event(client, "frozen", "SPLIT_CHANGED", START - timedelta(hours=1), 50.0)
    first = analyze(client, settings, "frozen", record=True)
    assert first.looks == 1 and first.latency_threshold_ms is not None
    # then arm A slows down and its scores spread: a fresh look would pick another
    # threshold and another prior, the experiment keeps the first look's
    slow = sim.interactions.filter(pa.array(sim.arm == 0)).slice(0, 200).to_pylist()
    slower = [
        {**row, "interaction_id": f"slow-{n}", "latency_ms": 100_000} for n, row in enumerate(slow)
    ]
    client.insert_arrow("interactions", pa.Table.from_pylist(slower, sim.interactions.schema))
    spread = sim.scores.filter(pa.array(sim.arm == 0)).slice(0, 300).to_pylist()
    wide = [
        {**row, "response_id": f"wide-{n}", "implicit_score": 50.0 * (-1) ** n}
        for n, row in enumerate(spread)
    ]
    client.insert_arrow("scores", pa.Table.from_pylist(wide, sim.scores.schema))
    second = analyze(client, settings, "frozen", record=True)
    assert second.looks == 2
    assert second.arms["A"].latency_ms[2] > 10 * first.latency_threshold_ms
    assert second.latency_threshold_ms == first.latency_threshold_ms
    recorded = client.query(
        "SELECT metric, groupArray(tau2), groupArray(threshold) FROM "
        "(SELECT * FROM verdicts WHERE experiment_id = 'frozen' ORDER BY ts) GROUP BY metric"
    ).result_rows
    assert len(recorded) >= 8
    for metric, priors, thresholds in recorded:
        assert len(priors) == 2 and priors[0] > 0 and priors[1] == priors[0], metric
        if metric == "latency_p99":
            assert thresholds == [first.latency_threshold_ms] * 2
    # the second look's p is the mixture's with the first look's prior (or the minimum)
    score = second.metric("implicit_score")
    z = sps.norm.ppf(0.975)
    se = (score.ci_high - score.ci_low) / (2 * z)
    prior = dict((m, t[0]) for m, t, _ in recorded)["implicit_score"]
    fresh = msprt_from_estimate(score.difference, se**2, prior).p_value
    before = first.metric("implicit_score")
    earlier = before.p_higher if score.difference > 0 else before.p_lower
    now = score.p_higher if score.difference > 0 else score.p_lower
    assert now == pytest.approx(min(fresh, earlier), rel=1e-6)


def test_users_assigned_right_after_a_change_of_split_do_not_flag_the_ratio(
    store: tuple[Settings, dict[str, Simulated]],
) -> None:
    settings, _ = store
    client = connect(settings)
    sim = simulate_experiment("ramp-grace", 200, seed=13, user_prefix="rg-", start=START)
    client.insert_arrow("interactions", sim.interactions)
    client.insert_arrow("scores", sim.scores)
    ramp = START + timedelta(days=3)
    record_model_event(client, "ramp-grace", "SPLIT_CHANGED", START - timedelta(hours=1), 50.0)
    record_model_event(client, "ramp-grace", "SPLIT_CHANGED", ramp, 80.0)
    exposures = []

    def expose(users: int, share_b: float, at: datetime, spread_s: float, tag: str) -> None:
        for n in range(users):
            exposures.append(
                {
                    "exposure_id": f"{tag}{n}",
                    "ts": at + timedelta(seconds=spread_s * n / users),
                    "experiment_id": "ramp-grace",
                    "user_id": f"{tag}{n}",
                    "arm": "B" if n < users * share_b else "A",
                    "model_version": "v2",
                }
            )

    expose(2000, 0.5, START, 86_400, "before-")
    expose(600, 0.5, ramp, 30, "lagging-")  # a replica still on the old split for 30 s
    expose(2000, 0.8, ramp + timedelta(minutes=2), 86_400, "after-")
    client.insert_arrow("exposures", pa.Table.from_pylist(exposures, sim.exposures.schema))
    verdict = analyze(client, settings, "ramp-grace", record=False)
    assert verdict.srm is not None and not verdict.srm.flagged, verdict.srm.reason
    assert verdict.srm.observed == {"A": 1000 + 400, "B": 1000 + 1600}
    assert "600 user(s) first seen within 60 s of a change of split left out" in verdict.srm.reason
    # the same lagging users ten minutes after the change are a real mismatch
    late = [
        {
            **e,
            "exposure_id": f"late-{e['user_id']}",
            "user_id": f"late-{e['user_id']}",
            "ts": e["ts"] + timedelta(minutes=10),
        }
        for e in exposures
        if e["user_id"].startswith("lagging-")
    ]
    client.insert_arrow("exposures", pa.Table.from_pylist(late, sim.exposures.schema))
    flagged = analyze(client, settings, "ramp-grace", record=False)
    assert flagged.srm is not None and flagged.srm.flagged


def test_sequential_looks_keep_false_positives_where_peeking_inflates_them(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """200 A/A experiments, looked at after each of 8 days of traffic.

    Each look reads every experiment's per-arm sums of the primary metric in one SQL
    aggregation and tests them with the verdict's own functions; one experiment with
    a true effect goes through ``analyze`` itself at every look.
    """
    settings = isolated_settings(tmp_path_factory.mktemp("aa"), ab_min_users=20)
    process = start_store(settings)
    experiments, looks, alpha = 200, 8, settings.ab_alpha
    try:
        client = connect(settings)
        sims = [
            simulate_experiment(
                f"aa{e}", 160, days=looks, seed=1000 + e, user_prefix=f"a{e}-", start=START
            )
            for e in range(experiments)
        ]
        client.insert_arrow("scores", pa.concat_tables([s.scores for s in sims]))
        effect = simulate_experiment(
            "effect", 200, effect=1.0, days=looks, seed=7, user_prefix="fx-", start=START
        )
        load_simulated(client, effect)
        previous: dict[str, float | None] = {f"aa{e}": None for e in range(experiments)}
        tau2: dict[str, float] = {}  # fixed at each experiment's first look, as analyze does
        fixed_hit: set[str] = set()
        sequential_hit: set[str] = set()
        detected = []
        for day in range(1, looks + 1):
            end = START + timedelta(days=day)
            for experiment, arms in primary_sums(client, end).items():
                compared = compare_ratio(arms["A"], arms["B"], 1 - alpha)
                prior = tau2.setdefault(experiment, prior_tau2(compared, settings.ab_effect_size))
                p = sequential_p(compared, prior, previous[experiment])
                previous[experiment] = p
                if compared.difference.p_value < alpha:
                    fixed_hit.add(experiment)
                if p < alpha:
                    sequential_hit.add(experiment)
            detected.append(analyze(client, settings, "effect", end=end, split=50.0, record=True))
    finally:
        process.stop()
    fixed_rate = len(fixed_hit) / experiments
    sequential_rate = len(sequential_hit) / experiments
    slack = 3 * np.sqrt(alpha * (1 - alpha) / experiments)
    print(
        f"A/A false positives over {looks} looks: sequential {sequential_rate:.1%}, "
        f"fixed-horizon {fixed_rate:.1%}"
    )
    assert sequential_rate <= alpha + slack
    assert fixed_rate > alpha + slack  # peeking at a fixed-horizon test inflates it
    assert detected[-1].decision == "PROMOTE", detected[-1].reason
    # every look with ab_min_users per arm recorded; its p is the running minimum
    enough = [v for v in detected if min(a.users for a in v.arms.values()) >= 20]
    assert 0 < len(enough) < looks and detected[-1].looks == len(enough)
    running = [v.metric("implicit_score").p_higher for v in enough]
    assert running == sorted(running, reverse=True)
    assert detected[-1].metric("implicit_score").direction == 1


def primary_sums(client: Client, end: datetime) -> dict[str, dict[str, JointMoments]]:
    """Per A/A experiment and arm: the implicit score's per-user sums before ``end``."""
    result = client.query(
        """
        SELECT experiment_id, arm, count(), sum(s), sum(n), sum(s * s), sum(n * n), sum(s * n)
        FROM (SELECT experiment_id, arm, user_id, sum(implicit_score) AS s, count() AS n
              FROM scores FINAL WHERE startsWith(experiment_id, 'aa') AND ts < {end:DateTime64(3)}
              GROUP BY experiment_id, arm, user_id)
        GROUP BY experiment_id, arm
        """,
        parameters={"end": end},
    )
    out: dict[str, dict[str, JointMoments]] = {}
    for experiment, arm, users, *sums in result.result_rows:
        out.setdefault(experiment, {})[arm] = JointMoments(int(users), *map(float, sums))
    return {e: arms for e, arms in out.items() if len(arms) == 2}


def test_bad_input_gets_one_clear_sentence(store: tuple[Settings, dict[str, Simulated]]) -> None:
    settings, _ = store
    client = connect(settings)
    with pytest.raises(
        AnalysisError, match=r"experiment 'nope' is unknown: experiments with data are "
    ):
        analyze(client, settings, "nope")
    injection = "x' OR 1=1 --"
    with pytest.raises(AnalysisError, match=r"is unknown"):
        analyze(client, settings, injection)
    with pytest.raises(AnalysisError, match=r"no interactions in the period asked"):
        analyze(client, settings, "better", end=START - timedelta(days=30))
    with pytest.raises(AnalysisError, match=r"is not after the start"):
        analyze(client, settings, "better", start=START, end=START)
    one_arm = simulate_experiment("only-a", 50, split=0.0, seed=5, user_prefix="oa-", start=START)
    load_simulated(client, one_arm)
    with pytest.raises(AnalysisError, match=r"arm B of experiment 'only-a' has no interactions"):
        analyze(client, settings, "only-a")
    unscored = simulate_experiment("unscored-b", 200, seed=6, user_prefix="ub-", start=START)
    client.insert_arrow("interactions", unscored.interactions)
    client.insert_arrow("scores", unscored.scores.filter(pc.equal(unscored.scores["arm"], "A")))
    with pytest.raises(
        AnalysisError,
        match=r"primary metric implicit_score of experiment unscored-b cannot be tested yet",
    ):
        analyze(client, settings, "unscored-b")
    assert (
        client.query("SELECT count() FROM interactions WHERE experiment_id = 'better'").result_rows[
            0
        ][0]
        > 0
    )


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefloop.loop.cli", *args],
        env=child_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ab_analyze_prints_the_verdict_table_and_json(
    store: tuple[Settings, dict[str, Simulated]],
) -> None:
    settings, _ = store
    table = run_cli(settings, "ab", "analyze", "--experiment", "better")
    assert table.returncode == 0, table.stderr
    for expected in (
        "implicit_score *",
        "regenerate_rate !",
        "p always-valid",
        "PROMOTE",
        "sample ratio",
    ):
        assert expected in table.stdout
    as_json = run_cli(settings, "ab", "analyze", "--experiment", "better", "--json", "--record")
    assert as_json.returncode == 0, as_json.stderr
    verdict: dict[str, Any] = json.loads(as_json.stdout)
    assert verdict["decision"] == "PROMOTE"
    assert verdict["looks"] >= 1
    assert {m["name"] for m in verdict["metrics"]} >= {"implicit_score", "latency_p99"}
    unknown = run_cli(settings, "ab", "analyze", "--experiment", "nope")
    assert unknown.returncode != 0
    assert "experiment 'nope' is unknown" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    bad_date = run_cli(settings, "ab", "analyze", "--experiment", "better", "--start", "2026-13-01")
    assert bad_date.returncode != 0
    assert "2026-13-01" in bad_date.stderr


@pytest.mark.parametrize("name", ["arms", "latest-scores", "exposures"])
def test_the_readme_queries_for_analysts_run(
    store: tuple[Settings, dict[str, Simulated]], name: str
) -> None:
    settings, _ = store
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    match = re.search(rf"<!-- example: analytics-sql-{name} -->\n```sql\n(.*?)```", readme, re.S)
    assert match, f"the README has no analytics-sql-{name} example"
    result = connect(settings).query(match.group(1))
    assert result.result_rows, f"the README's {name} query returned nothing"
    experiments = {row[0] for row in result.result_rows}
    if name != "latest-scores":
        assert set(EXPERIMENTS) <= experiments


def test_cuped_adjusts_each_users_mean_by_their_pre_period_as_numpy_does(
    store: tuple[Settings, dict[str, Simulated]],
) -> None:
    settings, _ = store
    client = connect(settings)
    sim = simulate_experiment(
        "with-history", 1500, effect=0.1, seed=11, user_prefix="h-", start=START, pre_period_days=14
    )
    load_simulated(client, sim)
    verdict = analyze(client, settings, "with-history", cuped=True, record=False)
    got = verdict.metric("implicit_score_cuped")
    # numpy: y = each user's mean score in the experiment, x = their mean before it
    pre = sim.scores.filter(pc.equal(sim.scores.column("experiment_id"), "")).to_pandas()
    x_by_user = pre.groupby("user_id")["implicit_score"].mean()
    users = np.unique(sim.user)
    y = np.array([sim.score[sim.user == u].mean() for u in users])
    arm = np.array([sim.arm[sim.user == u][0] for u in users])
    x = x_by_user.loc[[f"h-{u}" for u in users]].to_numpy()
    theta = np.cov(x, y, ddof=1)[0, 1] / np.var(x, ddof=1)
    adjusted = y - theta * (x - x.mean())
    welch = sps.ttest_ind(adjusted[arm == 1], adjusted[arm == 0], equal_var=False)
    assert got.difference == pytest.approx(
        adjusted[arm == 1].mean() - adjusted[arm == 0].mean(), rel=RTOL
    )
    assert got.p_value == pytest.approx(welch.pvalue, rel=RTOL)
    plain = sps.ttest_ind(y[arm == 1], y[arm == 0], equal_var=False)
    assert got.ci_high - got.ci_low < (
        plain.confidence_interval().high - plain.confidence_interval().low
    )
    assert "implicit_score_cuped" not in {
        m.name for m in analyze(client, settings, "better", record=False).metrics
    }
    without = analyze(client, settings, "better", cuped=True, record=False)
    assert any("no pre-period scores" in note for note in without.notes)
