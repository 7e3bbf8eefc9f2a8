"""The errors the model back ends raise.

::

    PrefloopError
     └── BackendError              root of this package's errors
          ├── ModelLoadError       the model directory is missing, not a model, or does not
          │                        load on the requested device and dtype
          ├── InvalidRequestError  a GenerationRequest field is out of range (also a ValueError)
          └── GenerationError      the model failed while generating (out of memory, ...)
"""

from __future__ import annotations

from prefloop.errors import PrefloopError

__all__ = ["BackendError", "GenerationError", "InvalidRequestError", "ModelLoadError"]


class BackendError(PrefloopError):
    """Root of the errors raised by ``prefloop.serving.backends``."""


class ModelLoadError(BackendError):
    """A model could not be loaded; ``path`` is the directory that was asked for."""

    def __init__(self, path: object, problem: str, fix: str) -> None:
        self.path = str(path)
        super().__init__(f"cannot load the model at {self.path}: {problem}; {fix}")


class InvalidRequestError(BackendError, ValueError):
    """A ``GenerationRequest`` field has a value it cannot take."""

    def __init__(self, field: str, value: object, fix: str) -> None:
        self.field, self.value = field, value
        super().__init__(f"GenerationRequest.{field}={value!r} is not valid: {fix}")


class GenerationError(BackendError):
    """The model raised while generating a batch."""

    def __init__(self, model_version: str, batch_size: int, problem: str, fix: str) -> None:
        self.model_version, self.batch_size = model_version, batch_size
        super().__init__(
            f"model {model_version} failed on a batch of {batch_size}: {problem}; {fix}"
        )
