"""The sink's lag, read from the real broker, and the automatic loop's freshness check.

The sink runs as in ``test_sink.py``: the embedded store in a process of its own, the
sink in a thread of this process writing to it over HTTP.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from test_sink import SinkThread, committed, produce, scalar, sink_settings, wait_for

from prefloop import kafka
from prefloop.analytics.exceptions import AnalysisError, SinkLagError
from prefloop.analytics.lag import TopicLag, sink_lag
from prefloop.analytics.sink import ClickHouseSink, sink_group
from prefloop.analytics.verdict import analyze
from prefloop.clickhouse.client import connect
from prefloop.infra.testing import STORE_ONLY, start_store
from prefloop.loop.autopilot import Look, look_at, stale_note, verdict_topics
from prefloop.serving.assignment import Routing, Split
from prefloop.settings import Settings
from prefloop.testing import free_port, fresh_topics

EXPERIMENT = Routing(experiment=Split("exp-lag", "v1", "v2", 50.0))


def commit_for_sink(settings: Settings, offsets: dict[tuple[str, int], int]) -> None:
    """Commit ``offsets`` for the sink's group, as if the sink had stored what is below."""
    group = sink_group(settings)
    partitions = [TopicPartition(t, p, offset) for (t, p), offset in offsets.items()]
    admin = kafka.admin_client(settings)  # held: a collected client cancels its futures
    futures = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)])
    futures[group].result(timeout=30)


def produce_in_transactions(settings: Settings, topic: str, committed: int, aborted: int) -> None:
    """``committed`` records in a committed transaction, then ``aborted`` in an aborted one,
    as the stream worker writes (each transaction leaves a marker on the partitions)."""
    producer = kafka.producer(settings, **{"transactional.id": f"{settings.topic_prefix}-tx"})
    producer.init_transactions(30)
    for count, commit in ((committed, True), (aborted, False)):
        producer.begin_transaction()
        for i in range(count):
            producer.produce(topic, f"scored {i}".encode(), f"k{i}".encode())
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)


# -- the lag, with no sink running -----------------------------------------------------


def test_events_no_sink_stored_are_counted_and_their_age_grows(settings: Settings) -> None:
    topics = settings.topics
    names = [topics.interactions, topics.feedback, topics.exposures]
    produced_at = time.time()
    produce(settings, 50)  # 50 interactions, 50 feedback events, over several partitions
    first = sink_lag(settings, names)
    assert first[topics.interactions].events == 50
    assert first[topics.feedback].events == 50
    assert first[topics.exposures] == TopicLag(topics.exposures, 0, 0.0)
    assert 0 <= first[topics.interactions].oldest_s <= time.time() - produced_at + 0.5

    time.sleep(2.0)
    later = sink_lag(settings, names)
    assert later[topics.interactions].events == 50
    assert later[topics.interactions].oldest_s >= first[topics.interactions].oldest_s + 1.9
    assert later[topics.feedback].oldest_s >= first[topics.feedback].oldest_s + 1.9
    # measuring joined nothing and committed nothing: the group still has no offsets
    assert all(offset < 0 for offset in committed(settings, sink_group(settings)).values())


def test_the_lag_starts_at_the_committed_offset(settings: Settings) -> None:
    topics = settings.topics
    names = [topics.interactions, topics.feedback]
    old = produce(settings, 30)
    time.sleep(3.0)
    new_at = time.time()
    new = produce(settings, 20)
    before = sink_lag(settings, names)
    assert before[topics.interactions].events == 50
    assert before[topics.interactions].oldest_s >= 3.0

    # the sink stored the old records: commit, per partition, past the last old one
    stored: dict[tuple[str, int], int] = {}
    for topic, partition, offset in old.records:
        stored[(topic, partition)] = max(stored.get((topic, partition), 0), offset + 1)
    commit_for_sink(settings, stored)
    after = sink_lag(settings, names)
    assert after[topics.interactions].events == 20
    assert after[topics.feedback].events == 20
    # the oldest record not stored is now one of the new ones, 3 s younger than the old
    assert len(new.records) == 40
    for name in names:
        assert after[name].oldest_s <= time.time() - new_at + 0.01, (before, after)
        assert after[name].oldest_s < before[name].oldest_s - 2.9, (before, after)


def test_a_topic_missing_or_a_broker_away_is_a_sink_lag_error(
    settings: Settings, kafka_settings: Settings
) -> None:
    with pytest.raises(SinkLagError, match=r"topic t-nowhere\.interactions is not on the broker"):
        sink_lag(settings, ["t-nowhere.interactions"])
    # nothing listens on the controller port for a Kafka client
    away = kafka_settings.with_overrides(kafka_port=kafka_settings.kafka_controller_port + 1000)
    with pytest.raises(SinkLagError, match="could not read how far consumer group"):
        sink_lag(away, [settings.topics.interactions], timeout=2.0)


# -- the real sink catches up ----------------------------------------------------------


def test_the_real_sink_brings_the_lag_to_zero_and_the_loop_then_analyses(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = sink_settings(kafka_settings, tmp_path)
    topics = verdict_topics(settings)
    scores = settings.topics.scores
    produce(settings, 100)
    # the scores topic is written in transactions: their markers take offsets the
    # sink never commits past, and an aborted transaction's records are never read
    produce_in_transactions(settings, scores, committed=30, aborted=10)
    behind = sink_lag(settings, topics)
    # offsets, not records: the markers (one per partition a transaction wrote to) count
    offsets_on_scores = kafka.topic_message_counts(settings, [scores])[scores] or 0
    assert offsets_on_scores > 30 + 10
    assert [behind[t].events for t in topics] == [100, 100, 0, offsets_on_scores]
    assert stale_note(behind.values(), 0.001) is not None

    process = start_store(settings, STORE_ONLY)
    runner = None
    try:
        runner = SinkThread(ClickHouseSink(settings, lambda: connect(settings)))
        lags: list[dict[str, TopicLag]] = []

        def caught_up() -> bool:
            lags.append(sink_lag(settings, topics))
            return all(lag.events == 0 for lag in lags[-1].values())

        wait_for("the sink's lag down to 0", caught_up, timeout=120, watch=runner.check)
        assert lags[-1] == {t: TopicLag(t, 0, 0.0) for t in topics}
        # the sink stopped short of the last markers: the lag does not count them
        offsets = committed(settings, sink_group(settings))
        assert sum(max(o, 0) for (t, _), o in offsets.items() if t == scores) < offsets_on_scores
        client = connect(settings)
        assert scalar(client, "SELECT count() FROM raw_events FINAL") == 200 + 30
        assert stale_note(lags[-1].values(), 0.001) is None

        # fresh: the look goes on to the verdict, which finds no data for the experiment
        with pytest.raises(AnalysisError) as raised:
            analyze(client, settings, "exp-lag", record=True)
        assert look_at(settings, EXPERIMENT) == Look("exp-lag", None, None, str(raised.value))
    finally:
        if runner is not None:
            runner.close()
        process.stop()
    assert runner.error is None


# -- the decision ----------------------------------------------------------------------


def test_stale_note_names_the_topic_behind_the_longest() -> None:
    interactions = TopicLag("prefloop.interactions", 1234, 95.4)
    scores = TopicLag("prefloop.scores", 3, 300.0)
    fresh = TopicLag("prefloop.feedback", 0, 0.0)
    assert stale_note([], 120.0) is None
    assert stale_note([interactions, fresh], 120.0) is None
    assert stale_note([TopicLag("prefloop.exposures", 9, 120.0)], 120.0) is None  # at the limit
    assert stale_note([fresh, interactions], 60.0) == (
        "the sink is 1,234 events (95 s) behind on prefloop.interactions: "
        "not acting until it catches up"
    )
    assert stale_note([interactions, scores, fresh], 60.0) == (
        "the sink is 3 events (300 s) behind on prefloop.scores: not acting until it catches up"
    )


def test_a_look_at_stale_data_neither_analyses_nor_acts(kafka_settings: Settings) -> None:
    # nothing listens at the store's address: a look that went on to analyse would raise
    away = f"http://127.0.0.1:{free_port()}"
    settings = fresh_topics(kafka_settings, ab_max_sink_lag_s=1.0, clickhouse_url=away)
    produce(settings, 20)
    time.sleep(1.5)
    look = look_at(settings, EXPERIMENT)
    assert (look.experiment_id, look.verdict, look.acted) == ("exp-lag", None, None)
    topics = re.escape(settings.topics.interactions) + "|" + re.escape(settings.topics.feedback)
    pattern = (
        rf"the sink is 20 events \((\d+) s\) behind on ({topics}): not acting until it catches up"
    )
    match = re.fullmatch(pattern, look.note)
    assert match is not None, look.note
    assert int(match.group(1)) >= 1

    # the same data under the default limit is fresh enough to analyse
    assert stale_note(sink_lag(settings, verdict_topics(settings)).values(), 120.0) is None
