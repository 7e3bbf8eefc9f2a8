"""The verdict on an experiment: PROMOTE, ROLLBACK or CONTINUE, and the numbers behind it.

Arm A is the current version, arm B the candidate. Every metric is tested twice:

- fixed-horizon (valid if looked at once, at a planned sample size): the z test of
  the delta method for ratio metrics (session duration too: seconds per session,
  clustered by user), Welch's t for CUPED's per-user means, one-sided
  for guardrails, Holm-adjusted over the whole family;
- sequentially (valid at every look): the mixture SPRT's always-valid p-value, the
  running minimum over the looks recorded in ``verdicts`` since the experiment was
  (last) started, kept per direction of the estimate: a look where B was higher is
  no evidence that B is lower.

The decision reads only the sequential p-values, since the automatic loop looks
every minute:

1. a sample ratio mismatch (exposures against the split the router recorded) makes
   every result suspect: CONTINUE, and say so;
2. fewer than ``ab_min_users`` users in an arm: CONTINUE;
3. a guardrail significantly worse (regenerate rate, report rate, share of requests
   slower than arm A's p99; Holm over the guardrails): ROLLBACK;
4. the primary metric significantly better: PROMOTE; significantly worse: ROLLBACK;
5. otherwise CONTINUE.

The sequential test's mixture prior is tuned for an effect of ``ab_effect_size``
standard deviations of the metric per user (τ = effect × the per-user standard
deviation in arm A). A look is recorded only once each arm has ``ab_min_users``
users, and the first recorded look fixes what the later ones must not change: each
metric's τ² (one mixture for the whole experiment, as the always-valid guarantee
assumes) and the latency threshold of the p99 guardrail (arm A's p99 then).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError
from scipy.stats import chi2, norm
from scipy.stats import t as student_t

from prefloop.analytics.exceptions import AnalysisError, StatsError
from prefloop.analytics.metrics import (
    FAR_FUTURE,
    RATIO_METRICS,
    ArmSummary,
    ExperimentData,
    cuped_moments,
    experiment_data,
    known_experiments,
)
from prefloop.analytics.stats import (
    JointMoments,
    Moments,
    SrmResult,
    TestResult,
    holm,
    msprt_from_estimate,
    ratio_delta,
    ratio_estimate,
    ratio_lift,
    relative_lift,
    srm_check,
    welch_t,
)
from prefloop.analytics.stats import cuped as stats_cuped
from prefloop.errors import ClickHouseError, first_line
from prefloop.settings import Settings

__all__ = [
    "AnalysisError",
    "Compared",
    "MetricResult",
    "Verdict",
    "analyze",
    "compare_ratio",
    "prior_tau2",
    "sequential_p",
    "split_history",
]

PROMOTE, ROLLBACK, CONTINUE = "PROMOTE", "ROLLBACK", "CONTINUE"
GUARDRAILS = ("regenerate_rate", "report_rate", "latency_p99")  # higher is worse
CUPED_METRIC = "implicit_score_cuped"
SRM_THRESHOLD = 0.001
# Users first exposed this soon after a change of split are left out of the sample
# ratio check: the router's replicas take a change within about a second of each
# other, and a user assigned meanwhile by the old split is not a mismatch.
SRM_GRACE = timedelta(seconds=60)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class MetricResult:
    """One metric of the verdict: both arms, B − A, the lift and the three p-values."""

    name: str
    role: str  # primary, guardrail or secondary
    unit: str  # what n counts: users
    n_a: int
    n_b: int
    value_a: float
    value_b: float
    difference: float
    ci_low: float
    ci_high: float
    lift: float | None
    lift_low: float | None
    lift_high: float | None
    p_value: float  # fixed horizon (one-sided for guardrails: B worse)
    p_holm: float
    p_sequential: float  # always valid: the smaller of the two below
    p_higher: float  # always valid, over the looks where B − A > 0 (running minimum)
    p_lower: float  # the same where B − A < 0
    direction: int  # +1 B significantly higher, -1 lower, 0 neither (Holm for guardrails)

    @property
    def significant(self) -> bool:
        return self.direction != 0


@dataclass
class Verdict:
    experiment_id: str
    decision: str
    reason: str
    arms: dict[str, ArmSummary]
    metrics: list[MetricResult]
    srm: SrmResult | None
    srm_note: str
    mann_whitney: tuple[float, float] | None
    looks: int
    latency_threshold_ms: float | None = None  # the p99 guardrail's: slower than this
    moved_users: int = 0  # with data in both arms, left out of every metric
    notes: list[str] = field(default_factory=list)

    def metric(self, name: str) -> MetricResult:
        return next(m for m in self.metrics if m.name == name)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["srm"] = None if self.srm is None else asdict(self.srm)
        return _finite_json(out)


def _finite_json(value: Any) -> Any:
    """JSON has no inf or nan: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    return value


# -- the inputs ------------------------------------------------------------------------


def split_history(client: Client, experiment_id: str) -> list[tuple[datetime, float]]:
    """(time, percent on arm B) of every routing change the router recorded."""
    rows = client.query(
        "SELECT ts, metrics['split'] FROM model_events FINAL "
        "WHERE experiment_id = {experiment:String} AND mapContains(metrics, 'split') "
        "ORDER BY ts",
        parameters={"experiment": experiment_id},
    ).result_rows
    return [(ts, float(split)) for ts, split in rows]


def _srm(client: Client, experiment_id: str, split: float | None) -> tuple[SrmResult | None, str]:
    """The sample ratio check of users' first exposures, per split period."""
    history = [(_EPOCH, split)] if split is not None else split_history(client, experiment_id)
    if not history:
        return None, "no split recorded for this experiment: give --split to check the ratio"
    bounds = [ts for ts, _ in history]
    rows = client.query(
        """
        SELECT if(arrayExists(b -> first_seen >= b
                                   AND first_seen < addMilliseconds(b, {grace_ms:Int64}),
                              arrayPopFront({bounds:Array(DateTime64(3))})),
                  -1, toInt64(arrayCount(b -> b <= first_seen, {bounds:Array(DateTime64(3))})))
                   AS period,
               first_arm, count() AS users
        FROM (SELECT user_id, argMin(arm, first_ts) AS first_arm, min(first_ts) AS first_seen
              FROM first_exposures FINAL WHERE experiment_id = {experiment:String}
              GROUP BY user_id)
        GROUP BY period, first_arm
        """,
        parameters={
            "experiment": experiment_id,
            "bounds": bounds,
            "grace_ms": SRM_GRACE // timedelta(milliseconds=1),
        },
    ).result_rows
    periods: dict[int, dict[str, int]] = {}
    in_grace = 0
    for period, arm, users in rows:
        if period == -1:
            in_grace += int(users)
        elif period > 0 and arm in ("A", "B"):
            periods.setdefault(int(period), {"A": 0, "B": 0})[arm] = int(users)
    checks = []
    for period, counts in sorted(periods.items()):
        share_b = history[period - 1][1] / 100
        if 0 < share_b < 1 and sum(counts.values()) > 0:
            checks.append(srm_check(counts, {"A": 1 - share_b, "B": share_b}, SRM_THRESHOLD))
    if not checks:
        return None, "no exposures while both arms had a share: nothing to check yet"
    statistic = math.fsum(c.statistic for c in checks)
    df = sum(c.df for c in checks)
    p = float(chi2.sf(statistic, df)) if df else 1.0
    observed = {arm: sum(c.observed[arm] for c in checks) for arm in ("A", "B")}
    expected = {arm: math.fsum(c.expected[arm] for c in checks) for arm in ("A", "B")}
    flagged = p < SRM_THRESHOLD
    what = "sample ratio mismatch" if flagged else "the exposures match the split"
    reason = (
        f"{what}: chi-square {statistic:.4g} on {df} df over {len(checks)} split period(s), "
        f"p={p:.3g}"
    )
    if in_grace:
        reason += (
            f" ({in_grace} user(s) first seen within {SRM_GRACE.total_seconds():g} s of a "
            "change of split left out)"
        )
    return SrmResult(statistic, df, p, SRM_THRESHOLD, flagged, observed, expected, reason), ""


Directions = tuple[float | None, float | None]  # running minimum with B − A > 0, and < 0


def _run_start(client: Client, experiment_id: str) -> datetime | None:
    """When the experiment id was last started (AB_STARTED), if the router recorded it:
    a run restarted under the same id does not inherit the earlier run's data or looks."""
    (started,) = client.query(
        "SELECT maxOrNull(ts) FROM model_events FINAL "
        "WHERE experiment_id = {experiment:String} AND kind = 'AB_STARTED'",
        parameters={"experiment": experiment_id},
    ).result_rows[0]
    return None if started is None else started.replace(tzinfo=started.tzinfo or UTC)


@dataclass(frozen=True)
class History:
    """What the looks recorded since the experiment's start leave to the next one."""

    running: dict[str, Directions]  # per metric: the running minimum in each direction
    tau2: dict[str, float]  # per metric: the mixture's τ², fixed at its first recorded look
    threshold_ms: float | None  # the latency threshold, fixed at the first recorded look
    looks: int


def _history(client: Client, experiment_id: str, since: datetime) -> History:
    """Each metric's running minimum of the sequential p-value in each direction of the
    estimate (evidence that B is higher is not evidence that it is lower) over the looks
    since ``since``, what the first of them fixed, and the number of looks."""
    result = client.query(
        "SELECT metric, minIfOrNull(p_sequential, estimate > 0), "
        "minIfOrNull(p_sequential, estimate < 0), uniqExact(ts), "
        "argMinIf(tau2, ts, tau2 > 0), argMinIf(threshold, ts, threshold IS NOT NULL) "
        "FROM verdicts "
        "WHERE experiment_id = {experiment:String} AND ts >= {since:DateTime64(3)} "
        "GROUP BY metric",
        parameters={"experiment": experiment_id, "since": since},
    ).result_rows
    return History(
        running={str(m): (_or_none(up), _or_none(down)) for m, up, down, *_ in result},
        tau2={str(row[0]): float(row[4]) for row in result if row[4]},
        threshold_ms=next((float(row[5]) for row in result if row[5] is not None), None),
        looks=max((int(row[3]) for row in result), default=0),
    )


def _or_none(value: Any) -> float | None:
    return None if value is None else float(value)


# -- the tests -------------------------------------------------------------------------


@dataclass(frozen=True)
class Compared:
    """One metric compared: both arms' values, B − A, the lift and arm A's variance per unit."""

    value_a: float
    value_b: float
    unit: str
    difference: TestResult
    lift: TestResult | None
    variance_a_per_unit: float


def compare_ratio(a: JointMoments, b: JointMoments, level: float) -> Compared:
    """Arm B against arm A on a ratio metric clustered by user."""
    ratio_a, var_a = ratio_estimate(a, "A")
    ratio_b, _ = ratio_estimate(b, "B")
    try:
        lift: TestResult | None = ratio_lift(a, b, level)
    except StatsError:
        lift = None
    return Compared(ratio_a, ratio_b, "users", ratio_delta(a, b, level), lift, var_a * a.n)


def _means(a: Moments, b: Moments, level: float) -> Compared:
    try:
        lift: TestResult | None = relative_lift(a, b, level)
    except StatsError:
        lift = None
    return Compared(a.mean, b.mean, "users", welch_t(a, b, level), lift, a.variance)


def _test_all(data: ExperimentData, level: float) -> tuple[dict[str, Compared], list[str]]:
    tested: dict[str, Compared] = {}
    notes = []
    for name in (*RATIO_METRICS, "latency_p99", "session_seconds"):
        arms = data.ratios.get(name, {})
        if {"A", "B"} <= set(arms):
            try:
                tested[name] = compare_ratio(arms["A"], arms["B"], level)
            except StatsError as exc:
                notes.append(f"{name}: not tested ({exc})")
    return tested, notes


# -- the verdict -----------------------------------------------------------------------


def analyze(
    client: Client,
    settings: Settings,
    experiment_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    split: float | None = None,
    record: bool = False,
    cuped: bool = False,
) -> Verdict:
    """The verdict on ``experiment_id`` from its data in [start, end) (default: all).

    ``split`` (percent on B) overrides the split history for the ratio check.
    ``record`` stores this look in ``verdicts``, where the next looks read their running
    minimum: the automatic loop records its looks over all the data; a look at a
    window or against an overridden split should not count. A look is recorded only
    once each arm has ``ab_min_users`` users and the sample ratio check passes.
    ``cuped`` adds ``implicit_score_cuped``: each user's mean implicit score adjusted
    by their mean before the experiment (Welch's t on the adjusted per-user means; a
    second view of the primary metric with less variance, reported, not in the
    decision or the Holm family).
    """
    try:
        return _analyze(client, settings, experiment_id, start, end, split, record, cuped)
    except DriverError as exc:
        raise ClickHouseError(
            f"ClickHouse refused a query of the verdict ({first_line(exc)}): check that the "
            "store is up and migrated (`prefloop migrate`)"
        ) from exc


def _analyze(
    client: Client,
    settings: Settings,
    experiment_id: str,
    start: datetime | None,
    end: datetime | None,
    split: float | None,
    record: bool,
    cuped: bool,
) -> Verdict:
    if not experiment_id:
        raise AnalysisError("no experiment given: name one with --experiment")
    begun = _run_start(client, experiment_id)
    whole_run = start is None and end is None
    start, end = start or begun or _EPOCH, end or FAR_FUTURE
    if end <= start:
        raise AnalysisError(
            f"the end {end:%Y-%m-%d %H:%M} is not after the start {start:%Y-%m-%d %H:%M}"
        )
    history = _history(client, experiment_id, begun or _EPOCH)
    data = experiment_data(
        client, experiment_id, start, None if whole_run else end, history.threshold_ms
    )
    _check_arms(client, experiment_id, data)
    alpha = settings.ab_alpha
    tested, notes = _test_all(data, 1 - alpha)
    if settings.ab_primary_metric not in tested:
        raise AnalysisError(
            f"the primary metric {settings.ab_primary_metric} of experiment {experiment_id} "
            f"cannot be tested yet ({'; '.join(notes) or 'no scored responses in an arm'}): "
            "wait for the stream worker to score more responses"
        )
    fixed = {name: _fixed_p(name, t.difference) for name, t in tested.items()}
    adjusted = {name: h.adjusted_p for name, h in holm(fixed, alpha).items()}
    if cuped:
        adjusted_by_cuped = _cuped(client, experiment_id, start, end, 1 - alpha, notes)
        if adjusted_by_cuped is not None:
            tested[CUPED_METRIC] = adjusted_by_cuped
            fixed[CUPED_METRIC] = adjusted[CUPED_METRIC] = adjusted_by_cuped.difference.p_value
    tau2 = {
        name: history.tau2.get(name) or prior_tau2(t, settings.ab_effect_size)
        for name, t in tested.items()
    }
    directions = {
        name: _running(t, tau2[name], history.running.get(name, (None, None)))
        for name, t in tested.items()
    }
    guard = {name: directions[name][0] for name in GUARDRAILS if name in tested}  # B higher
    guard_holm = holm(guard, alpha) if guard else {}
    metrics = []
    for name, t in tested.items():
        role = (
            "primary"
            if name == settings.ab_primary_metric
            else "guardrail"
            if name in GUARDRAILS
            else "secondary"
        )
        up, down = directions[name]
        if name in guard_holm:
            direction = 1 if guard_holm[name].reject else 0
        else:
            direction = (up < alpha) - (down < alpha)  # both: contradictory looks, no call
        d, lift = t.difference, t.lift
        metrics.append(
            MetricResult(
                name=name,
                role=role,
                unit=t.unit,
                n_a=d.n_a,
                n_b=d.n_b,
                value_a=t.value_a,
                value_b=t.value_b,
                difference=d.estimate,
                ci_low=d.ci_low,
                ci_high=d.ci_high,
                lift=None if lift is None else lift.estimate,
                lift_low=None if lift is None else lift.ci_low,
                lift_high=None if lift is None else lift.ci_high,
                p_value=fixed[name],
                p_holm=adjusted[name],
                p_sequential=min(up, down),
                p_higher=up,
                p_lower=down,
                direction=direction,
            )
        )
    srm, srm_note = _srm(client, experiment_id, split)
    decision, reason = _decide(settings, data, metrics, srm)
    enough = min(data.arms[arm].users for arm in ("A", "B")) >= settings.ab_min_users
    record = record and enough and not (srm is not None and srm.flagged)
    if data.moved_users:
        notes.append(
            f"{data.moved_users} user(s) with data in both arms (a change of split moved "
            "them) are left out of every metric"
        )
    verdict = Verdict(
        experiment_id=experiment_id,
        decision=decision,
        reason=reason,
        arms=data.arms,
        metrics=metrics,
        srm=srm,
        srm_note=srm_note,
        mann_whitney=data.mann_whitney,
        looks=history.looks + 1 if record else history.looks,
        latency_threshold_ms=data.latency_threshold_ms,
        moved_users=data.moved_users,
        notes=notes,
    )
    if record:
        _record(client, verdict, tau2)
    return verdict


def _cuped(
    client: Client,
    experiment_id: str,
    start: datetime,
    end: datetime,
    level: float,
    notes: list[str],
) -> Compared | None:
    arms = cuped_moments(client, experiment_id, start, end)
    if set(arms) != {"A", "B"}:
        notes.append(f"{CUPED_METRIC}: no pre-period scores of these users, so no CUPED")
        return None
    try:
        adjusted = stats_cuped(arms["A"], arms["B"])
        return _means(adjusted.a, adjusted.b, level)
    except StatsError as exc:
        notes.append(f"{CUPED_METRIC}: not tested ({exc})")
        return None


def _check_arms(client: Client, experiment_id: str, data: ExperimentData) -> None:
    if not data.arms:
        known = known_experiments(client)
        if experiment_id not in known:
            listed = ", ".join(known[:10]) if known else "none yet"
            raise AnalysisError(
                f"experiment {experiment_id!r} is unknown: experiments with data are {listed}"
            )
        raise AnalysisError(
            f"experiment {experiment_id!r} has no interactions in the period asked: "
            "widen --start/--end"
        )
    for arm in ("A", "B"):
        if arm not in data.arms:
            raise AnalysisError(
                f"arm {arm} of experiment {experiment_id!r} has no interactions yet: wait for "
                "traffic on it, or check the split (`prefloop ab status`)"
            )


def _fixed_p(name: str, difference: TestResult) -> float:
    """Two-sided, or one-sided in the worse direction (higher) for a guardrail."""
    if name not in GUARDRAILS:
        return difference.p_value
    if difference.df == math.inf:
        return float(norm.sf(difference.statistic))
    return float(student_t.sf(difference.statistic, difference.df))


def prior_tau2(t: Compared, effect: float) -> float:
    """The mixture's variance for an effect of ``effect`` per-user standard deviations of
    arm A: what the first recorded look fixes for the experiment."""
    return effect**2 * max(t.variance_a_per_unit, 1e-12)


def sequential_p(t: Compared, tau2: float, previous: float | None) -> float:
    """The always-valid p-value after this look: the mSPRT's, or the earlier looks' minimum."""
    p = msprt_from_estimate(t.difference.estimate, t.difference.se**2, tau2).p_value
    return p if previous is None else min(previous, p)


def _running(t: Compared, tau2: float, previous: Directions) -> tuple[float, float]:
    """(p with B higher, p with B lower): this look updates the direction of its estimate."""
    up, down = previous
    estimate = t.difference.estimate
    if estimate > 0:
        up = sequential_p(t, tau2, up)
    elif estimate < 0:
        down = sequential_p(t, tau2, down)
    return (1.0 if up is None else up), (1.0 if down is None else down)


def _decide(
    settings: Settings, data: ExperimentData, metrics: list[MetricResult], srm: SrmResult | None
) -> tuple[str, str]:
    users = {arm: data.arms[arm].users for arm in ("A", "B")}
    if srm is not None and srm.flagged:
        return CONTINUE, f"{srm.reason}: the assignment or its logging is broken; fix it first"
    if min(users.values()) < settings.ab_min_users:
        return CONTINUE, (
            f"each arm needs {settings.ab_min_users} users (A has {users['A']}, B has {users['B']})"
        )
    worse = [m for m in metrics if m.role == "guardrail" and m.direction > 0]
    if worse:
        named = ", ".join(f"{m.name} ({m.value_a:.4g} -> {m.value_b:.4g})" for m in worse)
        return ROLLBACK, f"guardrail significantly worse: {named}"
    primary = next(m for m in metrics if m.role == "primary")
    p = f"always-valid p={primary.p_sequential:.3g}"
    if primary.direction > 0:
        return (
            PROMOTE,
            f"{primary.name} better ({primary.value_a:.4g} -> {primary.value_b:.4g}, {p})",
        )
    if primary.direction < 0:
        return (
            ROLLBACK,
            f"{primary.name} worse ({primary.value_a:.4g} -> {primary.value_b:.4g}, {p})",
        )
    return CONTINUE, f"{primary.name} not significant yet ({p})"


def _record(client: Client, verdict: Verdict, tau2: dict[str, float]) -> None:
    now = datetime.now(UTC)
    users_a, users_b = verdict.arms["A"].users, verdict.arms["B"].users
    rows = [
        [
            verdict.experiment_id,
            now,
            m.name,
            m.difference,
            m.p_value,
            m.p_higher if m.difference > 0 else m.p_lower,
            users_a,
            users_b,
            verdict.decision,
            verdict.reason,
            tau2[m.name],
            verdict.latency_threshold_ms if m.name == "latency_p99" else None,
        ]
        for m in verdict.metrics
    ]
    client.insert(
        "verdicts",
        rows,
        column_names=[
            "experiment_id",
            "ts",
            "metric",
            "estimate",
            "p_value",
            "p_sequential",
            "users_a",
            "users_b",
            "decision",
            "reason",
            "tau2",
            "threshold",
        ],
    )
