"""The router and its versions: `serve`, `ab`, `promote`, `rollback` and `models`."""

from __future__ import annotations

from pathlib import Path

import click

from prefloop.loop.cli.base import cli, console, settings_of


def _describe(routing: object) -> str:
    from prefloop.serving.assignment import Routing

    assert isinstance(routing, Routing)
    if routing.experiment is None:
        return f"{routing.version} to every user"
    e = routing.experiment
    return f"experiment {e.experiment_id}: A={e.a} {100 - e.split:g} %, B={e.b} {e.split:g} %"


_FRACTION = click.FloatRange(0, 1, min_open=True, max_open=True)


@cli.command()
@click.option("--version", "version", default=None, help="The version to serve to every user.")
@click.option("--stop", is_flag=True, help="Stop the router instead.")
@click.pass_context
def serve(ctx: click.Context, version: str | None, stop: bool) -> None:
    """Run the A/B router on Ray Serve (OpenAI-compatible, /v1/chat/completions).

    With no --version, a running router keeps what it serves, and a new one serves
    the newest registered version.
    """
    from prefloop.serving import control

    settings = settings_of(ctx)
    if stop:
        stopped = control.stop(settings)
        console.print("serve: router stopped" if stopped else "serve: no router was running")
        return
    routing = control.serve(settings, version)
    console.print(f"serve: {_describe(routing)} at {control.router_url(settings)}/v1")


@cli.group()
def ab() -> None:
    """Start and steer an A/B experiment on the running router."""


@ab.command("start")
@click.option("--a", "a", required=True, help="Arm A: the current version.")
@click.option("--b", "b", required=True, help="Arm B: the candidate version.")
@click.option("--split", type=click.FloatRange(0, 100), default=10.0, show_default=True,
              help="Percent of users on arm B.")  # fmt: skip
@click.option("--experiment", default=None, help="Experiment id (default: <a>-vs-<b>).")
@click.option("--salt", default=None, help="Hash salt (default: the experiment id).")
@click.pass_context
def ab_start(
    ctx: click.Context, a: str, b: str, split: float, experiment: str | None, salt: str | None
) -> None:
    """Split users between two versions, sticky per user."""
    from prefloop.serving import control
    from prefloop.serving.assignment import Routing, Split

    settings = settings_of(ctx)
    started = Split(experiment or f"{a}-vs-{b}", a, b, split, salt)
    control.start_ab(settings, started)
    console.print(f"ab: {_describe(Routing(experiment=started))}")


@ab.command("set-split")
@click.argument("split", type=click.FloatRange(0, 100))
@click.pass_context
def ab_set_split(ctx: click.Context, split: float) -> None:
    """Move arm B's share of users to SPLIT percent, live; users move only one way."""
    from prefloop.serving import control
    from prefloop.serving.assignment import Routing

    changed = control.set_split(settings_of(ctx), split)
    console.print(f"ab: {_describe(Routing(experiment=changed))}")


@ab.command("status")
@click.pass_context
def ab_status(ctx: click.Context) -> None:
    """Show what the router serves."""
    from prefloop.serving import control

    routing = control.current_routing(settings_of(ctx))
    console.print(f"ab: {_describe(routing)}" if routing else "ab: the router is not running")


@ab.command("plan")
@click.option(
    "--mde",
    type=float,
    required=True,
    help="Smallest effect to detect: absolute, or relative with --relative.",
)
@click.option(
    "--rate",
    type=float,
    default=None,
    help="Baseline rate of a 0/1 metric (e.g. 0.12 regenerate rate).",
)
@click.option("--mean", "mean", type=float, default=None, help="Baseline mean of a metric.")
@click.option("--sd", type=float, default=None, help="Per-user standard deviation (with --mean).")
@click.option("--relative", is_flag=True, help="--mde is relative to the baseline (0.05 = 5 %).")
@click.option(
    "--split",
    type=click.FloatRange(0, 100, min_open=True, max_open=True),
    default=50.0,
    show_default=True,
    help="Percent of users on arm B.",
)
@click.option(
    "--alpha", type=_FRACTION, default=0.05, show_default=True, help="Two-sided significance level."
)
@click.option(
    "--power",
    type=_FRACTION,
    default=0.8,
    show_default=True,
    help="Chance to detect an effect of --mde.",
)
def ab_plan(
    mde: float, rate: float | None, mean: float | None, sd: float | None, relative: bool,
    split: float, alpha: float, power: float,
) -> None:  # fmt: skip
    """How many users an experiment needs to detect an effect of --mde."""
    from prefloop.analytics.stats import sample_size, sample_size_proportion

    if (rate is None) == (mean is None) or (mean is not None and sd is None):
        raise click.UsageError("give either --rate, or --mean with --sd")
    if rate is not None:
        size = sample_size_proportion(rate, mde, alpha, power, split / 100, relative=relative)
        baseline = f"rate {rate:g}"
    else:
        assert mean is not None and sd is not None
        size = sample_size(mean, sd, mde, alpha, power, split / 100, relative=relative)
        baseline = f"mean {mean:g}, sd {sd:g}"
    effect = f"{mde:g}" + (" relative" if relative else "")
    console.print(
        f"ab plan: {baseline}, effect {effect}, alpha {alpha:g}, power {power:g}, "
        f"split {split:g} %: {size.n_a:,} users on A + {size.n_b:,} on B = {size.total:,}"
    )


@cli.command()
@click.argument("version")
@click.pass_context
def promote(ctx: click.Context, version: str) -> None:
    """Send every user to VERSION, an arm of the running experiment."""
    from prefloop.serving import control
    from prefloop.serving.assignment import Routing

    changed = control.promote(settings_of(ctx), version)
    console.print(f"promote: {_describe(Routing(experiment=changed))}")


@cli.command()
@click.pass_context
def rollback(ctx: click.Context) -> None:
    """Send every user back to arm A, the current version."""
    from prefloop.serving import control
    from prefloop.serving.assignment import Routing

    changed = control.rollback(settings_of(ctx))
    console.print(f"rollback: {_describe(Routing(experiment=changed))}")


@cli.group()
def models() -> None:
    """The model registry: a directory, or an fsspec URL (PREFLOOP_MODEL_REGISTRY)."""


@models.command("list")
@click.pass_context
def models_list(ctx: click.Context) -> None:
    """The registered versions as their lineage tree: each under the version it was
    trained from, with its pairs and gate outcome."""
    import datetime

    from rich.tree import Tree

    from prefloop.model_registry import ModelRegistry, ModelVersion

    registry = ModelRegistry.from_settings(settings_of(ctx))
    entries = registry.list()
    known = {e.version for e in entries}
    children: dict[str | None, list[ModelVersion]] = {}
    for entry in entries:
        children.setdefault(entry.parent if entry.parent in known else None, []).append(entry)

    def label(entry: ModelVersion) -> str:
        when = datetime.datetime.fromtimestamp(entry.created_ms / 1000, datetime.UTC)
        parts = [f"[bold]{entry.version}[/]", entry.backend, f"{when:%Y-%m-%d %H:%M} UTC"]
        if entry.lineage:
            parts.append(f"{entry.lineage.get('train_pairs', '?')} pairs trained on")
        else:
            parts += [f"{k}={v}" for k, v in entry.detail.items()]
        if entry.gates:
            passed = entry.gates.get("passed")
            parts.append("[green]gates passed[/]" if passed else "[red]gates failed[/]")
        return "  ".join(parts)

    tree = Tree(f"registry: {registry.url}")

    def grow(node: Tree, parent: str | None) -> None:
        for entry in children.get(parent, []):
            grow(node.add(label(entry)), entry.version)

    grow(tree, None)
    console.print(tree if entries else f"registry: {registry.url} (no version registered)")


@models.command("show")
@click.argument("version")
@click.pass_context
def models_show(ctx: click.Context, version: str) -> None:
    """Print VERSION's manifest: lineage, hyperparameters, libraries, metrics, gates."""
    import dataclasses
    import json

    from prefloop.model_registry import ModelRegistry

    entry = ModelRegistry.from_settings(settings_of(ctx)).get(version)
    click.echo(json.dumps(dataclasses.asdict(entry), indent=2, default=str))


@models.command("register")
@click.argument("version")
@click.option(
    "--path",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="The directory save_pretrained wrote (model and tokenizer).",
)
@click.option(
    "--backend",
    type=click.Choice(["transformers", "echo"]),
    default="transformers",
    show_default=True,
    help="What serves it; echo is the no-op model of load tests.",
)
@click.option("--parent", default=None, help="The version it was trained from.")
@click.pass_context  # fmt: skip
def models_register(
    ctx: click.Context, version: str, path: Path | None, backend: str, parent: str | None
) -> None:
    """Copy a model into the registry as VERSION (versions are immutable)."""
    from prefloop.model_registry import ModelRegistry

    registry = ModelRegistry.from_settings(settings_of(ctx))
    entry = registry.register(version, path, backend=backend, parent=parent)  # type: ignore[arg-type]
    console.print(f"models: registered {entry.version} ({entry.backend}) in {registry.url}")


@cli.command()
@click.option("--port", type=int, default=None, help="Port (default PREFLOOP_COLLECTOR_PORT).")
@click.pass_context
def collector(ctx: click.Context, port: int | None) -> None:
    """Serve the HTTP event collector (POST /v1/events) on 127.0.0.1."""
    import uvicorn

    from prefloop.event_client import feedback_client
    from prefloop.serving.collector import Limits, create_collector

    settings = settings_of(ctx)
    with feedback_client(settings) as client:
        app = create_collector(client, Limits.from_settings(settings))
        uvicorn.run(
            app, host="127.0.0.1", port=port or settings.collector_port, log_level="warning"
        )
