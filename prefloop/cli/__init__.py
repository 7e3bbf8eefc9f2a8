"""The ``prefloop`` command.

Settings are read here, at the edge, once per invocation; every error prefloop
raises on purpose is printed as one sentence (no stack trace) with exit code 1.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from prefloop.errors import PrefloopError, first_line
from prefloop.settings import Settings, describe_settings, load_settings

# a pipe or a log gets tables 120 columns wide; a terminal its own width
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    from prefloop.stack.local import recorded_kafka_nodes

    base: Settings = ctx.obj
    if overrides:
        return base.with_overrides(**overrides)
    nodes = recorded_kafka_nodes(base.home)
    if nodes and "PREFLOOP_KAFKA_NODES" not in os.environ and nodes != base.kafka_nodes:
        return base.with_overrides(kafka_nodes=nodes)  # the running stack's shape
    return base


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """prefloop: an online preference loop for LLMs."""
    ctx.obj = load_settings()


@cli.command()
@click.pass_context
def config(ctx: click.Context) -> None:
    """Print the effective settings (secrets masked) as an environment file."""
    rows = [
        (f"{name}={value}" if value else f"# {name}=", meaning)
        for name, value, meaning in describe_settings(_settings(ctx))
    ]
    width = max(len(assignment) for assignment, _ in rows)
    for assignment, meaning in rows:
        click.echo(f"{assignment:<{width}}  # {meaning}")


@cli.command()
@click.option(
    "--kafka-nodes",
    type=click.IntRange(1, 9),
    default=None,
    help="KRaft nodes to start (3 for the fault tests: replication 3, min ISR 2).",
)
@click.pass_context
def up(ctx: click.Context, kafka_nodes: int | None) -> None:
    """Start the local stack: Kafka, the embedded ClickHouse owner and Ray."""
    from prefloop.stack.local import LocalStack

    settings = _settings(ctx, kafka_nodes=kafka_nodes) if kafka_nodes else _settings(ctx)
    started = LocalStack(settings).up()
    if started:
        console.print(f"up: started {', '.join(started)} (state in {settings.home})")
    else:
        console.print("up: the stack was already up; nothing started")


@cli.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop what `prefloop up` started, and nothing else."""
    from prefloop.stack.local import LocalStack

    stopped = LocalStack(_settings(ctx)).down()
    if stopped:
        console.print(f"down: stopped {', '.join(stopped)}")
    else:
        console.print("down: nothing was running")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show each component: up or down, pid, port, version, topics and their counts."""
    from prefloop.stack.local import LocalStack, status_as_dicts

    rows = LocalStack(_settings(ctx)).status()
    if as_json:
        click.echo(json.dumps(status_as_dicts(rows), indent=2))
        return
    table = Table("component", "state", "pid", "port", "version", "detail", box=None)
    for row in rows:
        colour = {"up": "green", "down": "red"}.get(row.state, "cyan")
        table.add_row(
            row.name,
            f"[{colour}]{row.state}[/]",
            str(row.pid or ""),
            str(row.port or ""),
            row.version or "",
            row.detail,
        )
    console.print(table)
    topics = next((row.topics for row in rows if row.topics), {})
    if topics:
        counts = Table("topic", "messages", box=None)
        for name, count in topics.items():
            counts.add_row(name, "missing" if count is None else str(count))
        console.print(counts)


@cli.command()
@click.argument("query")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A bound parameter, used in the query as {NAME:Type}; repeatable.",
)
@click.option(
    "--format",
    "fmt",
    default="PrettyCompactMonoBlock",
    show_default=True,
    help="Any ClickHouse output format (TSVWithNames, JSONEachRow, CSV, ...).",
)
@click.pass_context
def sql(ctx: click.Context, query: str, params: tuple[str, ...], fmt: str) -> None:
    """Run one SQL statement against ClickHouse (embedded store or server)."""
    from prefloop.clickhouse.client import connect

    bound = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        bound[name] = value
    client = connect(_settings(ctx))
    try:
        out = client.raw_query(query, parameters=bound or None, fmt=fmt)
    except Exception as exc:  # the server's own message is the useful part
        raise PrefloopError(f"ClickHouse refused the query: {first_line(exc)}") from exc
    sys.stdout.write(out.decode(errors="replace"))


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply the ClickHouse migrations not applied yet."""
    from prefloop.clickhouse.client import connect
    from prefloop.clickhouse.migrations import apply_migrations, apply_retention

    settings = _settings(ctx)
    client = connect(settings)
    applied = apply_migrations(client, settings.clickhouse_database)
    apply_retention(client, settings.clickhouse_retention_days)
    console.print(f"migrate: applied {', '.join(applied)}" if applied else "migrate: up to date")


@cli.group()
def schemas() -> None:
    """The event contract's Avro schemas."""


@schemas.command("check")
@click.option(
    "--dir",
    "directory",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A schemas/ folder to check instead of the bundled one.",
)
def schemas_check(directory: str | None) -> None:
    """Prove full transitive compatibility: every version reads every other's data."""
    from prefloop_sdk.compatibility import check_compatibility

    console.print(str(check_compatibility(directory)))


@cli.command()
@click.option("--port", type=int, default=None, help="Port (default PREFLOOP_COLLECTOR_PORT).")
@click.pass_context
def collector(ctx: click.Context, port: int | None) -> None:
    """Serve the HTTP event collector (POST /v1/events) on 127.0.0.1."""
    import uvicorn

    from prefloop.serving.collector import Limits, create_collector
    from prefloop.serving.events import feedback_client

    settings = _settings(ctx)
    with feedback_client(settings) as client:
        app = create_collector(client, Limits.from_settings(settings))
        uvicorn.run(
            app, host="127.0.0.1", port=port or settings.collector_port, log_level="warning"
        )


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

    run_worker(_settings(ctx), loglevel)


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

    settings = _settings(ctx)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    ClickHouseSink(settings, lambda: connect(settings)).run(stop)


@cli.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """The main job: bring the stack up, run each stage of the loop, bring it down."""
    from prefloop.demo import run_demo
    from prefloop.demo_streams import demo_settings

    run_demo(demo_settings(_settings(ctx)), console)


from prefloop.cli import analytics as _analytics  # noqa: E402,F401  (registers its commands)
from prefloop.cli import serving as _serving  # noqa: E402,F401  (registers its commands)
from prefloop.cli import verdict as _verdict  # noqa: E402,F401  (registers its commands)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="prefloop", standalone_mode=False)
    except PrefloopError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
