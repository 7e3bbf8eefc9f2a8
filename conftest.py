"""What every test tree (tests/, sdk/python/tests/) shares: markers and one real broker.

Tests are marked by their folder (unit, integration, e2e); an SDK test is an
integration test when it uses the broker. Integration tests run against a real
Kafka broker started here: a missing Java or Maven fails them, never skips them.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefloop.infra.testing import local_kafka
from prefloop.settings import Settings

ROOT = Path(__file__).parent
_EXIT_STATUS = pytest.StashKey[int]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(ROOT).parts
        for marker in ("unit", "integration", "e2e"):
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))
        if parts[:1] == ("sdk",):
            uses_broker = "kafka_settings" in getattr(item, "fixturenames", ())
            item.add_marker(pytest.mark.integration if uses_broker else pytest.mark.unit)


@pytest.fixture(scope="session")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A real single-node KRaft broker for the whole session, on free ports."""
    with local_kafka(home=tmp_path_factory.mktemp("kafka-home")) as settings:
        yield settings


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process once pytest has reported and every exit hook has run.

    The interpreter's own teardown would then destroy what hundreds of tests left of
    native libraries (librdkafka clients, chDB, Ray's core worker) in an unspecified
    order, while their threads still run: that can crash the process after a green
    run is reported, failing it. Exit hooks (``atexit``, which closes the chDB
    handles) run first, as they would.

    So a crash at exit no longer fails this run: the product's own processes are
    kept from one by closing what they opened (``prefloop.clickhouse.embedded``,
    checked by ``test_every_chdb_handle_is_closed_by_the_exit_hook`` in a process of
    its own).
    """
    status = config.stash.get(_EXIT_STATUS, None)
    if status is None:
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
