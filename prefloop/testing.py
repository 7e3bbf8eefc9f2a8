"""Helpers for testing code that uses prefloop, against the real components.

``local_kafka`` starts a real Kafka broker (or a KRaft cluster) in a temporary
state directory on free ports and stops it afterwards; ``fresh_topics`` gives
a test its own uuid-named set of topics on it; ``tiny_model`` builds a small
random-weight model and its tokenizer offline (re-exported from
``prefloop.tiny_model``, which GPU hosts import directly).
``StreamWorker`` runs ``prefloop worker`` as a process a test can SIGKILL;
``prefloop.kafka.TopicReader`` collects what lands on a topic.
"""

from __future__ import annotations

import http.client
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka import TopicPartition

from prefloop import kafka
from prefloop.process import free_port
from prefloop.settings import Settings, load_settings
from prefloop.tiny_model import tiny_model

__all__ = [
    "committed_past",
    "free_port",
    "free_port_block",
    "fresh_topics",
    "http_request",
    "isolated_settings",
    "tiny_model",
]


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
        "console_port": free_port(),
    }
    values.update(overrides)
    return load_settings(environ={}, **values)


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
