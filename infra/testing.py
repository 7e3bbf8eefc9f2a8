"""Test helpers that start the real components, as ``prefloop up`` would.

``local_kafka`` starts a real Kafka broker (or a KRaft cluster) in a temporary
state directory on free ports and stops it afterwards; ``start_store`` runs the
embedded ClickHouse store's owner in a process of its own; ``StreamWorker`` runs
``prefloop worker`` as a process a test can SIGKILL; ``local_ray_head`` a Ray head
for the block. The helpers that start
nothing are in ``prefloop.testing``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefloop.clickhouse.client import owner_process
from prefloop.infra.kafka_broker import KafkaCluster
from prefloop.infra.local_stack import worker_ready
from prefloop.infra.ray_head import STOP_TIMEOUT_S, ray_process, start_head
from prefloop.process import ManagedProcess
from prefloop.settings import Settings, child_environment
from prefloop.testing import http_request, isolated_settings

__all__ = [
    "STORE_ONLY",
    "STORE_OWNER",
    "StreamWorker",
    "local_kafka",
    "local_ray_head",
    "start_store",
]


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


@contextmanager
def local_ray_head(settings: Settings) -> Iterator[Settings]:
    """A local Ray head (``settings``' ports) for the duration of the block.

    A test process that became the head's driver (``ray.init``, as ``serving.control``
    does) leaves it first: a driver whose head stops under it exits its process. Serve
    is shut down with it, or its client, cached past ``ray.shutdown`` under a job id
    the next head gives again, would be used on that head.
    """
    start_head(settings)
    try:
        yield settings
    finally:
        import ray
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        ray_process(settings).stop(STOP_TIMEOUT_S)


# the store owner's command line after ``python -m``
STORE_OWNER = ("prefloop.analytics.owner",)  # chDB, its HTTP interface and the sink thread
STORE_ONLY = ("prefloop.analytics.owner", "--store-only")  # chDB and its HTTP interface


def start_store(settings: Settings, owner: tuple[str, ...] = STORE_ONLY) -> ManagedProcess:
    """The embedded store in a process of its own (``python -m *owner``), answering /ping.

    chDB admits one data directory per process, so a test process reaches its stores
    over HTTP, as every process but the owner does under ``prefloop up``.
    """

    def pings() -> bool:
        url = f"http://127.0.0.1:{settings.clickhouse_port}/ping"
        try:
            return http_request("GET", url, timeout=2)[0] == 200
        except OSError:
            return False

    process = owner_process(settings)
    process.start(
        [sys.executable, "-m", *owner],
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
        argv = [sys.executable, "-m", "prefloop.loop.cli", "worker"]
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
