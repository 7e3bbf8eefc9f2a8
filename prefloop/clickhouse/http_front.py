"""The embedded store's HTTP front: chDB behind ClickHouse's own HTTP interface.

chDB lets one process open a data directory. In embedded mode that process is
the store's owner, started by ``prefloop up``: :func:`serve` opens the store under
``$PREFLOOP_HOME/data/clickhouse``, lets the caller prepare it (the analytics room
applies its migrations) and answers ClickHouse's HTTP protocol on 127.0.0.1, so
every other process reaches the store through the same clickhouse-connect HTTP
client it would use against a ClickHouse server.

What of the protocol it speaks: queries in the body or the ``query``
parameter, ``database``, ``default_format``, ``param_<name>`` bound
parameters, ClickHouse settings as URL parameters, inserts as ``query=INSERT
... FORMAT F`` with the data in the (optionally chunked) body, errors with
``X-ClickHouse-Exception-Code``, and ``/ping``.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import signal
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from clickhouse_connect.driver.client import Client

from prefloop.clickhouse.client import embedded_client
from prefloop.clickhouse.embedded import EmbeddedStore, store_path
from prefloop.settings import Settings

__all__ = ["serve"]

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


def serve(
    settings: Settings,
    prepare: Callable[[Client], None] = lambda client: None,
    background: Sequence[Callable[[threading.Event], None]] = (),
) -> None:
    """Own the store: open it, ``prepare`` it, answer HTTP until SIGTERM.

    ``prepare`` gets a client of the store before the first request is answered (the
    analytics room applies its migrations there). Each ``background`` callable runs in
    its own thread with an event set at SIGTERM (the sink uses it: in embedded mode it
    must write from this process).
    """
    store = EmbeddedStore(store_path(settings))
    prepare(embedded_client(settings))
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
