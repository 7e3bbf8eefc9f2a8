"""The Ray Serve deployment of the A/B router.

Each replica holds a :class:`~prefloop.serving.router.ChatRouter` with every model
version its routing serves, so the proxy's one hop to a replica is the only hop a
request makes. The routing (one version, or an experiment's arms and split) is the
deployment's ``user_config``: changing it calls :meth:`RouterReplica.reconfigure` in
the running replicas, with no restart and no dropped request (see ``control.py``).

Settings reach the replicas as ``PREFLOOP_*`` variables in the application's runtime
environment; secrets do not travel there and must be in the Ray workers' own
environment. The config says only whether a secret is required: a replica that
requires API keys and finds none refuses to start (an open endpoint is worse than
none); one that requires a collector token and finds none mounts no collector.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve

from prefloop.event_client import feedback_client
from prefloop.model_registry import ModelRegistry
from prefloop.settings import Settings, load_settings

from .assignment import Routing
from .auth import ApiKeys
from .collector import Limits, create_collector
from .control import DEPLOYMENT
from .exceptions import ServingError
from .openai_api import ApiLimits
from .pool import ModelPool
from .router import ChatRouter

__all__ = ["DEPLOYMENT", "RouterReplica", "build_app"]

log = logging.getLogger(__name__)

EVENTS_LINGER_MS = 100


@serve.deployment(
    name=DEPLOYMENT,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},
    health_check_period_s=5,
    health_check_timeout_s=30,
)
@serve.ingress()
class RouterReplica:
    def __init__(
        self, collector_token_required: bool = False, api_keys_required: bool = False
    ) -> None:
        settings = load_settings()
        api_keys = _api_keys(settings, api_keys_required)  # before anything is started
        # every replica journals under one spool: the SDK gives each a slot of its own,
        # and a replacement replica re-sends what a killed one left there. Events wait up
        # to EVENTS_LINGER_MS to share a Kafka request: on a busy replica that saves the
        # broker (and the replica's cores) a round trip per answer, and no consumer of
        # these events needs them within a tenth of a second.
        self.emitter = feedback_client(settings, name="serving", linger_ms=EVENTS_LINGER_MS)
        self.router = ChatRouter(
            ModelPool(
                ModelRegistry.from_settings(settings),
                cache_dir=settings.home / "model-cache",
                device=settings.serve_device,
                max_batch_size=settings.serve_max_batch_size,
                batch_wait_s=settings.serve_batch_wait_ms / 1000,
            ),
            self.emitter,
            limits=ApiLimits(
                max_body_bytes=settings.serve_max_body_kb * 1024,
                max_prompt_chars=settings.serve_max_prompt_chars,
                max_tokens=settings.serve_max_tokens,
                default_max_tokens=min(256, settings.serve_max_tokens),
            ),
            timeout_s=settings.serve_request_timeout_s,
            collector=_collector(self.emitter, settings, collector_token_required),
            api_keys=api_keys,
        )

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.router.configure(Routing.from_config(config))

    def __serve_build_asgi_app__(self) -> Any:
        return self.router.app()

    def check_health(self) -> None:
        if not self.router.ready:
            raise RuntimeError("the router's models are not loaded")

    def __del__(self) -> None:
        if hasattr(self, "router"):  # not when __init__ refused to start
            self.router.pool.close()
        if hasattr(self, "emitter"):
            self.emitter.close(timeout=5.0)


def build_app(args: dict[str, Any]) -> Any:
    """The application ``control.app_config`` names by import path."""
    return RouterReplica.bind(  # type: ignore[attr-defined]
        collector_token_required=bool(args.get("collector_token_required")),
        api_keys_required=bool(args.get("api_keys_required")),
    )


def _api_keys(settings: Settings, required: bool) -> ApiKeys | None:
    """The API keys in this replica's environment; with none, an error if they are required.

    Keys found where the config says none are required are enforced all the same: the
    Ray workers' environment is where an operator puts them.
    """
    keys = ApiKeys.from_settings(settings)
    if required and keys is None:
        raise ServingError(
            "the router requires API keys but PREFLOOP_SERVE_API_KEYS is not set in this "
            "replica's environment, so it does not start rather than serve without them: "
            "set it in the Ray workers' environment (secrets do not travel in the Serve "
            "config), e.g. in the environment of `ray start` or `prefloop up`"
        )
    return keys


def _collector(emitter: Any, settings: Settings, token_required: bool) -> Any:
    """The event collector, or None when a token is required but not in this environment."""
    if token_required and settings.collector_token is None:
        log.error(
            "the collector requires a token but PREFLOOP_COLLECTOR_TOKEN is not set in this "
            "replica's environment: /v1/events is not served (secrets do not travel in the "
            "Serve config; set it in the Ray workers' environment)"
        )
        return None
    return create_collector(emitter, Limits.from_settings(settings))
