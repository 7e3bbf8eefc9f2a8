"""Helpers for testing code that uses prefloop, against the real components.

``local_kafka`` starts a real Kafka broker (or a KRaft cluster) in a temporary
state directory on free ports and stops it afterwards; ``fresh_topics`` gives
a test its own uuid-named set of topics on it; ``tiny_model`` builds a small
random-weight model and its tokenizer offline (re-exported from
``prefloop.serving.backends.tiny``, which GPU hosts import directly).
``StreamWorker`` runs ``prefloop worker`` as a process a test can SIGKILL;
``prefloop.kafka.TopicReader`` collects what lands on a topic.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
from confluent_kafka import TopicPartition

from prefloop import kafka
from prefloop.serving.backends.tiny import tiny_model
from prefloop.settings import Settings, child_environment, load_settings
from prefloop.stack.kafka import KafkaCluster
from prefloop.stack.local import worker_ready
from prefloop.stack.process import ManagedProcess

__all__ = [
    "StreamWorker",
    "committed_past",
    "free_port",
    "free_port_block",
    "fresh_topics",
    "http_request",
    "isolated_settings",
    "load_simulated",
    "local_kafka",
    "record_model_event",
    "tiny_model",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(size: int) -> int:
    """The first of ``size`` consecutive free ports (for node n at base + n - 1)."""
    for _ in range(200):
        base = free_port()
        if base + size > 65535:
            continue
        ports = range(base, base + size)
        if all(_is_free(port) for port in ports):
            return base
    raise RuntimeError(f"found no {size} consecutive free ports")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_request(
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], str]:
    """One HTTP request with the standard library: (status, lower-cased headers, text)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=timeout
    )
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, path, body=body, headers=headers or {})
        reply = connection.getresponse()
        text = reply.read().decode(errors="replace")
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, text
    finally:
        connection.close()


def isolated_settings(home: Path, **overrides: Any) -> Settings:
    """Settings for a private stack under ``home``: every port free, nothing shared.

    The process environment's PREFLOOP_* variables are ignored.
    """
    nodes = int(overrides.get("kafka_nodes", 1))
    values: dict[str, Any] = {
        "home": home,
        "kafka_nodes": nodes,
        "kafka_port": free_port_block(nodes),
        "kafka_controller_port": free_port_block(nodes),
        "clickhouse_port": free_port(),
        "ray_port": free_port(),
        "ray_dashboard_port": free_port(),
        "streams_web_port": free_port(),
        "serve_port": free_port(),
    }
    values.update(overrides)
    return load_settings(environ={}, **values)


@contextmanager
def local_kafka(nodes: int = 1, home: Path | None = None, **overrides: Any) -> Iterator[Settings]:
    """A real local Kafka cluster for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="prefloop-kafka-") as tmp:
        settings = isolated_settings(Path(home or tmp), kafka_nodes=nodes, **overrides)
        cluster = KafkaCluster(settings)
        cluster.start()
        try:
            yield settings
        finally:
            cluster.stop()


def fresh_topics(settings: Settings, **overrides: Any) -> Settings:
    """``settings`` with a uuid-named topic prefix, the topics created."""
    scoped = settings.with_overrides(topic_prefix=f"t-{uuid.uuid4().hex[:12]}", **overrides)
    kafka.ensure_topics(scoped)
    return scoped


def committed_past(group: Any, wanted: Mapping[tuple[str, int], int]) -> bool:
    """Whether ``group`` (a confluent consumer of the consumer group to check) has
    committed, on each ``(topic, partition)`` of ``wanted``, at least the offset given."""
    committed = group.committed([TopicPartition(t, p) for t, p in wanted], timeout=10)
    return all(tp.offset >= wanted[(tp.topic, tp.partition)] for tp in committed)


STORE_OWNER = "prefloop.analytics.owner"  # chDB, its HTTP interface and the sink thread
STORE_ONLY = "prefloop.clickhouse.embedded"  # chDB and its HTTP interface


def start_store(settings: Settings, module: str = STORE_ONLY) -> ManagedProcess:
    """The embedded store in a process of its own (``module``), answering /ping.

    chDB admits one data directory per process, so a test process reaches its stores
    over HTTP, as every process but the owner does under ``prefloop up``.
    """
    from prefloop.clickhouse.client import owner_process

    def pings() -> bool:
        url = f"http://127.0.0.1:{settings.clickhouse_port}/ping"
        try:
            return http_request("GET", url, timeout=2)[0] == 200
        except OSError:
            return False

    process = owner_process(settings)
    process.start(
        [sys.executable, "-m", module],
        env=child_environment(settings),
        extra={"port": settings.clickhouse_port},
    )
    process.wait_until(pings, 120.0, "answering /ping")
    return process


class StreamWorker:
    """``prefloop worker`` under ``settings`` in its own process (log in the home's logs)."""

    def __init__(self, settings: Settings, name: str = "worker") -> None:
        self.settings = settings
        self.process = ManagedProcess(name, settings.home / "run", settings.home / "logs")

    def start(self, timeout: float = 120.0) -> StreamWorker:
        argv = [sys.executable, "-m", "prefloop.cli", "worker"]
        self.process.start(argv, env=child_environment(self.settings))
        port = self.settings.streams_web_port
        self.process.wait_until(lambda: worker_ready(port), timeout, "assigned its partitions")
        return self

    def kill(self) -> None:
        """SIGKILL: no commit, no goodbye."""
        self.process.kill()
        self.process.pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        self.process.stop(timeout=30.0)

    def log_tail(self) -> str:
        return self.process.log_tail()

    def health(self) -> Any:
        """The worker's ``/prefloop/health/`` view (held, paused, lagging partitions)."""
        url = f"http://127.0.0.1:{self.settings.streams_web_port}/prefloop/health/"
        _, _, body = http_request("GET", url, timeout=10)
        return json.loads(body)

    def check(self) -> None:
        """Fail with the log's tail if the worker has exited."""
        if not self.process.is_running():
            raise AssertionError(f"the stream worker exited; its log ends with:\n{self.log_tail()}")


def load_simulated(client: Any, sim: Any, inserted_at: datetime | None = None) -> None:
    """A simulated experiment (:func:`prefloop.analytics.simulate.simulate_experiment`)
    into its typed tables; ``inserted_at`` says when the sink wrote its interactions and
    scores (default: now, as ClickHouse stamps them)."""
    for table in ("interactions", "scores", "exposures"):
        rows = getattr(sim, table)
        if inserted_at is not None and table != "exposures":
            stamp = pa.array([inserted_at] * rows.num_rows, pa.timestamp("ms", tz="UTC"))
            rows = rows.append_column("_inserted_at", stamp)
        client.insert_arrow(table, rows)


def record_model_event(
    client: Any, experiment: str, kind: str, ts: datetime, split: float = 50.0
) -> None:
    """A model event of the router's (``AB_STARTED``, ``SPLIT_CHANGED``) in ClickHouse,
    as the sink would land it: the verdict reads a run's start and its split history."""
    client.insert(
        "model_events",
        [[f"{experiment}-{kind}-{ts.timestamp()}", ts, kind, "v2", experiment, {"split": split}]],
        column_names=["event_id", "ts", "kind", "model_version", "experiment_id", "metrics"],
    )
