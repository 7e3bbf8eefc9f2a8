"""Run every benchmark (or those named) and update bench/RESULTS.md."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = [
    "kafka_produce",
    "codec",
    "sdk_emit",
    "collector",
    "sink",
    "streams",
    "serving",
    "analytics",
    "console_control",
    "console_monitor",
    "cli_start",
    "training",
    "demo",
]

if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    for name in sys.argv[1:] or BENCHMARKS:
        print(f"== {name}", flush=True)
        runpy.run_path(str(HERE / f"{name}.py"), run_name="__main__")
