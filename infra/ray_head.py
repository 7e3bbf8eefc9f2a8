"""The local Ray head: ``ray start --head --block`` as a managed process.

With ``--block`` the head's daemons share one process group with the command,
so stopping it stops them all and nothing else (``ray stop`` would stop every
Ray instance of the machine). When ``RAY_ADDRESS`` names a cluster, nothing is
started and that cluster is used.

Ray's GCS listens on every interface whatever ``--node-ip-address`` says, so
the local head always runs with token authentication, its token under
``$PREFLOOP_HOME/ray/auth_token`` (``prefloop.ray_client`` connects drivers with it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from prefloop.process import ManagedProcess, free_ports, port_answers, require_free_port
from prefloop.ray_client import auth_environment
from prefloop.settings import Settings

START_TIMEOUT_S = 90.0
# `ray start --block` waits ~30 s on SIGTERM for daemons that ignore it; the
# head keeps no state worth a graceful exit, so after this it is killed.
STOP_TIMEOUT_S = 5.0
READY_LINE = "will now block forever"
AGENT_PORT_FLAGS = (
    "dashboard-agent-listen-port",  # the Jobs API's agent: "No available agent" without it
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "ray-client-server-port",
)


def ray_process(settings: Settings) -> ManagedProcess:
    return ManagedProcess("ray", settings.home / "run", settings.home / "logs")


def ray_binary() -> str:
    return str(Path(sys.executable).parent / "ray")


def start_head(settings: Settings, dashboard: bool | None = None) -> int:
    """Start the head; with its dashboard (and so the Jobs API) when ``dashboard`` or,
    unset, ``PREFLOOP_RAY_DASHBOARD`` says so."""
    process = ray_process(settings)
    require_free_port("Ray's head (GCS)", settings.ray_port, "PREFLOOP_RAY_PORT")
    argv = [
        ray_binary(),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={settings.ray_port}",
        f"--object-store-memory={settings.ray_object_store_mb * 1024 * 1024}",
        "--disable-usage-stats",
        # the node's own daemons on ports free now, not Ray's fixed defaults: another
        # Ray on this machine (a second stack, a test's head) holds those
        *(
            f"--{flag}={port}"
            for flag, port in zip(AGENT_PORT_FLAGS, free_ports(len(AGENT_PORT_FLAGS)), strict=True)
        ),
    ]
    if settings.ray_dashboard if dashboard is None else dashboard:
        require_free_port(
            "Ray's dashboard", settings.ray_dashboard_port, "PREFLOOP_RAY_DASHBOARD_PORT"
        )
        argv += [
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={settings.ray_dashboard_port}",
        ]
    else:
        argv += ["--include-dashboard=false"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **auth_environment(settings)}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    pid = process.start(argv, env=env, extra={"port": settings.ray_port})
    try:
        process.wait_until(
            lambda: port_answers(settings.ray_port) and READY_LINE in process.log_tail(40),
            timeout=START_TIMEOUT_S,
            what="serving",
            interval=0.5,
        )
    except BaseException:
        process.stop(STOP_TIMEOUT_S)
        raise
    return pid


def ray_version() -> str:
    from importlib.metadata import version

    return version("ray")
