"""Model back ends: the engines a serving replica generates text with.

``base`` defines the interface (:class:`Backend`, :class:`GenerationRequest`,
:class:`Generation`); ``hf`` implements it with Transformers. Importing this
package loads neither torch nor transformers: ``TransformersBackend`` and
``tiny_model`` are imported on first use, so the A/B router can share the
request types without the model stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Backend, FinishReason, Generation, GenerationRequest
from .exceptions import BackendError, GenerationError, InvalidRequestError, ModelLoadError

if TYPE_CHECKING:
    from .echo import EchoBackend
    from .hf import TransformersBackend
    from .tiny import tiny_model

__all__ = [
    "Backend",
    "BackendError",
    "EchoBackend",
    "FinishReason",
    "Generation",
    "GenerationError",
    "GenerationRequest",
    "InvalidRequestError",
    "ModelLoadError",
    "TransformersBackend",
    "tiny_model",
]

_LAZY = {"EchoBackend": ".echo", "TransformersBackend": ".hf", "tiny_model": ".tiny"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
