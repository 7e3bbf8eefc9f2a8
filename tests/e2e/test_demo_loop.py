"""`prefloop demo --chaos`, short: simulated users take v1 to a promoted successor they
prefer, while the stream worker, a router replica and the sink are each SIGKILLed once.

The stack is brought up first, so that the demo leaves it running and the test can
read what the loop left in Kafka, ClickHouse and the registry; it goes down at the end.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from prefloop import kafka
from prefloop.clickhouse.client import connect
from prefloop.loop.demo.options import LoopOptions, loop_settings
from prefloop.model_registry import ModelRegistry
from prefloop.settings import Settings, child_environment
from prefloop.testing import isolated_settings

CLI = [sys.executable, "-m", "prefloop.loop.cli"]


OPTIONS = LoopOptions(users=32, minutes=9, threshold=120, seed=3, chaos=True)


def prefloop(settings: Settings, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """The command with this test's settings and the demo's own: `up` starts the services
    with the settings the demo lowers (a running stack keeps those it was started with)."""
    env = child_environment(loop_settings(settings, OPTIONS, environ={}))
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(1200)
def test_a_short_loop_under_chaos_promotes_a_v2_the_users_prefer_and_loses_nothing(
    tmp_path: Path,
) -> None:
    settings = isolated_settings(tmp_path / "home", ray_object_store_mb=128)
    try:
        up = prefloop(settings, "up", timeout=300)
        assert up.returncode == 0, up.stderr
        run = prefloop(
            settings, "demo", "--users", str(OPTIONS.users), "--threshold", str(OPTIONS.threshold),
            "--minutes", str(OPTIONS.minutes), "--seed", str(OPTIONS.seed), "--chaos", timeout=900,
        )  # fmt: skip
        said = run.stdout + run.stderr
        assert run.returncode == 0, said[-6000:]
        assert "left running" in run.stdout
        (candidate,) = re.findall(r"v1 -> (v1-dpo-[0-9a-f]{8}): PROMOTED", run.stdout)
        # each kill done and recovered from; then every stream's ids once in ClickHouse
        ledger = re.findall(r"ledger: ([a-z ]+): .*: (nothing lost, nothing counted twice|.+)$",
                            run.stdout, re.M)  # fmt: skip
        assert sorted(ledger) == sorted(
            (what, "nothing lost, nothing counted twice")
            for what in ("interactions", "feedback", "scores", "preference pairs")
        ), ledger

        # the registry: trained from v1 on the users' pairs, every gate passed
        entry = ModelRegistry.from_settings(settings).get(candidate)
        assert entry.parent == "v1" and entry.gates["passed"] is True
        assert entry.lineage["train_pairs"] >= 0.7 * 120
        assert set(entry.lineage["sources"]) <= {"IMPLICIT", "REGENERATE", "RATING"}

        # the topics: the lifecycle in order, the promotion recorded once
        reader = kafka.TopicReader(settings, settings.topics.model_events)
        try:
            events = [e for _, e, _, _ in reader.settle(2.0) if isinstance(e, dict)]
        finally:
            reader.close()
        mine = [e["kind"] for e in events if e["model_version"] == candidate]
        assert mine[0] == "TRAINING_STARTED" and mine.count("PROMOTED") == 1
        assert mine.index("GATES_PASSED") < mine.index("AB_STARTED") < mine.index("PROMOTED")

        # ClickHouse: the verdict loop's last look promoted on the primary metric
        client = connect(settings)
        decision, estimate, p = client.query(
            "SELECT decision, estimate, p_sequential FROM verdicts WHERE experiment_id = "
            "{e:String} AND metric = 'implicit_score' ORDER BY ts DESC LIMIT 1",
            parameters={"e": f"ab-{candidate}"},
        ).result_rows[0]
        assert decision == "PROMOTE" and estimate > 0 and p < 0.05
        served = client.query(
            "SELECT uniqExact(user_id) FROM interactions FINAL WHERE model_version = {v:String}",
            parameters={"v": candidate},
        ).result_rows[0][0]
        assert served >= 10

        # the report, with its plots and the held-out check agreeing
        (path,) = re.findall(r"the report: (\S+report\.md)", run.stdout)
        report = Path(path)
        text = report.read_text()
        assert f"### v1 -> {candidate}: PROMOTED" in text
        assert "the check agrees with the A/B" in text
        kills = re.findall(
            r"^\| (sink|stream worker|router replica) \|.*\| ([0-9.]+|-) \|", text, re.M
        )
        assert sorted(k for k, _ in kills) == ["router replica", "sink", "stream worker"]
        assert all(back != "-" for _, back in kills), kills  # each came back
        assert re.search(r"IMPLICIT: \d+", text)
        for plot in ("scores.png", "training.png", "pairs.png", "p_value.png"):
            assert (report.parent / plot).stat().st_size > 10_000, plot
    finally:
        down = prefloop(settings, "down", timeout=300)
        assert down.returncode == 0, down.stderr
