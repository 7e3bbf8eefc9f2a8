"""Fixtures of the SDK's client tests: one real Kafka broker for the session.

The broker comes from ``prefloop.testing.local_kafka`` (the SDK itself never imports
``prefloop``; its tests may). Each test gets its own uuid-named topics, the
exposures topic included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from prefloop import kafka
from prefloop.settings import Settings
from prefloop.testing import fresh_topics


@pytest.fixture(scope="session")
def sdk_kafka(kafka_settings: Settings) -> Settings:
    """The session's real KRaft broker (the repository's conftest.py starts it)."""
    return kafka_settings


@pytest.fixture
def sdk_topics(sdk_kafka: Settings) -> Settings:
    """The session broker with this test's own topics (``<prefix>.exposures`` too)."""
    settings = fresh_topics(sdk_kafka)
    kafka.ensure_topics(settings, [f"{settings.topic_prefix}.exposures"])
    return settings


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"
