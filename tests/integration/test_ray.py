"""A Ray task on the head that `prefloop up` starts; stopping it leaves nothing."""

from __future__ import annotations

from pathlib import Path

import ray

from prefloop.infra.ray_head import STOP_TIMEOUT_S, ray_process, start_head
from prefloop.process import _group_members, port_is_free
from prefloop.ray_client import connect, token_path
from prefloop.testing import isolated_settings


def test_a_task_runs_on_the_local_head_and_stop_leaves_nothing(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, ray_object_store_mb=128)
    pid = start_head(settings)
    process = ray_process(settings)
    try:
        connect(settings)

        @ray.remote
        def square(x: int) -> int:
            return x * x

        assert ray.get([square.remote(i) for i in range(10)], timeout=120) == [
            i * i for i in range(10)
        ]
        assert token_path(settings).stat().st_mode & 0o077 == 0  # the token is private
        resources = ray.cluster_resources()
        assert resources["object_store_memory"] == 128 * 1024 * 1024
    finally:
        ray.shutdown()
        assert process.stop(STOP_TIMEOUT_S)
    assert _group_members(pid) == []
    assert port_is_free(settings.ray_port)
