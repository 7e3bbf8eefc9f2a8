"""The errors the stream agents' logic raises.

::

    PrefloopError
     └── StreamsError              root of this package's errors
          ├── StreamsConfigError   a config value is out of range (also a ValueError)
          └── SampleFileError     the offline sampler cannot read its input or write its output

Bad *events* are never raised: the agents return them as ``Rejected`` notes that
become dead letters (DESIGN.md: a bad record never crashes an agent).
"""

from __future__ import annotations

from prefloop.errors import PrefloopError

__all__ = ["SampleFileError", "StreamsConfigError", "StreamsError"]


class StreamsError(PrefloopError):
    """Root of the errors raised by ``prefloop.streams``."""


class StreamsConfigError(StreamsError, ValueError):
    """A stream config parameter has a value it cannot take."""

    def __init__(self, config: str, parameter: str, value: object, fix: str) -> None:
        self.config, self.parameter, self.value = config, parameter, value
        super().__init__(f"{config}.{parameter}={value!r} is not valid: {fix}")


class SampleFileError(StreamsError):
    """The offline sampler's input is missing or malformed, or its output cannot be written."""

    def __init__(self, path: str, problem: str, line: int | None = None) -> None:
        self.path, self.line = path, line
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {problem}")
