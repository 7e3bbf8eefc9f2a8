"""DDL migrations: numbered ``.sql`` files applied once each, in order.

Each file (``0001_name.sql``) holds statements separated by ``;``. Applied
versions are recorded in ``schema_migrations`` with a checksum, so a file
edited after it was applied is refused instead of silently diverging: schema
changes go in a new file.

Retention is not a migration: :func:`apply_retention` sets (or removes) the TTL of
the tables it is given each time the migrations run, so changing the setting takes
effect at the next start. Which files and which tables is the owner's business: the
analytics room's are in ``prefloop.analytics.schema``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from prefloop.errors import ClickHouseError

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_TABLE_TTL = re.compile(r"\sTTL\s+(.+?)(?:\s+SETTINGS\s|$)", re.S)
_TTL_DAYS = re.compile(r"toIntervalDay\((\d+)\)")
_NO_TTL = re.compile(r"doesn't have any table TTL|no table TTL|no TTL", re.I)


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        lines = [line for line in self.sql.splitlines() if not line.strip().startswith("--")]
        return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def discover(directory: Path) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ClickHouseError(
                f"migration file {path} is misnamed: use NNNN_lower_case_name.sql"
            )
        migrations.append(Migration(match.group(1), path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ClickHouseError(f"two migrations in {directory} share a version number")
    return migrations


def apply_migrations(client: Client, database: str, directory: Path) -> list[str]:
    """Apply the migrations of ``directory`` not applied yet; returns the file names applied."""
    client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    client.database = database
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version String, name String, checksum String, applied_at DateTime64(3) DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version"
    )
    applied = {
        row[0]: (row[1], row[2])
        for row in client.query("SELECT version, name, checksum FROM schema_migrations").result_rows
    }
    done = []
    for migration in discover(directory):
        if migration.version in applied:
            name, checksum = applied[migration.version]
            if checksum != migration.checksum:
                raise ClickHouseError(
                    f"migration {migration.path.name} changed after it was applied as {name}: "
                    "put schema changes in a new migration file"
                )
            continue
        for statement in migration.statements():
            try:
                client.command(statement)
            except Exception as exc:
                raise ClickHouseError(
                    f"migration {migration.path.name} failed at:\n{statement}\n{exc}"
                ) from exc
        client.insert(
            "schema_migrations",
            [[migration.version, migration.path.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        done.append(migration.path.name)
    return done


def table_ttl(engine_full: str) -> str | None:
    """The TTL expression in a table's ``system.tables.engine_full``, if it has one."""
    match = _TABLE_TTL.search(engine_full)
    return match.group(1).strip() if match else None


def ttl_days(engine_full: str) -> int:
    """The retention a table's TTL sets, in days (0: none), from its ``engine_full``."""
    days = _TTL_DAYS.search(table_ttl(engine_full) or "")
    return int(days.group(1)) if days else 0


def apply_retention(client: Client, days: int, tables: Mapping[str, str]) -> list[str]:
    """Keep the rows of ``tables`` (name -> time column) ``days`` days after that time (0: forever).

    Sets ``TTL toDateTime(column) + INTERVAL days DAY`` on each of ``tables`` in the
    client's database, or removes the TTL when
    ``days`` is 0. Idempotent: a table whose TTL is already the wanted one is left
    alone (setting a TTL rewrites the table's parts to drop the expired rows, which
    is not worth repeating at every start). Tables the database lacks are skipped.
    Returns the tables changed.
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise ClickHouseError(
            f"retention of {days!r} days is not valid: give a whole number of days, 0 to keep "
            "every row (PREFLOOP_CLICKHOUSE_RETENTION_DAYS)"
        )
    try:
        rows = client.query(
            "SELECT name, engine_full FROM system.tables "
            "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
            parameters={"names": list(tables)},
        ).result_rows
    except Exception as exc:
        raise ClickHouseError(f"cannot read the event tables' TTL: {exc}") from exc
    engines = {str(name): str(engine) for name, engine in rows}
    changed = []
    for table, column in tables.items():
        if table not in engines:
            continue
        if table_ttl(engines[table]) == (
            f"toDateTime({column}) + toIntervalDay({days})" if days else None
        ):
            continue
        if days:
            statement = f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + INTERVAL {days} DAY"
        else:
            statement = f"ALTER TABLE {table} REMOVE TTL"
        try:
            client.command(statement)
        except Exception as exc:
            if not days and _NO_TTL.search(str(exc)):
                continue
            raise ClickHouseError(
                f"setting the retention of {table} failed at:\n{statement}\n{exc}"
            ) from exc
        changed.append(table)
    return changed
