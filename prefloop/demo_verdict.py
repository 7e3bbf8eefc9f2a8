"""The demo's verdict stage: `prefloop ab analyze` on a week of simulated traffic.

The demo's own experiment has a handful of users, too few for any test, so this
stage loads a simulated experiment (2,000 users, the candidate better by 0.3 on the
implicit score, ``prefloop.analytics.simulate``) into the typed tables, and prints the
verdict exactly as `prefloop ab analyze` does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rich.console import Console

from prefloop.analytics.simulate import simulate_experiment
from prefloop.analytics.verdict import analyze
from prefloop.clickhouse.client import connect
from prefloop.settings import Settings

EXPERIMENT = "demo-simulated"


def run_verdict_stage(settings: Settings, console: Console) -> None:
    from prefloop.cli.verdict import print_verdict

    console.rule(
        "[bold]8. the verdict: significance from ClickHouse, PROMOTE / ROLLBACK / CONTINUE"
    )
    client = connect(settings)
    start = datetime.now(UTC) - timedelta(days=7)
    sim = simulate_experiment(
        EXPERIMENT, 2000, effect=0.3, start=start, seed=8, user_prefix="demo-sim-"
    )
    for table in ("interactions", "scores", "exposures"):
        client.insert_arrow(table, getattr(sim, table))
    client.insert(
        "model_events",
        [[f"{EXPERIMENT}-start", start, "AB_STARTED", "v2", EXPERIMENT, {"split": 50.0}]],
        column_names=["event_id", "ts", "kind", "model_version", "experiment_id", "metrics"],
    )
    console.print(
        f"  loaded a simulated week of experiment {EXPERIMENT}: {sim.interactions.num_rows:,} "
        "responses of 2,000 users, arm B better by 0.3 on the implicit score"
    )
    console.print(f"  `prefloop ab analyze --experiment {EXPERIMENT}`:")
    print_verdict(analyze(client, settings, EXPERIMENT))
