"""`prefloop up`, `status`, `down` as a user runs them, on private ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from prefloop.process import _group_members, pid_alive, port_is_free
from prefloop.settings import Settings, child_environment
from prefloop.testing import isolated_settings

CLI = [sys.executable, "-m", "prefloop.loop.cli"]


def prefloop(
    settings: Settings, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=env or child_environment(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ports(settings: Settings) -> list[int]:
    return [
        settings.kafka_port,
        settings.kafka_controller_port,
        settings.clickhouse_port,
        settings.ray_port,
        settings.streams_web_port,
        settings.serve_port,
        settings.console_port,
    ]


def test_up_status_down_leave_no_process_and_free_their_ports(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "home", ray_object_store_mb=128)
    registered = prefloop(settings, "models", "register", "v1", "--backend", "echo")
    assert registered.returncode == 0, registered.stderr
    pids = {}
    try:  # down, whatever fails: a stack left running holds ports the next tests need
        up = prefloop(settings, "up")
        assert up.returncode == 0, up.stderr
        started = (
            "up: started kafka-1, clickhouse, ray, worker, router, autopilot, trainer, console"
        )
        assert started in up.stdout
        assert "router: starting the A/B router" in up.stdout  # a version is registered
        console = f"http://127.0.0.1:{settings.console_port}/"
        assert f"console: {console}monitor (A/B), {console}annotate, {console}chat" in up.stdout
        with urllib.request.urlopen(f"{console}api/me", timeout=30) as reply:
            assert json.load(reply)["users_configured"] is False  # read-only without users
        status = prefloop(settings, "status", "--json")
        assert status.returncode == 0, status.stderr
        rows = {row["name"]: row for row in json.loads(status.stdout)}
        assert {name: row["state"] for name, row in rows.items()} == {
            "kafka-1": "up",
            "clickhouse": "up",
            "ray": "up",
            "worker": "up",
            "autopilot": "up",
            "router": "up",
            "trainer": "up",
            "console": "up",
        }
        assert rows["kafka-1"]["version"] == "4.4.0"
        assert rows["kafka-1"]["topics"][settings.topics.interactions] == 0
        assert rows["clickhouse"]["version"]
        pids = {name: row["pid"] for name, row in rows.items() if row["pid"]}  # not the router

        again = prefloop(settings, "up")
        assert again.returncode == 0
        assert "already up" in again.stdout and "nothing started" in again.stdout

        table = prefloop(settings, "status")
        assert settings.topics.dlq in table.stdout
    finally:
        down = prefloop(settings, "down")
    assert down.returncode == 0, down.stderr
    assert "down: stopped" in down.stdout
    for name, pid in pids.items():
        assert not pid_alive(pid), f"{name} (pid {pid}) outlived down"
        assert _group_members(pid) == [], f"{name}'s children outlived down"
    # Ray's workers (Serve's proxy among them) exit a moment after their head: allow it
    deadline = time.monotonic() + 20
    while (taken := [p for p in ports(settings) if not port_is_free(p)]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert taken == [], f"ports still taken after down: {taken} (serve port {settings.serve_port})"
    status = prefloop(settings, "status", "--json")
    assert {row["state"] for row in json.loads(status.stdout)} == {"down"}
    again = prefloop(settings, "down")
    assert again.returncode == 0
    assert "nothing was running" in again.stdout


def test_a_taken_port_stops_up_with_one_sentence_and_nothing_left(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "home")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.clickhouse_port))
        squatter.listen()
        up = prefloop(settings, "up")
    assert up.returncode == 1
    assert f"port {settings.clickhouse_port} on 127.0.0.1" in up.stderr
    assert "PREFLOOP_CLICKHOUSE_PORT" in up.stderr
    assert "Traceback" not in up.stderr
    assert list((settings.home / "run").glob("*.pid")) == []  # kafka, started first, stopped
    assert port_is_free(settings.kafka_port)


def test_missing_java_is_one_sentence(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "home")
    env = child_environment(settings)
    env["PATH"] = str(Path(sys.executable).parent)  # the venv alone: no java
    up = prefloop(settings, "up", env=env)
    assert up.returncode == 1
    assert "Java is not installed" in up.stderr
    assert "Traceback" not in up.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PREFLOOP_KAFKA_PROT", "1", "did you mean PREFLOOP_KAFKA_PORT"),
        ("PREFLOOP_KAFKA_NODES", "many", "PREFLOOP_KAFKA_NODES='many' is not valid"),
    ],
)
def test_bad_settings_are_one_sentence(variable: str, value: str, message: str) -> None:
    env = {**os.environ, variable: value}
    done = subprocess.run([*CLI, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_config_prints_every_setting_with_secrets_masked(tmp_path: Path) -> None:
    env = {**os.environ, "PREFLOOP_CLICKHOUSE_PASSWORD": "hunter2", "PREFLOOP_HOME": str(tmp_path)}
    done = subprocess.run([*CLI, "config"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout
    assert "PREFLOOP_CLICKHOUSE_PASSWORD" in done.stdout and "**********" in done.stdout
    assert str(tmp_path) in done.stdout
