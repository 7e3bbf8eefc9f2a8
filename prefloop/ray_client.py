"""Reaching a Ray cluster: the configured one (``RAY_ADDRESS``), or the local head.

The local head (``prefloop.infra.ray_head``) runs with token authentication, its
token under ``$PREFLOOP_HOME/ray/auth_token``; :func:`connect` makes a driver
present it, and :func:`auth_environment` gives a child process what it needs to.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from prefloop.settings import Settings

__all__ = ["auth_environment", "connect", "head_address", "jobs_client", "jobs_url", "token_path"]


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

    _authenticate(settings)
    ray.init(address=head_address(settings), logging_level=logging.ERROR, log_to_driver=False)


def head_address(settings: Settings) -> str:
    """The address drivers pass to ``ray.init``: the configured cluster or the local head."""
    return settings.ray_address or f"127.0.0.1:{settings.ray_port}"


def _authenticate(settings: Settings) -> None:
    """Make this process present the local head's token (nothing for a configured cluster)."""
    if settings.ray_address:
        return
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(auth_environment(settings))
    # Ray caches its auth mode and token at import: refresh both, as Ray's own
    # authentication test helpers do, so a process that imported ray earlier sees them
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def jobs_url(settings: Settings) -> str:
    """The Ray Jobs API: the configured one, or the local head's dashboard."""
    return settings.ray_jobs_url or f"http://127.0.0.1:{settings.ray_dashboard_port}"


def jobs_client(settings: Settings) -> Any:
    """A ``JobSubmissionClient`` on the Ray Jobs API, authenticated like a driver."""
    from ray.job_submission import JobSubmissionClient

    _authenticate(settings)
    return JobSubmissionClient(jobs_url(settings))
