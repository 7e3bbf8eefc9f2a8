"""The analysts' admin jobs against the embedded store: export, forget and retention.

The store runs in a process of its own (chDB admits one data directory per process),
started with a retention of ten years so that the owner's start applies one; rows are
inserted straight into the typed tables, as the sink would write them. Every test uses
its own users, conversations and time range, so the tests share one store.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from prefloop.analytics.exceptions import ExportError, ForgetError, TimeRangeError
from prefloop.analytics.export import export_interactions, parse_time
from prefloop.analytics.forget import FORGET_ORDER, forget_user, forgotten_users
from prefloop.analytics.rollup import refresh
from prefloop.analytics.schema import RETENTION_TABLES, migrate, set_retention
from prefloop.clickhouse.client import connect
from prefloop.clickhouse.migrations import ttl_days
from prefloop.errors import ClickHouseError
from prefloop.infra.testing import start_store
from prefloop.settings import Settings, child_environment
from prefloop.streams.offline import read_scored_responses, sample_file
from prefloop.testing import isolated_settings

CLI = [sys.executable, "-m", "prefloop.loop.cli"]
STORE_RETENTION_DAYS = 3650
INJECTED_USER = "x' OR 1=1 --"
INJECTED_DATE = "2026-01-01'); DROP TABLE interactions; --"
ALL_TABLES = (*FORGET_ORDER, "model_events", "forgotten_users")

_offsets = itertools.count(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = isolated_settings(
        tmp_path_factory.mktemp("admin"), clickhouse_retention_days=STORE_RETENTION_DAYS
    )
    process = start_store(settings)
    try:
        yield settings
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(store: Settings) -> Client:
    return connect(store)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def put(client: Client, table: str, *rows: dict[str, Any]) -> None:
    """Insert rows given as dicts (all with the same keys) into ``table``."""
    names = list(rows[0])
    client.insert(table, [[row[n] for n in names] for row in rows], column_names=names)


def interaction(iid: str, user: str, conv: str, ts: datetime, **fields: Any) -> dict[str, Any]:
    row = {
        "interaction_id": iid,
        "response_id": f"r-{iid}",
        "regenerates": "",
        "conversation_id": conv,
        "turn": 0,
        "ts": ts,
        "user_id": user,
        "session_id": "s-1",
        "experiment_id": "",
        "arm": "",
        "model_version": "v1",
        "messages": json.dumps([{"role": "user", "content": f"question {iid}"}]),
        "response": f"answer {iid}",
        "latency_ms": 120,
        "prompt_tokens": 12,
        "completion_tokens": 40,
        "uncertainty": None,
        "metadata": {},
        "_offset": next(_offsets),
    }
    row.update(fields)
    return row


def score(iid: str, user: str, conv: str, revision: int, **fields: Any) -> dict[str, Any]:
    row = {
        "interaction_id": iid,
        "response_id": f"r-{iid}",
        "conversation_id": conv,
        "user_id": user,
        "model_version": "v1",
        "revision": revision,
        "implicit_score": 1.0,
        "signals_reported": False,
        "rating": None,
        "ts": at("2026-01-20T00:00:00"),
        "_offset": next(_offsets),
    }
    row.update(fields)
    return row


def feedback(user: str, conv: str, iid: str, ts: datetime) -> dict[str, Any]:
    return {
        "event_id": uid("f"),
        "ts": ts,
        "kind": "COPY",
        "interaction_id": iid,
        "response_id": f"r-{iid}",
        "conversation_id": conv,
        "user_id": user,
        "session_id": "s-1",
    }


def exposure(user: str, conv: str, ts: datetime) -> dict[str, Any]:
    return {
        "exposure_id": uid("e"),
        "ts": ts,
        "experiment_id": "exp-1",
        "user_id": user,
        "arm": "A",
        "model_version": "v1",
        "bucket": 7,
        "conversation_id": conv,
    }


def preference(user: str, conv: str, chosen: str, rejected: str, ts: datetime) -> dict[str, Any]:
    return {
        "pair_id": uid("p"),
        "prompt": "[]",
        "chosen": "good",
        "rejected": "bad",
        "source": "IMPLICIT",
        "weight": 1.0,
        "chosen_interaction_id": chosen,
        "rejected_interaction_id": rejected,
        "conversation_id": conv,
        "user_id": user,
        "model_version": "v1",
        "ts": ts,
    }


def task(iid: str, conv: str, ts: datetime) -> dict[str, Any]:
    return {
        "task_id": uid("t"),
        "interaction_id": iid,
        "conversation_id": conv,
        "prompt": "question",
        "response": "answer",
        "reasons": ["uncertain"],
        "ts": ts,
    }


def result(iid: str, conv: str, ts: datetime) -> dict[str, Any]:
    return {
        "result_id": uid("a"),
        "task_id": uid("t"),
        "annotator_id": "ann-1",
        "choice": "A",
        "interaction_id": iid,
        "conversation_id": conv,
        "ts": ts,
    }


def raw(key: str, ts: datetime, record_type: str = "interaction") -> dict[str, Any]:
    return {
        "topic": f"prefloop.{record_type}",
        "partition": 0,
        "offset": next(_offsets),
        "key": key,
        "value": "avro bytes",
        "ts": ts,
        "record_type": record_type,
        "event_id": uid("ev"),
    }


def dead_letter(key: str, ts: datetime) -> dict[str, Any]:
    return {"event_id": uid("d"), "ts": ts, "reason": "bad", "key": key, "value": "bytes"}


def counts(client: Client) -> dict[str, int]:
    """Rows per table, read with FINAL: a background merge of duplicates (which other
    tests insert on purpose) does not change them."""
    return {
        table: int(client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0])
        for table in ALL_TABLES
    }


def physical_rows(client: Client, table: str, interaction_id: str) -> int:
    """Rows of ``table`` about one interaction, duplicates and revisions included."""
    sql = f"SELECT count() FROM {table} WHERE interaction_id = {{i:String}}"
    return int(client.query(sql, parameters={"i": interaction_id}).result_rows[0][0])


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=child_environment(settings), capture_output=True, text=True, timeout=300
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- export ---------------------------------------------------------------------------


def test_export_writes_each_interaction_once_with_its_latest_score(
    client: Client, tmp_path: Path
) -> None:
    user, forgotten, conv = uid("u"), uid("gone"), uid("c")
    i = {name: uid(name) for name in ("first", "dup", "tie", "regen", "last", "before", "end")}
    rows = [
        interaction(i["first"], user, conv, at("2026-01-10T00:00:00")),  # exactly the start
        interaction(
            i["dup"],
            user,
            conv,
            at("2026-01-10T08:00:00.250"),
            experiment_id="exp-1",
            arm="A",
            uncertainty=0.7,
            metadata={"client": "web", "locale": "fr"},
        ),
        interaction(i["tie"], user, conv, at("2026-01-10T08:00:00.250")),  # same ts as dup
        interaction(i["regen"], user, conv, at("2026-01-11T09:00:00"), regenerates="r-x", turn=1),
        interaction(i["last"], user, conv, at("2026-01-11T23:59:59.999")),
        interaction(i["before"], user, conv, at("2026-01-09T23:59:59.999")),  # out of range
        interaction(i["end"], user, conv, at("2026-01-12T00:00:00")),  # the end is exclusive
        interaction(uid("theirs"), forgotten, uid("c"), at("2026-01-10T12:00:00")),
    ]
    # merges stopped: the duplicate and the score revisions stay rows of their own
    client.command("SYSTEM STOP MERGES interactions")
    client.command("SYSTEM STOP MERGES scores")
    try:
        export_case(client, tmp_path, rows, i, user, forgotten, conv)
    finally:
        client.command("SYSTEM START MERGES interactions")
        client.command("SYSTEM START MERGES scores")


def export_case(
    client: Client,
    tmp_path: Path,
    rows: list[dict[str, Any]],
    i: dict[str, str],
    user: str,
    forgotten: str,
    conv: str,
) -> None:
    put(client, "interactions", *rows)
    put(client, "interactions", dict(rows[1], _offset=next(_offsets)))  # a client's duplicate
    for revision in (  # one insert each, as the sink writes them: a late revision last
        score(i["regen"], user, conv, 0, implicit_score=1.0, rating=2.0),
        score(i["regen"], user, conv, 2, implicit_score=3.5, rating=None, signals_reported=True),
        score(i["regen"], user, conv, 1, implicit_score=2.0, rating=4.0),
        score(i["dup"], user, conv, 0, implicit_score=-1.5, rating=5.0),
    ):
        put(client, "scores", revision)
    put(client, "forgotten_users", {"user_id": forgotten, "rows_deleted": 0})
    assert physical_rows(client, "interactions", i["dup"]) == 2
    assert physical_rows(client, "scores", i["regen"]) == 3

    out = tmp_path / "interactions.jsonl"
    seen: list[int] = []
    report = export_interactions(
        client, "2026-01-10", date(2026, 1, 12), out, progress=seen.append, page_rows=2
    )

    exported = lines(out)
    assert [line["interaction_id"] for line in exported] == [
        i["first"],
        *sorted([i["dup"], i["tie"]]),
        i["regen"],
        i["last"],
    ]
    assert report.rows == 5 and report.scored == 2 and report.out == out
    assert seen[-1] == 5 and seen == sorted(seen)
    assert not list(tmp_path.glob(".*.tmp"))
    regen = next(line for line in exported if line["interaction_id"] == i["regen"])
    assert regen == {
        "interaction_id": i["regen"],
        "response_id": f"r-{i['regen']}",
        "regenerates": "r-x",
        "conversation_id": conv,
        "turn": 1,
        "ts": int(at("2026-01-11T09:00:00").timestamp() * 1000),
        "user_id": user,
        "session_id": "s-1",
        "experiment_id": None,
        "arm": None,
        "model_version": "v1",
        "messages": [{"role": "user", "content": f"question {i['regen']}"}],
        "response": f"answer {i['regen']}",
        "latency_ms": 120,
        "prompt_tokens": 12,
        "completion_tokens": 40,
        "uncertainty": None,
        "metadata": {},
        "implicit_score": 3.5,  # revision 2, with its null rating: no older one leaks in
        "rating": None,
        "reported": True,
    }
    dup = next(line for line in exported if line["interaction_id"] == i["dup"])
    assert (dup["experiment_id"], dup["arm"], dup["uncertainty"]) == ("exp-1", "A", 0.7)
    assert dup["metadata"] == {"client": "web", "locale": "fr"}
    assert dup["ts"] == int(at("2026-01-10T08:00:00.250").timestamp() * 1000)
    assert (dup["implicit_score"], dup["rating"], dup["reported"]) == (-1.5, 5.0, False)
    first = exported[0]
    assert (first["regenerates"], first["implicit_score"], first["rating"]) == (None, None, None)
    assert first["reported"] is False
    # one page or many: the same lines (a duplicate never straddles nor fills a page)
    for page_rows in (1, 1000):
        again = tmp_path / f"again-{page_rows}.jsonl"
        export_interactions(client, "2026-01-10", "2026-01-12", again, page_rows=page_rows)
        assert again.read_text() == out.read_text()

    # the export is what the offline sampler reads
    assert len(list(read_scored_responses(out))) == 5
    sampled = sample_file(out, 3, tmp_path / "tasks.jsonl")
    assert (sampled.lines, sampled.tasks) == (5, 3)
    assert {task["interaction_id"] for task in lines(tmp_path / "tasks.jsonl")} <= set(i.values())


def test_an_empty_range_writes_an_empty_file(client: Client, tmp_path: Path) -> None:
    out = tmp_path / "none.jsonl"
    report = export_interactions(client, "1999-01-01", "1999-01-02T00:00:00Z", out)
    assert report.rows == 0 and out.read_text() == ""


def test_bad_times_and_paths_are_refused_with_a_clear_error(client: Client, tmp_path: Path) -> None:
    with pytest.raises(TimeRangeError) as bad:
        parse_time("2026-13-01", "--start")
    assert str(bad.value) == (
        "--start 2026-13-01 is not a date: give YYYY-MM-DD or an ISO 8601 time"
    )
    with pytest.raises(TimeRangeError, match="is not a date"):
        export_interactions(client, INJECTED_DATE, "2026-02-01", tmp_path / "x.jsonl")
    with pytest.raises(TimeRangeError, match="end 2026-01-01 is not after start 2026-01-02"):
        export_interactions(client, "2026-01-02", "2026-01-01", tmp_path / "x.jsonl")
    with pytest.raises(TimeRangeError, match="is not after"):
        export_interactions(client, "2026-01-02", "2026-01-02", tmp_path / "x.jsonl")
    with pytest.raises(ExportError, match="does not exist"):
        export_interactions(client, "2026-01-01", "2026-01-02", tmp_path / "no" / "x.jsonl")
    assert not list(tmp_path.iterdir())
    assert parse_time("2026-01-31T12:00:00+02:00") == at("2026-01-31T10:00:00")
    assert parse_time(date(2026, 1, 31)) == at("2026-01-31T00:00:00")
    assert client.query("EXISTS TABLE interactions").result_rows[0][0] == 1


# -- forget ---------------------------------------------------------------------------


def seed_user(client: Client, user: str, day: datetime) -> dict[str, int]:
    """Rows of ``user`` in every table; returns how many each table holds.

    No two rows share a table's sorting key, so that a background merge cannot
    change the counts while a test looks.
    """
    c1, c2 = uid("c"), uid("c")
    i1, i2, i3 = uid("i"), uid("i"), uid("i")
    arm = {"experiment_id": f"exp-{user}", "arm": "A"}  # an experiment of their own
    put(
        client,
        "interactions",
        interaction(i1, user, c1, day, **arm),
        interaction(i2, user, c1, day + timedelta(minutes=1), **arm),
        interaction(i3, user, c2, day + timedelta(minutes=2), **arm),
    )
    put(client, "feedback", feedback(user, c1, i1, day), feedback(user, c2, i3, day))
    put(
        client,
        "scores",
        score(i1, user, c1, 0, **arm),
        score(i2, user, c1, 0, **arm),
        score(i3, user, c2, 0, **arm),
    )
    refresh(client, arm["experiment_id"], at("2026-01-01T00:00:00"))  # the per-user rollups
    put(client, "exposures", exposure(user, c1, day), exposure(user, "", day))
    put(client, "preferences", preference(user, c1, i1, i2, day))
    put(client, "annotation_tasks", task(i3, "", day), task("", c1, day))
    put(client, "annotation_results", result(i1, c1, day))
    put(
        client,
        "raw_events",
        raw(c1, day),
        raw(c1, day, "feedback"),
        raw(c2, day),
        raw(user, day, "exposure"),  # an exposure with no conversation: keyed by user
        raw(c2, day, "dead_letter"),
    )
    put(client, "dead_letters", dead_letter(c2, day))
    return {
        "raw_events": 5,
        "dead_letters": 1,
        "annotation_results": 1,
        "annotation_tasks": 2,
        "first_exposures": 1,  # both exposures: one experiment and arm
        "interactions_by_user": 1,
        "scores_by_user": 1,
        "feedback": 2,
        "scores": 3,
        "exposures": 2,
        "preferences": 1,
        "interactions": 3,
    }


def test_forget_deletes_the_users_rows_from_every_table_and_nothing_else(
    client: Client,
) -> None:
    day = at("2026-02-03T10:00:00")
    user, other = uid("forget-me"), uid("keep-me")
    expected = seed_user(client, user, day)
    kept = seed_user(client, other, day)
    put(client, "raw_events", raw("", day, "model_event"), raw(user, day, "model_event"))
    put(client, "model_events", {"event_id": uid("m"), "ts": day, "model_version": "v1"})
    before = counts(client)

    report = forget_user(client, user)

    assert report.deleted == expected
    assert list(report.deleted) == list(FORGET_ORDER)
    assert report.found and report.total == sum(expected.values()) and report.conversations == 2
    after = counts(client)
    for table in FORGET_ORDER:
        assert after[table] == before[table] - expected[table], table
    assert after["model_events"] == before["model_events"]
    assert after["forgotten_users"] == before["forgotten_users"] + 1
    assert user in forgotten_users(client) and other not in forgotten_users(client)
    recorded = client.query(
        "SELECT rows_deleted FROM forgotten_users FINAL WHERE user_id = {u:String}",
        parameters={"u": user},
    ).result_rows
    assert recorded == [(report.total,)]
    # the other user's rows are all there: forgetting them now deletes the same counts
    assert forget_user(client, other).deleted == kept
    # a model event keyed like a user id is not the user's
    assert client.query(
        "SELECT count() FROM raw_events WHERE key = {u:String}", parameters={"u": user}
    ).result_rows == [(1,)]


def test_forgetting_an_unknown_user_deletes_nothing_and_says_so(client: Client) -> None:
    nobody = uid("nobody")
    before = counts(client)
    report = forget_user(client, nobody)
    assert not report.found and report.total == 0
    assert set(report.deleted.values()) == {0}
    assert "no rows held user" in report.summary()
    after = counts(client)
    assert after == dict(before, forgotten_users=before["forgotten_users"] + 1)
    assert nobody in forgotten_users(client)


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_user_id_is_refused(client: Client, empty: str) -> None:
    before = counts(client)
    with pytest.raises(ForgetError, match="is empty"):
        forget_user(client, empty)
    assert counts(client) == before


def test_an_injected_user_id_is_a_plain_value(client: Client) -> None:
    day = at("2026-02-05T10:00:00")
    bystander = uid("bystander")
    seed_user(client, bystander, day)
    put(client, "interactions", interaction(uid("i"), INJECTED_USER, uid("c"), day))
    before = counts(client)

    report = forget_user(client, INJECTED_USER)

    assert report.deleted["interactions"] == 1 and report.total == 1
    assert counts(client) == dict(
        before,
        interactions=before["interactions"] - 1,
        forgotten_users=before["forgotten_users"] + 1,
    )
    assert client.query(
        "SELECT count() FROM interactions WHERE user_id = {u:String}", parameters={"u": bystander}
    ).result_rows == [(3,)]


# -- retention ------------------------------------------------------------------------


def engine_of(client: Client, table: str) -> str:
    sql = (
        "SELECT engine_full FROM system.tables "
        "WHERE database = currentDatabase() AND name = {t:String}"
    )
    return str(client.query(sql, parameters={"t": table}).result_rows[0][0])


def ttl_of(client: Client, table: str) -> str:
    create = str(client.query(f"SHOW CREATE TABLE {table}").result_rows[0][0])
    return next((line.strip() for line in create.splitlines() if "TTL" in line), "")


def test_the_owner_applies_the_configured_retention(client: Client) -> None:
    for table, column in RETENTION_TABLES.items():
        assert ttl_of(client, table) == (
            f"TTL toDateTime({column}) + toIntervalDay({STORE_RETENTION_DAYS})"
        )
    assert ttl_of(client, "first_exposures") == ""
    assert ttl_of(client, "forgotten_users") == ""


def test_apply_retention_sets_and_removes_the_ttl_idempotently(
    store: Settings, client: Client
) -> None:
    database = f"ret_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE DATABASE {database}")
    other = connect(store, database)
    migrate(other, database)
    assert ttl_of(other, "interactions") == ""

    assert set_retention(other, 30) == list(RETENTION_TABLES)
    assert "TTL toDateTime(ts) + toIntervalDay(30)" in str(
        other.query("SHOW CREATE TABLE interactions").result_rows[0][0]
    )
    assert all(
        ttl_of(other, t) == f"TTL toDateTime({c}) + toIntervalDay(30)"
        for t, c in RETENTION_TABLES.items()
    )
    assert ttl_of(other, "scores_by_user") == "TTL toDateTime(computed_at) + toIntervalDay(30)"
    assert set_retention(other, 30) == []
    assert ttl_days(engine_of(other, "interactions")) == 30
    assert set_retention(other, 7) == list(RETENTION_TABLES)
    assert ttl_of(other, "raw_events") == "TTL toDateTime(ts) + toIntervalDay(7)"

    assert set_retention(other, 0) == list(RETENTION_TABLES)
    assert all(ttl_of(other, t) == "" for t in RETENTION_TABLES)
    assert set_retention(other, 0) == []
    assert ttl_days(engine_of(other, "interactions")) == 0
    with pytest.raises(ClickHouseError, match="not valid"):
        set_retention(other, -1)
    # the store's own database keeps its retention
    assert ttl_of(client, "interactions").endswith(f"toIntervalDay({STORE_RETENTION_DAYS})")


# -- the commands ---------------------------------------------------------------------


def test_the_commands_export_forget_and_migrate(
    store: Settings, client: Client, tmp_path: Path
) -> None:
    user, conv = uid("cli"), uid("c")
    day = at("2026-03-01T10:00:00")
    put(
        client,
        "interactions",
        interaction(uid("i"), user, conv, day),
        interaction(uid("i"), user, conv, day + timedelta(hours=1)),
    )
    out = tmp_path / "export.jsonl"
    done = run_cli(
        store, "export", "interactions", "--start", "2026-03-01", "--end", "2026-03-02",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "export: 2 interactions" in done.stdout and str(out) in done.stdout.replace("\n", "")
    assert [line["user_id"] for line in lines(out)] == [user, user]

    done = run_cli(store, "forget", "--user", user)
    assert done.returncode == 0, done.stderr
    assert "interactions" in done.stdout and "deleted 2 rows" in done.stdout
    assert client.query(
        "SELECT count() FROM interactions WHERE user_id = {u:String}", parameters={"u": user}
    ).result_rows == [(0,)]

    for args, message in [
        (
            ["export", "interactions", "--start", "2026-13-01", "--end", "2026-03-02"],
            "error: --start 2026-13-01 is not a date: give YYYY-MM-DD or an ISO 8601 time",
        ),
        (
            ["export", "interactions", "--start", "2026-03-01", "--end", INJECTED_DATE],
            f"error: --end {INJECTED_DATE} is not a date",
        ),
        (
            ["export", "interactions", "--start", "2026-03-02", "--end", "2026-03-01"],
            "error: --end 2026-03-01 is not after --start 2026-03-02",
        ),
        (["forget", "--user", ""], "error: user id '' is empty"),
    ]:
        if args[0] == "export":
            args = [*args, "--out", str(tmp_path / "refused.jsonl")]
        done = run_cli(store, *args)
        assert done.returncode == 1, done.stdout
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith(message), done.stderr
    assert not (tmp_path / "refused.jsonl").exists()
    assert client.query("EXISTS TABLE interactions").result_rows[0][0] == 1

    database = f"cli_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE DATABASE {database}")
    migrating = store.with_overrides(clickhouse_database=database, clickhouse_retention_days=7)
    done = run_cli(migrating, "migrate")
    assert done.returncode == 0, done.stderr
    assert ttl_of(connect(migrating), "interactions") == "TTL toDateTime(ts) + toIntervalDay(7)"
