"""The DPO job's hyperparameters: one dataclass, validated where it is made.

The defaults are the product's for real checkpoints (learning rate 5e-7, one epoch,
beta 0.1); ``PREFLOOP_TRAIN_CONFIG`` (JSON) overrides any of them, and so may a
caller such as the demo. Every field carries its ``help``; a bad value is refused
in ``__post_init__`` naming the field, the value and the fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from prefloop.settings import Settings
from prefloop.training.exceptions import TrainingConfigError

__all__ = ["DPOJobConfig"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class DPOJobConfig:
    """What a DPO job trains with. Resources come from the settings, not from here."""

    learning_rate: float = field(default=5e-7, metadata=_help("AdamW learning rate"))
    epochs: float = field(default=1.0, metadata=_help("passes over the training pairs"))
    max_steps: int = field(
        default=-1, metadata=_help("optimizer steps at most; -1: as many as the epochs take")
    )
    batch_size: int = field(default=8, metadata=_help("pairs per device and step"))
    gradient_accumulation_steps: int = field(
        default=1, metadata=_help("steps whose gradients are summed before an update")
    )
    beta: float = field(default=0.1, metadata=_help("DPO's beta: how far from the reference"))
    sft_weight: float = field(
        default=0.0,
        metadata=_help(
            "weight of a supervised term (the chosen answers' NLL) beside DPO's loss, as RPO "
            "does: it keeps a small model answering in words; 0: DPO alone"
        ),
    )
    max_length: int = field(
        default=1024, metadata=_help("tokens of prompt + response kept (longer are cut)")
    )
    heldout_fraction: float = field(
        default=0.1, metadata=_help("share of pairs held out for evaluation, by pair-id hash")
    )
    min_train_pairs: int = field(
        default=1, metadata=_help("fewest training pairs a job accepts; fewer fails the request")
    )
    lora: bool = field(default=False, metadata=_help("train a LoRA adapter (peft), merged after"))
    lora_r: int = field(default=16, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=32, metadata=_help("LoRA scaling"))
    precompute_ref: bool = field(
        default=True,
        metadata=_help("reference log-probabilities computed once before training, not per step"),
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_help("recompute activations in the backward pass: less memory, ~30 % slower"),
    )
    seed: int = field(default=0, metadata=_help("seed of sampling, dropout and the split"))
    logging_steps: int = field(default=1, metadata=_help("steps between progress lines"))

    def __post_init__(self) -> None:
        positive = ("learning_rate", "epochs", "beta")
        for name in positive:
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value > 0)
            ):
                self._refuse(name, value, "a positive number")
        if (
            isinstance(self.sft_weight, bool)
            or not isinstance(self.sft_weight, int | float)
            or not (math.isfinite(self.sft_weight) and self.sft_weight >= 0)
        ):
            self._refuse("sft_weight", self.sft_weight, "a number of at least 0")
        for name in ("batch_size", "gradient_accumulation_steps", "max_length", "lora_r",
                     "lora_alpha", "logging_steps", "min_train_pairs"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self._refuse(name, value, "a whole number of at least 1")
        if (
            isinstance(self.max_steps, bool)
            or not isinstance(self.max_steps, int)
            or (self.max_steps == 0 or self.max_steps < -1)
        ):
            self._refuse("max_steps", self.max_steps, "-1 (no limit) or a positive whole number")
        fraction = self.heldout_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not (0 < fraction < 1)
        ):
            self._refuse("heldout_fraction", fraction, "a number between 0 and 1 (exclusive)")
        for name in ("lora", "precompute_ref", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                self._refuse(name, getattr(self, name), "true or false")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            self._refuse("seed", self.seed, "a whole number")

    @staticmethod
    def _refuse(name: str, value: Any, expected: str) -> None:
        raise TrainingConfigError(
            f"training config {name}={value!r} is not valid: give {expected} "
            f"(PREFLOOP_TRAIN_CONFIG or --config, e.g. '{{\"{name}\": ...}}')"
        )

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> DPOJobConfig:
        """A config from ``values`` over the defaults; an unknown name is refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainingConfigError(
                f"training config has no parameter {', '.join(unknown)}: the parameters are "
                f"{', '.join(sorted(known))}"
            )
        return cls(**values)

    @classmethod
    def from_json(cls, text: str, **overrides: Any) -> DPOJobConfig:
        try:
            values = json.loads(text or "{}")
        except json.JSONDecodeError as exc:
            raise TrainingConfigError(
                f"training config {text!r} is not JSON ({exc.msg}): give an object such as "
                '{"learning_rate": 1e-6}'
            ) from None
        if not isinstance(values, dict):
            raise TrainingConfigError(
                f"training config {text!r} is not a JSON object: give one such as "
                '{"learning_rate": 1e-6}'
            )
        return cls.from_mapping({**values, **overrides})

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DPOJobConfig:
        return cls.from_json(settings.train_config, **overrides)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(name, default, help) of every parameter, for ``--help`` texts."""
        return [(f.name, repr(f.default), f.metadata.get("help", "")) for f in fields(cls)]
