"""The per-user rollups against the event tables they summarise, change after change."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from prefloop.analytics.metrics import FAR_FUTURE as FAR
from prefloop.analytics.metrics import ExperimentData, experiment_data
from prefloop.analytics.rollup import MARGIN, last_build, refresh
from prefloop.analytics.schema import migrate, set_retention
from prefloop.analytics.simulate import load_simulated, record_model_event, simulate_experiment
from prefloop.analytics.verdict import analyze
from prefloop.clickhouse.client import connect
from prefloop.infra.testing import start_store
from prefloop.settings import Settings
from prefloop.testing import isolated_settings

START = datetime(2026, 11, 1, tzinfo=UTC)
SINCE = START - timedelta(hours=1)

THRESHOLD_MS = 900.0  # the latency guardrail's, as a recorded look would give it
LONG_AGO = datetime.now(UTC) - 10 * MARGIN  # when the first rows were inserted


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = isolated_settings(tmp_path_factory.mktemp("rollup"))
    process = start_store(settings)
    try:
        yield settings
    finally:
        process.stop()


def both_paths(client: Client, experiment: str) -> tuple[ExperimentData, ExperimentData]:
    """(from the event tables, from the rollups brought up to date)."""
    tables = experiment_data(client, experiment, SINCE, FAR, THRESHOLD_MS)
    rollups = experiment_data(client, experiment, SINCE, None, THRESHOLD_MS)
    return tables, rollups


def assert_same(tables: ExperimentData, rollups: ExperimentData) -> None:
    assert rollups.moved_users == tables.moved_users
    assert rollups.arms.keys() == tables.arms.keys()
    for arm, want in tables.arms.items():
        got = rollups.arms[arm]
        assert (got.model_version, got.users, got.responses) == (
            want.model_version,
            want.users,
            want.responses,
        )
        assert got.daily_active_users == pytest.approx(want.daily_active_users, rel=1e-12)
        assert got.tokens_per_second == pytest.approx(want.tokens_per_second, rel=1e-9)
        assert got.latency_ms == pytest.approx(want.latency_ms, rel=1e-12)
    assert rollups.ratios.keys() == tables.ratios.keys()
    for metric, arms in tables.ratios.items():
        for arm, want_moments in arms.items():
            got_moments = rollups.ratios[metric][arm]
            assert got_moments.n == want_moments.n, (metric, arm)
            assert dataclasses.astuple(got_moments) == pytest.approx(
                dataclasses.astuple(want_moments), rel=1e-9
            ), (metric, arm)
    for arm, want_users in tables.score_users.items():
        assert dataclasses.astuple(rollups.score_users[arm]) == pytest.approx(
            dataclasses.astuple(want_users), rel=1e-9
        )
    assert tables.mann_whitney is not None and rollups.mann_whitney is not None
    assert rollups.mann_whitney == pytest.approx(tables.mann_whitney, rel=1e-9)


def rows_of(client: Client, table: str, experiment: str, computed_at: datetime) -> int:
    """Rows of a rollup computed by one build (every version kept until merged)."""
    sql = (
        f"SELECT count() FROM {table} WHERE experiment_id = {{e:String}} "
        "AND computed_at = {at:DateTime64(6)}"
    )
    params: dict[str, Any] = {"e": experiment, "at": computed_at}
    return int(client.query(sql, parameters=params).result_rows[0][0])


def test_the_rollups_say_what_the_event_tables_say_after_each_change(store: Settings) -> None:
    client = connect(store)
    sim = simulate_experiment("rolled", 400, seed=21, user_prefix="ro-", start=START)
    load_simulated(client, sim, inserted_at=LONG_AGO)
    assert last_build(client, "rolled", SINCE) is None
    assert_same(*both_paths(client, "rolled"))  # the first look builds them whole
    first = last_build(client, "rolled", SINCE)
    assert first is not None
    users = len(set(sim.interactions["user_id"].to_pylist()))
    assert rows_of(client, "interactions_by_user", "rolled", first) == users

    # nothing changed: the next look recomputes nobody
    second = refresh(client, "rolled", SINCE)
    assert not second.whole
    for table in ("interactions_by_user", "scores_by_user"):
        assert rows_of(client, table, "rolled", second.built_to) == 0

    # then, as the sink writes them: new users, a late revision of one user's score (its
    # insert begun before the last build), a client's duplicate of another's interaction,
    # and a third user moved to arm B
    load_simulated(
        client, simulate_experiment("rolled", 5, seed=22, user_prefix="new-", start=START)
    )
    score = next(s for s in sim.scores.to_pylist() if s["arm"] == "B")  # not the mover's
    revised = {
        **score,
        "revision": 1,
        "implicit_score": score["implicit_score"] + 10.0,
        # an insert still in flight when the last build began: stamped before it
        "_inserted_at": second.built_to - timedelta(minutes=1),
    }
    client.insert("scores", [list(revised.values())], column_names=list(revised))
    duplicate = sim.interactions.filter(
        pa.compute.equal(sim.interactions["user_id"], sim.interactions["user_id"][-1])
    )
    client.insert_arrow("interactions", duplicate.slice(0, 1))
    mover = next(r for r in sim.interactions.to_pylist() if r["arm"] == "A")
    moved = {
        **mover,
        **{"interaction_id": "ro-moved", "response_id": "ro-moved", "arm": "B"},
        "model_version": "v2",
    }
    client.insert_arrow("interactions", pa.Table.from_pylist([moved], sim.interactions.schema))
    moved_score = {
        **next(s for s in sim.scores.to_pylist() if s["user_id"] == mover["user_id"]),
        "interaction_id": "ro-moved",
        "response_id": "ro-moved",
        "arm": "B",
        "model_version": "v2",
    }
    client.insert_arrow("scores", pa.Table.from_pylist([moved_score], sim.scores.schema))

    # and a fourth user's latest interaction on a new version of arm A's model
    last = max(sim.interactions["ts"].to_pylist())
    busy = next(
        r
        for r in reversed(sim.interactions.to_pylist())
        if r["arm"] == "A"
        and r["user_id"] not in (mover["user_id"], duplicate["user_id"][0].as_py())
    )
    newer = {**busy, "interaction_id": "ro-newer", "response_id": "ro-newer", "ts": last}
    newer["model_version"] = "v1-next"
    client.insert_arrow("interactions", pa.Table.from_pylist([newer], sim.interactions.schema))

    tables, rollups = both_paths(client, "rolled")
    assert_same(tables, rollups)
    assert rollups.moved_users == 1
    assert rollups.arms["A"].model_version == "v1-next"
    third = last_build(client, "rolled", SINCE)
    assert third is not None and third > second.built_to
    # only the changed users were recomputed: the five new ones, the duplicate's user, the
    # moved one (a row per arm) and the one on a new version in one rollup; the new ones,
    # the revised score's user and the moved one in the other
    new_users = 5
    assert rows_of(client, "interactions_by_user", "rolled", third) == new_users + 1 + 2 + 1
    assert rows_of(client, "scores_by_user", "rolled", third) == new_users + 1 + 2


def test_the_verdict_reads_the_rollups_only_for_a_whole_run_still_kept(store: Settings) -> None:
    client = connect(store)
    load_simulated(
        client, simulate_experiment("kept", 300, seed=23, user_prefix="kp-", start=START)
    )
    record_model_event(client, "kept", "AB_STARTED", SINCE)
    analyze(client, store, "kept", end=FAR, split=50.0)  # windows: the event tables
    analyze(client, store, "kept", start=SINCE, split=50.0)
    assert last_build(client, "kept", SINCE) is None
    whole = analyze(client, store, "kept", split=50.0)
    assert last_build(client, "kept", SINCE) is not None
    windowed = analyze(client, store, "kept", start=SINCE, end=FAR, split=50.0)
    got, want = whole.metric("implicit_score"), windowed.metric("implicit_score")
    assert (got.n_a, got.n_b) == (want.n_a, want.n_b)
    assert (got.difference, got.p_value) == pytest.approx((want.difference, want.p_value))

    # a store keeping 12 days, a run begun 11.5 days ago: no row has aged out yet, but
    # one may before the next look (a day is kept to spare): the event tables
    database = f"short_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE DATABASE {database}")
    short = connect(store, database)
    migrate(short, database)
    set_retention(short, 12)
    begun = datetime.now(UTC) - timedelta(days=11.5)
    load_simulated(short, simulate_experiment("cut", 300, seed=27, user_prefix="ct-", start=begun))
    record_model_event(short, "cut", "AB_STARTED", begun - timedelta(hours=1))
    verdict = analyze(short, store, "cut", split=50.0)
    assert verdict.arms["A"].users + verdict.arms["B"].users == 300
    assert short.query("SELECT count() FROM rollup_builds").result_rows == [(0,)]


def test_the_rollups_follow_new_rows_on_a_clock_behind_utc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store and this process eight hours behind UTC: a build's time and the rows'
    insertion times are still compared in one zone, so new rows are not missed."""
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        settings = isolated_settings(tmp_path)
        process = start_store(settings)  # with this environment, TZ included
        try:
            client = connect(settings)
            sim = simulate_experiment("west", 200, seed=25, user_prefix="we-", start=START)
            load_simulated(client, sim, inserted_at=LONG_AGO)
            assert_same(*both_paths(client, "west"))
            load_simulated(
                client, simulate_experiment("west", 5, seed=26, user_prefix="wn-", start=START)
            )
            tables, rollups = both_paths(client, "west")
            assert_same(tables, rollups)
            assert rollups.arms["A"].users + rollups.arms["B"].users == 205
        finally:
            process.stop()
    finally:
        monkeypatch.undo()
        time.tzset()


class ReadOnly:
    """The client as a read-only ClickHouse user has it: every write refused.

    A double of the refusal only: the embedded store has no users, and ``readonly`` set
    on one of its pooled connections could not be set back.
    """

    def __init__(self, client: Client) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.lstrip().upper().startswith("INSERT"):
            raise DriverError("Code: 164. DB::Exception: Cannot execute query in readonly mode")
        return self.client.command(sql, *args, **kwargs)


def test_a_client_that_may_not_write_reads_the_event_tables(
    store: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(store)
    load_simulated(
        client, simulate_experiment("readonly", 200, seed=24, user_prefix="rd-", start=START)
    )
    refused: Any = ReadOnly(client)
    got = experiment_data(refused, "readonly", SINCE, None, THRESHOLD_MS)
    assert "cannot bring the per-user rollups of readonly up to date" in caplog.text
    assert last_build(client, "readonly", SINCE) is None
    want = experiment_data(client, "readonly", SINCE, FAR, THRESHOLD_MS)
    assert got == want
