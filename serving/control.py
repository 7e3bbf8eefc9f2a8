"""Operating the router: deploy it, change what it serves, promote, roll back.

The router is one Serve application (:data:`APP_NAME`) deployed declaratively, the way
``serve deploy`` does it: its config names the deployment by import path, so a new
config that changes only the routing (``user_config``) is applied to the running
replicas in place (``reconfigure``), in well under a second and without failing a
request. Serve keeps the config, so the routing in force is always read back from
Serve itself: there is no second copy to drift.

Every routing change is also recorded as a ModelEvent (AB_STARTED, SPLIT_CHANGED,
PROMOTED, ROLLED_BACK) on the model-events topic.
"""

from __future__ import annotations

import json
import logging
import time
import typing
import uuid
from typing import Any

from pydantic import SecretStr

from prefloop.event_client import feedback_client
from prefloop.model_registry import ModelRegistry
from prefloop.process import port_answers
from prefloop.settings import ENV_PREFIX, Settings, settings_env

from .assignment import Routing, Split
from .exceptions import ServingError

__all__ = [
    "APP_NAME",
    "ServingError",
    "app_config",
    "current_routing",
    "deploy",
    "promote",
    "reroute",
    "rollback",
    "router_url",
    "serve",
    "set_split",
    "start_ab",
    "stop",
]

APP_NAME = "prefloop"
DEPLOYMENT = "router"  # the router's deployment in the application (deployment.py)
PROXY_GRACE_S = 2.0  # the proxy's deadline is the router's plus this


def router_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.serve_port}"


def app_config(settings: Settings, routing: Routing) -> dict[str, Any]:
    """The Serve application config that runs the router with ``routing``."""
    deployment: dict[str, Any] = {
        "name": DEPLOYMENT,
        "user_config": routing.to_config(),
        "max_ongoing_requests": settings.serve_max_ongoing,
        "ray_actor_options": {"num_cpus": 0, "num_gpus": settings.serve_num_gpus},
    }
    if settings.serve_autoscaling.strip():
        try:
            deployment["autoscaling_config"] = json.loads(settings.serve_autoscaling)
        except json.JSONDecodeError as exc:
            raise ServingError(
                f"PREFLOOP_SERVE_AUTOSCALING is not JSON ({exc}): give e.g. "
                '{"min_replicas": 1, "max_replicas": 4}'
            ) from None
    else:
        deployment["num_replicas"] = settings.serve_replicas
    secrets = _secret_variables()
    env = {k: v for k, v in settings_env(settings).items() if k not in secrets}
    return {
        "name": APP_NAME,
        "route_prefix": "/",
        "import_path": "prefloop.serving.deployment:build_app",
        # a secret stays out of the config, but whether it is required does not: a
        # replica whose environment lacks the collector's token mounts no collector, one
        # that lacks the API keys does not start
        "args": {
            "collector_token_required": settings.collector_token is not None,
            "api_keys_required": settings.serve_api_keys is not None,
        },
        "runtime_env": {"env_vars": env},
        "deployments": [deployment],
    }


def _secret_variables() -> frozenset[str]:
    """The ``PREFLOOP_*`` variables of the secret settings (``SecretStr``), which stay out
    of the Serve config: Serve shows it on its dashboard and its REST API."""
    return frozenset(
        ENV_PREFIX + name.upper()
        for name, field in Settings.model_fields.items()
        if field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)
    )


def deploy(settings: Settings, routing: Routing, *, timeout_s: float = 180.0) -> None:
    """Run the router with ``routing`` and ``settings`` (replicas, resources, environment).

    A running router whose settings are unchanged is reconfigured in place; other
    changes start new replicas. To change only the routing, use :func:`reroute`.
    """
    _apply(settings, app_config(settings, routing), routing, timeout_s)


def reroute(settings: Settings, routing: Routing, *, timeout_s: float = 60.0) -> None:
    """Change only what the running router serves, in place.

    The deployed config is read back from Serve and only its ``user_config``
    replaced, so the caller's own settings (replicas, environment) change nothing.
    """
    app = _deployed_app(_serve_api(settings))
    if app is None:
        raise ServingError("the router is not running: start it with `prefloop serve`")
    config = json.loads(json.dumps(app))  # a private copy
    for deployment in config.get("deployments", []):
        if deployment.get("name") == DEPLOYMENT:
            deployment["user_config"] = routing.to_config()
    _apply(settings, config, routing, timeout_s)


def _apply(settings: Settings, app: dict[str, Any], routing: Routing, timeout_s: float) -> None:
    registry = ModelRegistry.from_settings(settings)
    for version in routing.versions:
        registry.get(version)  # refuse an unknown version before Serve sees it
    client = _serve_api(settings)
    config = {"http_options": _http_options(settings), "applications": [app]}
    if isinstance(client, ServeRest):
        client.deploy(config)  # Serve validates it (importing its schema costs 3 s)
    else:
        client.deploy_apps(_validated(config))
    _wait_running(client, routing, timeout_s)


REFUSED = "check PREFLOOP_SERVE_AUTOSCALING and the other PREFLOOP_SERVE_* settings"


def _validated(config: dict[str, Any]) -> Any:
    """``config`` as Serve's ``ServeDeploySchema``; a ServingError naming what is wrong."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        return ServeDeploySchema.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ServingError(
            f"Serve refuses the router's config ({first['msg']} at "
            f"{'.'.join(map(str, first['loc']))}): {REFUSED}"
        ) from None


def serve(settings: Settings, version: str | None = None) -> Routing:
    """Run the router: ``version`` to everyone, else what a running router serves, else
    the newest registered version."""
    routing = Routing(version=version) if version else current_routing(settings)
    if routing is None:
        versions = ModelRegistry.from_settings(settings).list()
        if not versions:
            raise ServingError(
                "no model version is registered: register one with "
                "`prefloop models register V --path DIR`"
            )
        routing = Routing(version=versions[-1].version)
    deploy(settings, routing)
    return routing


def current_routing(settings: Settings) -> Routing | None:
    """The routing the running router serves, or None when no router runs."""
    app = _deployed_app(_serve_api(settings))
    for deployment in (app or {}).get("deployments", []):
        if deployment.get("name") == DEPLOYMENT and deployment.get("user_config"):
            return Routing.from_config(deployment["user_config"])
    return None


def _deployed_app(client: Any) -> dict[str, Any] | None:
    """The router's application config as Serve holds it, or None."""
    app = (client.get_serve_details().get("applications") or {}).get(APP_NAME) or {}
    config: dict[str, Any] | None = app.get("deployed_app_config")
    return config


def start_ab(settings: Settings, experiment: Split) -> None:
    reroute(settings, Routing(experiment=experiment))
    _record(settings, "AB_STARTED", experiment.b, experiment, f"split {experiment.split:g} %")


def set_split(settings: Settings, split: float) -> Split:
    experiment = _experiment(settings)
    changed = experiment.with_split(split)
    detail = f"split {experiment.split:g} % -> {changed.split:g} %"
    return _change(settings, changed, "SPLIT_CHANGED", changed.b, detail)


def promote(
    settings: Settings, version: str, reason: str = "", expected: Split | None = None
) -> Split:
    """All users to ``version``, one of the running experiment's arms, in one change.

    ``reason`` (the verdict's, when the automatic loop acts) goes into the event;
    ``expected`` (the experiment the verdict was about) must still be what runs.
    """
    experiment = _experiment(settings, expected)
    if version not in (experiment.a, experiment.b):
        raise ServingError(
            f"{version!r} is not an arm of experiment {experiment.experiment_id!r} "
            f"(A={experiment.a}, B={experiment.b}): promote one of them"
        )
    changed = experiment.with_split(100.0 if version == experiment.b else 0.0)
    detail = f"split -> {changed.split:g} %" + (f": {reason}" if reason else "")
    return _change(settings, changed, "PROMOTED", version, detail)


def rollback(settings: Settings, reason: str = "", expected: Split | None = None) -> Split:
    """All users back to arm A, the current version, in one change (``reason`` and
    ``expected`` as for ``promote``)."""
    experiment = _experiment(settings, expected)
    detail = f"split {experiment.split:g} % -> 0 %: all users on {experiment.a}"
    detail += f": {reason}" if reason else ""
    return _change(settings, experiment.with_split(0.0), "ROLLED_BACK", experiment.b, detail)


def _change(settings: Settings, changed: Split, kind: str, version: str, detail: str) -> Split:
    """Serve ``changed`` in place and record the change as a ModelEvent."""
    reroute(settings, Routing(experiment=changed))
    _record(settings, kind, version, changed, detail)
    return changed


def stop(settings: Settings) -> bool:
    """Delete the router application; False when none ran."""
    client = _client(settings)
    if current_routing(settings) is None:
        return False
    client.delete_apps([APP_NAME], blocking=True)
    return True


def _http_options(settings: Settings) -> dict[str, Any]:
    """Serve's proxy: on 127.0.0.1, and a request deadline of its own.

    The router times a request out itself (504), but not when its replica dies under
    it: then the proxy's deadline, a little later, ends the request.
    """
    return {
        "host": "127.0.0.1",
        "port": settings.serve_port,
        "request_timeout_s": settings.serve_request_timeout_s + PROXY_GRACE_S,
    }


def _experiment(settings: Settings, expected: Split | None = None) -> Split:
    """The running experiment; with ``expected``, only if it is still that one, unchanged."""
    routing = current_routing(settings)
    if routing is None:
        raise ServingError("the router is not running: start it with `prefloop serve`")
    if routing.experiment is None:
        raise ServingError(
            f"the router serves {routing.version} alone, with no experiment: start one with "
            "`prefloop ab start --a V1 --b V2 --split 10`"
        )
    if expected is not None and routing.experiment != expected:
        raise ServingError(
            f"the experiment changed while it was analysed (now {routing.experiment}, "
            f"analysed {expected}): nothing done; the next look sees the change"
        )
    return routing.experiment


def _record(settings: Settings, kind: str, version: str, experiment: Split, detail: str) -> None:
    with feedback_client(settings, name="control") as client:
        client.emit(
            "model_event",
            {
                "event_id": str(uuid.uuid4()),
                "ts": int(time.time() * 1000),
                "kind": kind,
                "model_version": version,
                "parent_version": experiment.a if version != experiment.a else None,
                "experiment_id": experiment.experiment_id,
                "artifact_uri": None,
                "pair_count": None,
                "pair_ranges": [],
                "metrics": {"split": experiment.split},
                "detail": detail,
            },
        )


class ServeRest:
    """Serve's REST API on the local head's dashboard: the reads and deploys of Serve's
    Python client (``get_serve_details``; ``deploy`` for ``deploy_apps``), without a
    Ray driver.

    A driver's start costs a command 5 to 20 s on a busy machine, most of what
    ``prefloop ab set-split`` and ``ab status`` took; over HTTP they take a fraction
    of a second. The local head checks its token here as it does a driver's.
    """

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/") + "/api/serve/applications/"
        self._headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def _call(self, method: str, body: Any = None, timeout_s: float = 30.0) -> Any:
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url, data, self._headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as exc:
            said = exc.read()[:1000].decode(errors="replace").strip()
            if method == "PUT" and exc.code in (400, 422):
                refused = f"Serve refuses the router's config ({said}): {REFUSED}"
                raise ServingError(refused) from None
            raise ServingError(f"Serve's REST API refused {method} ({exc.code}): {said}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServingError(f"Serve's REST API at {self.url} did not answer: {exc}") from None
        return json.loads(raw) if raw.strip() else None

    def get_serve_details(self) -> dict[str, Any]:
        details: dict[str, Any] = self._call("GET") or {}
        return details

    def deploy(self, config: dict[str, Any]) -> None:
        """Serve's ``serve deploy`` of ``config`` (a ``ServeDeploySchema`` as JSON)."""
        self._call("PUT", config, timeout_s=120.0)


def _serve_api(settings: Settings) -> Any:
    """How this process reaches Serve: the local head's REST API when its dashboard runs
    (no driver to start), else Serve's Python client on a Ray driver."""
    if not settings.ray_address and port_answers(settings.ray_dashboard_port):
        from prefloop.ray_client import token_path

        token = token_path(settings)
        if token.exists():
            url = f"http://127.0.0.1:{settings.ray_dashboard_port}"
            return ServeRest(url, token.read_text().strip())
    return _client(settings)


def _client(settings: Settings) -> Any:
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    if not ray.is_initialized():
        from prefloop.ray_client import connect

        connect(settings)
    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # not "Started Serve ..."
        serve.start(http_options=_http_options(settings))
        client = _get_global_client()
    return client


def _failure(app: dict[str, Any], message: str) -> str:
    """Why a deploy failed: the router deployment's own last error line (a replica's
    constructor raising, say), which the application's message only points to."""
    deployment = (app.get("deployments") or {}).get(DEPLOYMENT) or {}
    lines = [line.strip() for line in str(deployment.get("message") or "").splitlines()]
    cause = next((line for line in reversed(lines) if line), "")
    return f"{message} {cause}".strip() if cause and cause not in message else message


def _wait_running(client: Any, routing: Routing, timeout_s: float) -> None:
    """Until the application runs with ``routing`` on every replica."""
    deadline = time.monotonic() + timeout_s
    status, message = "", ""
    while time.monotonic() < deadline:
        app = (client.get_serve_details().get("applications") or {}).get(APP_NAME) or {}
        status, message = app.get("status", ""), app.get("message", "")
        deployed = next(
            (
                d.get("user_config")
                for d in (app.get("deployed_app_config") or {}).get("deployments", [])
                if d.get("name") == DEPLOYMENT
            ),
            None,
        )
        if status == "RUNNING" and deployed == routing.to_config():
            deployment = (app.get("deployments") or {}).get(DEPLOYMENT) or {}
            replicas = deployment.get("replicas") or []
            target = deployment.get("target_num_replicas", len(replicas))
            running = [r for r in replicas if r.get("state") == "RUNNING"]
            if deployment.get("status") == "HEALTHY" and len(running) >= target:
                return
        if status == "DEPLOY_FAILED":
            raise ServingError(f"the router failed to deploy: {_failure(app, message)}")
        time.sleep(0.2)
    raise ServingError(
        f"the router was not running after {timeout_s:g} s (status {status}: {message}); "
        "see the replica logs under the Ray session's logs/serve"
    )
