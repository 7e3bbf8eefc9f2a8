"""What ``prefloop up`` records of the stack it started (``$PREFLOOP_HOME/run/stack.json``).

Kept apart from the launchers so that a command reads it without importing them.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["STACK_FILE", "recorded_kafka_nodes"]

STACK_FILE = "stack.json"


def recorded_kafka_nodes(home: Path) -> int | None:
    """The node count the running stack was started with, if any."""
    try:
        return int(json.loads((home / "run" / STACK_FILE).read_text())["kafka_nodes"])
    except (OSError, ValueError, KeyError):
        return None
