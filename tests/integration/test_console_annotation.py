"""The annotation queue end to end: tasks from Kafka, alternatives from a real router,
annotators in headless Chromium (Playwright), results on Kafka, pairs made (or refused)
by the real stream worker.

One Ray head serves v1 and v2 (echo back ends) in an A/B; each test has its own topics
and its own console under uvicorn, playing the stream sampler by emitting
AnnotationTasks for v1's answers, so each alternative comes from v2 ("v2 heard: ...").
Screenshots go under ``$TEST_ARTIFACTS_DIR`` (default: the test's temporary
directory).
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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr

from prefloop.event_client import feedback_client
from prefloop.infra.testing import StreamWorker, local_ray_head
from prefloop.kafka import TopicReader
from prefloop.loop.console.app import build_app
from prefloop.model_registry import ModelRegistry
from prefloop.process import free_port
from prefloop.serving import control
from prefloop.serving.assignment import Routing, Split
from prefloop.settings import Settings
from prefloop.testing import fresh_topics

pytestmark = pytest.mark.integration

USERS = "ann:annotator:ann-pw,bob:annotator:bob-pw,ops:operator:ops-pw"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LOCK_S = 4.0


@pytest.fixture(scope="module")
def router(
    kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    settings = fresh_topics(
        kafka_settings,
        home=tmp_path_factory.mktemp("annotation-router"),
        ray_port=free_port(),
        ray_dashboard_port=free_port(),
        serve_port=free_port(),
        ray_object_store_mb=128,
    )
    registry = ModelRegistry.from_settings(settings)
    registry.register("v1", backend="echo")
    registry.register("v2", backend="echo")
    with local_ray_head(settings):
        control.deploy(settings, Routing(experiment=Split("annotation-exp", "v1", "v2", 50.0)))
        yield settings


@contextlib.contextmanager
def console(router: Settings, home: Path, **overrides: Any) -> Iterator[tuple[Settings, str]]:
    """A console on topics of its own, asking ``router`` for the alternatives."""
    settings = fresh_topics(
        router,
        home=home,
        console_port=free_port(),
        console_users=SecretStr(USERS),
        annotation_lock_s=LOCK_S,
        **overrides,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(settings), host="127.0.0.1", port=settings.console_port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the console did not start"
        time.sleep(0.05)
    try:
        yield settings, f"http://127.0.0.1:{settings.console_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def emit_tasks(settings: Settings, count: int, tag: str) -> list[str]:
    """``count`` AnnotationTasks for v1's answers, as the stream sampler draws them."""
    ids = []
    with feedback_client(settings, f"tasks-{tag}") as client:
        for n in range(count):
            task_id = f"{tag}-{n}-{uuid.uuid4().hex[:6]}"
            client.emit(
                "annotation_task",
                {
                    "task_id": task_id,
                    "interaction_id": f"int-{task_id}",
                    "response_id": f"resp-{task_id}",
                    "conversation_id": f"conv-{task_id}",
                    "model_version": "v1",
                    "prompt": [{"role": "user", "content": f"question {n} of {tag}"}],
                    "response": f"v1 heard: question {n} of {tag}",
                    "priority": 1.0 - n / 100,  # given in this order
                    "reasons": ["uncertain"],
                    "sampled_by": "TOP_PRIORITY",
                    "window_start": 0,
                    "window_end": 1,
                },
            )
            ids.append(task_id)
        assert client.flush(30) == 0
    return ids


class Annotator:
    """One annotator on the console's API, as the page calls it."""

    def __init__(self, url: str, name: str, password: str) -> None:
        self.url, self.name = url, name
        self.auth = "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()
        self.csrf = self.call("GET", "/api/me")[1]["csrf"]

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(f"{self.url}{path}", method=method)
        request.add_header("Authorization", self.auth)
        if method == "POST":
            request.data = json.dumps(body or {}).encode()
            request.add_header("Content-Type", "application/json")
            request.add_header("X-Prefloop-CSRF", getattr(self, "csrf", ""))
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def next(self, wait_s: float = 0.0) -> dict[str, Any] | None:
        """The next task (held for this annotator), waiting up to ``wait_s`` for one."""
        deadline = time.monotonic() + wait_s
        while True:
            status, state = self.call("POST", "/api/annotation/next")
            assert status == 200, state
            if state["task"] is not None or time.monotonic() >= deadline:
                return state["task"]
            time.sleep(0.3)

    def answer(self, task_id: str, choice: str) -> tuple[int, Any]:
        return self.call("POST", "/api/annotation/answer", {"task_id": task_id, "choice": choice})


def wait_queued(annotator: Annotator, count: int) -> None:
    """Until ``count`` tasks are ready for ``annotator`` (alternatives generated)."""
    deadline = time.monotonic() + 90
    while True:
        status, state = annotator.call("POST", "/api/annotation/next")
        assert status == 200, state
        progress = state["progress"]
        if progress["left_for_me"] + (state["task"] is not None) >= count:
            return
        assert time.monotonic() < deadline, f"the queue did not fill: {state}"
        time.sleep(0.3)


def test_an_annotator_completes_five_tasks_by_keyboard_alone(
    router: Settings, tmp_path: Path, artifacts: Path
) -> None:
    from playwright.sync_api import sync_playwright

    with console(router, tmp_path / "home") as (settings, url):
        results = TopicReader(settings, settings.topics.annotation_results)
        tasks = emit_tasks(settings, 5, "keys")
        keys = {"1": "A", "2": "B", "3": "TIE", "4": "BOTH_BAD", " ": "SKIP"}
        seen: list[tuple[str, str]] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = browser.new_page(
                    http_credentials={"username": "ann", "password": "ann-pw"},
                    viewport={"width": 1200, "height": 720},
                )
                page.goto(f"{url}/annotate")
                page.wait_for_function("document.body.dataset.taskId", timeout=90_000)
                for n, (key, choice) in enumerate(keys.items()):
                    task_id = page.evaluate("document.body.dataset.taskId")
                    assert page.text_content("#response-a") != page.text_content("#response-b")
                    if n == 1:  # one current picture of the page for the README
                        page.screenshot(path=str(artifacts / "annotate.png"))
                    page.keyboard.press("Space" if key == " " else key)
                    page.wait_for_function(
                        f"document.body.dataset.taskId !== {json.dumps(task_id)}", timeout=30_000
                    )
                    seen.append((task_id, choice))
                assert page.text_content("#progress").startswith("5 done by you")
                assert "No task left" in page.text_content("#empty")
            finally:
                browser.close()
        records = results.wait_for(lambda r: len(r) >= 5, 60, "five annotation results")
        results.settle(1.0)
        results.close()
    got = [r for kind, r, _, _ in records if kind == "annotation_result"]
    assert [(r["task_id"], r["choice"]) for r in got] == seen
    assert [t for t, _ in seen] == tasks  # highest priority first
    for r in got:
        assert r["annotator_id"] == "ann" and r["overlap"] == 1
        n = r["task_id"].split("-")[1]
        original, alternative = f"v1 heard: question {n} of keys", f"v2 heard: question {n} of keys"
        assert {r["response_a"], r["response_b"]} == {original, alternative}  # v2 answered
        assert (
            r[f"response_{'a' if r['response_a'] == original else 'b'}_id"]
            == f"resp-{r['task_id']}"
        )


def test_a_held_task_goes_to_a_second_annotator_only_after_the_hold(
    router: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    with console(router, tmp_path / "home") as (settings, url):
        [task_id] = emit_tasks(settings, 1, "lock")
        ann, bob = Annotator(url, "ann", "ann-pw"), Annotator(url, "bob", "bob-pw")
        wait_queued(ann, 1)  # the alternative is ready (and ann now holds the task)
        taken_at = time.monotonic()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                pages = {}
                for name in ("ann", "bob"):
                    context = browser.new_context(
                        http_credentials={"username": name, "password": f"{name}-pw"}
                    )
                    pages[name] = context.new_page()
                pages["ann"].goto(f"{url}/annotate")  # ann's hold is given back to her
                pages["ann"].wait_for_function(
                    f"document.body.dataset.taskId === {json.dumps(task_id)}", timeout=30_000
                )
                pages["bob"].goto(f"{url}/annotate")
                pages["bob"].wait_for_selector("#empty:not([hidden])", timeout=30_000)
                assert "No task left" in pages["bob"].text_content("#empty")
                # bob's page asks again every few seconds: it gets the task once ann's
                # hold lapses, not before
                pages["bob"].wait_for_function(
                    f"document.body.dataset.taskId === {json.dumps(task_id)}",
                    timeout=(LOCK_S + 15) * 1000,
                )
                assert time.monotonic() - taken_at >= LOCK_S - 1.0
                pages["ann"].keyboard.press("1")  # too late: the task went to bob
                pages["ann"].wait_for_function(
                    "document.getElementById('message').textContent.includes('not recorded')",
                    timeout=30_000,
                )
                assert "went to another annotator" in pages["ann"].text_content("#message")
                pages["bob"].keyboard.press("2")
                pages["bob"].wait_for_function(
                    "document.getElementById('message').textContent === 'B recorded'",
                    timeout=30_000,
                )
            finally:
                browser.close()
        assert ann.next() is None  # nobody sees a task twice

        # the guards: another annotator's task, a bad choice, no CSRF token, no sign-in
        assert ann.answer(task_id, "A")[0] == 409
        status, bad = bob.answer(task_id, "MAYBE")
        assert status == 400 and "`choice` must be one of A, B, TIE" in bad["error"]
        no_token = Annotator(url, "bob", "bob-pw")
        no_token.csrf = ""
        assert no_token.call("POST", "/api/annotation/next")[0] == 403
        request = urllib.request.Request(f"{url}/api/annotation/next", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        assert caught.value.code == 401


def test_two_annotators_who_disagree_make_no_pair(router: Settings, tmp_path: Path) -> None:
    with console(
        router,
        tmp_path / "home",
        annotation_overlap=2,
        streams_web_port=free_port(),
        streams_tick_s=0.5,
    ) as (settings, url):
        worker = StreamWorker(settings).start()
        try:
            out = {
                name: TopicReader(settings, topic)
                for name, topic in (
                    ("pairs", settings.topics.preferences),
                    ("dlq", settings.topics.dlq),
                )
            }
            agreed, split = emit_tasks(settings, 2, "overlap")
            ann, bob = Annotator(url, "ann", "ann-pw"), Annotator(url, "bob", "bob-pw")
            wait_queued(ann, 2)
            choices = {("ann", agreed): "A", ("bob", agreed): "A",
                       ("ann", split): "A", ("bob", split): "B"}  # fmt: skip
            shown: dict[str, dict[str, Any]] = {}
            for annotator in (ann, bob):
                while (task := annotator.next()) is not None:
                    shown[task["task_id"]] = task
                    status, body = annotator.answer(
                        task["task_id"], choices[(annotator.name, task["task_id"])]
                    )
                    assert status == 200, body
            assert set(shown) == {agreed, split}

            out["dlq"].wait_for(
                lambda r: len(r) >= 1, 90, "the split task's dead letter", worker.check
            )
            out["pairs"].wait_for(lambda r: len(r) >= 1, 90, "the agreed task's pair", worker.check)
            out["dlq"].settle(2.0)
            out["pairs"].settle(2.0)
        finally:
            worker.stop()
        [pair] = [r for _, r, _, _ in out["pairs"].records]
        assert (pair["source"], pair["chosen"]) == ("ANNOTATION", shown[agreed]["response_a"])
        assert pair["rejected"] == shown[agreed]["response_b"]
        assert len(pair["source_offsets"]) == 2  # both annotators' results
        [letter] = [r for _, r, _, _ in out["dlq"].records]
        assert letter["reason"] == (
            f"annotators disagree on task {split}: A by ann, B by bob "
            "(agreement 0.50 < 0.66): no pair"
        )

        status, measured = ann.call("GET", "/api/annotation/agreement")
        assert status == 200
        # ann: A A, bob: A B -> observed 1/2, expected 1/2: kappa 0
        assert measured["pairs"] == [{"annotators": ["ann", "bob"], "tasks": 2, "agreed": 1,
                                      "kappa": 0.0}]  # fmt: skip
        assert measured["alpha"] is not None and measured["alpha"] < 0.5
        assert (measured["overlap"], measured["min_agreement"]) == (2, 0.66)
