"""Who may do what in the console: HTTP basic auth against ``PREFLOOP_CONSOLE_USERS``.

Two roles: an ``annotator`` reads the pages and annotates; an ``operator`` also steers
the router (split, promote, rollback). With no users configured every page is
read-only and every write is refused. A write also needs the ``X-Prefloop-CSRF``
header the page reads from ``/api/me``: a browser attaches basic-auth credentials
to any request, a cross-site form cannot read or set that header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from pydantic import SecretStr

from prefloop.errors import PrefloopError

__all__ = ["ROLES", "Auth", "User"]

ROLES = ("annotator", "operator")
CSRF_HEADER = "x-prefloop-csrf"


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this user acts as ``role``: an operator may do what an annotator may."""
        return self.role == "operator" or self.role == role


class Auth:
    def __init__(self, users: SecretStr | None) -> None:
        self._users = _parse(users)
        self._key = secrets.token_bytes(32)  # CSRF tokens live as long as the process

    @property
    def configured(self) -> bool:
        return bool(self._users)

    def user(self, authorization: str | None) -> User | None:
        """The user of a request's ``Authorization`` header; None if absent or wrong."""
        if not authorization or not authorization.lower().startswith("basic "):
            return None
        try:
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        known = self._users.get(name)
        if known is None:
            hmac.compare_digest(password, password)  # the same time for an unknown name
            return None
        role, expected = known
        return User(name, role) if hmac.compare_digest(password, expected) else None

    def csrf_token(self, user: User) -> str:
        return hmac.new(self._key, user.name.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, user: User, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf_token(user))


def _parse(users: SecretStr | None) -> dict[str, tuple[str, str]]:
    """``NAME:ROLE:PASSWORD,...`` -> {name: (role, password)}; a bad entry is named by
    its position, never by its password."""
    parsed: dict[str, tuple[str, str]] = {}
    text = users.get_secret_value() if users is not None else ""
    for n, entry in enumerate(filter(None, (e.strip() for e in text.split(","))), start=1):
        name, role, password = [*entry.split(":", 2), "", ""][:3]
        if not name or role not in ROLES or not password:
            raise PrefloopError(
                f"PREFLOOP_CONSOLE_USERS entry {n} (user {name or '?'!r}) is not "
                f"NAME:ROLE:PASSWORD with ROLE one of {', '.join(ROLES)}: fix it and restart"
            )
        if name in parsed:
            raise PrefloopError(f"PREFLOOP_CONSOLE_USERS names user {name!r} twice: keep one")
        parsed[name] = (role, password)
    return parsed
