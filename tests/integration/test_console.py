"""The console against a real store: its numbers are the verdict's, its writes are guarded,
and its monitor page renders them in a real browser (headless Chromium via Playwright).

A simulated experiment is loaded into the embedded store (its owner in a process of
its own, as in production); the console runs in this process under uvicorn. Its
screenshots go under ``$TEST_ARTIFACTS_DIR`` (default: the test's temporary
directory), not into the repository.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr

from prefloop.analytics.simulate import load_simulated, record_model_event, simulate_experiment
from prefloop.clickhouse.client import connect
from prefloop.errors import PrefloopError
from prefloop.infra.testing import start_store
from prefloop.loop.console.app import build_app, check_exposure
from prefloop.process import free_port
from prefloop.settings import Settings, child_environment
from prefloop.testing import isolated_settings

pytestmark = pytest.mark.integration

EXPERIMENT = "console-exp"
USERS = "ops:operator:op-secret,ann:annotator:ann-secret"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    settings = isolated_settings(
        tmp_path_factory.mktemp("console"),
        ab_min_users=100,
        console_port=free_port(),
        console_users=SecretStr(USERS),
        serve_port=free_port(),  # no router: the monitor reads the store alone
    )
    store = start_store(settings)
    server = None
    try:
        start = datetime.now(UTC) - timedelta(hours=6)
        sim = simulate_experiment(EXPERIMENT, users=3000, effect=0.3, days=1, start=start, seed=5)
        client = connect(settings)
        load_simulated(client, sim)
        record_model_event(client, EXPERIMENT, "AB_STARTED", start - timedelta(minutes=5), 50.0)
        config = uvicorn.Config(
            build_app(settings), host="127.0.0.1", port=settings.console_port, log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield settings, f"http://127.0.0.1:{settings.console_port}"
    finally:
        if server is not None:
            server.should_exit = True
        store.stop()


def call(url: str, method: str = "GET", body: Any = None, user: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            raw = reply.read()
            kind = reply.headers.get("content-type", "")
            return reply.status, json.loads(raw) if "json" in kind else raw
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def cli_verdict(settings: Settings) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "prefloop.loop.cli", "ab", "analyze", "--experiment", EXPERIMENT,
         "--json"],
        env=child_environment(settings), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    verdict: dict[str, Any] = json.loads(done.stdout)
    return verdict


def test_the_monitor_shows_the_verdict_of_ab_analyze(console: tuple[Settings, str]) -> None:
    settings, url = console
    status, snapshot = call(f"{url}/api/experiments/{EXPERIMENT}", user="ann:ann-secret")
    assert status == 200, snapshot
    expected = cli_verdict(settings)
    verdict = snapshot["verdict"]
    assert verdict["decision"] == expected["decision"] == "PROMOTE"
    assert {m["name"]: m for m in verdict["metrics"]} == {m["name"]: m for m in expected["metrics"]}
    assert verdict["arms"] == expected["arms"]
    assert snapshot["running"] is False and "not running" in snapshot["next"]
    # the series: both arms, per bucket, the request counts adding up to the store's
    series = snapshot["series"]["arms"]
    assert set(series) == {"A", "B"}
    requests = sum(p["requests"] for versions in series.values() for ps in versions.values()
                   for p in ps)  # fmt: skip
    stored = (
        connect(settings)
        .query(
            "SELECT count() FROM interactions WHERE experiment_id = {e:String}",
            parameters={"e": EXPERIMENT},
        )
        .result_rows[0][0]
    )
    assert requests == stored
    point = series["B"]["v2"][len(series["B"]["v2"]) // 2]
    score = point["implicit_score"]
    assert score["low"] < score["value"] < score["high"]
    status, svg = call(f"{url}/api/experiments/{EXPERIMENT}/charts.svg", user="ann:ann-secret")
    assert status == 200 and svg.lstrip().startswith(b"<?xml") and b"<svg" in svg


def test_writes_need_an_operator_with_the_page_token(console: tuple[Settings, str]) -> None:
    _, url = console
    promote = f"{url}/api/routing/promote"
    status, body = call(promote, "POST", {"version": "v2"})
    assert status == 401 and "sign in" in body["error"]
    status, body = call(promote, "POST", {"version": "v2"}, user="ops:wrong")
    assert status == 401
    status, me = call(f"{url}/api/me", user="ann:ann-secret")
    status, body = call(promote, "POST", {"version": "v2"}, user="ann:ann-secret",
                        headers={"X-Prefloop-CSRF": me["csrf"]})  # fmt: skip
    assert status == 403 and "only an operator" in body["error"]
    status, body = call(promote, "POST", {"version": "v2"}, user="ops:op-secret")
    assert status == 403 and "x-prefloop-csrf" in body["error"]
    status, me = call(f"{url}/api/me", user="ops:op-secret")
    token = {"X-Prefloop-CSRF": me["csrf"]}
    status, body = call(f"{url}/api/routing/split", "POST", {"split": "half"},
                        user="ops:op-secret", headers=token)  # fmt: skip
    assert status == 400 and "`split`" in body["error"]
    # an operator's write reaches the serving control, which says the router is away
    status, body = call(promote, "POST", {"version": "v2"}, user="ops:op-secret", headers=token)
    assert status == 409 and "router is not running" in body["error"], body


def test_the_console_is_not_served_beyond_this_machine_without_users(
    console: tuple[Settings, str],
) -> None:
    settings, _ = console
    with pytest.raises(PrefloopError, match="PREFLOOP_CONSOLE_USERS"):
        check_exposure(settings.with_overrides(console_host="0.0.0.0", console_users=None))
    check_exposure(settings.with_overrides(console_host="0.0.0.0"))  # with users: allowed
    with pytest.raises(PrefloopError, match="entry 1"):
        build_app(settings.with_overrides(console_users=SecretStr("ops:boss:pw")))


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is installed by `make browser`")
def test_the_monitor_page_renders_the_verdict_in_a_browser(
    console: tuple[Settings, str], artifacts: Path
) -> None:
    from playwright.sync_api import sync_playwright

    settings, url = console
    expected = {m["name"]: m for m in cli_verdict(settings)["metrics"]}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_context(
            http_credentials={"username": "ops", "password": "op-secret"},
            viewport={"width": 1500, "height": 950},
        ).new_page()
        page.goto(f"{url}/monitor?experiment={EXPERIMENT}")
        page.wait_for_selector("#metrics tbody tr[data-metric]")
        assert page.inner_text("#decision") == "PROMOTE"
        for name, metric in expected.items():
            cell = page.locator(f'tr[data-metric="{name}"] td[data-field="p_sequential"]')
            assert float(cell.get_attribute("data-value") or "nan") == pytest.approx(
                metric["p_sequential"], rel=1e-12
            )
        first = int(page.get_attribute("body", "data-updated") or 0)
        page.wait_for_function(f"Number(document.body.dataset.updated) > {first}", timeout=15000)
        page.wait_for_function("document.getElementById('charts').complete")
        assert page.is_visible("#controls")  # an operator sees the buttons
        page.screenshot(path=str(artifacts / "console-monitor.png"), full_page=True)
        browser.close()
