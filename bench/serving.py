"""Serving: the A/B router vs a single Ray Serve deployment and a bare uvicorn endpoint.

Not a test: a measurement. Three HTTP paths answer the same OpenAI-style chat request
(``POST .../v1/chat/completions``, one user message, a user id out of USERS) with a no-op
model, all on this machine:

* bare: a Starlette app that parses the JSON body and returns a fixed ``chat.completion``,
  under uvicorn in its own process (access log off);
* single: a Ray Serve deployment doing the same in ``__call__`` (``num_cpus=0``, access log
  off), behind Serve's proxy at ``/single``;
* router: prefloop's A/B router (``control.deploy``) splitting users 50/50 between two
  versions with the ``echo`` back end, logging its exposure and interaction events with
  the SDK's client to a real local Kafka broker (fresh topics), on the same Serve instance.

A private Ray head (128 MB object store) and one KRaft broker run for the duration. The
client is in this process: threads with one keep-alive ``http.client`` connection each,
in a closed loop for a fixed time. Each path is warmed up (WARMUP requests), then ROUNDS
rounds, the order of the paths rotating, measure concurrency 1 (p50, p99, req/s) and
concurrency 8 (req/s, p50). Every response must be 200; the others are counted as errors.

Then, to say where the router's time goes, its ASGI app and the bare one are timed in
process (no HTTP, no Serve, the router's emitter a no-op).

Prints and writes the medians over rounds and the router vs single ratios (targets: at
least 0.8x the req/s, at most +2 ms at p50) to bench/RESULTS.md.

Run: ``make bench`` or ``.venv/bin/python bench/run.py serving``; directly,
``.venv/bin/python bench/serving.py --seconds 2 --rounds 1`` (``BENCH_SERVING_SECONDS``,
``BENCH_ROUNDS`` give the defaults: 5 s per measurement, 5 rounds: the c=1 figures are noisy).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import median, write_section
from confluent_kafka import TopicPartition

from prefloop import kafka
from prefloop.infra.ray_head import STOP_TIMEOUT_S, ray_process, start_head
from prefloop.infra.testing import local_kafka
from prefloop.model_registry import ModelRegistry
from prefloop.process import port_answers
from prefloop.ray_client import connect
from prefloop.settings import Settings
from prefloop.testing import free_port, fresh_topics

SECONDS = float(os.environ.get("BENCH_SERVING_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
WARMUP = 200
USERS = 1000
CONCURRENCY = 8
PATH = "/v1/chat/completions"
NAME = "Serving: the A/B router vs a single Serve deployment and bare uvicorn"
# what the baselines answer: a chat.completion of the size the echo model gives
FIXED = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 0,
    "model": "v1",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "v1 heard: hi"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
}


# -- the servers -------------------------------------------------------------
def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        await request.json()
        return JSONResponse(FIXED)

    return Starlette(routes=[Route(PATH, chat, methods=["POST"])])


def serve_bare(port: int) -> None:
    """The bare path, in the child process ``start_bare`` runs."""
    import uvicorn

    uvicorn.run(starlette_app(), host="127.0.0.1", port=port, access_log=False, log_level="warning")


def start_bare(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, __file__, "--bare-port", str(port)])
    deadline = time.monotonic() + 30
    while not port_answers(port):
        assert process.poll() is None, f"uvicorn exited with {process.returncode}"
        assert time.monotonic() < deadline, "uvicorn did not listen within 30 s"
        time.sleep(0.1)
    return process


def deploy_single() -> None:
    """The single Serve deployment at ``/single``, on the Serve instance already running."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    @serve.deployment(
        ray_actor_options={"num_cpus": 0},
        logging_config={"enable_access_log": False},
        # as many requests at once as the router's replica takes (Serve's default is 5)
        max_ongoing_requests=Settings.model_fields["serve_max_ongoing"].default,
    )
    class Single:
        async def __call__(self, request: Request) -> JSONResponse:
            await request.json()
            return JSONResponse(FIXED)

    serve.run(Single.bind(), name="single", route_prefix="/single")  # type: ignore[attr-defined]


def deploy_router(settings: Settings) -> str:
    """The A/B router on v1 and v2 (echo), 50/50; returns its base URL."""
    from prefloop.serving import control
    from prefloop.serving.assignment import Routing, Split

    registry = ModelRegistry.from_settings(settings)
    for version in ("v1", "v2"):
        if version not in {v.version for v in registry.list()}:
            registry.register(version, backend="echo")
    control.deploy(settings, Routing(experiment=Split("bench", "v1", "v2", 50.0)))
    return control.router_url(settings)


# -- the client --------------------------------------------------------------
@dataclass
class Load:
    """What the client threads of one measurement saw."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:  # every request failed: the errors column says so
            return float("nan")
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def body(i: int) -> bytes:
    return json.dumps(
        {"model": "prefloop", "messages": [{"role": "user", "content": "hi"}], "user": f"u{i}"}
    ).encode()


def client(url: str, load: Load, lock: threading.Lock, stop: float, first: int) -> None:
    """Requests in a closed loop on one keep-alive connection until ``stop`` (or, with
    ``stop`` negative, ``-stop`` requests)."""
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    path = url.removeprefix(f"http://{host}:{port}")
    headers = {"Content-Type": "application/json"}
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    latencies: list[float] = []
    errors, i = 0, first
    while (time.perf_counter() < stop) if stop > 0 else (i - first < -stop):
        started = time.perf_counter()
        try:
            connection.request("POST", path, body(i % USERS), headers)
            reply = connection.getresponse()
            reply.read()
            ok = reply.status == 200
        except (OSError, http.client.HTTPException):
            connection.close()  # reconnects on the next request
            ok = False
        if ok:
            latencies.append((time.perf_counter() - started) * 1000)
        else:
            errors += 1
        i += 1
    connection.close()
    with lock:
        load.latencies_ms += latencies
        load.errors += errors


def measure(url: str, concurrency: int, seconds: float) -> Load:
    load, lock = Load(), threading.Lock()
    started = time.perf_counter()
    stop = started + seconds
    threads = [
        threading.Thread(target=client, args=(url, load, lock, stop, n * USERS // concurrency))
        for n in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.seconds = time.perf_counter() - started
    return load


def warm_up(url: str) -> Load:
    """WARMUP requests on one connection."""
    load = Load()
    client(url, load, threading.Lock(), -WARMUP, 0)
    return load


def interactions_on_kafka(settings: Settings, wanted: int, wait_s: float = 30.0) -> int:
    """The records on the interactions topic, once ``wanted`` are there or after ``wait_s``."""
    topic = settings.topics.interactions
    probe = kafka.consumer(settings, f"bench-serving-{time.monotonic_ns()}")
    partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
    deadline = time.monotonic() + wait_s
    while True:
        count = sum(
            probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        )
        if count >= wanted or time.monotonic() > deadline:
            probe.close()
            return count
        time.sleep(0.5)


# -- the run -----------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """Totals over the whole run, warm-up included."""

    errors: int
    router_answered: int
    interactions: int  # on the interactions topic at the end


def run_rounds(
    urls: dict[str, str], seconds: float, rounds: int
) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
    names = list(urls)
    for round_ in range(rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            one = measure(urls[name], 1, seconds)
            many = measure(urls[name], CONCURRENCY, seconds)
            runs[name].append(
                {
                    "p50_1": one.percentile(0.5),
                    "p99_1": one.percentile(0.99),
                    "rate_1": one.rate,
                    "rate_8": many.rate,
                    "p50_8": many.percentile(0.5),
                    "errors": one.errors + many.errors,
                    "answered": len(one.latencies_ms) + len(many.latencies_ms),
                }
            )
            r = runs[name][-1]
            print(
                f"  round {round_}: {name:7} c=1 p50 {r['p50_1']:.2f} ms p99 {r['p99_1']:.2f} ms "
                f"{r['rate_1']:,.0f} req/s; c={CONCURRENCY} {r['rate_8']:,.0f} req/s p50 "
                f"{r['p50_8']:.2f} ms; errors {r['errors']:.0f}",
                flush=True,
            )
    return runs


def measure_all(seconds: float, rounds: int) -> tuple[dict[str, list[dict[str, float]]], Run]:
    """Start everything, warm up, measure; returns the runs and the totals."""
    import ray

    with local_kafka(ray_object_store_mb=128) as broker, tempfile.TemporaryDirectory() as home:
        settings = fresh_topics(broker, home=Path(home))
        bare_port = free_port()
        start_head(settings)
        bare = None
        try:
            connect(settings)
            router = deploy_router(settings)
            deploy_single()
            bare = start_bare(bare_port)
            urls = {
                "bare": f"http://127.0.0.1:{bare_port}{PATH}",
                "single": f"{router}/single{PATH}",
                "router": f"{router}{PATH}",
            }
            warm = {name: warm_up(url) for name, url in urls.items()}
            runs = run_rounds(urls, seconds, rounds)
            answered = len(warm["router"].latencies_ms) + int(
                sum(r["answered"] for r in runs["router"])
            )
            interactions = interactions_on_kafka(settings, answered)
            # where the time goes: the same router with its broker unreachable, so its
            # events are only journaled (the SDK's spool), against the single deployment
            deploy_router(settings.with_overrides(kafka_bootstrap=f"127.0.0.1:{free_port()}"))
            warm["spooled"] = warm_up(urls["router"])
            second = run_rounds(
                {"single": urls["single"], "spooled": urls["router"]}, seconds, rounds
            )
            runs["spooled"], runs["single_again"] = second["spooled"], second["single"]
            totals = Run(
                errors=sum(w.errors for w in warm.values())
                + int(sum(r["errors"] for rs in runs.values() for r in rs)),
                router_answered=answered,
                interactions=interactions,
            )
            return runs, totals
        finally:
            if bare is not None:
                bare.terminate()
                bare.wait(10)
            ray.shutdown()
            ray_process(settings).stop(STOP_TIMEOUT_S)


def in_process_us(requests: int = 2000, repeats: int = 3) -> dict[str, float]:
    """Microseconds per request of the router's own work and of the bare app, in process.

    Both ASGI apps are called directly (no HTTP, no Serve); the router holds the echo
    versions and logs to a null emitter. Medians of ``repeats`` timings.
    """
    import asyncio

    from prefloop.serving.assignment import Routing, Split
    from prefloop.serving.pool import ModelPool
    from prefloop.serving.router import ChatRouter

    class NullEmitter:
        def emit(self, record_type: str, record: dict[str, Any]) -> None:
            pass

    with tempfile.TemporaryDirectory() as home:
        registry = ModelRegistry(Path(home) / "models")
        for version in ("v1", "v2"):
            registry.register(version, backend="echo")
        router = ChatRouter(ModelPool(registry, cache_dir=Path(home) / "cache"), NullEmitter())
        router.configure(Routing(experiment=Split("bench", "v1", "v2", 50.0)))
        apps = {"router": router.app(), "bare": starlette_app()}
        return {
            name: median([asyncio.run(_time_asgi(app, requests)) for _ in range(repeats)])
            for name, app in apps.items()
        }


async def _time_asgi(app: Any, requests: int) -> float:
    async def call(i: int) -> None:
        payload = body(i)
        scope = {
            "type": "http", "method": "POST", "path": PATH, "raw_path": PATH.encode(),
            "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode())],
            "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
        }  # fmt: skip
        messages = [{"type": "http.request", "body": payload, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    for i in range(200):
        await call(i)
    started = time.perf_counter()
    for i in range(requests):
        await call(i)
    return (time.perf_counter() - started) / requests * 1e6


def table(runs: dict[str, list[dict[str, float]]]) -> tuple[str, dict[str, dict[str, float]]]:
    labels = {
        "bare": "bare uvicorn + Starlette",
        "single": "one Ray Serve deployment",
        "router": "prefloop A/B router (echo, 2 arms, events to Kafka)",
        "single_again": "one Ray Serve deployment, second phase",
        "spooled": "the A/B router, broker unreachable (events journaled only)",
    }
    medians = {
        name: {key: median([r[key] for r in rounds]) for key in rounds[0] if key != "answered"}
        for name, rounds in runs.items()
    }
    rows = [
        "| path | c=1 p50 ms | c=1 p99 ms | c=1 req/s | c=8 req/s | c=8 p50 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in medians.items():
        errors = sum(r["errors"] for r in runs[name])
        rows.append(
            f"| {labels[name]} | {m['p50_1']:.2f} | {m['p99_1']:.2f} | {m['rate_1']:,.0f} | "
            f"{m['rate_8']:,.0f} | {m['p50_8']:.2f} | {errors:.0f} |"
        )
    return "\n".join(rows), medians


def main(seconds: float, rounds: int) -> None:
    runs, totals = measure_all(seconds, rounds)
    own = in_process_us()
    rows, m = table(runs)
    router, single = m["router"], m["single"]
    ratio_1, ratio_8 = router["rate_1"] / single["rate_1"], router["rate_8"] / single["rate_8"]
    delta_1, delta_8 = router["p50_1"] - single["p50_1"], router["p50_8"] - single["p50_8"]
    spooled, again = m["spooled"], m["single_again"]
    spooled_1, spooled_8 = spooled["rate_1"] / again["rate_1"], spooled["rate_8"] / again["rate_8"]
    body = f"""
Three paths answer the same chat request with a no-op model, measured in one run on the
same {os.cpu_count()} cores, with the client (threads, one keep-alive connection each, closed
loop) on the same machine; the router serves the echo back end on two arms and logs its
events to a local Kafka broker. {WARMUP} warm-up requests per path, then {rounds} round(s)
of {seconds:g} s per measurement (c=1, then c={CONCURRENCY}), the path order rotating;
medians over rounds.

{rows}

Router vs single deployment: req/s **{ratio_1:.2f}x** at c=1 and **{ratio_8:.2f}x** at
c={CONCURRENCY} (target at least 0.8x); p50 **{delta_1:+.2f} ms** at c=1 and
**{delta_8:+.2f} ms** at c={CONCURRENCY} (target at most +2 ms). Errors (non-200 or failed
requests, warm-up included): **{totals.errors}**. The router answered
{totals.router_answered:,} requests; {totals.interactions:,} interaction events were on the
Kafka topic at the end.

Where the router's time goes. In a second phase the same router runs with its broker
unreachable, so its events are only journaled: against the single deployment measured
alongside, **{spooled_1:.2f}x** the req/s at c=1 and **{spooled_8:.2f}x** at c={CONCURRENCY},
p50 {spooled["p50_1"] - again["p50_1"]:+.2f} ms at c=1. Its own work (parse, assign,
generate with the echo model, answer, log the events) takes **{own["router"]:.0f} µs** per
request in process, against {own["bare"]:.0f} µs for the bare Starlette app (both called
as ASGI apps, no HTTP; the router's emitter a no-op). The router pays no second hop:
beyond that work, its time is the hop every Serve deployment pays (proxy to replica)
and the CPU that producing its events takes on the same cores (librdkafka and the
Kafka broker's JVM), which the single deployment, logging nothing, does not pay.
"""
    write_section(NAME, body)
    print(body)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS, help="per measurement")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--bare-port", type=int, help=argparse.SUPPRESS)
    # under bench/run.py the arguments are benchmark names: ignore them
    return parser.parse_known_args()[0]


if __name__ == "__main__":
    args = arguments()
    if args.bare_port:
        serve_bare(args.bare_port)
    else:
        main(args.seconds, args.rounds)
