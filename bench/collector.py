"""HTTP collector throughput with 100-event batches, beside the SDK emitting directly.

The collector runs under uvicorn (one process, as `prefloop collector` runs it)
in front of a local broker; CLIENTS threads post batches of 100 feedback
events over keep-alive connections. The baseline is the same events emitted
straight through the SDK (no HTTP, no JSON), in the same run.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from common import median, write_section

from prefloop import kafka
from prefloop.infra.testing import local_kafka
from prefloop.settings import child_environment
from prefloop.testing import fresh_topics
from prefloop_sdk import FeedbackClient, InteractionIds

BATCH = 100
BATCHES = int(os.environ.get("BENCH_COLLECTOR_BATCHES", "300"))
CLIENTS = 4
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def batch_body(start: int) -> bytes:
    events = [
        {
            "type": "feedback",
            "data": {
                "event_id": str(uuid.uuid4()),
                "ts": 1767225600000 + i,
                "kind": "THUMBS",
                "interaction_id": f"i-{i}",
                "response_id": f"r-{i}",
                "conversation_id": f"c-{i % 97}",
                "user_id": "u-1",
                "value": 1,
            },
        }
        for i in range(start, start + BATCH)
    ]
    return json.dumps({"events": events}).encode()


def post_all(port: int, bodies: list[bytes]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for body in bodies:
        connection.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        reply.read()
        assert reply.status == 202, reply.status
    connection.close()


def collector_rate(settings: kafka.Settings, home: str) -> float:
    port = 20000 + os.getpid() % 10000
    env = child_environment(
        settings.with_overrides(
            home=home, collector_port=port, collector_rate_per_s=1e9, collector_burst=10**9
        )
    )
    server = subprocess.Popen([sys.executable, "-m", "prefloop.loop.cli", "collector"], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.2)
        bodies = [batch_body(i * BATCH) for i in range(BATCHES)]
        shares = [bodies[i::CLIENTS] for i in range(CLIENTS)]
        threads = [threading.Thread(target=post_all, args=(port, share)) for share in shares]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return BATCHES * BATCH / (time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(30)


def sdk_rate(settings: kafka.Settings) -> float:
    with tempfile.TemporaryDirectory() as spool:
        client = FeedbackClient(
            settings.bootstrap_servers, topic_prefix=settings.topic_prefix, spool_dir=spool
        )
        started = time.perf_counter()
        for i in range(BATCHES * BATCH):
            client.thumbs(InteractionIds(f"i-{i}", f"r-{i}", f"c-{i % 97}", "u-1"), 1)
        client.flush(120)
        elapsed = time.perf_counter() - started
        client.close()
    return BATCHES * BATCH / elapsed


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def main() -> None:
    http_rates, sdk_rates = [], []
    with local_kafka() as broker:
        for _ in range(ROUNDS):
            settings = fresh_topics(broker)
            with tempfile.TemporaryDirectory() as home:
                http_rates.append(collector_rate(settings, home))
            sdk_rates.append(sdk_rate(settings))
            print(f"  round: collector {http_rates[-1]:,.0f}/s, SDK {sdk_rates[-1]:,.0f}/s")
    body = f"""
{BATCHES * BATCH:,} feedback events per run in batches of {BATCH}, {CLIENTS} keep-alive client
threads against one collector process (uvicorn), one local broker, {ROUNDS} runs; the same
machine's 2 cores serve the clients, the collector and the broker.

| path | median events/s | runs |
|---|---|---|
| HTTP collector, 100-event JSON batches | {median(http_rates):,.0f} | {_runs(http_rates)} |
| the SDK emitting the same events directly | {median(sdk_rates):,.0f} | {_runs(sdk_rates)} |

The collector parses JSON, checks every event against its schema and produces it through the
SDK: {median(http_rates) / median(sdk_rates):.2f}x the direct SDK rate.
"""
    write_section("HTTP collector: events/s with 100-event batches", body)
    print(body)


if __name__ == "__main__":
    main()
