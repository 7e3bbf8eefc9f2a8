"""The analysts' commands: `export`, `forget`, and `sink` (events into ClickHouse)."""

from __future__ import annotations

import click

from prefloop.loop.cli.base import cli, console, settings_of


@cli.group()
def export() -> None:
    """Export event data from ClickHouse as files."""


@export.command("interactions")
@click.option(
    "--start",
    required=True,
    help="First moment exported (inclusive): YYYY-MM-DD or an ISO 8601 time, UTC if no zone.",
)
@click.option(
    "--end",
    required=True,
    help="End of the range (exclusive): YYYY-MM-DD or an ISO 8601 time, UTC if no zone.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The JSON Lines file to write (the input of `prefloop sample`).",
)
@click.pass_context
def export_interactions_command(ctx: click.Context, start: str, end: str, out_path: str) -> None:
    """Write the interactions of [--start, --end) with their latest scores, one JSON per line.

    Each interaction once, ordered by time; forgotten users left out. The file is the
    input `prefloop sample --input` reads.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from prefloop.analytics.export import export_interactions, parse_time_range
    from prefloop.clickhouse.client import connect

    first, last = parse_time_range(start, end, names=("--start", "--end"))
    client = connect(settings_of(ctx))
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("export: 0 interactions written", total=None)

        def written(rows: int) -> None:
            progress.update(task, description=f"export: {rows} interactions written")

        report = export_interactions(client, first, last, out_path, progress=written)
    console.print(
        f"export: {report.rows} interactions ({report.scored} scored) from "
        f"{report.start.isoformat()} to {report.end.isoformat()} -> {report.out}"
    )


@cli.command()
@click.option("--user", "user_id", required=True, help="The user_id whose data to delete.")
@click.pass_context
def forget(ctx: click.Context, user_id: str) -> None:
    """Delete a user's rows from every ClickHouse table and record them as forgotten.

    Training leaves out forgotten users' pairs. The per-arm daily aggregates are not
    per user and keep the user's contribution; Kafka keeps the records until the
    topics' retention ages them out.
    """
    from rich.table import Table

    from prefloop.analytics.forget import forget_user
    from prefloop.clickhouse.client import connect

    client = connect(settings_of(ctx))
    with console.status(f"forget: deleting the rows of user {user_id!r} ..."):
        report = forget_user(client, user_id)
    table = Table("table", "rows deleted", box=None)
    for name, rows in report.deleted.items():
        table.add_row(name, str(rows))
    console.print(table)
    console.print(f"forget: {report.summary()}")


@cli.command()
@click.pass_context
def sink(ctx: click.Context) -> None:
    """Run the ClickHouse sink (all topics into raw_events) until stopped.

    In embedded mode the store's owner runs it already; this is for a ClickHouse server.
    """
    import signal
    import threading

    from prefloop.analytics.sink import ClickHouseSink
    from prefloop.clickhouse.client import connect

    settings = settings_of(ctx)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    ClickHouseSink(settings, lambda: connect(settings)).run(stop)
