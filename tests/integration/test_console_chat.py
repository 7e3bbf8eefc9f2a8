"""The console's demo chat against a real router: a turn typed in the page is answered by
the router, and the SDK's rating widget under the answer sends its rating and comment
through the router's collector to Kafka, about the very interaction the router logged.

A local Ray head runs the router (echo backend) with API keys and a collector token,
both in the head's environment as on a cluster; the console runs in this process under
uvicorn, the page in headless Chromium (Playwright). The screenshot goes under
``$TEST_ARTIFACTS_DIR`` (default: the test's temporary directory).
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette

from prefloop.infra.testing import local_ray_head
from prefloop.kafka import TopicReader
from prefloop.loop.console.app import SDK_DIST, build_app
from prefloop.loop.console.chat import NOT_RUNNING
from prefloop.model_registry import ModelRegistry
from prefloop.serving import control
from prefloop.serving.assignment import Routing
from prefloop.settings import Settings
from prefloop.testing import free_port, fresh_topics

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
USER, PASSWORD = "ann", "ann-secret"
API_KEY = "sk-prefloop-console-chat-5e1d"
COLLECTOR_TOKEN = "collector-browser-token-8c2f"


@contextlib.contextmanager
def serving(app: Starlette, port: int) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the console did not start in 30 s"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def chat(
    kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, str]]:
    assert (SDK_DIST / "widget.js").exists(), (
        "build the TypeScript SDK first: cd sdk/js && npm ci && npm run build"
    )
    settings = fresh_topics(
        kafka_settings,
        home=tmp_path_factory.mktemp("console-chat-home"),
        ray_port=free_port(),
        ray_dashboard_port=free_port(),
        serve_port=free_port(),
        ray_object_store_mb=128,
        console_port=free_port(),
        console_users=SecretStr(f"{USER}:annotator:{PASSWORD}"),
        serve_api_keys=SecretStr(API_KEY),
        collector_token=SecretStr(COLLECTOR_TOKEN),
    )
    ModelRegistry.from_settings(settings).register("v1", backend="echo")
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as environment:  # the head's alone, not this process's
            environment.setenv("PREFLOOP_SERVE_API_KEYS", API_KEY)
            environment.setenv("PREFLOOP_COLLECTOR_TOKEN", COLLECTOR_TOKEN)
            stack.enter_context(local_ray_head(settings))
        control.deploy(settings, Routing(version="v1"))
        url = stack.enter_context(serving(build_app(settings), settings.console_port))
        yield settings, url


def call(url: str, body: bytes | None = None, content_type: str = "application/json",
         signed_in: bool = True) -> tuple[int, Any]:  # fmt: skip
    request = urllib.request.Request(url, data=body, method="GET" if body is None else "POST")
    if body is not None:
        request.add_header("Content-Type", content_type)
    if signed_in:
        secret = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {secret}")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def turn(**body: Any) -> bytes:
    return json.dumps(body).encode()


HELLO = [{"role": "user", "content": "hello"}]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is installed by `make browser`")
def test_a_rating_in_the_chat_page_reaches_kafka_about_the_logged_interaction(
    chat: tuple[Settings, str], artifacts: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    settings, url = chat
    user = f"chat-{time.time_ns()}"
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_context(
                http_credentials={"username": USER, "password": PASSWORD},
                viewport={"width": 1000, "height": 760},
            ).new_page()
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"{url}/chat")
            page.fill("#user", user)
            for text in ("hello from the browser", "and a second turn"):
                page.fill("#message", text)
                page.click("#send")
                expect(page.locator(".msg.assistant .text").last).to_have_text(
                    f"v1 heard: {text}", timeout=30_000
                )
            first, second = (page.locator(".msg.assistant [data-prefloop-rating]").nth(i)
                             for i in (0, 1))  # fmt: skip
            expect(first).to_have_attribute("data-prefloop-state", "ready")
            expect(second).to_have_attribute("data-prefloop-state", "ready")

            # the 4th star by mouse, then the keyboard moves the choice and back
            first.locator("label[title='4 of 5']").click()
            four = first.get_by_role("radio", name="4 stars out of 5")
            expect(four).to_be_checked()
            four.focus()
            page.keyboard.press("ArrowLeft")
            expect(first.get_by_role("radio", name="3 stars out of 5")).to_be_checked()
            page.keyboard.press("ArrowRight")
            expect(four).to_be_checked()
            first.get_by_label("Comment (optional)").fill("short and to the point")
            first.get_by_role("button", name="Send").click()
            expect(first).to_have_attribute("data-prefloop-state", "rated", timeout=30_000)
            expect(first.get_by_role("status")).to_have_text("Thanks!")
            expect(four).to_be_disabled()
            expect(first.get_by_role("button", name="Send")).to_be_disabled()
            expect(second).to_have_attribute("data-prefloop-state", "ready")  # its own widget
            page.screenshot(path=str(artifacts / "console-chat.png"), full_page=True)
            ids = {name: first.get_attribute(f"data-{name}-id")
                   for name in ("interaction", "response", "conversation")}  # fmt: skip
            later = second.get_attribute("data-response-id")
        finally:
            browser.close()
    assert problems == []

    interactions = TopicReader(settings, settings.topics.interactions).wait_for(
        lambda records: {ids["response"], later} <= {r["response_id"] for _, r, _, _ in records},
        60,
        "the chat's two interactions",
    )
    logged = {r["response_id"]: r for _, r, _, _ in interactions}
    rated = logged[ids["response"]]
    assert (rated["interaction_id"], rated["conversation_id"], rated["user_id"]) == (
        ids["interaction"], ids["conversation"], user,
    )  # fmt: skip
    assert (rated["turn"], rated["response"]) == (0, "v1 heard: hello from the browser")
    follow_up = logged[later]
    assert (follow_up["conversation_id"], follow_up["turn"]) == (ids["conversation"], 1)
    assert [m["content"] for m in follow_up["messages"]] == [
        "hello from the browser", "v1 heard: hello from the browser", "and a second turn",
    ]  # fmt: skip

    def about_it(records: list[tuple[str, Any, int, int]]) -> list[dict[str, Any]]:
        return [r for _, r, _, _ in records if r["interaction_id"] == ids["interaction"]]

    feedback = TopicReader(settings, settings.topics.feedback).wait_for(
        lambda records: {r["kind"] for r in about_it(records)} >= {"RATING", "COMMENT"},
        60,
        "the widget's rating and comment",
    )
    events = {r["kind"]: r for r in about_it(feedback)}
    assert sorted(r["kind"] for r in about_it(feedback)) == ["COMMENT", "RATING"]  # sent once
    rating, comment = events["RATING"], events["COMMENT"]
    assert (rating["value"], rating["text"]) == (4.0, None)
    assert (comment["value"], comment["text"]) == (None, "short and to the point")
    for event in (rating, comment):
        assert (event["response_id"], event["conversation_id"], event["user_id"]) == (
            ids["response"], ids["conversation"], user,
        )  # fmt: skip
        assert event["session_id"] == rated["session_id"]


def test_the_chat_api_checks_its_input_and_forwards_to_the_router(
    chat: tuple[Settings, str],
) -> None:
    settings, url = chat
    api = f"{url}/api/chat"
    assert call(f"{url}/chat", signed_in=False)[0] == 401
    assert call(api, turn(messages=HELLO, user="u"), signed_in=False)[0] == 401

    status, body = call(api, turn(messages=HELLO, user="u"), content_type="text/plain")
    assert status == 415 and "application/json" in body["error"], body
    status, body = call(
        api, b"user=u&messages=hi", content_type="application/x-www-form-urlencoded"
    )
    assert status == 415, body
    for bad, field in (
        (turn(user="u"), "`messages` is required"),
        (turn(messages=[], user="u"), "`messages`"),
        (turn(messages=[{"role": "robot", "content": "hi"}], user="u"), "`messages[0].role`"),
        (turn(messages=[{"role": "user", "content": 3}], user="u"), "`messages[0].content`"),
        (turn(messages=[*HELLO, {"role": "assistant", "content": "hi"}], user="u"),
         "`messages[1]` must be the user's"),
        (turn(messages=HELLO), "`user` is required"),
        (turn(messages=HELLO, user="  "), "`user`"),
        (turn(messages=HELLO, user="u", conversation_id=7), "`conversation_id`"),
        (turn(messages=HELLO, user="u", model="v2"), "unknown fields ['model']"),
        (b"{not json", "not JSON"),
    ):  # fmt: skip
        status, body = call(api, bad)
        assert status == 400 and field in body["error"], (bad, body)

    status, config = call(f"{api}/config")
    assert (status, config) == (
        200, {"collector": f"{control.router_url(settings)}/v1/events", "token": COLLECTOR_TOKEN},
    )  # fmt: skip

    status, answer = call(api, turn(messages=HELLO, user="api-user", conversation_id="conv-api"))
    assert status == 200, answer
    assert (answer["content"], answer["model"], answer["conversation_id"]) == (
        "v1 heard: hello", "v1", "conv-api",
    )  # fmt: skip
    assert answer["response_id"] and answer["interaction_id"]

    # a console without the router's key, and one whose router is not running
    without_key = settings.with_overrides(console_port=free_port(), serve_api_keys=None)
    with serving(build_app(without_key), without_key.console_port) as other:
        status, body = call(f"{other}/api/chat", turn(messages=HELLO, user="u"))
        assert status == 502 and "PREFLOOP_SERVE_API_KEYS" in body["error"], body
    away = settings.with_overrides(console_port=free_port(), serve_port=free_port())
    with serving(build_app(away), away.console_port) as other:
        status, body = call(f"{other}/api/chat", turn(messages=HELLO, user="u"))
        assert (status, body) == (409, {"error": NOT_RUNNING})
