"""Shared fixtures: real services, started once per session.

Tests are marked by their folder (unit, integration, e2e). Integration tests
run against a real Kafka broker started here; a missing Java or Maven fails
them, it never skips them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prefloop.settings import Settings
from prefloop.testing import fresh_topics, local_kafka

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(HERE.parent).parts
        for marker in ("unit", "integration", "e2e"):
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))
        if parts[:1] == ("sdk",):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A real single-node broker for the whole session, on free ports."""
    with local_kafka(home=tmp_path_factory.mktemp("kafka-home")) as settings:
        yield settings


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    """The session broker's settings with this test's own uuid-named topics."""
    return fresh_topics(kafka_settings)
