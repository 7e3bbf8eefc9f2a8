"""The annotation queue: which annotator judges which task, and what they chose.

A SQLite file under the state dir (``$PREFLOOP_HOME/console/annotation.db``) holds
each AnnotationTask the feed read (:mod:`.annotation_feed`), the alternative response
it is judged against, and one assignment per annotator and task.

* **Order.** Each task has one A/B order, the same for all its annotators (so their
  choices compare): the original is A or B by the task id's hash, never by who looks.
  Tasks are given highest priority first, then oldest first.
* **Overlap.** A task goes to ``overlap`` annotators (``PREFLOOP_ANNOTATION_OVERLAP``
  when it arrived). A slot is taken by an answer or by a live hold.
* **Holds.** Taking a task holds it for ``lock_s`` (``PREFLOOP_ANNOTATION_LOCK_S``);
  while it is held nobody else gets that slot; afterwards the slot is free again. An
  annotator asking again while holding a task gets the same task back (a reload loses
  nothing).
* **Nobody twice.** An annotator is never given a task they were given before,
  answered or let lapse.
* **Late answers.** An answer after one's hold lapsed is taken while a slot is still
  free, and refused (:class:`AnnotationError`) once the task went to someone else.

Every method is one transaction under one lock: the console's threads share the file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefloop.errors import PrefloopError

__all__ = ["CHOICES", "AnnotationError", "AnnotationQueue", "Assignment", "Judgement"]

CHOICES = ("A", "B", "TIE", "BOTH_BAD", "SKIP")
RESULT_NAMESPACE = uuid.UUID("7d5c1c0e-5b0f-4a53-9d8e-2f6f3f3c9a11")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    task TEXT NOT NULL,               -- the AnnotationTask, as JSON
    priority REAL NOT NULL,
    overlap INTEGER NOT NULL,
    original_is_a INTEGER NOT NULL,
    received REAL NOT NULL,
    alternative TEXT,                 -- NULL until generated
    alternative_version TEXT,
    alternative_how TEXT
);
CREATE TABLE IF NOT EXISTS assignments (
    task_id TEXT NOT NULL REFERENCES tasks(task_id),
    annotator TEXT NOT NULL,
    taken REAL NOT NULL,
    held_until REAL NOT NULL,
    answered REAL,                    -- NULL while held or lapsed
    choice TEXT,
    PRIMARY KEY (task_id, annotator)
);
CREATE INDEX IF NOT EXISTS ready ON tasks (priority DESC, received) WHERE alternative IS NOT NULL;
"""

# the slots of a task taken now: answers and live holds
_TAKEN = """(SELECT COUNT(*) FROM assignments s WHERE s.task_id = t.task_id
             AND (s.answered IS NOT NULL OR s.held_until > :now))"""


class AnnotationError(PrefloopError):
    """An answer the queue refuses, with what to do instead."""


@dataclass(frozen=True)
class Assignment:
    """A task as one annotator is shown it."""

    task_id: str
    task: dict[str, Any]
    response_a: str
    response_b: str
    original_is_a: bool
    alternative_version: str
    alternative_how: str
    overlap: int
    held_until: float

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "prompt": self.task["prompt"],
            "response_a": self.response_a,
            "response_b": self.response_b,
            "overlap": self.overlap,
            "held_for_s": max(0.0, round(self.held_until - now, 1)),
        }


@dataclass(frozen=True)
class Judgement:
    task_id: str
    annotator: str
    choice: str


class AnnotationQueue:
    def __init__(self, path: Path, lock_s: float, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_s = lock_s
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an answer, once acknowledged, stays
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the feed's side -----------------------------------------------------
    def add(self, task: dict[str, Any], overlap: int) -> bool:
        """Queue ``task`` for ``overlap`` annotators; False if it is already queued."""
        original_is_a = hashlib.sha256(task["task_id"].encode()).digest()[0] % 2 == 0
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO tasks (task_id, task, priority, overlap, original_is_a,"
                " received) VALUES (?, ?, ?, ?, ?, ?)",
                (task["task_id"], json.dumps(task), float(task.get("priority") or 0.0),
                 overlap, int(original_is_a), self._clock()),
            )  # fmt: skip
            return cursor.rowcount == 1

    def without_alternative(self, limit: int = 32) -> list[dict[str, Any]]:
        """Tasks still waiting for their alternative response, in the order they are given."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT task FROM tasks WHERE alternative IS NULL "
                "ORDER BY priority DESC, received LIMIT ?",
                (limit,),
            ).fetchall()
        return [json.loads(row["task"]) for row in rows]

    def open_count(self) -> int:
        """Tasks ready (alternative in hand) with a slot no answer or live hold takes."""
        with self._transaction() as db:
            row = db.execute(
                f"SELECT COUNT(*) AS n FROM tasks t WHERE t.alternative IS NOT NULL "
                f"AND {_TAKEN} < t.overlap",
                {"now": self._clock()},
            ).fetchone()
        return int(row["n"])

    def set_alternative(self, task_id: str, text: str, version: str, how: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE tasks SET alternative = ?, alternative_version = ?, alternative_how = ?"
                " WHERE task_id = ?",
                (text, version, how, task_id),
            )

    # -- the annotators' side ------------------------------------------------
    def take(self, annotator: str) -> Assignment | None:
        """The task ``annotator`` should judge now (held for them), or None if none is left."""
        now = self._clock()
        with self._transaction() as db:
            row = db.execute(
                "SELECT t.*, a.held_until FROM assignments a JOIN tasks t USING (task_id) "
                "WHERE a.annotator = :me AND a.answered IS NULL AND a.held_until > :now "
                "ORDER BY a.taken LIMIT 1",
                {"me": annotator, "now": now},
            ).fetchone()
            if row is not None:
                return _assignment(row)
            row = db.execute(
                "SELECT t.* FROM tasks t WHERE t.alternative IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM assignments m WHERE m.task_id = t.task_id "
                f"AND m.annotator = :me) AND {_TAKEN} < t.overlap "
                "ORDER BY t.priority DESC, t.received LIMIT 1",
                {"me": annotator, "now": now},
            ).fetchone()
            if row is None:
                return None
            held_until = now + self.lock_s
            db.execute(
                "INSERT INTO assignments (task_id, annotator, taken, held_until) "
                "VALUES (?, ?, ?, ?)",
                (row["task_id"], annotator, now, held_until),
            )
            return _assignment(row, held_until)

    def answer(
        self,
        task_id: str,
        annotator: str,
        choice: str,
        comment: str | None,
        emit: Callable[[dict[str, Any]], None],
    ) -> dict[str, Any]:
        """Record ``annotator``'s ``choice`` on ``task_id``; returns the AnnotationResult.

        ``emit`` sends the result (to Kafka) before the answer is stored: if it raises,
        nothing is stored and the annotator may answer again. The result id derives from
        the task and the annotator, so an answer sent twice is one result downstream.
        """
        if choice not in CHOICES:
            raise AnnotationError(f"choice {choice!r} is not one of {', '.join(CHOICES)}")
        now = self._clock()
        with self._transaction() as db:
            row = db.execute(
                "SELECT t.*, a.held_until, a.answered FROM assignments a "
                "JOIN tasks t USING (task_id) WHERE a.task_id = ? AND a.annotator = ?",
                (task_id, annotator),
            ).fetchone()
            if row is None:
                raise AnnotationError(
                    f"task {task_id!r} was not given to {annotator}: take tasks from the queue"
                )
            if row["answered"] is not None:
                raise AnnotationError(f"{annotator} already answered task {task_id!r}")
            if row["held_until"] <= now:
                others = db.execute(
                    f"SELECT {_TAKEN} AS n FROM tasks t WHERE t.task_id = :task",
                    {"task": task_id, "now": now},
                ).fetchone()["n"]
                if others >= row["overlap"]:
                    raise AnnotationError(
                        f"your hold on task {task_id!r} lapsed after {self.lock_s:g} s and it "
                        "went to another annotator: your answer is not counted; take the next"
                    )
            shown = _assignment(row)
            result = _result(shown, annotator, choice, comment, now)
            emit(result)
            db.execute(
                "UPDATE assignments SET answered = ?, choice = ? "
                "WHERE task_id = ? AND annotator = ?",
                (now, choice, task_id, annotator),
            )
            return result

    # -- what the page shows -------------------------------------------------
    def progress(self, annotator: str) -> dict[str, int]:
        now = self._clock()
        with self._transaction() as db:
            row = db.execute(
                "SELECT "
                "(SELECT COUNT(*) FROM assignments WHERE annotator = :me AND answered IS NOT NULL)"
                " AS done, "
                "(SELECT COUNT(*) FROM tasks t WHERE t.alternative IS NOT NULL AND NOT EXISTS "
                " (SELECT 1 FROM assignments m WHERE m.task_id = t.task_id AND m.annotator = :me)"
                f" AND {_TAKEN} < t.overlap) AS left_for_me, "
                "(SELECT COUNT(*) FROM tasks WHERE alternative IS NULL) AS preparing, "
                "(SELECT COUNT(*) FROM tasks t WHERE (SELECT COUNT(*) FROM assignments s WHERE "
                " s.task_id = t.task_id AND s.answered IS NOT NULL) >= t.overlap) AS complete, "
                "(SELECT COUNT(*) FROM tasks) AS tasks",
                {"me": annotator, "now": now},
            ).fetchone()
        return dict(row)

    def judgements(self) -> list[Judgement]:
        """Every answer given, SKIPs included, oldest first."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT task_id, annotator, choice FROM assignments "
                "WHERE answered IS NOT NULL ORDER BY answered"
            ).fetchall()
        return [Judgement(r["task_id"], r["annotator"], r["choice"]) for r in rows]


def _assignment(row: sqlite3.Row, held_until: float | None = None) -> Assignment:
    task = json.loads(row["task"])
    original_is_a = bool(row["original_is_a"])
    original, alternative = task["response"], row["alternative"]
    return Assignment(
        task_id=row["task_id"],
        task=task,
        response_a=original if original_is_a else alternative,
        response_b=alternative if original_is_a else original,
        original_is_a=original_is_a,
        alternative_version=row["alternative_version"],
        alternative_how=row["alternative_how"],
        overlap=row["overlap"],
        held_until=row["held_until"] if held_until is None else held_until,
    )


def _result(
    shown: Assignment, annotator: str, choice: str, comment: str | None, now: float
) -> dict[str, Any]:
    """The AnnotationResult (v2) of ``annotator``'s ``choice`` on ``shown``."""
    task = shown.task
    original_id = task["response_id"]
    return {
        "result_id": str(uuid.uuid5(RESULT_NAMESPACE, f"{shown.task_id}\x00{annotator}")),
        "task_id": shown.task_id,
        "annotator_id": annotator,
        "prompt": task["prompt"],
        "response_a": shown.response_a,
        "response_b": shown.response_b,
        "response_a_id": original_id if shown.original_is_a else None,
        "response_b_id": None if shown.original_is_a else original_id,
        "choice": choice,
        "interaction_id": task.get("interaction_id"),
        "conversation_id": task.get("conversation_id"),
        "model_version": task.get("model_version"),
        "ts": int(now * 1000),
        "comment": comment or None,
        "overlap": shown.overlap,
    }
