"""The errors the serving room raises (the router, its control and the collector).

::

    PrefloopError
     ├── SplitError       an experiment's split or routing cannot be served (also a
     │                    ValueError); raised by assignment.Split and Routing
     ├── ServingError     the router could not be deployed or changed (control), or
     │                    a replica cannot start: API keys required but absent
     │                    (deployment, auth)
     ├── BodyTooLarge     a request body over the limit (http.read_body); the router
     │                    answers 413 as an ApiError, the collector as its own 413
     ├── ApiError         a chat request the OpenAI API refuses, with the HTTP status
     │                    and OpenAI's error fields (openai_api, router; auth: 401)
     └── BackendError     the model back ends' own: prefloop.serving.backends.exceptions

``BodyTooLarge`` and ``ApiError`` are caught where they are raised and become HTTP
answers; they reach no caller of the router, but as PrefloopErrors a handler of
``PrefloopError`` wrapped around the request path would take them too: catch them
by their own class first.
"""

from __future__ import annotations

from typing import Any

from prefloop.errors import PrefloopError

__all__ = ["ApiError", "BodyTooLarge", "ServingError", "SplitError"]


class SplitError(PrefloopError, ValueError):
    """An experiment's split that cannot be served; the message says how to fix it."""


class ServingError(PrefloopError):
    """The router could not be deployed or changed; the message says what to do."""


class BodyTooLarge(PrefloopError):
    """A request body over the limit; ``size`` is the declared length, if one was."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        self.limit, self.size = limit, size
        given = f"of {size} bytes " if size is not None else ""
        super().__init__(f"body {given}exceeds the limit of {limit} bytes")


class ApiError(PrefloopError):
    """A request the API refuses, with the HTTP status and OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status, message, param, code, kind,
        )  # fmt: skip

    def body(self) -> dict[str, Any]:
        """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }
