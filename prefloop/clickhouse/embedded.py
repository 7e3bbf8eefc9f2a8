"""The embedded store: chDB opened in this process, shared by a pool of connections.

chDB lets one process open a data directory (``$PREFLOOP_HOME/data/clickhouse``).
:class:`EmbeddedStore` holds it in the owner process, whose HTTP front
(``prefloop.clickhouse.http_front``) serves everyone else. Every chDB handle opened
here is closed by an exit hook before chDB's own teardown, which can crash a process
that exits with one still open.
"""

from __future__ import annotations

import atexit
import fcntl
import queue
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import chdb

from prefloop.errors import StoreOwnedError
from prefloop.settings import Settings

POOL_SIZE = 4


def store_path(settings: Settings) -> Path:
    return settings.home / "data" / "clickhouse"


def _held_elsewhere(path: Path) -> bool:
    """Whether another process holds ClickHouse's lock on ``path/status``."""
    status = path / "status"
    if not status.exists():
        return False
    with open(status, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


# Every chDB handle this process opened and has not closed yet. chDB tears its
# engine down in static destructors, racing its own worker threads, when a
# handle is still open at interpreter exit, and the process can then die of a
# segmentation fault after its work is done (chdb-core issue 177). Closing them
# in an exit hook, which runs before those destructors, leaves nothing to race.
_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()


def track(handle: Any) -> Any:
    """Register a chDB connection, or a client holding one, to be closed at exit."""
    _OPEN.add(handle)
    return handle


@atexit.register  # registered after chDB's own exit hook, so it runs before it
def close_all() -> None:
    """Close every tracked handle still open: this process then owns no store."""
    for handle in list(_OPEN):
        with suppress(Exception):  # at exit, one handle failing must not keep the rest open
            handle.close()
    _OPEN.clear()


def open_connection(path: Path) -> Any:
    """A chDB connection on ``path``; a clear error if another process owns it."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        return track(chdb.connect(str(path)))
    except Exception as exc:
        if _held_elsewhere(path):
            raise StoreOwnedError(
                f"the embedded ClickHouse store {path} is open in another process: reach it "
                "through its owner (`prefloop up` starts one) or stop that process"
            ) from exc
        raise


class _Connection:
    """A pooled chDB connection with the database and settings it last ran with."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.database: str | None = None
        self.settings: dict[str, str] = {}

    def prepare(self, database: str | None, settings: dict[str, str]) -> None:
        if database and database != self.database:
            self.conn.query(f"USE `{database.replace('`', '')}`")
            self.database = database
        for name in set(self.settings) - set(settings):
            self.conn.query(f"SET {name} = DEFAULT")
        for name, value in settings.items():
            if self.settings.get(name) != value:
                quoted = value.replace("\\", "\\\\").replace("'", "\\'")
                self.conn.query(f"SET {name} = '{quoted}'")
        self.settings = dict(settings)


class EmbeddedStore:
    """A pool of connections to one chDB data directory, owned by this process."""

    def __init__(self, path: Path, pool_size: int = POOL_SIZE) -> None:
        self.path = path
        first = open_connection(path)
        self._pool: queue.Queue[_Connection] = queue.Queue()
        self._pool.put(_Connection(first))
        for _ in range(pool_size - 1):
            self._pool.put(_Connection(track(chdb.connect(str(path)))))

    @contextmanager
    def connection(self) -> Iterator[_Connection]:
        conn = self._pool.get()
        try:
            yield conn
        finally:
            self._pool.put(conn)

    def query(
        self,
        sql: str,
        fmt: str,
        database: str | None,
        settings: dict[str, str],
        params: dict[str, str],
    ) -> Any:
        with self.connection() as conn:
            conn.prepare(database, settings)
            return conn.conn.query(sql, fmt, params=params or None)

    def insert(
        self,
        statement: str,
        fmt: str,
        database: str | None,
        settings: dict[str, str],
        chunks: Iterator[bytes],
    ) -> None:
        with self.connection() as conn:
            conn.prepare(database, settings)
            inserter = conn.conn.send_insert(statement, fmt)
            try:
                for chunk in chunks:
                    inserter.append(chunk)
            except BaseException:
                inserter.cancel()
                raise
            inserter.finish()
