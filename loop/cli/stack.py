"""The local stack and the store: `up`, `down`, `status`, `config`, `sql`, `migrate`,
`schemas check` and the main job, `demo`."""

from __future__ import annotations

import json
import sys

import click

from prefloop.errors import PrefloopError, first_line
from prefloop.loop.cli.base import cli, console, settings_of


@cli.command()
@click.pass_context
def config(ctx: click.Context) -> None:
    """Print the effective settings (secrets masked) as an environment file."""
    from prefloop.settings import describe_settings

    rows = [
        (f"{name}={value}" if value else f"# {name}=", meaning)
        for name, value, meaning in describe_settings(settings_of(ctx))
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
    """Start the local stack: Kafka, the embedded ClickHouse owner (with the sink), Ray,
    the stream worker, the A/B router (once a version is registered), the verdict loop
    (PREFLOOP_AB_AUTO), the trainer service and the console (its address printed). With
    PREFLOOP_KAFKA_BOOTSTRAP, PREFLOOP_CLICKHOUSE_URL or RAY_ADDRESS set, that cluster is
    used instead of starting one."""
    from prefloop.infra.local_stack import LocalStack

    settings = settings_of(ctx, kafka_nodes=kafka_nodes) if kafka_nodes else settings_of(ctx)
    started = LocalStack(settings).up()
    if started:
        console.print(f"up: started {', '.join(started)} (state in {settings.home})")
    else:
        console.print("up: the stack was already up; nothing started")


@cli.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop what `prefloop up` started, and nothing else."""
    from prefloop.infra.local_stack import LocalStack

    stopped = LocalStack(settings_of(ctx)).down()
    if stopped:
        console.print(f"down: stopped {', '.join(stopped)}")
    else:
        console.print("down: nothing was running")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show each component: up or down, pid, port, version, topics and their counts."""
    from rich.table import Table

    from prefloop.infra.local_stack import LocalStack, status_as_dicts

    rows = LocalStack(settings_of(ctx)).status()
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
    topics: dict[str, int | None] = next((row.topics for row in rows if row.topics), {})
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
    client = connect(settings_of(ctx))
    try:
        out = client.raw_query(query, parameters=bound or None, fmt=fmt)
    except Exception as exc:  # the server's own message is the useful part
        raise PrefloopError(f"ClickHouse refused the query: {first_line(exc)}") from exc
    sys.stdout.write(out.decode(errors="replace"))


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply the ClickHouse migrations not applied yet."""
    from prefloop.analytics.schema import prepare
    from prefloop.clickhouse.client import connect

    settings = settings_of(ctx)
    client = connect(settings)
    applied = prepare(client, settings)
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
@click.option(
    "--users",
    type=click.IntRange(2),
    default=40,
    show_default=True,
    help="simulated users chatting through the router",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="the loop's deadline",
)
@click.option(
    "--threshold",
    type=click.IntRange(8),
    default=200,
    show_default=True,
    help="preference pairs on a version that request its retrain",
)
@click.option(
    "--generations",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="promotions to reach: v2 from v1's pairs, v3 from v2's, ...",
)
@click.option(
    "--model",
    default="tiny",
    show_default=True,
    metavar="tiny|smollm2|PATH",
    help="v1: the pre-trained tiny model, SmolLM2-135M-Instruct, or a local checkpoint",
)
@click.option("--seed", type=int, default=0, show_default=True, help="the users' seed")
@click.option(
    "--chaos",
    is_flag=True,
    help="SIGKILL the stream worker, a router replica and the sink once each",
)
@click.option("--tour", is_flag=True, help="instead, walk through each component, stage by stage")
@click.pass_context
def demo(
    ctx: click.Context, users: int, minutes: float, threshold: int, generations: int,
    model: str, seed: int, chaos: bool, tour: bool,
) -> None:  # fmt: skip
    """The main job: simulated users, their pairs, a DPO retrain, its gates, the A/B and
    its verdict, unattended; exits 0 once v1's successor is promoted."""
    if tour:
        from prefloop.loop.demo.streams import demo_settings
        from prefloop.loop.demo.tour import run_tour

        run_tour(demo_settings(settings_of(ctx)), console)
        return
    from prefloop.loop.demo.cycle import run_loop
    from prefloop.loop.demo.options import LoopOptions, loop_settings

    options = LoopOptions(users, minutes, threshold, generations, model, seed, chaos)
    result = run_loop(loop_settings(settings_of(ctx), options), options, console)
    if result.promoted == 0:
        raise click.exceptions.Exit(1)
