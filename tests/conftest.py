"""Fixtures of the platform's tests; the session broker is the root conftest.py's."""

from __future__ import annotations

import pytest

from prefloop.settings import Settings
from prefloop.testing import fresh_topics


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    """The session broker's settings with this test's own uuid-named topics."""
    return fresh_topics(kafka_settings)
