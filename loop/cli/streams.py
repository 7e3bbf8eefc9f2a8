"""The stream agents: `worker` runs them, `sample` is their weekly offline script."""

from __future__ import annotations

import click

from prefloop.loop.cli.base import cli, console, settings_of


@cli.command()
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="An export of interactions, one JSON object per line.",
)
@click.option(
    "--count",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Tasks to sample: the top 70 % by priority, 30 % uniformly from the rest.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the annotation tasks (JSON lines).",
)
def sample(input_path: str, count: int, out_path: str) -> None:
    """Sample interactions for annotation offline (the weekly script)."""
    import time

    from prefloop.streams.offline import sample_file

    report = sample_file(input_path, count, out_path, now=int(time.time() * 1000))
    console.print(
        f"sample: {report.tasks} tasks from {report.lines} interactions "
        f"({report.top_priority} by priority, {report.uniform} uniform) -> {report.out}"
    )


@cli.command()
@click.option(
    "--loglevel",
    type=click.Choice(["crit", "error", "warn", "info", "debug"]),
    default="warn",
    show_default=True,
    help="How much the worker logs.",
)
@click.pass_context
def worker(ctx: click.Context, loglevel: str) -> None:
    """Run the stream agents (scores, pairs, sampling, retrain trigger) until stopped."""
    from prefloop.streams.worker import run_worker

    run_worker(settings_of(ctx), loglevel)
