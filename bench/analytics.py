"""`ab analyze` over millions of events in chDB vs pulling the rows into pandas.

Not a test: a measurement. chDB is opened in this process (one data directory per
process, a fresh one under a temporary directory) and the migrations applied. A
simulated experiment (``prefloop.analytics.simulate``: EVENTS / 10 users of about 5
responses each, arm B's implicit score 0.05 higher) is loaded into the typed
tables in inserts of about 1 M rows: EVENTS rows of ``interactions`` and ``scores``
together (half each), one exposure per user, and the 50/50 split in
``model_events``. Each interaction and score is stamped as inserted (``_inserted_at``)
at its own time, as the sink writes an event moments after it happens: the
experiment ran for days before this look. Nothing is merged by hand (no OPTIMIZE):
the tables are read as loaded, after chDB's background merges went quiet.

* first look: ``analyze`` once with no rollup yet: it builds the per-user rollups
  (``prefloop.analytics.rollup``) from the event tables whole, then reads them;
* then, alternating, ROUNDS times each:

  - analyze: ``prefloop.analytics.verdict.analyze(client, settings, "bench",
    record=False)`` as the loop's next look runs it: the rollups brought up to date
    (no user changed since the last build), the metrics read from them in SQL
    (per-arm sums, exact latency quantiles, ``mannWhitneyUTest``), the ratio check from
    ``first_exposures``; the time of each SQL statement it sends is noted;
  - baseline: the raw rows the same numbers need, pulled with ``query_arrow``
    (scores: arm, user, response, revision, score, rating, the four signals;
    interactions: arm, user, interaction, session, ts, latency, completion tokens;
    exposures: arm, user, ts) and turned into pandas DataFrames, then in
    pandas/numpy: the latest revision of each response and one row per interaction
    (what ``FINAL`` does), the per-user sums and the per-arm sufficient statistics
    of the six ratio metrics, arm A's exact p99 latency and the share of slower
    requests per user, users, daily active users, tokens per second, session spans,
    the first exposure of each user for the sample ratio check, and the same tests
    (``prefloop.analytics.stats``: delta method, Welch, chi-square) with scipy's
    Mann-Whitney U on the per-user mean scores. Timed in three parts: transfer
    (``query_arrow``), ``to_pandas``, compute;

* then new traffic: 1 % more users, with their events stamped now, and ROUNDS looks
  timed (each recomputes those users: they are within the rollup's margin for
  inserts in flight), and one more baseline over all of it, checked against them.

The check, after the warm-up and every round: users, responses and sessions per arm
equal; the latency quantiles, every ratio metric's difference, interval and p-value
(the latency guardrail's too), the session test, Mann-Whitney and the sample ratio
check to 1e-6 relative.

Prints and writes the medians and the ratio baseline / analyze (target at least
20x) to bench/RESULTS.md.

Run: ``make bench`` or ``.venv/bin/python bench/run.py analytics``
(``BENCH_ANALYTICS_EVENTS``, default 10,000,000, ``BENCH_ANALYTICS_RESPONSES_PER_USER``,
default 5, and ``BENCH_ROUNDS`` change the sizes; each shape of users writes its own section).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats as sps
from common import median, write_section

from prefloop.analytics.exceptions import StatsError
from prefloop.analytics.metrics import RATIO_METRICS, ArmSummary, ExperimentData
from prefloop.analytics.schema import migrate
from prefloop.analytics.simulate import record_model_event, simulate_experiment
from prefloop.analytics.stats import (
    JointMoments,
    Moments,
    SrmResult,
    TestResult,
    ratio_delta,
    srm_check,
)
from prefloop.analytics.verdict import SRM_THRESHOLD, Verdict, analyze, split_history
from prefloop.clickhouse.client import embedded_client
from prefloop.settings import Settings
from prefloop.testing import isolated_settings

EVENTS = int(os.environ.get("BENCH_ANALYTICS_EVENTS", "10000000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
EXPERIMENT = "bench"
RESPONSES_PER_USER = float(os.environ.get("BENCH_ANALYTICS_RESPONSES_PER_USER", "5"))
CHUNK_ROWS = 1_000_000
START = datetime(2026, 11, 1, tzinfo=UTC)
RTOL = 1e-6
PARAMS = {"experiment": EXPERIMENT}


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- loading ---------------------------------------------------------------------------


def load(
    client: Any, users: int, prefix: str = "u", seed: int = 1, *, as_they_happened: bool = True
) -> dict[str, int]:
    """Simulate ``users`` of the experiment and insert them; returns the rows of each table.

    ``as_they_happened``: each interaction and score stamped as inserted at its own
    time (the sink writes an event moments after it happens); else now.
    """
    log(f"simulating {users:,} users (about {users * 2 * RESPONSES_PER_USER:,.0f} rows)")
    started = time.perf_counter()
    sim = simulate_experiment(
        EXPERIMENT,
        users=users,
        responses_per_user=RESPONSES_PER_USER,
        effect=0.05,
        start=START,
        seed=seed,
        user_prefix=prefix,
    )
    log(f"simulated in {time.perf_counter() - started:.1f} s")
    rows = {}
    for table in ("interactions", "scores", "exposures"):
        data = getattr(sim, table)
        if as_they_happened and table != "exposures":
            data = data.append_column("_inserted_at", data["ts"])
        rows[table] = data.num_rows
        started = time.perf_counter()
        for offset in range(0, data.num_rows, CHUNK_ROWS):
            client.insert_arrow(table, data.slice(offset, CHUNK_ROWS))
            done = min(offset + CHUNK_ROWS, data.num_rows)
            log(f"{table}: {done:,} of {data.num_rows:,} rows inserted")
        log(f"{table} loaded in {time.perf_counter() - started:.1f} s")
    return rows


def quiet_merges(client: Any, limit_s: float = 600.0) -> float:
    """Wait until no merge runs (so none competes with the timed rounds); the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        running = client.query("SELECT count() FROM system.merges").result_rows[0][0]
        if not running:
            break
        time.sleep(2.0)
    return time.monotonic() - started


def active_parts(client: Any) -> dict[str, tuple[int, int]]:
    """(active parts, rows) of each event table."""
    result = client.query(
        "SELECT table, count(), sum(rows) FROM system.parts "
        "WHERE database = currentDatabase() AND active "
        "AND table IN ('interactions', 'scores', 'exposures', 'first_exposures') GROUP BY table"
    ).result_rows
    return {str(t): (int(p), int(r)) for t, p, r in result}


# -- path 1: analyze, its queries timed -------------------------------------------------


class QueryTimer:
    """The client, noting the time of each ``query`` and ``command`` (by the table it reads
    and its first aggregate) in ``times``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.times: list[tuple[str, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def _timed(self, method: str, sql: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = getattr(self.client, method)(sql, *args, **kwargs)
        self.times.append((query_name(sql), time.perf_counter() - started))
        return result

    def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        return self._timed("query", sql, *args, **kwargs)

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        return self._timed("command", sql, *args, **kwargs)


def query_name(sql: str) -> str:
    text = " ".join(sql.split())
    tables = re.findall(r"FROM (\w+)( FINAL)?", text)
    table = next((t + f for t, f in tables if t not in ("system",)), "?")
    into = re.match(r"INSERT INTO (\w+)", text)
    if into and into.group(1) == "rollup_builds":
        what = "rollup: the build recorded"
    elif into:
        what = f"rollup: the (changed) users' rows into `{into.group(1)}`"
    elif "mannWhitneyUTest" in text:
        what = "per arm: six ratio metrics over users, and Mann-Whitney U"
    elif "quantilesExact" in text:
        what = "per arm: latency quantiles, tokens/s, daily active users"
    elif "first_exposures" in text:
        what = "sample ratio check: first exposure per user"
    elif "arrayCount(" in text or "countIf(latency_ms" in text:
        what = "per arm: requests slower than A's p99, sessions, over users"
    elif "_inserted_at >=" in text and "INSERT" not in text:
        what = "rollup: rows inserted since its last build"
    elif "now64" in text:
        what = "rollup: the server's clock, its last build, the store's TTL"
    elif "p_sequential" in text:
        what = "previous looks' sequential p-values"
    elif "metrics['split']" in text:
        what = "split history"
    else:
        what = text[:60]
    return f"{what} (`{table}`)"


def analyze_run(client: Any, settings: Settings) -> tuple[float, Verdict, list[tuple[str, float]]]:
    timer = QueryTimer(client)
    started = time.perf_counter()
    verdict = analyze(timer, settings, EXPERIMENT, record=False)
    return time.perf_counter() - started, verdict, timer.times


# -- path 2: the rows into pandas -------------------------------------------------------

SCORES_SQL = """
SELECT arm, user_id, response_id, revision, implicit_score, rating,
       signals_continued, signals_copied, signals_regenerated, signals_reported
FROM scores WHERE experiment_id = {experiment:String} AND arm IN ('A', 'B')
"""
INTERACTIONS_SQL = """
SELECT arm, user_id, interaction_id, session_id, ts, latency_ms, completion_tokens
FROM interactions WHERE experiment_id = {experiment:String} AND arm IN ('A', 'B')
"""
EXPOSURES_SQL = """
SELECT arm, user_id, ts FROM exposures WHERE experiment_id = {experiment:String}
"""


@dataclass
class Baseline:
    data: ExperimentData
    srm: SrmResult | None
    tests: dict[str, TestResult]
    transfer_s: float
    to_pandas_s: float
    compute_s: float
    transfer_mb: float

    @property
    def seconds(self) -> float:
        return self.transfer_s + self.to_pandas_s + self.compute_s


def _joint(x: Any, y: Any) -> JointMoments:
    """JointMoments(Σx, Σy, ...) over users (one value of x and y per user)."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    return JointMoments(
        len(xs),
        float(xs.sum()),
        float(ys.sum()),
        float((xs * xs).sum()),
        float((ys * ys).sum()),
        float((xs * ys).sum()),
    )


def _moments(values: Any) -> Moments:
    v = np.asarray(values, dtype=np.float64)
    return Moments(len(v), float(v.sum()), float((v * v).sum()))


def _pandas_interactions(df: pd.DataFrame, data: ExperimentData) -> None:
    rows = df.drop_duplicates(["arm", "user_id", "interaction_id"])  # what FINAL does
    daily = (
        rows.assign(day=rows["ts"].dt.floor("D"))
        .groupby(["arm", "day"], observed=True)["user_id"]
        .nunique()
        .groupby(level="arm")
        .mean()
    )
    for arm, group in rows.groupby("arm", observed=True):
        latency = group["latency_ms"].to_numpy()
        p50, p95, p99 = (float(q) for q in np.quantile(latency, [0.5, 0.95, 0.99]))
        data.arms[str(arm)] = ArmSummary(
            model_version="",  # descriptive only: not pulled
            users=int(group["user_id"].nunique()),
            responses=len(group),
            latency_ms=(p50, p95, p99),
            daily_active_users=float(daily[arm]),
            tokens_per_second=float(group["completion_tokens"].sum())
            / max(float(latency.sum()), 1.0)
            * 1000,
        )
    threshold = data.arms["A"].latency_ms[2]
    data.latency_threshold_ms = threshold
    per_user = (
        rows.assign(slow=rows["latency_ms"] > threshold)
        .groupby(["arm", "user_id"], observed=True, sort=False)["slow"]
        .agg(["size", "sum"])
    )
    for arm, group in per_user.groupby(level="arm"):
        data.ratios.setdefault("latency_p99", {})[str(arm)] = _joint(group["sum"], group["size"])
    spans = (
        rows[rows["session_id"] != ""]
        .groupby(["arm", "user_id", "session_id"], observed=True, sort=False)["ts"]
        .agg(["min", "max"])
    )
    seconds = (spans["max"] - spans["min"]) / pd.Timedelta(milliseconds=1) / 1000
    per_user_sessions = seconds.groupby(level=["arm", "user_id"], observed=True).agg(
        ["sum", "size"]
    )
    for arm, group in per_user_sessions.groupby(level="arm"):
        data.ratios.setdefault("session_seconds", {})[str(arm)] = _joint(
            group["sum"], group["size"]
        )


def _pandas_scores(df: pd.DataFrame, data: ExperimentData) -> None:
    rows = df.sort_values("revision", kind="stable").drop_duplicates(
        ["arm", "user_id", "response_id"], keep="last"
    )  # the latest revision of each response, as FINAL keeps it
    rated = rows["rating"].notna()
    rows = rows.assign(rated=rated, rating=rows["rating"].fillna(0.0))
    per_user = rows.groupby(["arm", "user_id"], observed=True, sort=False).agg(
        responses=("implicit_score", "size"),
        score_sum=("implicit_score", "sum"),
        rated=("rated", "sum"),
        rating_sum=("rating", "sum"),
        n_continued=("signals_continued", "sum"),
        n_copied=("signals_copied", "sum"),
        n_regenerated=("signals_regenerated", "sum"),
        n_reported=("signals_reported", "sum"),
    )
    means: dict[str, np.ndarray] = {}
    for arm, group in per_user.groupby(level="arm"):
        for metric, (x, y) in RATIO_METRICS.items():
            data.ratios.setdefault(metric, {})[str(arm)] = _joint(group[x], group[y])
        mean = (group["score_sum"] / group["responses"]).to_numpy()
        data.score_users[str(arm)] = _moments(mean)
        means[str(arm)] = mean
    u, p = sps.mannwhitneyu(means["A"], means["B"], alternative="two-sided", method="asymptotic")
    data.mann_whitney = (float(u), float(p))


def _pandas_srm(client: Any, df: pd.DataFrame) -> SrmResult | None:
    """The first exposure of each user, counted per arm and split period, as ``_srm`` does."""
    history = split_history(client, EXPERIMENT)  # one row
    if not history:
        return None
    first = df.sort_values("ts", kind="stable").drop_duplicates("user_id", keep="first")
    bounds = np.array([pd.Timestamp(ts).value for ts, _ in history], dtype=np.int64)
    first_ns = first["ts"].dt.as_unit("ns").astype("int64").to_numpy()
    period = np.searchsorted(bounds, first_ns, side="right")
    counts = pd.crosstab(period, first["arm"].to_numpy())
    checks = []
    for p, row in counts.iterrows():
        if int(p) == 0:
            continue
        share_b = history[int(p) - 1][1] / 100
        observed = {arm: int(row.get(arm, 0)) for arm in ("A", "B")}
        if 0 < share_b < 1 and sum(observed.values()):
            checks.append(srm_check(observed, {"A": 1 - share_b, "B": share_b}, SRM_THRESHOLD))
    if not checks:
        return None
    statistic = math.fsum(c.statistic for c in checks)
    df_ = sum(c.df for c in checks)
    p_value = float(sps.chi2.sf(statistic, df_))
    observed = {arm: sum(c.observed[arm] for c in checks) for arm in ("A", "B")}
    expected = {arm: math.fsum(c.expected[arm] for c in checks) for arm in ("A", "B")}
    return SrmResult(
        statistic, df_, p_value, SRM_THRESHOLD, p_value < SRM_THRESHOLD, observed, expected, ""
    )


def _pandas_tests(data: ExperimentData, level: float) -> dict[str, TestResult]:
    tests = {}
    for name in (*RATIO_METRICS, "latency_p99", "session_seconds"):
        arms = data.ratios[name]
        with contextlib.suppress(StatsError):  # as analyze: a metric it cannot test is left out
            tests[name] = ratio_delta(arms["A"], arms["B"], level)
    return tests


def baseline_run(client: Any, settings: Settings) -> Baseline:
    started = time.perf_counter()
    tables = {
        "scores": client.query_arrow(SCORES_SQL, parameters=PARAMS),
        "interactions": client.query_arrow(INTERACTIONS_SQL, parameters=PARAMS),
        "exposures": client.query_arrow(EXPOSURES_SQL, parameters=PARAMS),
    }
    pulled = time.perf_counter()
    transfer_mb = sum(t.nbytes for t in tables.values()) / 2**20
    frames = {name: table.to_pandas() for name, table in tables.items()}
    del tables
    converted = time.perf_counter()
    data = ExperimentData(EXPERIMENT)
    _pandas_interactions(frames["interactions"], data)
    _pandas_scores(frames["scores"], data)
    srm = _pandas_srm(client, frames["exposures"])
    tests = _pandas_tests(data, 1 - settings.ab_alpha)
    done = time.perf_counter()
    return Baseline(
        data, srm, tests, pulled - started, converted - pulled, done - converted, transfer_mb
    )


# -- the check -------------------------------------------------------------------------


def _close(a: float, b: float, rtol: float = RTOL) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)


def compare(verdict: Verdict, base: Baseline) -> list[str]:
    """Mismatches beyond 1e-6 relative."""
    bad: list[str] = []
    for arm in ("A", "B"):
        sql, pd_ = verdict.arms[arm], base.data.arms[arm]
        if (sql.users, sql.responses) != (pd_.users, pd_.responses):
            bad.append(
                f"arm {arm}: users/responses {sql.users}/{sql.responses} vs "
                f"{pd_.users}/{pd_.responses}"
            )
        if not _close(sql.daily_active_users, pd_.daily_active_users):
            bad.append(f"arm {arm}: DAU {sql.daily_active_users} vs {pd_.daily_active_users}")
        if not _close(sql.tokens_per_second, pd_.tokens_per_second):
            bad.append(f"arm {arm}: tokens/s {sql.tokens_per_second} vs {pd_.tokens_per_second}")
        for q, a, b in zip(("p50", "p95", "p99"), sql.latency_ms, pd_.latency_ms, strict=True):
            if not _close(a, b):
                bad.append(f"arm {arm}: latency {q} {a} vs {b}")
    for name, test in base.tests.items():
        got = verdict.metric(name)
        if (got.n_a, got.n_b) != (test.n_a, test.n_b):
            bad.append(f"{name}: n {got.n_a}/{got.n_b} vs {test.n_a}/{test.n_b}")
        p = float(sps.norm.sf(test.statistic)) if got.role == "guardrail" else test.p_value
        for what, a, b in (
            ("difference", got.difference, test.estimate),
            ("ci_low", got.ci_low, test.ci_low),
            ("ci_high", got.ci_high, test.ci_high),
            ("p", got.p_value, p),
        ):
            if not _close(a, b):
                bad.append(f"{name}: {what} {a!r} vs {b!r}")
    assert verdict.mann_whitney is not None and base.data.mann_whitney is not None
    for what, a, b in zip(("U", "p"), verdict.mann_whitney, base.data.mann_whitney, strict=True):
        if not _close(a, b):
            bad.append(f"Mann-Whitney {what}: {a!r} vs {b!r}")
    if verdict.srm is None or base.srm is None:
        bad.append(f"sample ratio check: {verdict.srm} vs {base.srm}")
    elif not (
        _close(verdict.srm.statistic, base.srm.statistic)
        and verdict.srm.observed == base.srm.observed
    ):
        bad.append(f"sample ratio check: {verdict.srm.statistic} vs {base.srm.statistic}")
    return bad


# -- the run ---------------------------------------------------------------------------


ANALYZE_PATH = (
    '`analyze(client, settings, "bench", record=False)`: all in SQL, the per-user rollups '
    "brought up to date, then read"
)
BASE_PATH = "raw rows via `query_arrow` into pandas, the same numbers in pandas/numpy/scipy"


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-analytics-", ignore_cleanup_errors=True) as home:
        run(isolated_settings(Path(home)))


def _per_query(times: list[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for name, seconds in times:
        out[name] += seconds
    return out


def _query_table(per_query: dict[str, float], total: float) -> str:
    return "\n".join(
        f"| {name} | {s:.2f} | {s / total:.0%} |"
        for name, s in sorted(per_query.items(), key=lambda kv: -kv[1])
        if s >= 0.005
    )


def _checked(verdict: Verdict, base: Baseline) -> None:
    bad = compare(verdict, base)
    assert not bad, "the baseline disagrees with analyze:\n" + "\n".join(bad)


def _looks(client: Any, settings: Settings) -> tuple[list[float], dict[str, float], Verdict]:
    """ROUNDS looks: their times, the queries of the median one, the last verdict."""
    runs = [analyze_run(client, settings) for _ in range(ROUNDS)]
    seconds = [r[0] for r in runs]
    return seconds, _per_query(runs[_median_index(seconds)][2]), runs[-1][1]


def _median_index(seconds: list[float]) -> int:
    """Which run took the median time (the lower one of an even count)."""
    return sorted(range(len(seconds)), key=lambda i: seconds[i])[(len(seconds) - 1) // 2]


def run(settings: Settings) -> None:
    client = embedded_client(settings, settings.clickhouse_database)
    migrate(client, settings.clickhouse_database)
    started = time.perf_counter()
    users = max(EVENTS // int(2 * RESPONSES_PER_USER), 100)
    rows = load(client, users)
    record_model_event(client, EXPERIMENT, "SPLIT_CHANGED", START - timedelta(hours=1))
    load_s = time.perf_counter() - started
    events = rows["interactions"] + rows["scores"]
    parts_loaded = active_parts(client)
    log(f"loaded {events:,} events in {load_s:.0f} s; active parts {parts_loaded}")
    waited = quiet_merges(client)
    parts = active_parts(client)
    log(f"background merges quiet after {waited:.0f} s more; active parts {parts}")

    log("first look: analyze builds the per-user rollups whole")
    first_s, verdict, first_times = analyze_run(client, settings)
    log(f"first look {first_s:.2f} s; warm-up: baseline")
    _checked(verdict, baseline_run(client, settings))
    log("the two paths agree (1e-6 relative)")

    analyze_s: list[float] = []
    queries: list[dict[str, float]] = []
    bases: list[Baseline] = []
    for n in range(ROUNDS):
        seconds, verdict, times = analyze_run(client, settings)
        analyze_s.append(seconds)
        queries.append(_per_query(times))
        bases.append(baseline_run(client, settings))
        b = bases[-1]
        log(
            f"round {n + 1}: analyze {seconds:.2f} s; baseline {b.seconds:.2f} s = "
            f"{b.transfer_s:.2f} query_arrow + {b.to_pandas_s:.2f} to_pandas + "
            f"{b.compute_s:.2f} pandas/numpy/scipy"
        )
        _checked(verdict, b)

    late_users = max(users // 100, 1)
    log(f"new traffic: {late_users:,} more users, inserted now")
    late = load(client, late_users, "late-", seed=2, as_they_happened=False)
    late_events = late["interactions"] + late["scores"]
    quiet_merges(client)
    late_s, late_queries, late_verdict = _looks(client, settings)
    log(f"looks after the new traffic: {_runs(late_s)} s; baseline over all of it")
    late_base = baseline_run(client, settings)
    _checked(late_verdict, late_base)
    parts_after = active_parts(client)

    analyze_med = median(analyze_s)
    base_med = median([b.seconds for b in bases])
    late_med = median(late_s)
    transfer, to_pandas, compute = (
        median([getattr(b, f) for b in bases]) for f in ("transfer_s", "to_pandas_s", "compute_s")
    )
    ratio, late_ratio, first_ratio = (
        base_med / analyze_med,
        late_base.seconds / late_med,
        base_med / first_s,
    )
    middle = _median_index(analyze_s)
    query_med = queries[middle]
    verdict_line = f"{verdict.decision}: {verdict.reason}"
    parts_line = ", ".join(
        f"`{t}` {p} ({r:,} rows)" for t, (p, r) in sorted(parts.items()) if t != "first_exposures"
    )
    loaded_line = ", ".join(
        f"`{t}` {p}" for t, (p, _) in sorted(parts_loaded.items()) if t != "first_exposures"
    )
    target = "meets" if min(ratio, late_ratio) >= 20 else "misses"
    looks_rows = "\n".join(
        f"| {what} | {a} | {runs} | {b:.2f} | {r} |"
        for what, a, runs, b, r in (
            (
                "the next look: no user changed since the last build",
                f"{analyze_med:.2f}",
                _runs(analyze_s),
                base_med,
                f"**{ratio:.1f}x**",
            ),
            (
                f"after new traffic: {late_users:,} more users ({late_events:,} events) "
                "inserted now, recomputed at each look",
                f"{late_med:.2f}",
                _runs(late_s),
                late_base.seconds,
                f"**{late_ratio:.1f}x**",
            ),
            (
                "the first look: builds the rollups from the event tables whole",
                f"{first_s:.2f}",
                "one",
                base_med,
                f"{first_ratio:.1f}x",
            ),
        )
    )
    body = f"""
{events:,} events of one simulated experiment ({rows["interactions"]:,} interactions and as
many scores, {rows["exposures"]:,} users with one exposure each, arm B's implicit score
+0.05) loaded into chDB opened in the benchmark process, in inserts of {CHUNK_ROWS:,} rows
({load_s:.0f} s with the simulation), each event stamped as inserted at its own time (the
experiment ran for days before these looks). No OPTIMIZE: read as loaded once background
merges went quiet; active parts then: {parts_line} (right after the inserts: {loaded_line}).
The verdict: {verdict_line}.

| look | `analyze` s (median) | runs | baseline s (median) | ratio |
|---|---|---|---|---|
{looks_rows}

`analyze`: {ANALYZE_PATH}; the baseline: {BASE_PATH}. {ROUNDS} rounds of each, the
next looks alternating with the baseline; the looks after new traffic one after another, then
one baseline over all the data. Target at least 20x: it {target} it, for the looks the loop
makes once the rollups exist (the first look of an experiment builds them, at
{first_ratio:.1f}x).

The baseline's time (medians): {transfer:.2f} s moving {bases[-1].transfer_mb:,.0f} MB of Arrow
out of chDB (`query_arrow`), {to_pandas:.2f} s in `to_pandas`, {compute:.2f} s computing
(dropping duplicates as `FINAL` does, the per-user and per-session group-bys, exact
quantiles, the tests, scipy's Mann-Whitney U). Both paths agree after every look: users,
responses, sessions, DAU, tokens/s and the latency p50/p95/p99 per arm (exact quantiles,
interpolated as numpy does), and the difference, interval and p-value of the six ratio
metrics, of the latency guardrail and of the session test, Mann-Whitney U and p, and the
sample ratio check, to 1e-6 relative.

Where the next look's time goes (each statement of the run with the median total,
{analyze_s[middle]:.2f} s; the rest is Python and the tests):

| statement (table read) | median s | share |
|---|---|---|
{_query_table(query_med, analyze_med)}

And a look after the new traffic (the median one):

| statement (table read) | s | share |
|---|---|---|
{_query_table(late_queries, late_med)}

And the first look, {first_s:.2f} s:

| statement (table read) | s | share |
|---|---|---|
{_query_table(_per_query(first_times), first_s)}

A shared 2-core machine: chDB runs each query on both cores, so the times move with
whatever else runs; read the medians and the ratios.
"""
    title = f"Analytics: ab analyze over {events / 1e6:.0f} M events of {rows['exposures']:,} users"
    write_section(f"{title} vs pandas", body)
    print(body)
    log(f"active parts after the runs: {parts_after}")


if __name__ == "__main__":
    main()
