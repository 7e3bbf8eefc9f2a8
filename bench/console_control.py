"""Console control: how soon a split change takes effect, and how soon a status answers.

Not a test: a measurement. A private Ray head and one KRaft broker run the A/B router
(v1 and v2, echo back ends, 50/50); USERS simulated users chat through it with the
official ``openai`` client (THREADS threads, each user's id as the OpenAI ``user``) for
the whole run. Then, ROUNDS times, the split moves 50 -> 60 -> 50 % on arm B, once by
each path:

* cli: ``prefloop ab set-split`` in a new process, as an operator types it;
* console: the console's ``POST /api/routing/split`` (``prefloop console`` in its own
  process, an operator signed in).

Both reach Serve as ``serving.control`` does: over Serve's REST API on the head's
dashboard, which ``prefloop up`` starts (before, each command started a Ray driver:
``ab set-split`` returned after 22 s and ``ab status`` after 21 s in this benchmark,
the change in effect after 18 s).

For each change: how long the call took to return; when the first answer from the new
arm came to a user the change moves (10 % of the users), and when the change was whole:
the start of the last request of such a user still answered by the old arm, all from
the change's start. Every request of the run must succeed; the failures are counted.
Then the status: ``prefloop ab status`` (baseline) against the console's
``GET /api/routing``, STATUS_REPEATS times each, under the same load.

Targets (issue 17): a change in effect within 2 s, a status within 0.5 s, no failed
request. Prints and writes the medians to bench/RESULTS.md.

Run: ``make bench`` or ``.venv/bin/python bench/run.py console_control``; directly,
``.venv/bin/python bench/console_control.py --rounds 1``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import median, write_section
from pydantic import SecretStr

from prefloop.infra.ray_head import STOP_TIMEOUT_S, ray_process, start_head
from prefloop.infra.testing import local_kafka
from prefloop.model_registry import ModelRegistry
from prefloop.process import ManagedProcess, port_answers
from prefloop.serving import control
from prefloop.serving.assignment import Routing, Split
from prefloop.settings import Settings, child_environment
from prefloop.testing import free_port, fresh_topics

USERS = 1000
THREADS = 12
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
STATUS_REPEATS = 5
EXPERIMENT = "bench-split"
SPLITS = (60.0, 50.0)
SETTLE_S = 8.0  # after a change, how long its effect is watched
NAME = "Console control: split changes and status under 1,000 openai users"
OPERATOR = ("ops", "bench-operator-pw")


@dataclass
class Requests:
    """Every request of the run: (start, end, user, version, ok)."""

    done: list[tuple[float, float, str, str, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def users_load(url: str, requests: Requests, first: int) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=30)
    n = first
    while not requests.stop.is_set():
        user = f"user-{n % USERS}"
        n += THREADS
        started = time.time()
        try:
            answer = client.chat.completions.create(
                model="prefloop", messages=[{"role": "user", "content": "hi"}], user=user
            )
            version, ok = answer.model, True
        except Exception:
            version, ok = "", False
        with requests.lock:
            requests.done.append((started, time.time(), user, version, ok))


def moved_users(old: float, new: float) -> set[str]:
    """The users a change of split from ``old`` to ``new`` moves to the other arm."""
    before = Routing(experiment=Split(EXPERIMENT, "v1", "v2", old))
    after = Routing(experiment=Split(EXPERIMENT, "v1", "v2", new))
    return {
        f"user-{i}"
        for i in range(USERS)
        if before.assign(f"user-{i}").arm != after.assign(f"user-{i}").arm
    }


def effect(requests: Requests, since: float, moved: set[str], new_version: str) -> dict[str, float]:
    """When the change begun at ``since`` showed (first answer by the new arm to a moved
    user) and was whole (start of the last request of a moved user the old arm answered)."""
    with requests.lock:
        seen = [r for r in requests.done if r[0] >= since and r[2] in moved and r[4]]
    new = [start for start, _, _, version, _ in seen if version == new_version]
    old = [start for start, _, _, version, _ in seen if version != new_version]
    return {
        "first_s": min(new) - since if new else float("nan"),
        "whole_s": max([since, *old]) - since,
    }


def cli(settings: Settings, *args: str) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "prefloop.loop.cli", "ab", *args],
        env=child_environment(settings),
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0:
        raise RuntimeError(f"prefloop ab {' '.join(args)} failed: {done.stderr[-2000:]}")
    return time.monotonic() - started


class Console:
    def __init__(self, settings: Settings) -> None:
        self.url = f"http://127.0.0.1:{settings.console_port}"
        self.auth = "Basic " + base64.b64encode(":".join(OPERATOR).encode()).decode()
        self.csrf = ""

    def call(self, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", method="GET" if body is None else "POST"
        )
        request.add_header("Authorization", self.auth)
        if body is not None:
            request.data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
            request.add_header("X-Prefloop-CSRF", self.csrf)
        with urllib.request.urlopen(request, timeout=120) as reply:
            return json.load(reply)

    def timed(self, path: str, body: Any = None) -> float:
        started = time.monotonic()
        self.call(path, body)
        return time.monotonic() - started


def measure(rounds: int) -> dict[str, Any]:
    import ray

    with local_kafka(ray_object_store_mb=128) as broker, tempfile.TemporaryDirectory() as home:
        settings = fresh_topics(
            broker,
            home=Path(home),
            console_port=free_port(),
            console_users=SecretStr(":operator:".join(OPERATOR)),
        )
        start_head(settings, dashboard=True)  # as `prefloop up` starts it (the Jobs API)
        console_process = ManagedProcess("console", settings.home / "run", settings.home / "logs")
        requests = Requests()
        threads: list[threading.Thread] = []
        try:
            registry = ModelRegistry.from_settings(settings)
            for version in ("v1", "v2"):
                registry.register(version, backend="echo")
            control.deploy(settings, Routing(experiment=Split(EXPERIMENT, "v1", "v2", 50.0)))
            ray.shutdown()  # this process is no driver: only the paths measured hold one
            console_process.start(
                [sys.executable, "-m", "prefloop.loop.cli", "console"],
                env=child_environment(settings),
            )
            console_process.wait_until(lambda: port_answers(settings.console_port), 60, "listening")
            console = Console(settings)
            console.csrf = console.call("/api/me")["csrf"]
            console.call("/api/routing")  # its driver connects once, as a running console's has
            url = control.router_url(settings)
            threads = [
                threading.Thread(target=users_load, args=(url, requests, i), daemon=True)
                for i in range(THREADS)
            ]
            for thread in threads:
                thread.start()
            time.sleep(5)  # every user once at least, the router warm

            changes: dict[str, list[dict[str, float]]] = {"cli": [], "console": []}
            current = 50.0
            for _ in range(rounds):
                for path in ("cli", "console"):
                    for split in SPLITS:
                        moved = moved_users(current, split)
                        new_version = "v2" if split > current else "v1"
                        since = time.time()
                        if path == "cli":
                            call_s = cli(settings, "set-split", f"{split:g}")
                        else:
                            call_s = console.timed("/api/routing/split", {"split": split})
                        time.sleep(SETTLE_S)
                        changes[path].append(
                            {"call_s": call_s, **effect(requests, since, moved, new_version)}
                        )
                        current = split
            status = {
                "cli": [cli(settings, "status") for _ in range(STATUS_REPEATS)],
                "console": [console.timed("/api/routing") for _ in range(STATUS_REPEATS)],
            }
        finally:
            requests.stop.set()
            for thread in threads:
                thread.join(timeout=40)
            console_process.stop(30)
            ray.shutdown()
            ray_process(settings).stop(STOP_TIMEOUT_S)
        with requests.lock:
            total = len(requests.done)
            failed = sum(1 for r in requests.done if not r[4])
        return {"changes": changes, "status": status, "requests": total, "failed": failed}


def report(result: dict[str, Any]) -> str:
    rows = []
    for path in ("cli", "console"):
        runs = result["changes"][path]
        rows.append(
            f"| {path} | {len(runs)} | {median([r['call_s'] for r in runs]):.2f} | "
            f"{median([r['first_s'] for r in runs]):.2f} | "
            f"{median([r['whole_s'] for r in runs]):.2f} | "
            f"{max(r['whole_s'] for r in runs):.2f} | "
            f"{median(result['status'][path]):.3f} |"
        )
    cli_whole = median([r["whole_s"] for r in result["changes"]["cli"]])
    console_whole = median([r["whole_s"] for r in result["changes"]["console"]])
    cli_status, console_status = (
        median(result["status"]["cli"]),
        median(result["status"]["console"]),
    )
    return "\n".join(
        [
            f"{USERS} users of the `openai` client on {THREADS} threads, echo back ends, one "
            f"router replica; each change moves 10 % of the users; the split moved "
            f"50 -> 60 -> 50 % per round. Seconds, medians over the changes; "
            f"'whole' is the start of the last request a moved user's old arm still answered.",
            "",
            "| path | changes | call returns s | first new-arm answer s | whole s (median) | "
            "whole s (worst) | status s (median) |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Requests during the run: {result['requests']:,}, failed: {result['failed']}.",
            f"A change takes effect {cli_whole / max(console_whole, 1e-3):.0f}x sooner by the "
            f"console than by the CLI (whole: {console_whole:.2f} s against {cli_whole:.2f} s; "
            "target 2 s); a status answers "
            f"{cli_status / max(console_status, 1e-4):.0f}x sooner ({console_status:.3f} s "
            f"against {cli_status:.2f} s; target 0.5 s).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    result = measure(args.rounds)
    body = report(result)
    print(body)
    write_section(NAME, body)


if __name__ == "__main__":
    main()
