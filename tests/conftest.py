"""Fixtures of the platform's tests; the session broker is the root conftest.py's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefloop.settings import Settings
from prefloop.testing import fresh_topics


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    """The session broker's settings with this test's own uuid-named topics."""
    return fresh_topics(kafka_settings)


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where a test saves what a person would look at (screenshots): ``$TEST_ARTIFACTS_DIR``,
    else the test's temporary directory. Not a ``PREFLOOP_*`` name: those are settings,
    and a Ray worker refuses one it does not know."""
    out = Path(os.environ.get("TEST_ARTIFACTS_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out
