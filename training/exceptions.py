"""The training room's errors, all under one root::

    PrefloopError
    └── TrainingError                   a training request could not be carried out
        ├── TrainingConfigError         a hyperparameter out of range (also a ValueError)
        ├── PairsError                  the pairs a request names cannot be trained on:
        │                               gone with the retention, empty text, none left
        └── JobError                    the Ray job failed, was stopped, or is unknown

Each message names what was wrong and what to do; the trainer service puts it in the
TRAINING_FAILED ModelEvent's ``detail``.
"""

from __future__ import annotations

from prefloop.errors import PrefloopError

__all__ = ["JobError", "PairsError", "TrainingConfigError", "TrainingError"]


class TrainingError(PrefloopError):
    """A training request could not be carried out; the message says why."""


class TrainingConfigError(TrainingError, ValueError):
    """A hyperparameter of the DPO job is out of range."""


class PairsError(TrainingError):
    """The preference pairs a request names cannot be trained on."""


class JobError(TrainingError):
    """The training job on Ray failed, was stopped, or cannot be found."""
