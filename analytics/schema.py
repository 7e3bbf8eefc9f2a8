"""The analytics room's tables in ClickHouse: its migrations and what ages out.

The DDL lives in ``analytics/migrations`` (numbered ``.sql`` files, applied once
each by the core's migration runner); the retention setting
(``PREFLOOP_CLICKHOUSE_RETENTION_DAYS``) applies to the tables of :data:`RETENTION_TABLES`.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from clickhouse_connect.driver.client import Client

from prefloop.clickhouse.migrations import apply_migrations, apply_retention
from prefloop.settings import Settings

__all__ = ["MIGRATIONS", "RETENTION_TABLES", "migrate", "prepare", "set_retention"]

MIGRATIONS = Path(str(importlib.resources.files(__package__) / "migrations"))

# The tables whose rows age out after the retention -> the time they age from: the
# event tables' ``ts``, and when the verdict's per-user rollups were computed (a row
# is recomputed while its user's events come in; the verdict reads the rollups only
# for a window that starts within the retention, whose rows are younger still).
# The aggregates (first_exposures, arm_daily) and forgotten_users are kept.
RETENTION_TABLES = {
    "interactions": "ts",
    "feedback": "ts",
    "scores": "ts",
    "exposures": "ts",
    "model_events": "ts",
    "preferences": "ts",
    "annotation_tasks": "ts",
    "annotation_results": "ts",
    "dead_letters": "ts",
    "raw_events": "ts",
    "interactions_by_user": "computed_at",
    "scores_by_user": "computed_at",
}


def migrate(client: Client, database: str) -> list[str]:
    """Create or update the analytics tables in ``database``; returns the files applied."""
    return apply_migrations(client, database, MIGRATIONS)


def set_retention(client: Client, days: int) -> list[str]:
    """Keep the rows of :data:`RETENTION_TABLES` ``days`` days (0: forever); the tables changed."""
    return apply_retention(client, days, RETENTION_TABLES)


def prepare(client: Client, settings: Settings) -> list[str]:
    """What a store needs before the loop uses it: the migrations, then the retention."""
    applied = migrate(client, settings.clickhouse_database)
    set_retention(client, settings.clickhouse_retention_days)
    return applied
