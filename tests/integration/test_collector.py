"""The HTTP collector under uvicorn, producing through the SDK onto the real broker."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from prefloop import kafka
from prefloop.event_client import feedback_client
from prefloop.serving.collector import Limits, create_collector
from prefloop.settings import Settings
from prefloop.testing import free_port, http_request

VECTORS = {
    v["name"]: v
    for v in json.loads(
        (Path(__file__).parents[2] / "schemas" / "vectors" / "vectors.json").read_text()
    )["vectors"]
}
TOKEN = "s3cret token"


class Collector:
    def __init__(self, url: str, settings: Settings) -> None:
        self.url, self.settings = url, settings

    def post(
        self,
        body: Any,
        token: str | None = TOKEN,
        raw: bytes | None = None,
        query: str = "",
        content_type: str = "application/json",
    ) -> tuple[int, dict, Any]:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else json.dumps(body).encode()
        status, reply_headers, text = http_request(
            "POST", f"{self.url}/v1/events{query}", data, headers
        )
        return status, reply_headers, json.loads(text) if text else None


@pytest.fixture
def collector(settings: Settings, tmp_path: Path) -> Iterator[Collector]:
    scoped = settings.with_overrides(home=tmp_path)
    limits = Limits(token=TOKEN, max_body_bytes=64 * 1024, max_events=50, rate_per_s=1.0, burst=200)
    client = feedback_client(scoped, name=f"collector-{uuid.uuid4().hex[:6]}")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_collector(client, limits), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield Collector(f"http://127.0.0.1:{port}", scoped)
    finally:
        server.should_exit = True
        thread.join(10)
        client.close()


def topic_values(settings: Settings, topic: str, expected: int, timeout: float = 30) -> list[bytes]:
    """Every value on ``topic``: waits for ``expected``, then a moment more for extras."""
    consumer = kafka.consumer(settings, group_id=f"test-{uuid.uuid4().hex}")
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.3)
            if message is not None and not message.error():
                values.append(message.value())
                continue
            if len(values) >= expected:
                quiet_until = quiet_until or time.monotonic() + 2
                if time.monotonic() > quiet_until:
                    break
    finally:
        consumer.close()
    return values


def vector_batch(*names: str) -> dict[str, Any]:
    return {
        "events": [{"type": VECTORS[n]["record_type"], "data": VECTORS[n]["event"]} for n in names]
    }


def test_accepted_events_land_on_their_topics_as_the_shared_vectors(collector: Collector) -> None:
    names = ["interaction/full", "feedback/thumbs_down", "exposure/assigned"]
    status, _, body = collector.post(vector_batch(*names))
    assert (status, body) == (202, {"accepted": 3, "rejected": 0, "errors": []})
    topics = collector.settings.topics
    for name in names:
        vector = VECTORS[name]
        values = topic_values(collector.settings, topics.for_record(vector["record_type"]), 1)
        assert [v.hex() for v in values] == [vector["hex"]], name


def test_bad_input_gets_a_reason_reaches_no_topic_and_the_collector_goes_on(
    collector: Collector,
) -> None:
    good = VECTORS["feedback/thumbs_down"]["event"]
    bad_kind = {**good, "event_id": "bad-kind", "kind": "LIKE"}
    bad_type = {**good, "event_id": "bad-type", "value": "five"}
    cases = [
        (collector.post(None, raw=b'{"events": [{"type": '), 400, "malformed JSON"),
        (collector.post({"events": {"type": "feedback"}}), 400, "must be a JSON object"),
        (
            collector.post({"events": [{"type": "feedback", "data": bad_kind}]}),
            400,
            'field kind is "LIKE"',
        ),
        (
            collector.post({"events": [{"type": "feedback", "data": bad_type}]}),
            400,
            'field value is "five"',
        ),
        (
            collector.post({"events": [{"type": "preference_pair", "data": {}}]}),
            400,
            "unknown event type 'preference_pair'",
        ),
        (
            collector.post({"events": [{"type": "feedback", "data": good}] * 51}),
            413,
            "batch of 51 events exceeds the limit of 50",
        ),
        (collector.post(None, raw=b"[" + b" " * 70000 + b"]"), 413, "exceeds the limit"),
        (collector.post(vector_batch("feedback/thumbs_down"), token=None), 401, "missing token"),
        (collector.post(vector_batch("feedback/thumbs_down"), token="nope"), 401, "wrong token"),
    ]
    for (status, _, body), expected_status, reason in cases:
        assert status == expected_status, body
        said = body.get("error") or " ".join(e["reason"] for e in body.get("errors", []))
        assert reason in said, body
    per_event = cases[2][0][2]
    assert per_event["errors"][0]["index"] == 0 and per_event["accepted"] == 0

    mixed = {"events": [{"type": "feedback", "data": good}, {"type": "feedback", "data": bad_kind}]}
    status, _, body = collector.post(mixed)
    assert status == 202
    assert body["accepted"] == 1 and body["rejected"] == 1
    assert body["errors"][0]["index"] == 1

    values = topic_values(collector.settings, collector.settings.topics.feedback, 1)
    from prefloop_sdk import decode

    assert [decode(v)[1]["event_id"] for v in values] == [good["event_id"]]


def test_rate_limit_answers_429_with_retry_after(collector: Collector) -> None:
    batch = vector_batch(*["feedback/thumbs_down"] * 50)
    statuses = []
    for _ in range(6):  # a burst of 200 at 1 event/s: the fifth batch of 50 is over
        status, headers, _ = collector.post(batch)
        statuses.append(status)
        if status == 429:
            assert int(headers["retry-after"]) >= 1
            break
    assert statuses[:4] == [202] * 4 and statuses[-1] == 429


def test_a_beacon_with_the_token_in_the_url_is_accepted(collector: Collector) -> None:
    query = "?token=" + TOKEN.replace(" ", "+")  # as URLSearchParams encodes it
    status, _, body = collector.post(
        vector_batch("feedback/thumbs_down"),
        token=None,
        query=query,
        content_type="text/plain;charset=UTF-8",
    )
    assert status == 202, body


def test_cross_origin_preflight_is_answered(collector: Collector) -> None:
    status, headers, _ = http_request(
        "OPTIONS",
        f"{collector.url}/v1/events",
        b"",
        {
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert status == 200
    assert headers["access-control-allow-origin"] in ("*", "https://app.example")
    assert "POST" in headers["access-control-allow-methods"]
    status, headers, _ = http_request(
        "POST",
        f"{collector.url}/v1/events",
        json.dumps(vector_batch("exposure/assigned")).encode(),
        {"Origin": "https://app.example", "Authorization": f"Bearer {TOKEN}"},
    )
    assert status == 202
    assert "retry-after" in headers["access-control-expose-headers"].lower()
