"""Sticky A/B assignment: which arm, and so which model version, serves a user.

A user's bucket is a stable hash (xxh64, never Python's salted ``hash()``) of the
experiment's salt and the user id, modulo :data:`BUCKETS` (10,000: a split can be set
to a hundredth of a percent). Arm B (the candidate) holds the buckets below the split,
arm A (the current version) the rest. The ranges nest: raising the split from 10 % to
50 % moves users only from A to B, lowering it only from B to A, and a user whose
bucket stays on one side keeps the arm across requests, replicas and restarts.

The salt defaults to the experiment id, so two experiments split users independently;
reusing a salt on purpose repeats an earlier split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import xxhash

from .exceptions import SplitError

__all__ = ["BUCKETS", "ArmAssignment", "Routing", "Split", "SplitError", "bucket_of"]

BUCKETS = 10_000
"""Buckets per experiment: the split's resolution is 100 / BUCKETS percent."""


def bucket_of(salt: str, user_id: str) -> int:
    """The user's bucket in ``[0, BUCKETS)``, the same in every process and release."""
    digest = xxhash.xxh64_intdigest(f"{salt}\x1f{user_id}".encode())
    return digest % BUCKETS


@dataclass(frozen=True)
class ArmAssignment:
    """Where one request goes; outside an experiment only ``model_version`` is set."""

    experiment_id: str | None
    arm: str | None  # "A" (current) or "B" (candidate)
    model_version: str
    bucket: int | None


@dataclass(frozen=True)
class Split:
    """One experiment: versions ``a`` (current) and ``b`` (candidate), and the share of
    users, in percent, that ``b`` serves."""

    experiment_id: str
    a: str
    b: str
    split: float
    salt: str | None = None

    def __post_init__(self) -> None:
        if not self.experiment_id.strip():
            raise SplitError("the experiment id is empty: name the experiment")
        if not self.a.strip() or not self.b.strip():
            raise SplitError(f"experiment {self.experiment_id!r}: name both model versions")
        if self.a == self.b:
            raise SplitError(
                f"experiment {self.experiment_id!r} compares {self.a!r} with itself: "
                "give arm B another version"
            )
        if not 0 <= self.split <= 100:
            raise SplitError(
                f"experiment {self.experiment_id!r}: split {self.split!r} is not a "
                "percentage: give arm B's share between 0 and 100"
            )
        if abs(self.split * BUCKETS / 100 - round(self.split * BUCKETS / 100)) > 1e-9:
            raise SplitError(
                f"experiment {self.experiment_id!r}: split {self.split!r} is finer than "
                f"the {100 / BUCKETS:g} % a bucket holds: round it"
            )

    @property
    def b_buckets(self) -> int:
        """How many buckets, from bucket 0 up, arm B holds."""
        return round(self.split * BUCKETS / 100)

    def assign(self, user_id: str) -> ArmAssignment:
        """The arm and version that serve ``user_id``."""
        if not user_id:
            raise SplitError(
                "no user id: send it in the request's `user` field or the "
                "X-Prefloop-User header, so the user keeps one arm"
            )
        bucket = bucket_of(self.salt or self.experiment_id, user_id)
        arm, version = ("B", self.b) if bucket < self.b_buckets else ("A", self.a)
        return ArmAssignment(self.experiment_id, arm, version, bucket)

    def with_split(self, split: float) -> Split:
        """The same experiment with arm B's share moved to ``split`` percent."""
        return Split(self.experiment_id, self.a, self.b, split, self.salt)

    def to_config(self) -> dict[str, Any]:
        """The experiment as a deployment's ``user_config`` holds it."""
        config: dict[str, Any] = {
            "experiment_id": self.experiment_id,
            "a": self.a,
            "b": self.b,
            "split": self.split,
        }
        if self.salt is not None:
            config["salt"] = self.salt
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Split:
        """The experiment in a ``user_config``; a missing or mistyped field is named."""
        unknown = sorted(set(config) - {"experiment_id", "a", "b", "split", "salt"})
        if unknown:
            raise SplitError(
                f"unknown experiment fields {unknown}: the fields are experiment_id, a, b, "
                "split and salt"
            )
        values: dict[str, Any] = {}
        for name, kind in (("experiment_id", str), ("a", str), ("b", str)):
            value = config.get(name)
            if not isinstance(value, kind):
                raise SplitError(f"experiment field {name!r} must be a string, got {value!r}")
            values[name] = value
        split = config.get("split")
        if isinstance(split, bool) or not isinstance(split, int | float):
            raise SplitError(f"experiment field 'split' must be a number, got {split!r}")
        salt = config.get("salt")
        if salt is not None and not isinstance(salt, str):
            raise SplitError(f"experiment field 'salt' must be a string, got {salt!r}")
        return cls(split=float(split), salt=salt, **values)


@dataclass(frozen=True)
class Routing:
    """What the router serves: one version to everyone, or an experiment between two.

    It is the router deployment's ``user_config``: ``{"version": "v1"}`` or
    ``{"experiment": {"experiment_id": ..., "a": ..., "b": ..., "split": ...}}``.
    """

    version: str | None = None
    experiment: Split | None = None

    def __post_init__(self) -> None:
        if (self.version is None) == (self.experiment is None):
            raise SplitError(
                "routing needs exactly one of a version (serve it to everyone) or an "
                "experiment (split users between two versions)"
            )
        if self.version is not None and not self.version.strip():
            raise SplitError("the served version is empty: name a registered version")

    @property
    def versions(self) -> tuple[str, ...]:
        """The model versions this routing serves."""
        if self.experiment is not None:
            return (self.experiment.a, self.experiment.b)
        assert self.version is not None
        return (self.version,)

    def assign(self, user_id: str) -> ArmAssignment:
        if self.experiment is not None:
            return self.experiment.assign(user_id)
        assert self.version is not None
        return ArmAssignment(None, None, self.version, None)

    def to_config(self) -> dict[str, Any]:
        if self.experiment is not None:
            return {"experiment": self.experiment.to_config()}
        return {"version": self.version}

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Routing:
        if not isinstance(config, Mapping) or set(config) not in ({"version"}, {"experiment"}):
            raise SplitError(
                f'routing config {config!r} is not valid: give {{"version": V}} or '
                '{"experiment": {...}}'
            )
        if "experiment" in config:
            experiment = config["experiment"]
            if not isinstance(experiment, Mapping):
                raise SplitError(f"the experiment must be an object, got {experiment!r}")
            return cls(experiment=Split.from_config(experiment))
        version = config["version"]
        if not isinstance(version, str):
            raise SplitError(f"the served version must be a string, got {version!r}")
        return cls(version=version)
