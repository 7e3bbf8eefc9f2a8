"""The verdict on an experiment: `ab analyze` prints it, `ab watch` acts on it."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import click

from prefloop.errors import PrefloopError, first_line
from prefloop.loop.cli.base import console, settings_of
from prefloop.loop.cli.serving import ab


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

    settings = settings_of(ctx)
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
    from prefloop.analytics.report import print_verdict

    print_verdict(verdict, console)


@ab.command("watch")
@click.option("--once", is_flag=True, help="Look once and exit.")
@click.pass_context
def ab_watch(ctx: click.Context, once: bool) -> None:
    """The automatic loop: look at the running experiment every ab_verdict_interval_s
    seconds; promote or roll back on the verdict."""
    from prefloop.loop.autopilot import look_once, watch

    settings = settings_of(ctx)
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
