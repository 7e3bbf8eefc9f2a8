"""The local Ray head: ``ray start --head --block`` as a managed process.

With ``--block`` the head's daemons share one process group with the command,
so stopping it stops them all and nothing else (``ray stop`` would stop every
Ray instance of the machine). When ``RAY_ADDRESS`` names a cluster, nothing is
started and that cluster is used.

Ray's GCS listens on every interface whatever ``--node-ip-address`` says, so
the local head always runs with token authentication, its token under
``$PREFLOOP_HOME/ray/auth_token``; :func:`connect` makes a driver present it.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

from prefloop.settings import Settings
from prefloop.stack.process import ManagedProcess, port_answers, require_free_port

START_TIMEOUT_S = 90.0
# `ray start --block` waits ~30 s on SIGTERM for daemons that ignore it; the
# head keeps no state worth a graceful exit, so after this it is killed.
STOP_TIMEOUT_S = 5.0
READY_LINE = "will now block forever"


def ray_process(settings: Settings) -> ManagedProcess:
    return ManagedProcess("ray", settings.home / "run", settings.home / "logs")


def ray_binary() -> str:
    return str(Path(sys.executable).parent / "ray")


def token_path(settings: Settings) -> Path:
    return settings.home / "ray" / "auth_token"


def auth_environment(settings: Settings) -> dict[str, str]:
    """The variables Ray reads to authenticate against the local head (written on first use)."""
    path = token_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}


def connect(settings: Settings) -> None:
    """``ray.init`` on the configured cluster, or on the local head with its token.

    Ray reads its authentication settings from the environment, so for the local
    head this sets them in this process (and so in its children).
    """
    import ray
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    if not settings.ray_address:
        os.environ.pop("RAY_AUTH_TOKEN", None)
        os.environ.update(auth_environment(settings))
        # Ray caches its auth mode and token at import: refresh both, as Ray's own
        # authentication test helpers do, so a process that imported ray earlier sees them
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    ray.init(address=head_address(settings), logging_level=logging.ERROR, log_to_driver=False)


def head_address(settings: Settings) -> str:
    """The address drivers pass to ``ray.init``: the configured cluster or the local head."""
    return settings.ray_address or f"127.0.0.1:{settings.ray_port}"


def start_head(settings: Settings) -> int:
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
    ]
    if settings.ray_dashboard:
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
