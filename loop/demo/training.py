"""The demo's training stage: the retrain request becomes a DPO job, a version, its gates.

The stream stage's pairs reach the threshold and the worker requests a retrain of
``base`` (a tiny model built offline and registered before the conversations); the
trainer service that ``prefloop up`` started submits it as a Ray job. This stage
follows the lifecycle on ``prefloop.model-events`` and prints the candidate's
manifest: its lineage and the gates it passed or failed.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from prefloop import kafka
from prefloop.model_registry import ModelRegistry, UnknownModelError, candidate_version
from prefloop.settings import Settings
from prefloop.tiny_model import PRETRAIN_STEPS, tiny_model

__all__ = ["DEMO_TRAIN_CONFIG", "register_base", "run_training_stage"]

BASE = "base"
# a tiny model learns from a handful of pairs at a rate a real checkpoint would not survive
DEMO_TRAIN_CONFIG = {"learning_rate": 3e-4, "epochs": 4.0, "batch_size": 2,
                     "heldout_fraction": 0.4, "max_length": 256}  # fmt: skip
OUTCOMES = ("GATES_PASSED", "GATES_FAILED", "TRAINING_FAILED")
WAIT_S = 420.0


def register_base(settings: Settings, console: Console) -> None:
    """``base``, the version the conversations are served by, as a tiny offline model."""
    registry = ModelRegistry.from_settings(settings)
    try:
        registry.get(BASE)
        return
    except UnknownModelError:
        pass
    console.print(f"  pre-training {BASE}, a tiny Llama, on the built-in chat corpus ...")
    path = tiny_model(settings.home / "cache" / "demo-base", pretrain_steps=PRETRAIN_STEPS)
    registry.register(BASE, path, detail={"built": "tiny Llama, pre-trained offline"})
    console.print(f"  registered {BASE}: the version users chat with")


def run_training_stage(
    settings: Settings, console: Console, requests: list[dict[str, Any]]
) -> None:
    """Follow the training of the retrain ``requests`` of this run to their outcome."""
    console.rule("[bold]7. training: the retrain request -> a DPO job on Ray -> a gated version")
    # a state dir used before holds earlier runs' lifecycles: follow this run's only
    candidates = {candidate_version(BASE, r["event_id"]) for r in requests}
    if not candidates:
        console.print("  no retrain request in this run: nothing to train")
        return
    reader = kafka.TopicReader(settings, settings.topics.model_events)
    shown: set[str] = set()

    def show(records: list[tuple[str, Any, int, int]]) -> None:
        for _, event, _, _ in records:
            if not isinstance(event, dict) or event.get("model_version") not in candidates:
                continue
            if event["event_id"] in shown:
                continue
            shown.add(event["event_id"])
            metrics = ", ".join(f"{k} {v:.3g}" for k, v in sorted(event["metrics"].items()))
            console.print(
                f"  [bold]{event['kind']}[/bold] {event['model_version']}"
                + (f": {metrics}" if metrics else "")
                + (f" ({event['detail']})" if event.get("detail") else "")
            )

    def done(records: list[tuple[str, Any, int, int]]) -> bool:
        show(records)
        return any(isinstance(e, dict) and e.get("kind") in OUTCOMES
                   and e.get("model_version") in candidates for _, e, _, _ in records)  # fmt: skip

    try:
        records = reader.wait_for(done, WAIT_S, "the training's outcome")
    finally:
        reader.close()
    outcome = next(
        e for _, e, _, _ in reversed(records)
        if isinstance(e, dict) and e.get("kind") in OUTCOMES
        and e.get("model_version") in candidates
    )  # fmt: skip
    if outcome["kind"] == "TRAINING_FAILED":
        console.print(f"  training failed: {outcome['detail']}")
        return
    entry = ModelRegistry.from_settings(settings).get(outcome["model_version"])
    console.print(
        f"  {entry.version}: trained from {entry.parent} on {entry.lineage.get('train_pairs')} "
        f"pairs ({json.dumps(entry.lineage.get('sources'))}), {entry.lineage.get('heldout_pairs')}"
        f" held out, in {entry.training.get('seconds', 0):.0f} s "
        f"(`prefloop models show {entry.version}`)"
    )
    table = Table("gate", "value", "needs", "passed", box=None)
    for gate in entry.gates.get("gates", []):
        value = gate.get("value")
        table.add_row(
            gate["name"],
            "-" if value is None else f"{value:.3g}",
            gate["threshold"],
            "[green]yes[/]" if gate["passed"] else "[red]no[/]",
        )
    console.print(table)
