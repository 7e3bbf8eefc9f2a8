"""The README's examples, run as a reader would: on a real broker, the browser one in Chromium."""

from __future__ import annotations

import functools
import html
import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import uvicorn

from prefloop import kafka
from prefloop.event_client import feedback_client
from prefloop.serving.collector import Limits, create_collector
from prefloop.settings import Settings
from prefloop.testing import free_port
from prefloop_sdk import decode

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def example(name: str, language: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\n```{language}\n(.*?)```", README, re.S)
    assert match, f"the README has no {name} example"
    return match.group(1)


@pytest.fixture
def default_topics(kafka_settings: Settings, tmp_path: Path) -> Settings:
    """The session broker with the default topic names, as the examples use them."""
    settings = kafka_settings.with_overrides(home=tmp_path)
    kafka.ensure_topics(settings)
    return settings


def conversation_events(settings: Settings, conversation: str, expected: int) -> list[dict]:
    consumer = kafka.consumer(settings, group_id=f"test-{uuid.uuid4().hex}")
    consumer.subscribe([settings.topics.interactions, settings.topics.feedback])
    found: list[dict] = []
    deadline = time.monotonic() + 60
    try:
        while len(found) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() or message.key() != conversation.encode():
                continue
            record_type, record = decode(message.value())
            found.append({"type": str(record_type), **record})
    finally:
        consumer.close()
    return found


def test_the_python_example_sends_its_events(default_topics: Settings, tmp_path: Path) -> None:
    code = example("python", "python").replace("127.0.0.1:9092", default_topics.bootstrap_servers)
    code = code.replace('".prefloop/spool/app"', repr(str(tmp_path / "spool")))
    exec(compile(code, "README.md", "exec"), {})
    events = conversation_events(default_topics, "c_7", 3)
    assert [(e["type"], e.get("kind")) for e in events] == [
        ("interaction", None),
        ("feedback", "COPY"),
        ("feedback", "RATING"),
    ]
    assert events[0]["response"] == "Quantum computers use qubits ..."
    assert events[2]["value"] == 5.0


@pytest.fixture
def collector_url(default_topics: Settings) -> Iterator[str]:
    client = feedback_client(default_topics, name="readme")
    port = free_port()
    app = create_collector(client, Limits(token="readme-token"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        client.close()


@pytest.fixture
def sdk_js_url() -> Iterator[str]:
    """sdk/js served over HTTP (its dist/ is built by `npm test`, which `make test` runs first)."""
    dist = ROOT / "sdk" / "js" / "dist" / "index.js"
    assert dist.exists(), "build the TypeScript SDK first: cd sdk/js && npm ci && npm run build"
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(ROOT / "sdk" / "js"))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_the_browser_example_is_the_one_shipped_with_the_sdk() -> None:
    shipped = (ROOT / "sdk" / "js" / "examples" / "browser.html").read_text()
    script = re.search(r"<script type=\"module\">.*?</script>\n", shipped, re.S)
    assert script is not None
    assert example("browser", "html") == script.group(0)


def test_the_browser_example_delivers_through_the_collector(
    default_topics: Settings, collector_url: str, sdk_js_url: str, tmp_path: Path
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Chromium is needed for this test: `make test` installs it (apt-get)"
    page = f"{sdk_js_url}/examples/browser.html?endpoint={collector_url}&token=readme-token"
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = re.search(r'data-result="([^"]*)"', done.stdout)
    assert result, f"the page did not finish: {done.stdout[-500:]} {done.stderr[-500:]}"
    assert json.loads(html.unescape(result.group(1))) == {
        "delivered": 3,
        "rejected": 0,
        "pending": 0,
    }
    events = conversation_events(default_topics, "c-demo", 3)
    assert sorted((e["type"], e.get("kind"), e.get("value")) for e in events) == [
        ("feedback", "RATING", 5.0),
        ("feedback", "THUMBS", 1.0),
        ("interaction", None, None),
    ]
