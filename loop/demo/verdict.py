"""The demo's verdict stage: `prefloop ab analyze` on a week of simulated traffic.

The demo's own experiment has a handful of users, too few for any test, so this
stage loads a simulated experiment (2,000 users, the candidate better by 0.3 on the
implicit score, ``prefloop.analytics.simulate``) into the typed tables, and prints the
verdict exactly as `prefloop ab analyze` does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rich.console import Console

from prefloop.analytics.report import print_verdict
from prefloop.analytics.simulate import load_simulated, record_model_event, simulate_experiment
from prefloop.analytics.verdict import analyze
from prefloop.clickhouse.client import connect
from prefloop.settings import Settings

EXPERIMENT = "demo-simulated"


def run_verdict_stage(settings: Settings, console: Console) -> None:
    console.rule(
        "[bold]9. the verdict: significance from ClickHouse, PROMOTE / ROLLBACK / CONTINUE"
    )
    client = connect(settings)
    start = datetime.now(UTC) - timedelta(days=7)
    sim = simulate_experiment(
        EXPERIMENT, 2000, effect=0.3, start=start, seed=8, user_prefix="demo-sim-"
    )
    load_simulated(client, sim)
    record_model_event(client, EXPERIMENT, "AB_STARTED", start)
    console.print(
        f"  loaded a simulated week of experiment {EXPERIMENT}: {sim.interactions.num_rows:,} "
        "responses of 2,000 users, arm B better by 0.3 on the implicit score"
    )
    console.print(f"  `prefloop ab analyze --experiment {EXPERIMENT}`:")
    print_verdict(analyze(client, settings, EXPERIMENT), console)
