"""ClickHouse in embedded mode: the store, migrations and the one-owner rule."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prefloop.analytics.schema import migrate
from prefloop.clickhouse.client import connect, embedded_client, mode
from prefloop.clickhouse.migrations import apply_migrations
from prefloop.errors import ClickHouseError
from prefloop.infra.local_stack import LocalStack
from prefloop.settings import Settings
from prefloop.testing import isolated_settings

CLI = [sys.executable, "-m", "prefloop.loop.cli"]


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """chDB opened in this test process: one data directory per process, so one per module."""
    return isolated_settings(tmp_path_factory.mktemp("chdb"))


def test_migrations_apply_once_and_refuse_edits(in_process: Settings, tmp_path: Path) -> None:
    database = f"db_{uuid.uuid4().hex[:8]}"
    client = embedded_client(in_process)
    (tmp_path / "0001_one.sql").write_text(
        "CREATE TABLE a (x UInt8) ENGINE = Memory;\nCREATE TABLE b (y String) ENGINE = Memory"
    )
    assert apply_migrations(client, database, tmp_path) == ["0001_one.sql"]
    (tmp_path / "0002_two.sql").write_text("-- a comment\nALTER TABLE b ADD COLUMN z UInt8")
    assert apply_migrations(client, database, tmp_path) == ["0002_two.sql"]
    assert apply_migrations(client, database, tmp_path) == []
    columns = client.query(f"DESCRIBE TABLE {database}.b").result_columns[0]
    assert list(columns) == ["y", "z"]
    (tmp_path / "0001_one.sql").write_text("CREATE TABLE a (x UInt16) ENGINE = Memory")
    with pytest.raises(ClickHouseError, match="changed after it was applied"):
        apply_migrations(client, database, tmp_path)
    (tmp_path / "3_bad.sql").write_text("SELECT 1")
    with pytest.raises(ClickHouseError, match="misnamed"):
        apply_migrations(client, database, tmp_path)


def test_a_failing_migration_names_its_file_and_statement(
    in_process: Settings, tmp_path: Path
) -> None:
    (tmp_path / "0001_broken.sql").write_text("CREATE TABLE t (x NoSuchType) ENGINE = Memory")
    with pytest.raises(ClickHouseError, match="0001_broken.sql failed at"):
        apply_migrations(embedded_client(in_process), f"db_{uuid.uuid4().hex[:8]}", tmp_path)


def test_the_bundled_schema_lands_raw_events(in_process: Settings) -> None:
    database = f"db_{uuid.uuid4().hex[:8]}"
    client = embedded_client(in_process)
    migrate(client, database)
    now = datetime.now(UTC)
    row = ["prefloop.interactions", 2, 41, "conv-1", '{"a": 1}', now]
    columns = ["topic", "partition", "offset", "key", "value", "ts"]
    client.insert("raw_events", [row, row], column_names=columns)  # a replayed record
    count = client.query("SELECT count() FROM raw_events FINAL").result_rows[0][0]
    assert count == 1


@pytest.fixture(scope="module")
def owned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The embedded store with its owner process running, as `prefloop up` leaves it."""
    settings = isolated_settings(tmp_path_factory.mktemp("owned"))
    stack = LocalStack(settings, say=lambda _: None)
    started: list = []
    stack._up_clickhouse(started)
    try:
        yield settings
    finally:
        for process in started:
            process.stop()


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    from prefloop.settings import child_environment

    return subprocess.run(
        [*CLI, *args], env=child_environment(settings), capture_output=True, text=True, timeout=120
    )


def test_other_processes_reach_the_store_through_its_owner(owned: Settings) -> None:
    assert mode(owned).startswith("embedded (owner pid")
    client = connect(owned)  # HTTP to the owner, the same client code as for a server
    rows = [["t", 0, i, "k", f"v{i}", datetime.now(UTC)] for i in range(1000)]
    client.insert(
        "raw_events", rows, column_names=["topic", "partition", "offset", "key", "value", "ts"]
    )
    assert client.query("SELECT count(), sum(offset) FROM raw_events").result_rows == [
        (1000, sum(range(1000)))
    ]
    done = run_cli(
        owned,
        "sql",
        "SELECT count() AS n FROM raw_events WHERE key = {k:String}",
        "--param",
        "k=k",
        "--format",
        "TSV",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1000"


def test_a_second_process_cannot_open_the_owned_store(owned: Settings) -> None:
    probe = (
        "from prefloop.clickhouse.embedded import open_connection, store_path\n"
        "from prefloop.settings import load_settings\n"
        "open_connection(store_path(load_settings()))\n"
    )
    from prefloop.settings import child_environment

    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=child_environment(owned),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "StoreOwnedError" in done.stderr
    assert "is open in another process" in done.stderr


def test_parameters_are_bound_not_spliced(owned: Settings) -> None:
    hostile = "x'; DROP TABLE raw_events; --"
    done = run_cli(owned, "sql", "SELECT {v:String}", "--param", f"v={hostile}", "--format", "TSV")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == hostile.replace("'", "\\'")
    assert connect(owned).query("EXISTS TABLE raw_events").result_rows == [(1,)]


def test_a_bad_query_is_one_sentence(owned: Settings) -> None:
    done = run_cli(owned, "sql", "SELECT * FROM no_such_table")
    assert done.returncode == 1
    assert "ClickHouse refused the query" in done.stderr
    assert "no_such_table" in done.stderr
    assert "Traceback" not in done.stderr


EXIT_HOOK = """
import sys
from pathlib import Path
from prefloop.clickhouse.embedded import EmbeddedStore, close_all, open_connection, store_path
from prefloop.clickhouse.client import embedded_client
from prefloop.settings import load_settings

client = embedded_client(load_settings())  # a client and a pool on the same store
store = EmbeddedStore(store_path(load_settings()), pool_size=2)
try:
    open_connection(Path(sys.argv[1]) / "other")
except Exception as exc:
    print("refused while open:", type(exc).__name__)
close_all()
print("after close_all:", open_connection(Path(sys.argv[1]) / "other").query("SELECT 41 + 1"))
"""


def test_every_chdb_handle_is_closed_by_the_exit_hook(tmp_path: Path) -> None:
    """chDB refuses a second data directory while any handle on the first is open."""
    from prefloop.settings import child_environment

    settings = isolated_settings(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-c", EXIT_HOOK, str(tmp_path)],
        env=child_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused while open" in done.stdout
    assert "after close_all: 42" in done.stdout
