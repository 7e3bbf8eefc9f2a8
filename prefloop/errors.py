"""The errors prefloop raises.

Every error derives from :class:`PrefloopError`, and its message says what was
wrong and what to do about it::

    PrefloopError (prefloop_sdk.errors: the SDK's errors derive from it too)
     ├── SettingsError          a PREFLOOP_* variable is unknown or malformed
     ├── StackError             a local component could not start, stop or be reached
     │    ├── MissingToolError  Java or Maven is not installed
     │    └── PortInUseError    a port the stack needs is taken
     └── ClickHouseError        a query, migration or the embedded store failed
          └── StoreOwnedError   another process owns the embedded chDB store
"""

from __future__ import annotations

# one root for the platform and the SDK: the SDK, the lower layer, defines it
from prefloop_sdk.errors import PrefloopError

__all__ = [
    "ClickHouseError",
    "MissingToolError",
    "PortInUseError",
    "PrefloopError",
    "SettingsError",
    "StackError",
    "StoreOwnedError",
]


class SettingsError(PrefloopError):
    """A setting is unknown or does not have the expected form."""


class StackError(PrefloopError):
    """A component of the local stack could not be started, stopped or reached."""


class MissingToolError(StackError):
    """A program the stack needs (java, mvn) is not installed."""


class PortInUseError(StackError):
    """A TCP port the stack wants to listen on is already taken."""

    def __init__(self, component: str, port: int, setting: str) -> None:
        self.component, self.port, self.setting = component, port, setting
        super().__init__(
            f"port {port} on 127.0.0.1, which {component} needs, is taken by another process: "
            f"stop that process or set {setting} to a free port"
        )


class ClickHouseError(PrefloopError):
    """A ClickHouse query, migration or connection failed."""


class StoreOwnedError(ClickHouseError):
    """The embedded chDB store is held by another process."""


def first_line(exc: BaseException) -> str:
    """An exception's message on one line; for a ClickHouse driver error, the server's own."""
    text = str(exc).split("server response:", 1)[-1].strip()
    return text.splitlines()[0] if text else type(exc).__name__
