"""A verdict for people: the tables ``prefloop ab analyze`` and the demo print."""

from __future__ import annotations

import math

from rich import box
from rich.console import Console
from rich.table import Table

from prefloop.analytics.verdict import MetricResult, Verdict

__all__ = ["print_verdict"]


def _p(value: float) -> str:
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _interval(low: float | None, high: float | None, percent: bool = False) -> str:
    if low is None or high is None:
        return ""

    def show(v: float) -> str:
        if not math.isfinite(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:+.1%}" if percent else f"{v:+.3g}"

    return f"[{show(low)}, {show(high)}]"


def _called(metric: MetricResult) -> str:
    if metric.direction == 0:
        return ""
    if metric.role == "guardrail":
        return "[bold]B worse[/bold]"
    return "[bold]B higher[/bold]" if metric.direction > 0 else "[bold]B lower[/bold]"


def print_verdict(verdict: Verdict, console: Console) -> None:
    """The verdict as tables on ``console``: the arms, the metrics, the checks and the decision."""
    arms = Table(
        title=f"experiment {verdict.experiment_id}: arms", title_justify="left", box=box.SIMPLE_HEAD
    )
    for column in (
        "arm",
        "version",
        "users",
        "responses",
        "latency p50/p95/p99 ms",
        "DAU",
        "tokens/s",
    ):
        arms.add_column(column, justify="left" if column in ("arm", "version") else "right")
    for name, arm in sorted(verdict.arms.items()):
        arms.add_row(
            name,
            arm.model_version,
            f"{arm.users:,}",
            f"{arm.responses:,}",
            " / ".join(f"{v:.0f}" for v in arm.latency_ms),
            f"{arm.daily_active_users:,.1f}",
            f"{arm.tokens_per_second:,.1f}",
        )
    console.print(arms)
    metrics = Table(
        title="metrics: B against A (* primary, ! guardrail: one-sided, B worse)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("metric", "A", "B", "lift [CI]", "p", "p Holm", "p always-valid", ""):
        metrics.add_column(column, justify="left" if column == "metric" else "right")
    for m in verdict.metrics:
        mark = {"primary": " *", "guardrail": " !"}.get(m.role, "")
        lift = "" if m.lift is None else f"{m.lift:+.1%} {_interval(m.lift_low, m.lift_high, True)}"
        metrics.add_row(
            m.name + mark,
            f"{m.value_a:.4g}",
            f"{m.value_b:.4g}",
            lift,
            _p(m.p_value),
            _p(m.p_holm),
            _p(m.p_sequential),
            _called(m),
        )
    console.print(metrics)
    if verdict.latency_threshold_ms is not None:
        fixed = "at the first recorded look" if verdict.looks else "in this data"
        console.print(
            f"latency_p99: the share of requests slower than "
            f"{verdict.latency_threshold_ms:,.0f} ms (arm A's p99 {fixed})"
        )
    console.print(f"sample ratio: {verdict.srm.reason if verdict.srm else verdict.srm_note}")
    if verdict.mann_whitney is not None:
        u, p = verdict.mann_whitney
        console.print(f"Mann–Whitney U on each user's mean implicit score: U={u:,.0f}, p={_p(p)}")
    for note in verdict.notes:
        console.print(f"note: {note}")
    colour = {"PROMOTE": "green", "ROLLBACK": "red"}.get(verdict.decision, "yellow")
    console.print(
        f"[bold {colour}]{verdict.decision}[/bold {colour}]: {verdict.reason} "
        f"({verdict.looks} look(s) recorded)"
    )
