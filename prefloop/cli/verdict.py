"""The verdict on an experiment: `ab analyze` prints it, `ab watch` acts on it."""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime

import click
from rich import box
from rich.table import Table

from prefloop.cli import _settings, console
from prefloop.cli.serving import ab
from prefloop.errors import PrefloopError, first_line


def _time(value: str | None, name: str) -> datetime | None:
    from prefloop.analytics.export import parse_time

    return None if value is None else parse_time(value, name)


@ab.command("analyze")
@click.option("--experiment", required=True, help="The experiment id (`prefloop ab status`).")
@click.option("--start", default=None, help="Only data from this time on (YYYY-MM-DD or ISO 8601).")
@click.option("--end", default=None, help="Only data before this time (YYYY-MM-DD or ISO 8601).")
@click.option("--split", type=click.FloatRange(0, 100, min_open=True, max_open=True),
              default=None, help="Percent on B to check the exposures against "
              "(default: the split history the router recorded).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@click.option(
    "--record",
    is_flag=True,
    help="Record this look in `verdicts`, as the automatic loop does: later looks then read "
    "its always-valid p-values (for looks over all the data). A look is recorded once each "
    "arm has PREFLOOP_AB_MIN_USERS users; the first recorded one fixes the sequential test's "
    "prior and the latency threshold.",
)
@click.option(
    "--cuped",
    is_flag=True,
    help="Add the implicit score adjusted by each user's pre-experiment score (CUPED).",
)
@click.pass_context
def ab_analyze(
    ctx: click.Context,
    experiment: str,
    start: str | None,
    end: str | None,
    split: float | None,
    as_json: bool,
    record: bool,
    cuped: bool,
) -> None:
    """The verdict on an experiment: per metric both arms, the lift and its interval,
    fixed-horizon and always-valid p-values, the sample ratio check and a decision
    (PROMOTE, ROLLBACK or CONTINUE)."""
    from prefloop.analytics.verdict import analyze
    from prefloop.clickhouse.client import connect

    settings = _settings(ctx)
    verdict = analyze(
        connect(settings),
        settings,
        experiment,
        start=_time(start, "--start"),
        end=_time(end, "--end"),
        split=split,
        record=record,
        cuped=cuped,
    )
    if as_json:
        click.echo(json.dumps(verdict.to_json(), indent=2, default=str))
        return
    print_verdict(verdict)


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


def _called(metric: object) -> str:
    from prefloop.analytics.verdict import MetricResult

    assert isinstance(metric, MetricResult)
    if metric.direction == 0:
        return ""
    if metric.role == "guardrail":
        return "[bold]B worse[/bold]"
    return "[bold]B higher[/bold]" if metric.direction > 0 else "[bold]B lower[/bold]"


def print_verdict(verdict: object) -> None:
    """The verdict as tables: the arms, the metrics, the checks and the decision."""
    from prefloop.analytics.verdict import Verdict

    assert isinstance(verdict, Verdict)
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


@ab.command("watch")
@click.option("--once", is_flag=True, help="Look once and exit.")
@click.pass_context
def ab_watch(ctx: click.Context, once: bool) -> None:
    """The automatic loop: look at the running experiment every ab_verdict_interval_s
    seconds; promote or roll back on the verdict."""
    from prefloop.autopilot import look_once, watch

    settings = _settings(ctx)
    if once:
        try:
            look = look_once(settings)
        except PrefloopError:
            raise
        except Exception as exc:  # Ray or Serve away: one sentence, not a traceback
            raise PrefloopError(f"the look failed: {first_line(exc)}") from exc
        console.print(f"watch: {look.acted or 'no action'}: {look.note}")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    watch(settings)
