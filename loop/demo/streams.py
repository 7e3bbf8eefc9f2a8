"""The demo's stream stage: conversations through the SDK, then what the agents made of them.

Three conversations (a regenerate then a copy, a report, two rated answers left
idle) go out through the SDK; the stage then shows their ScoredInteractions with the
product's weights, the preference pairs mined from them, the retrain request when
the pairs reach the threshold, and the live monitor's rolling window.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from prefloop.event_client import feedback_client
from prefloop.kafka import TopicReader
from prefloop.loop.demo.training import DEMO_TRAIN_CONFIG
from prefloop.settings import Settings
from prefloop_sdk import FeedbackClient, InteractionIds

__all__ = ["DEMO_OVERRIDES", "demo_settings", "run_streams_stage"]

DEMO_OVERRIDES: dict[str, Any] = {
    "retrain_threshold": 4,
    "train_config": json.dumps(DEMO_TRAIN_CONFIG),
    "streams_inactivity_s": 8.0,
    "streams_tick_s": 1.0,
}
"""Settings the demo lowers so that a few conversations show the whole flow (a variable
set in the environment wins)."""

_PAUSE_S = 0.4  # a person reads between turns; Kafka orders a topic, not two


def demo_settings(settings: Settings, environ: Mapping[str, str] = os.environ) -> Settings:
    changes = {k: v for k, v in DEMO_OVERRIDES.items() if f"PREFLOOP_{k.upper()}" not in environ}
    return settings.with_overrides(**changes)


def _chat(
    client: FeedbackClient, tag: str, conv: str, messages: list[dict[str, str]], response: str,
    **extra: Any,
) -> InteractionIds:  # fmt: skip
    ids = client.interaction(
        user_id=f"user-{conv}", conversation_id=f"{tag}-{conv}", turn=extra.pop("turn", 0),
        messages=messages, response=response, model_version="base", latency_ms=200,
        prompt_tokens=12, completion_tokens=30, experiment_id="demo", arm="A", **extra,
    )  # fmt: skip
    client.flush(10)
    time.sleep(_PAUSE_S)
    return ids


def _signal(client: FeedbackClient) -> None:
    client.flush(10)
    time.sleep(_PAUSE_S)


def _conversations(settings: Settings, tag: str) -> None:
    sort_q = {"role": "user", "content": "How do I sort a list in Python?"}
    with feedback_client(settings, name="demo-streams") as client:
        first = _chat(client, tag, "c1", [sort_q], "Use a loop and swap items.")
        client.regenerate(first)
        _signal(client)
        kept = _chat(
            client, tag, "c1", [sort_q], "Use sorted(items).", regenerates=first.response_id
        )
        client.copy(kept)
        _signal(client)
        follow = [sort_q, {"role": "assistant", "content": "Use sorted(items)."},
                  {"role": "user", "content": "And in reverse order?"}]  # fmt: skip
        last = _chat(client, tag, "c1", follow, "sorted(items, reverse=True)", turn=1)
        client.session_end(last, 400)
        _signal(client)
        same_q = {"role": "user", "content": "how do i sort a list in python"}
        bad = _chat(client, tag, "c2", [same_q], "Python cannot sort lists.")
        client.report(bad, "wrong")
        client.session_end(bad, 20)
        _signal(client)
        capital = {"role": "user", "content": "What's the capital of Australia?"}
        good = _chat(client, tag, "c3", [capital], "Canberra.")
        worse = _chat(client, tag, "c3", [capital], "Sydney.")
        client.rate(good, 5)
        client.rate(worse, 2)
        _signal(client)


def run_streams_stage(settings: Settings, console: Console) -> list[dict[str, Any]]:
    """Run the conversations; return the retrain requests this run's pairs triggered."""
    console.rule("[bold]6. the stream agents: implicit scores, preference pairs, the trigger")
    tag = f"demo-{uuid.uuid4().hex[:6]}"
    since_ms = int(time.time() * 1000)
    topics = settings.topics
    readers = {
        name: TopicReader(settings, getattr(topics, name))
        for name in ("scores", "preferences", "model_events")
    }
    try:
        _conversations(settings, tag)
        console.print(
            f"  3 conversations sent through the SDK; c3 settles after "
            f"{settings.streams_inactivity_s:g} s of silence ..."
        )

        def mine(records: list[Any]) -> list[dict[str, Any]]:
            return [
                r for _, r, _, _ in records if str(r.get("conversation_id", "")).startswith(tag)
            ]

        readers["scores"].wait_for(lambda r: len(mine(r)) >= 6, 90, "the six scores")
        readers["preferences"].wait_for(lambda r: len(mine(r)) >= 3, 60, "the three pairs")
        for reader in readers.values():
            reader.settle(2.0)
        _show_scores(console, mine(readers["scores"].records))
        _show_pairs(console, mine(readers["preferences"].records))
        requests = [
            r for _, r, _, _ in readers["model_events"].records
            if r.get("kind") == "RETRAIN_REQUESTED" and r["ts"] >= since_ms
        ]  # fmt: skip
        _show_trigger(console, settings, requests)
        _show_monitor(console, settings)
        return requests
    finally:
        for reader in readers.values():
            reader.close()


def _show_scores(console: Console, scores: list[dict[str, Any]]) -> None:
    table = Table("conversation", "response", "rev", "implicit", "signals", "rating", "settled",
                  box=None, title="ScoredInteractions (continued +2, session > 300 s +1, "
                  "copied +2, regenerated -2, session < 30 s -1, reported -5)")  # fmt: skip
    for s in sorted(scores, key=lambda r: (r["conversation_id"], r["ts"], r["revision"])):
        signals = [k for k, v in s["signals"].items() if v is True]
        seconds = s["signals"].get("session_seconds")
        if seconds is not None:
            signals.append(f"session {seconds:g} s")
        table.add_row(
            s["conversation_id"].rsplit("-", 1)[-1], s["response_id"][-8:], str(s["revision"]),
            f"{s['implicit_score']:+g}", ", ".join(signals),
            "" if s["rating"] is None else f"{s['rating']:g}", s["settled_reason"],
        )  # fmt: skip
    console.print(table)


def _show_pairs(console: Console, pairs: list[dict[str, Any]]) -> None:
    table = Table("source", "chosen", "rejected", "weight", box=None, title="preference pairs")
    for p in sorted(pairs, key=lambda r: r["source"]):
        table.add_row(p["source"], p["chosen"][:40], p["rejected"][:40], f"{p['weight']:.2f}")
    console.print(table)


def _show_trigger(console: Console, settings: Settings, requests: list[dict[str, Any]]) -> None:
    if not requests:
        console.print(
            f"  no retrain yet: the threshold is {settings.retrain_threshold} pairs per version"
        )
        return
    for r in requests:
        ranges = ", ".join(
            f"{x['topic']}[{x['partition']}] {x['first_offset']}..{x['last_offset']}"
            for x in r["pair_ranges"]
        )
        console.print(
            f"  [bold]RETRAIN_REQUESTED[/bold] for {r['model_version']}: {r['pair_count']} "
            f"pairs (threshold {settings.retrain_threshold}), offsets {ranges}"
        )


def _show_monitor(console: Console, settings: Settings) -> None:
    url = f"http://127.0.0.1:{settings.streams_web_port}/prefloop/rolling/"
    with urllib.request.urlopen(url, timeout=10) as reply:
        view = json.loads(reply.read())
    table = Table("version|arm", "responses", "implicit", "rating", "regenerate", "copy",
                  "report", box=None, title=f"live monitor, last hour ({url})")  # fmt: skip

    def show(value: float | None, percent: bool = False) -> str:
        if value is None:
            return "-"
        return f"{value:.0%}" if percent else f"{value:+.2f}"

    for key, m in view["metrics"].items():
        table.add_row(
            key, str(m["responses"]), show(m["mean_implicit_score"]), show(m["mean_rating"]),
            show(m["regenerate_rate"], True), show(m["copy_rate"], True),
            show(m["report_rate"], True),
        )  # fmt: skip
    console.print(table)
