"""The training commands: `trainer` (the service), `train`, `eval` and `gates`."""

from __future__ import annotations

import json
from typing import Any

import click

from prefloop.loop.cli.base import cli, console, settings_of


@cli.command()
@click.pass_context
def trainer(ctx: click.Context) -> None:
    """Run the trainer service until stopped: each RETRAIN_REQUESTED becomes one Ray job,
    then a registered, evaluated and gated version (`prefloop up` starts it)."""
    import signal
    import threading

    from prefloop.infra.local_stack import TRAINER_STATUS
    from prefloop.training.service import TrainerService

    settings = settings_of(ctx)
    status = settings.home / "run" / TRAINER_STATUS
    status.parent.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:  # the log, and the last line for `prefloop status`
        print(line, flush=True)
        status.write_text(line.strip() + "\n")

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    TrainerService(settings, say=say).run(stop)


@cli.command()
@click.option(
    "--if-ready",
    "if_ready",
    is_flag=True,
    help="Train on the oldest retrain request no trainer has answered, if any.",
)
@click.option("--force", is_flag=True, help="Train --base now on every pair of it in the queue.")
@click.option("--base", default=None, help="The version to train from (with --force).")
@click.option(
    "--config",
    "config_json",
    default=None,
    metavar="JSON",
    help="Hyperparameters over PREFLOOP_TRAIN_CONFIG, e.g. '{\"max_steps\": 20}'.",
)
@click.pass_context  # fmt: skip
def train(
    ctx: click.Context, if_ready: bool, force: bool, base: str | None, config_json: str | None
) -> None:
    """Train a new version with DPO as a Ray job, showing its progress, then evaluate and
    gate it: the weekly command. Every step is recorded as a ModelEvent."""
    from prefloop.errors import PrefloopError
    from prefloop.training.config import DPOJobConfig
    from prefloop.training.offline import force_request, pending_requests
    from prefloop.training.service import TrainerService

    if if_ready == force:
        raise click.UsageError("give one of --if-ready and --force (with --base VERSION)")
    if force and not base:
        raise click.UsageError("--force needs --base VERSION: the version to train from")
    settings = settings_of(ctx)
    if config_json:
        merged = {**json.loads(settings.train_config or "{}"), **_json_object(config_json)}
        settings = settings.with_overrides(train_config=json.dumps(merged))
    DPOJobConfig.from_settings(settings)  # a bad value fails here, before anything is sent
    service = TrainerService(settings, say=console.print)
    try:
        if force:
            assert base is not None
            request = force_request(settings, base)
            service.record(request)
        else:
            waiting = pending_requests(settings)
            if not waiting:
                console.print("train: no retrain request is waiting; nothing to do")
                return
            request = waiting[0]
        console.print(
            f"train: {request['model_version']} on {request['pair_count']} pairs "
            f"(request {request['event_id']})"
        )
        outcome = service.handle(request)
    finally:
        service.close()
    if outcome is None or outcome.kind == "TRAINING_FAILED":
        raise PrefloopError(f"training failed: {outcome.detail if outcome else 'stopped'}")
    console.print(f"train: {outcome.version}: {outcome.kind} ({outcome.detail})")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc.msg})", param_hint="--config") from None
    if not isinstance(value, dict):
        raise click.BadParameter("give a JSON object", param_hint="--config")
    return value


@cli.command("eval")
@click.option("--model", "version", required=True, help="The trained version to evaluate.")
@click.pass_context
def eval_command(ctx: click.Context, version: str) -> None:
    """Evaluate a trained version against its parent again (held-out preference accuracy,
    reward margin, win rate, safety, regressions); recorded in its manifest."""
    from prefloop.training.offline import evaluate_version

    result = evaluate_version(settings_of(ctx), version, say=console.print)
    shown = {k: v for k, v in result.items() if isinstance(v, int | float)}
    console.print("eval: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items())))
    for case in result.get("regression_cases") or []:
        console.print(f"  regression: {case}")


@cli.command()
@click.option("--model", "version", required=True, help="The evaluated version to gate.")
@click.pass_context
def gates(ctx: click.Context, version: str) -> None:
    """The quality gates on a version's evaluation: better than its parent, safety at least
    0.95, no regression. Passing puts it into an A/B against its parent (the verdict loop)."""
    from prefloop.errors import PrefloopError
    from prefloop.training.offline import gate_version

    outcome = gate_version(settings_of(ctx), version, say=console.print)
    if outcome.kind != "GATES_PASSED":
        raise PrefloopError(f"{version} did not pass its gates: {outcome.detail}")
