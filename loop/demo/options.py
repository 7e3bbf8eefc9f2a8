"""What ``prefloop demo`` is asked for, and the settings the loop lowers to run in minutes."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefloop.errors import PrefloopError
from prefloop.settings import Settings

__all__ = ["LOOP_TRAIN_CONFIG", "LoopOptions", "loop_overrides", "loop_settings"]

JUDGE = "prefloop.loop.users.preference:judge"
LOOP_TRAIN_CONFIG: dict[str, Any] = {
    "learning_rate": 1.5e-4,
    "epochs": 2.0,
    "batch_size": 8,
    "beta": 0.1,
    "sft_weight": 1.0,  # the chosen answers' NLL too: fewer broken or empty answers
    "heldout_fraction": 0.2,
    "max_length": 256,
}
"""The DPO job's settings for a tiny model and a few hundred pairs on 2 CPU cores."""


FROM_OPTIONS = frozenset({"retrain_threshold", "serve_replicas"})
"""Settings an option of ``prefloop demo`` sets: the environment does not overrule them."""


@dataclass(frozen=True)
class LoopOptions:
    """What ``prefloop demo`` was asked for."""

    users: int = 40
    minutes: float = 10.0  # the whole loop's deadline
    threshold: int = 200  # pairs on a version that request its retrain
    generations: int = 1  # promotions to reach
    model: str = "tiny"  # tiny, smollm2 or a local checkpoint's path
    seed: int = 0
    chaos: bool = False  # SIGKILL the stream worker, a router replica and the sink once each

    def __post_init__(self) -> None:
        problems = [
            f"--{name} {value!r}: {need}"
            for name, value, ok, need in (
                ("users", self.users, self.users >= 2, "use at least 2 users (one per arm)"),
                ("minutes", self.minutes, self.minutes > 0, "use a positive number of minutes"),
                ("threshold", self.threshold, self.threshold >= 8, "use at least 8 pairs"),
                ("generations", self.generations, self.generations >= 1, "use at least 1"),
            )
            if not ok
        ]
        if problems:
            raise PrefloopError("; ".join(problems))


def loop_overrides(options: LoopOptions) -> dict[str, Any]:
    """Settings the loop lowers from their production defaults, to run in minutes."""
    return {
        "retrain_threshold": options.threshold,
        "train_config": json.dumps(LOOP_TRAIN_CONFIG),
        "eval_judge": JUDGE,  # the offline evaluation judges with the users' preference
        "streams_inactivity_s": 5.0,  # an answer settles after 5 s without a signal
        "streams_tick_s": 1.0,
        "ab_start_split": 50.0,
        "ab_verdict_interval_s": 10.0,
        "ab_min_users": max(2, min(10, options.users // 4)),
        "ab_effect_size": 0.5,
        **({"serve_replicas": 2} if options.chaos else {}),  # one is killed, one serves
    }


def loop_settings(
    settings: Settings, options: LoopOptions, environ: Mapping[str, str] = os.environ
) -> Settings:
    """``settings`` with :func:`loop_overrides`. What an option sets (``--threshold``, the
    replicas of ``--chaos``) always holds; the rest yields to a variable of the environment."""
    changes = {
        k: v for k, v in loop_overrides(options).items()
        if k in FROM_OPTIONS or f"PREFLOOP_{k.upper()}" not in environ
    }  # fmt: skip
    return settings.with_overrides(**changes)
