"""Prompt normalization: what makes two prompts "the same" across conversations.

Normalizing folds case (Unicode casefold after NFKC), deletes apostrophes (so
"can't" and "cant" agree), turns every other punctuation or symbol character into a
space and collapses whitespace. ``prompt_key`` hashes a whole prompt (every
message's role and normalized content) into a short, stable key: the same prompts
get the same key in every process (no salted ``hash()``).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["exact_prompt_key", "last_user_message", "normalize_text", "prompt_key", "words"]

_APOSTROPHES = frozenset("'\u2019\u02bc`")


def normalize_text(text: str) -> str:
    """``text`` in lower case, without punctuation, with single spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    chars = []
    for ch in folded:
        if ch in _APOSTROPHES:
            continue
        category = unicodedata.category(ch)
        chars.append(" " if category[0] in "PSZC" else ch)
    return " ".join("".join(chars).split())


def words(text: str) -> list[str]:
    """The words of ``text`` after normalization."""
    return normalize_text(text).split()


def prompt_key(messages: Iterable[Mapping[str, Any]]) -> str:
    """A stable 32-hex-digit key of a prompt: roles and normalized contents, in order."""
    digest = hashlib.blake2b(digest_size=16)
    for message in messages:
        line = f"{message.get('role', '')}\x1f{normalize_text(str(message.get('content', '')))}"
        digest.update(line.encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def exact_prompt_key(messages: Iterable[Mapping[str, Any]]) -> str:
    """A stable key of a prompt's exact messages (no normalization)."""
    digest = hashlib.blake2b(digest_size=16)
    for message in messages:
        line = f"{message.get('role', '')}\x1f{message.get('content', '')}"
        digest.update(line.encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def last_user_message(messages: Iterable[Mapping[str, Any]]) -> str:
    """The content of the last ``user`` message ('' when there is none)."""
    last = ""
    for message in messages:
        if message.get("role") == "user":
            last = str(message.get("content", ""))
    return last
