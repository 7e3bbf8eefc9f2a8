"""The demo's serving stage: chat through the A/B router, both arms answering.

Two tiny models (built and pre-trained offline on the chat corpus, no hub) are
registered as versions; the router serves the first, then an experiment splits users
between them, then the split moves live. Every answer is an Interaction on Kafka,
logged by the router.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from prefloop.model_registry import ModelRegistry
from prefloop.serving import control
from prefloop.serving.assignment import Routing, Split
from prefloop.settings import Settings

VERSIONS = {"demo-v1": 0, "demo-v2": 1}  # version -> the seed of its tiny model
USERS = [f"demo-user-{i}" for i in range(8)]
QUESTIONS = ["Can you explain chess?", "How do I save money?", "Tips for growing tomatoes?"]


def run_serving_stage(settings: Settings, console: Console) -> None:
    import openai

    console.rule("[bold]8. the A/B router: chat through Ray Serve, users split between versions")
    _register_models(settings, console)
    t0 = time.monotonic()
    control.deploy(settings, Routing(version="demo-v1"))
    console.print(f"  router up in {time.monotonic() - t0:.1f} s, serving demo-v1 to everyone")
    experiment = Split("demo-ab", "demo-v1", "demo-v2", 50.0)
    control.start_ab(settings, experiment)
    console.print("  `prefloop ab start --a demo-v1 --b demo-v2 --split 50`: applied live")

    client = openai.OpenAI(base_url=f"{control.router_url(settings)}/v1", api_key="unused")
    before = _ask_everyone(client, console, "50 % of users on demo-v2")
    control.set_split(settings, 90.0)
    after = _ask_everyone(client, console, "split moved live to 90 %")
    moved = [u for u in USERS if before[u] == "A" and after[u] == "B"]
    back = [u for u in USERS if before[u] == "B" and after[u] == "A"]
    console.print(
        f"  moved from A to B: {len(moved)} user(s); from B to A: {len(back)} "
        "(bucket ranges nest: raising the split never moves a user back)"
    )
    console.print(
        f"  every answer above is an Interaction on {settings.topics.interactions}, "
        f"each user's first request an Exposure on {settings.topics.exposures}"
    )


def _register_models(settings: Settings, console: Console) -> None:
    from transformers.utils import logging as transformers_logging

    from prefloop.tiny_model import PRETRAIN_STEPS, tiny_model

    transformers_logging.disable_progress_bar()  # "Writing model shards" is noise here
    registry = ModelRegistry.from_settings(settings)
    known = {v.version for v in registry.list()}
    for version, seed in VERSIONS.items():
        if version in known:
            continue
        built = tiny_model(
            settings.home / "demo-models" / version, seed=seed, pretrain_steps=PRETRAIN_STEPS
        )
        registry.register(version, built, detail={"note": "tiny Llama, pre-trained offline"})
    console.print(f"  registry {registry.url}: {', '.join(v.version for v in registry.list())}")


def _ask_everyone(client: Any, console: Console, title: str) -> dict[str, str]:
    table = Table("user", "arm", "version", "ms", "answer", box=None, title=title)
    arms = {}
    for i, user in enumerate(USERS):
        started = time.perf_counter()
        raw = client.chat.completions.with_raw_response.create(
            model="prefloop",
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            user=user,
            max_tokens=12,
        )
        ms = (time.perf_counter() - started) * 1000
        answer = raw.parse().choices[0].message.content or ""
        arms[user] = raw.headers["x-prefloop-arm"]
        table.add_row(
            user, arms[user], raw.headers["x-prefloop-model-version"], f"{ms:.0f}",
            answer.replace("\n", " ")[:40],
        )  # fmt: skip
    console.print(table)
    return arms
