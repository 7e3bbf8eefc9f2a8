"""Helpers shared by the benchmarks: machine description, medians, RESULTS.md sections."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "RESULTS.md"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    java_line = java.splitlines()[0] if java else "no java"
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {java_line}"
    )


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def write_section(name: str, body: str) -> None:
    """Replace (or add) the section ``## name`` of bench/RESULTS.md."""
    header = f"## {name}"
    stamp = f"{header}\n\n_{datetime.now(UTC):%Y-%m-%d}, {machine()}_\n\n{body.strip()}\n"
    text = (
        RESULTS.read_text()
        if RESULTS.exists()
        else (
            "# Benchmark results\n\nWritten by `make bench` (`bench/run.py`). Each benchmark "
            "runs its baseline in the same run on the same machine; shared machines are noisy, "
            "so read the ratios and medians, not single times.\n"
        )
    )
    pattern = re.compile(rf"^{re.escape(header)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(stamp + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + stamp
    )
    RESULTS.write_text(text.rstrip() + "\n")
