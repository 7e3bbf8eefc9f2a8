"""The owner of the embedded store: chDB behind ClickHouse's own HTTP interface.

chDB lets one process open a data directory. In embedded mode that process is
this one, started by ``prefloop up``: it opens the store under
``$PREFLOOP_HOME/data/clickhouse`` and answers ClickHouse's HTTP protocol on
127.0.0.1, so every other process reaches the store through the same
clickhouse-connect HTTP client it would use against a ClickHouse server.

What of the protocol it speaks: queries in the body or the ``query``
parameter, ``database``, ``default_format``, ``param_<name>`` bound
parameters, ClickHouse settings as URL parameters, inserts as ``query=INSERT
... FORMAT F`` with the data in the (optionally chunked) body, errors with
``X-ClickHouse-Exception-Code``, and ``/ping``.
"""

from __future__ import annotations

import atexit
import fcntl
import gzip
import itertools
import json
import queue
import re
import threading
import uuid
import weakref
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb

from prefloop.errors import StoreOwnedError
from prefloop.settings import Settings, load_settings

POOL_SIZE = 4
CHUNK = 1 << 20

# URL parameters that steer the HTTP exchange itself rather than the query
_TRANSPORT = {
    "query",
    "database",
    "default_format",
    "query_id",
    "session_id",
    "session_timeout",
    "session_check",
    "compress",
    "decompress",
    "user",
    "password",
    "quota_key",
    "buffer_size",
    "wait_end_of_query",
    "enable_http_compression",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "client_protocol_version",
    "role",
}
_INSERT = re.compile(r"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)\s*$", re.I | re.S)
_ERROR_CODE = re.compile(r"Code:\s*(\d+)")
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def _insert_in_body(
    chunks: Iterator[bytes],
) -> tuple[re.Match[str] | None, Iterator[bytes]]:
    """Split 'INSERT ... FORMAT F\n<data>' in a body into the statement and the data.

    clickhouse-connect sends its inserts so: the statement on the first line,
    the binary data after it. Anything else comes back as it was.
    """
    head = b""
    for chunk in chunks:
        head += chunk
        if b"\n" in head or len(head) > 65536:
            break
    line, newline, rest = head.partition(b"\n")
    if newline and line.lstrip()[:6].upper() == b"INSERT":
        match = _INSERT.match(line.decode(errors="replace"))
        if match is not None:
            return match, itertools.chain([rest], chunks)
    return None, itertools.chain([head], chunks)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per query would drown the log

    def do_GET(self) -> None:
        if urlsplit(self.path).path in ("/ping", "/replicas_status"):
            self._reply(HTTPStatus.OK, b"Ok.\n", {})
            return
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _body_chunks(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            chunk = self.rfile.read(min(CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk

    def _decoded(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        encoding = self.headers.get("Content-Encoding", "").lower()
        if not encoding or encoding == "identity":
            yield from chunks
        elif encoding == "gzip":
            yield gzip.decompress(b"".join(chunks))
        elif encoding == "deflate":
            yield zlib.decompress(b"".join(chunks))
        else:
            raise ValueError(
                f"Content-Encoding {encoding} is not supported by the embedded store: send the "
                "body uncompressed, gzip or deflate (clickhouse-connect: compress=False)"
            )

    def _handle(self) -> None:
        query_id = str(uuid.uuid4())
        try:
            params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
            query_id = params.get("query_id") or query_id
            database = params.get("database")
            fmt = params.get("default_format") or "TabSeparated"
            bound = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            settings = {
                k: v
                for k, v in params.items()
                if k not in _TRANSPORT and not k.startswith("param_") and _SETTING_NAME.match(k)
            }
            url_query = params.get("query", "")
            body = self._decoded(self._body_chunks())
            insert = _INSERT.match(url_query) if url_query else None
            if insert is None and not url_query:
                insert, body = _insert_in_body(body)
            if insert is not None:
                self.server.store.insert(insert.group(1), insert.group(2), database, settings, body)
                summary = {"read_rows": "0", "written_rows": "0"}
                payload = b""
            else:
                text = b"".join(body).decode()
                sql = f"{url_query}\n{text}" if url_query and text else (url_query or text)
                result = self.server.store.query(sql, fmt, database, settings, bound)
                payload = bytes(result.bytes())
                summary = {
                    "read_rows": str(result.rows_read()),
                    "read_bytes": str(result.bytes_read()),
                    "written_rows": "0",
                }
        except Exception as exc:  # errors travel back to the client, as ClickHouse does
            message = str(exc).strip() or type(exc).__name__
            code = _ERROR_CODE.search(message)
            self._reply(
                HTTPStatus.INTERNAL_SERVER_ERROR if code else HTTPStatus.BAD_REQUEST,
                (message + "\n").encode(),
                {
                    "X-ClickHouse-Exception-Code": code.group(1) if code else "0",
                    "X-ClickHouse-Query-Id": query_id,
                },
            )
            return
        self._reply(
            HTTPStatus.OK,
            payload,
            {
                "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Format": fmt,
                "X-ClickHouse-Timezone": "UTC",
                "X-ClickHouse-Summary": json.dumps(summary),
                "X-ClickHouse-Server-Display-Name": "prefloop-embedded",
            },
        )

    def _reply(self, status: HTTPStatus, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, store: EmbeddedStore) -> None:
        self.store = store
        super().__init__(("127.0.0.1", port), _Handler)


def serve(settings: Settings, background: Sequence[Callable[[threading.Event], None]] = ()) -> None:
    """Own the store: open it, apply the migrations, answer HTTP until SIGTERM.

    Each ``background`` callable runs in its own thread with an event set at SIGTERM
    (the sink uses it: in embedded mode it must write from this process).
    """
    import signal

    from prefloop.clickhouse.client import embedded_client
    from prefloop.clickhouse.migrations import apply_migrations, apply_retention

    store = EmbeddedStore(store_path(settings))
    client = embedded_client(settings)
    apply_migrations(client, settings.clickhouse_database)
    apply_retention(client, settings.clickhouse_retention_days)
    server = _Server(settings.clickhouse_port, store)
    stop = threading.Event()

    def shut_down(*_: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, shut_down)
    threads = [threading.Thread(target=task, args=(stop,), daemon=True) for task in background]
    for thread in threads:
        thread.start()
    print(
        f"embedded ClickHouse store {store.path} on http://127.0.0.1:{settings.clickhouse_port}",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        server.server_close()


if __name__ == "__main__":
    serve(load_settings())
