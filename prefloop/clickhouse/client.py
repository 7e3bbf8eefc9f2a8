"""The one way to reach ClickHouse: a clickhouse-connect client for the mode in use.

- ``PREFLOOP_CLICKHOUSE_URL`` set: the ClickHouse server at that URL.
- otherwise, the embedded chDB store under ``$PREFLOOP_HOME``: through its
  owner process over HTTP when one runs (``prefloop up`` starts it), or opened
  in this very process when none does (this process is then the owner).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from prefloop.clickhouse.embedded import open_connection, store_path, track
from prefloop.errors import ClickHouseError
from prefloop.process import ManagedProcess
from prefloop.settings import Settings

OWNER_NAME = "clickhouse"


def owner_process(settings: Settings) -> ManagedProcess:
    return ManagedProcess(OWNER_NAME, settings.home / "run", settings.home / "logs")


def mode(settings: Settings) -> str:
    """'server', 'embedded (owner pid N)' or 'embedded (in process)'."""
    if settings.clickhouse_url:
        return "server"
    pid = owner_process(settings).pid()
    return f"embedded (owner pid {pid})" if pid else "embedded (in process)"


def connect(settings: Settings, database: str | None = None) -> Client:
    """A client on ``database`` (default: the configured one) in the mode in use."""
    db = database or settings.clickhouse_database
    try:
        if settings.clickhouse_url:
            url = urlsplit(settings.clickhouse_url)
            return clickhouse_connect.get_client(
                host=url.hostname,
                port=url.port or (8443 if url.scheme == "https" else 8123),
                secure=url.scheme == "https",
                username=settings.clickhouse_user,
                password=settings.clickhouse_password.get_secret_value(),
                database=db,
            )
        if owner_process(settings).is_running():
            return clickhouse_connect.get_client(
                host="127.0.0.1",
                port=settings.clickhouse_port,
                database=db,
                compress=False,
                autogenerate_session_id=False,
            )
        return embedded_client(settings, db)
    except DriverError as exc:
        raise ClickHouseError(f"cannot reach ClickHouse ({mode(settings)}): {exc}") from exc


def embedded_client(settings: Settings, database: str | None = None) -> Client:
    """A client on the embedded store opened in this process (which becomes its owner)."""
    path = store_path(settings)
    open_connection(path).close()  # fails clearly if another process owns the store
    client = track(clickhouse_connect.get_client(dsn=f"chdb://{path}"))
    if database:
        client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        client.database = database
    return client
