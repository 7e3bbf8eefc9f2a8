"""Forget a user: delete their rows from every table, and remember that they asked.

``forget_user`` removes, with lightweight deletes (``DELETE FROM ... WHERE``, the user
id a bound parameter), every row that holds the user's data:

- the tables with a ``user_id`` column: interactions, feedback, scores, exposures,
  first_exposures, interactions_by_user and scores_by_user (the per-user aggregates) and
  preferences;
- annotation_tasks and annotation_results of the user's interactions or conversations
  (they copy the prompt and the responses);
- raw_events and dead_letters whose Kafka key is one of the user's conversation ids,
  or the user id itself (a record with no conversation id is keyed by its user id):
  they hold the events' bytes as they were on the topic.

The user's conversation and interaction ids are read from the user tables, so those
tables are deleted last: every table keyed by a conversation is cleared before the
rows that tie its conversations to the user are gone. Then the user is recorded in
``forgotten_users`` with the number of rows deleted; ``export_interactions`` and the
training job (``forgotten_users``) leave such users out even if one of their events
arrives later. Forgetting a user of whom nothing is stored deletes nothing and is not
an error: the report says so, and the user is recorded all the same.

What is not deleted:

- ``arm_daily``: its aggregate states (counts, sums, ``uniqState`` of users, latency
  digests) merge many users per experiment, arm and day and cannot be split per
  user; they hold no user id, only the user's contribution to the totals.
- model_events: they describe model versions, not users.
- the Kafka topics: records stay there until the topics' retention
  (``PREFLOOP_TOPIC_RETENTION_HOURS``) ages them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from prefloop.analytics.exceptions import ForgetError
from prefloop.errors import ClickHouseError, first_line

__all__ = ["FORGET_ORDER", "ForgetError", "ForgetReport", "forget_user", "forgotten_users"]

_USER = "user_id = {user_id:String}"

# The user's conversation ids and interaction ids, as subqueries over the user tables.
_CONVERSATIONS = (
    "(SELECT conversation_id FROM ("
    + " UNION ALL ".join(
        f"SELECT conversation_id FROM {table} WHERE {_USER}"
        for table in ("interactions", "feedback", "scores", "exposures", "preferences")
    )
    + ") WHERE conversation_id != '')"
)
_INTERACTIONS = (
    "(SELECT interaction_id FROM ("
    + " UNION ALL ".join(
        f"SELECT interaction_id FROM {table} WHERE {_USER}"
        for table in ("interactions", "feedback", "scores")
    )
    + ") WHERE interaction_id != '')"
)
_BY_KEY = f"key IN {_CONVERSATIONS} OR key = {{user_id:String}}"
_BY_TASK = f"interaction_id IN {_INTERACTIONS} OR conversation_id IN {_CONVERSATIONS}"

# table -> which of its rows are the user's; in the order they are deleted (the tables
# the ids are read from come last)
_CONDITIONS: dict[str, str] = {
    "raw_events": f"({_BY_KEY}) AND record_type != 'model_event'",
    "dead_letters": _BY_KEY,
    "annotation_results": _BY_TASK,
    "annotation_tasks": _BY_TASK,
    "first_exposures": _USER,
    "feedback": _USER,
    "scores": _USER,
    "exposures": _USER,
    "preferences": _USER,
    "interactions": _USER,
    # last: whatever a look meanwhile rebuilt from their remaining rows goes too
    "interactions_by_user": _USER,
    "scores_by_user": _USER,
}
FORGET_ORDER = tuple(_CONDITIONS)


@dataclass(frozen=True)
class ForgetReport:
    """What :func:`forget_user` deleted: rows per table, in the order deleted."""

    user_id: str
    conversations: int
    deleted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    @property
    def found(self) -> bool:
        """Whether any row held the user's data."""
        return self.total > 0

    def summary(self) -> str:
        if not self.found:
            return (
                f"no rows held user {self.user_id!r}: nothing deleted; "
                "recorded as forgotten all the same"
            )
        return (
            f"deleted {self.total} rows of user {self.user_id!r} "
            f"({self.conversations} conversations); recorded as forgotten"
        )


def _count(client: Client, sql: str, user_id: str, what: str) -> int:
    try:
        return int(client.query(sql, parameters={"user_id": user_id}).result_rows[0][0])
    except Exception as exc:
        raise ClickHouseError(
            f"counting {what} failed ({first_line(exc)}): "
            "check that the store is up and migrated (`prefloop migrate`)"
        ) from exc


def forget_user(client: Client, user_id: str) -> ForgetReport:
    """Delete every row of ``user_id`` (see the module docstring) and record the user
    in ``forgotten_users``. Raises :class:`ForgetError` for an empty id and
    :class:`ClickHouseError` when a query fails (running it again resumes)."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise ForgetError(
            f"user id {user_id!r} is empty: give the user_id the user's events carry "
            "(prefloop forget --user ID)"
        )
    conversations = _count(
        client,
        f"SELECT uniqExact(conversation_id) FROM {_CONVERSATIONS}",
        user_id,
        "the user's conversations",
    )
    deleted: dict[str, int] = {}
    for table, condition in _CONDITIONS.items():
        rows = _count(
            client,
            f"SELECT count() FROM {table} WHERE {condition}",
            user_id,
            f"the rows of {table} to delete",
        )
        deleted[table] = rows
        if rows == 0:
            continue
        try:
            client.command(
                f"DELETE FROM {table} WHERE {condition}", parameters={"user_id": user_id}
            )
        except Exception as exc:
            raise ClickHouseError(
                f"deleting user {user_id!r} from {table} failed ({first_line(exc)}): "
                "run `prefloop forget` again once ClickHouse accepts the delete"
            ) from exc
    report = ForgetReport(user_id, conversations, deleted)
    try:
        client.insert(
            "forgotten_users", [[user_id, report.total]], column_names=["user_id", "rows_deleted"]
        )
    except Exception as exc:
        raise ClickHouseError(
            f"recording user {user_id!r} in forgotten_users failed ({first_line(exc)}): "
            "their rows are deleted; run `prefloop forget` again to record them"
        ) from exc
    return report


def forgotten_users(client: Client) -> set[str]:
    """The ids of every user forgotten so far (training leaves out their pairs)."""
    try:
        result = client.query("SELECT DISTINCT user_id FROM forgotten_users")
    except Exception as exc:
        raise ClickHouseError(
            f"reading forgotten_users failed ({first_line(exc)}): "
            "check that the store is up and migrated (`prefloop migrate`)"
        ) from exc
    return {str(row[0]) for row in result.result_rows}
