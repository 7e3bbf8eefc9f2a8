"""API keys on the router's OpenAI endpoint, checked as OpenAI checks its own.

With ``PREFLOOP_SERVE_API_KEYS`` set (comma-separated keys), every OpenAI route needs
``Authorization: Bearer KEY`` with one of them: what ``openai.OpenAI(api_key=KEY)``
sends. A request without one, or with another, gets 401 and OpenAI's own error body
(``invalid_request_error``; code ``invalid_api_key`` for a wrong key, none for a
missing one), so OpenAI's clients raise their ``AuthenticationError``. A wrong key is
echoed masked, never whole.

Only SHA-256 digests of the keys are kept, and a presented key is compared with every
one of them in constant time, so neither the time an answer takes nor which key
matched tells how close a guess came.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from prefloop.settings import Settings

from .exceptions import ApiError, ServingError

__all__ = ["ApiKeys", "mask"]

MISSING_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
INCORRECT_MESSAGE = (
    "Incorrect API key provided: {masked}. You can get an API key from the operator of this router."
)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="prefloop"'}  # RFC 6750: a 401 names its scheme

_SHOWN_FROM = 16  # a shorter key is shown as *** alone: its ends would give too much away


class ApiKeys:
    """The keys a router accepts; :meth:`check` refuses a request that has none of them."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key) for key in keys)
        if not self._digests:
            raise ServingError(
                "PREFLOOP_SERVE_API_KEYS holds no key: give one or more keys, "
                "comma-separated, or unset it to require none"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys | None:
        """The keys of ``settings.serve_api_keys``; None when it is unset (none required)."""
        if settings.serve_api_keys is None:
            return None
        value = settings.serve_api_keys.get_secret_value()
        return cls(key.strip() for key in value.split(",") if key.strip())

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys(<{len(self)} keys>)"

    def check(self, headers: Mapping[str, str]) -> None:
        """Nothing when ``headers`` carry one of the keys; else :class:`ApiError` 401."""
        given = _bearer(headers.get("authorization", ""))
        if not given:
            raise ApiError(401, MISSING_MESSAGE)
        presented = _digest(given)
        matched = False
        for digest in self._digests:  # every key, a match or not: no early answer
            matched |= hmac.compare_digest(presented, digest)
        if not matched:
            raise ApiError(
                401, INCORRECT_MESSAGE.format(masked=mask(given)), code="invalid_api_key"
            )


def mask(key: str) -> str:
    """``key`` as an answer may show it: its first five and last two characters."""
    if len(key) < _SHOWN_FROM:
        return "***"
    return f"{key[:5]}***{key[-2:]}"


def _bearer(header: str) -> str:
    """The credentials of a ``Bearer`` Authorization header ('' for any other)."""
    scheme, _, credentials = header.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def _digest(key: str) -> bytes:
    # equal-length digests: compare_digest on the keys themselves would answer a key
    # of another length sooner, and so tell the length of the real ones
    return hashlib.sha256(key.encode()).digest()
