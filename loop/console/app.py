"""The console's web application: its pages, its JSON API, who may write.

Pages (``/monitor``, ``/annotate``, the demo ``/chat`` of :mod:`.chat`) are static HTML
that read the API. The API answers from the monitor's snapshots (:mod:`.monitor`),
steers the router through the same serving control as the CLI
(:mod:`prefloop.serving.control`), so a button's change is recorded as a ModelEvent
like a command's, and gives annotators their tasks from the annotation queue
(:mod:`.annotation_queue`, filled by :mod:`.annotation_feed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from prefloop.errors import PrefloopError
from prefloop.loop.console import router_client
from prefloop.loop.console.agreement import agreement
from prefloop.loop.console.annotation_feed import AnnotationFeed
from prefloop.loop.console.annotation_queue import CHOICES, AnnotationError, AnnotationQueue
from prefloop.loop.console.auth import CSRF_HEADER, Auth, User
from prefloop.loop.console.charts import series_svg
from prefloop.loop.console.chat import chat_routes
from prefloop.loop.console.monitor import Monitor, routing_json
from prefloop.process import port_answers
from prefloop.serving import control
from prefloop.serving.exceptions import ServingError
from prefloop.settings import Settings

__all__ = ["build_app", "serve_console"]

_log = logging.getLogger(__name__)
PAGES = Path(str(importlib.resources.files(__package__) / "pages"))
# the TypeScript SDK's build (`npm run build` in sdk/js), where a checkout has it
SDK_DIST = Path(__file__).resolve().parents[2] / "sdk" / "js" / "dist"
MAX_BODY = 64 * 1024


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def _challenge(message: str) -> JSONResponse:
    response = _error(401, message)
    response.headers["WWW-Authenticate"] = 'Basic realm="prefloop console", charset="UTF-8"'
    return response


Handler = Callable[[Request], Awaitable[Response]]


class Console:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Auth(settings.console_users)
        self.monitor = Monitor(settings)
        self.queue = AnnotationQueue(
            settings.home / "console" / "annotation.db", settings.annotation_lock_s
        )
        self.feed = AnnotationFeed(settings, self.queue)

    # -- who -----------------------------------------------------------------
    def _user(self, request: Request) -> User | None:
        return self.auth.user(request.headers.get("authorization"))

    def reader(self, handler: Handler) -> Handler:
        """Pages and reads: open when no users are configured, else for any user."""

        async def wrapped(request: Request) -> Response:
            if self.auth.configured and self._user(request) is None:
                return _challenge("sign in: a console user's name and password")
            return await handler(request)

        return wrapped

    def writer(self, role: str, handler: Callable[[Request, User], Awaitable[Response]]) -> Handler:
        """A write: a user of ``role`` (or an operator), with the page's CSRF token."""

        async def wrapped(request: Request) -> Response:
            if not self.auth.configured:
                return _error(
                    403,
                    "the console is read-only: no users are configured; set "
                    "PREFLOOP_CONSOLE_USERS=NAME:ROLE:PASSWORD,... and restart it",
                )
            user = self._user(request)
            if user is None:
                return _challenge("sign in to change anything: a user's name and password")
            if not user.may(role):
                return _error(403, f"{user.name} is an {user.role}: only an {role} may do this")
            if not self.auth.csrf_ok(user, request.headers.get(CSRF_HEADER)):
                return _error(
                    403,
                    f"missing or stale {CSRF_HEADER} header: reload the page (it reads the "
                    "token from /api/me)",
                )
            return await handler(request, user)

        return wrapped

    # -- reads ---------------------------------------------------------------
    async def me(self, request: Request) -> Response:
        user = self._user(request)
        return JSONResponse(
            {
                "name": user.name if user else None,
                "role": user.role if user else None,
                "csrf": self.auth.csrf_token(user) if user else None,
                "users_configured": self.auth.configured,
            }
        )

    async def routing(self, request: Request) -> Response:
        routing = await asyncio.to_thread(self.monitor.routing)
        return JSONResponse({"routing": routing_json(routing)})

    async def experiments(self, request: Request) -> Response:
        routing, known = await asyncio.gather(
            asyncio.to_thread(self.monitor.routing), asyncio.to_thread(self.monitor.experiments)
        )
        return JSONResponse({"routing": routing_json(routing), "experiments": known})

    async def experiment(self, request: Request) -> Response:
        snapshot = await asyncio.to_thread(self.monitor.snapshot, request.path_params["id"])
        return Response(json.dumps(snapshot, default=str), media_type="application/json")

    async def chart(self, request: Request) -> Response:
        snapshot = await asyncio.to_thread(self.monitor.snapshot, request.path_params["id"])
        svg = await asyncio.to_thread(series_svg, snapshot["series"])
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    # -- writes --------------------------------------------------------------
    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise PrefloopError(f"the request body is over {MAX_BODY // 1024} KiB")
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise PrefloopError(f"the request body is not JSON ({exc.msg})") from None
        if not isinstance(body, dict):
            raise PrefloopError("the request body must be a JSON object")
        return body

    async def set_split(self, request: Request, user: User) -> Response:
        body = await self._body(request)
        split = body.get("split")
        if isinstance(split, bool) or not isinstance(split, int | float) or not 0 <= split <= 100:
            return _error(400, "`split` must be a number of percent on arm B, 0 to 100")
        self._require_router()
        started = time.monotonic()
        changed = await asyncio.to_thread(control.set_split, self.settings, float(split))
        return self._changed(changed, started, user, "split")

    async def promote(self, request: Request, user: User) -> Response:
        body = await self._body(request)
        version = body.get("version")
        if not isinstance(version, str) or not version:
            return _error(400, "`version` must name the arm's version to promote")
        self._require_router()
        started = time.monotonic()
        reason = f"by {user.name} in the console"
        changed = await asyncio.to_thread(control.promote, self.settings, version, reason)
        return self._changed(changed, started, user, "promote")

    async def rollback(self, request: Request, user: User) -> Response:
        self._require_router()
        started = time.monotonic()
        reason = f"by {user.name} in the console"
        changed = await asyncio.to_thread(control.rollback, self.settings, reason)
        return self._changed(changed, started, user, "rollback")

    # -- annotation ----------------------------------------------------------
    def _next(self, user: User) -> dict[str, Any]:
        now = time.time()
        task = self.queue.take(user.name)
        return {
            "task": task.to_json(now) if task else None,
            "progress": self.queue.progress(user.name),
            "feed": self.feed.status,
        }

    async def annotation_next(self, request: Request, user: User) -> Response:
        return JSONResponse(await asyncio.to_thread(self._next, user))

    async def annotation_answer(self, request: Request, user: User) -> Response:
        body = await self._body(request)
        task_id, choice, comment = body.get("task_id"), body.get("choice"), body.get("comment")
        if not isinstance(task_id, str) or not task_id:
            return _error(400, "`task_id` must name the task answered")
        if choice not in CHOICES:
            return _error(400, f"`choice` must be one of {', '.join(CHOICES)}, got {choice!r}")
        if comment is not None and (not isinstance(comment, str) or len(comment) > 2000):
            return _error(400, "`comment` must be a text of at most 2000 characters, or absent")

        def answer() -> dict[str, Any]:
            result = self.queue.answer(task_id, user.name, choice, comment, self.feed.emit)
            return {"result_id": result["result_id"], **self._next(user)}

        try:
            return JSONResponse(await asyncio.to_thread(answer))
        except AnnotationError as exc:
            return _error(409, str(exc))

    async def annotation_agreement(self, request: Request) -> Response:
        judgements = await asyncio.to_thread(self.queue.judgements)
        return JSONResponse(
            {
                **agreement(judgements),
                "min_agreement": self.settings.annotation_min_agreement,
                "overlap": self.settings.annotation_overlap,
                "answers": len(judgements),
            }
        )

    def _require_router(self) -> None:
        """Fail at once when no router answers (instead of waiting on Ray)."""
        if not port_answers(self.settings.serve_port):
            raise ServingError(router_client.NOT_RUNNING)

    def _changed(self, changed: Any, started: float, user: User, what: str) -> Response:
        _log.info("console: %s by %s: %s", what, user.name, changed)
        return JSONResponse(
            {
                "routing": {"experiment": {"id": changed.experiment_id, "a": changed.a,
                                           "b": changed.b, "split": changed.split}},
                "seconds": round(time.monotonic() - started, 3),
            }
        )  # fmt: skip


def _page(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def page(request: Request) -> Response:
        return FileResponse(PAGES / name, headers={"Cache-Control": "no-store"})

    return page


def _errors(handler: Handler) -> Handler:
    """A PrefloopError (a bad input, the router away) as JSON with its message."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except PrefloopError as exc:
            return _error(400 if "request body" in str(exc) else 409, str(exc))

    return wrapped


def build_app(settings: Settings) -> Starlette:
    c = Console(settings)

    def read(handler: Handler) -> Handler:
        return _errors(c.reader(handler))

    routes: list[BaseRoute] = [
        Route("/", lambda request: RedirectResponse("/monitor")),
        Route("/monitor", read(_page("monitor.html"))),
        Route("/api/me", _errors(c.me)),
        Route("/api/routing", read(c.routing)),
        Route("/api/experiments", read(c.experiments)),
        Route("/api/experiments/{id}", read(c.experiment)),
        Route("/api/experiments/{id}/charts.svg", read(c.chart)),
        Route("/annotate", read(_page("annotate.html"))),
        Route("/api/annotation/agreement", read(c.annotation_agreement)),
        Route(
            "/api/annotation/next",
            _errors(c.writer("annotator", c.annotation_next)),
            methods=["POST"],
        ),
        Route(
            "/api/annotation/answer",
            _errors(c.writer("annotator", c.annotation_answer)),
            methods=["POST"],
        ),
        Route("/api/routing/split", _errors(c.writer("operator", c.set_split)), methods=["POST"]),
        Route("/api/routing/promote", _errors(c.writer("operator", c.promote)), methods=["POST"]),
        Route("/api/routing/rollback", _errors(c.writer("operator", c.rollback)), methods=["POST"]),
    ]
    routes += chat_routes(settings, c.reader)
    routes.append(Mount("/static", StaticFiles(directory=PAGES)))
    if SDK_DIST.is_dir():
        routes.append(Mount("/sdk", StaticFiles(directory=SDK_DIST)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        c.monitor.start()
        c.feed.start()
        try:
            yield
        finally:
            c.monitor.stop()
            await asyncio.to_thread(c.feed.stop)
            c.queue.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.console = c
    return app


def check_exposure(settings: Settings) -> None:
    """Refuse to serve the console beyond this machine without users to sign in."""
    host = settings.console_host
    local = host == "localhost"
    with contextlib.suppress(ValueError):  # a name, not an address
        local = local or ipaddress.ip_address(host).is_loopback
    if not local and settings.console_users is None:
        raise PrefloopError(
            f"PREFLOOP_CONSOLE_HOST={host} serves the console beyond this machine, and no "
            "users are configured: set PREFLOOP_CONSOLE_USERS first, or keep 127.0.0.1"
        )


def serve_console(settings: Settings) -> None:
    """Run the console until interrupted."""
    import uvicorn

    check_exposure(settings)
    app = build_app(settings)
    uvicorn.run(app, host=settings.console_host, port=settings.console_port, log_level="warning")
