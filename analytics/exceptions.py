"""The errors the analytics room raises.

Every one derives from :class:`prefloop.errors.PrefloopError`, and its message says
what was wrong and what to do about it. Those raised for a bad argument are also a
``ValueError``::

    PrefloopError (prefloop.errors)
     ├── StatsError          (ValueError) a statistic's inputs are invalid, or the
     │                       statistic is undefined for them (prefloop.analytics.stats)
     ├── AnalysisError       (ValueError) an experiment cannot be analysed as asked
     │                       (prefloop.analytics.verdict)
     ├── ExportError         an export's arguments are invalid, or its output cannot
     │    │                  be written (prefloop.analytics.export)
     │    └── TimeRangeError (ValueError) a start or end is not a date or time, or the
     │                       end is not after the start
     ├── ForgetError         (ValueError) the user to forget is not given
     │                       (prefloop.analytics.forget)
     └── SinkLagError        the sink's lag could not be read from the broker
                             (prefloop.analytics.lag)

The modules named keep these names importable from them too.
"""

from __future__ import annotations

from prefloop.errors import PrefloopError

__all__ = [
    "AnalysisError",
    "ExportError",
    "ForgetError",
    "SinkLagError",
    "StatsError",
    "TimeRangeError",
]


class StatsError(PrefloopError, ValueError):
    """The inputs of a statistic are invalid, or the statistic is undefined for them."""


class AnalysisError(PrefloopError, ValueError):
    """An experiment that cannot be analysed as asked: the message says why."""


class ExportError(PrefloopError):
    """An export's arguments are invalid, or its output cannot be written."""


class TimeRangeError(ExportError, ValueError):
    """A start or end time is not a date or time, or the end is not after the start."""


class ForgetError(PrefloopError, ValueError):
    """The user to forget is not given."""


class SinkLagError(PrefloopError):
    """The sink's lag could not be read from the broker."""
