"""ClickHouse: DDL migrations (``migrations/``), the sink, metrics and verdicts."""
