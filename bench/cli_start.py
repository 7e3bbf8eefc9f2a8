"""CLI start-up: `prefloop --help` and `prefloop config` against `python -c pass`.

Not a test: a measurement. Each command runs once to warm the bytecode cache, then
the commands alternate for ROUNDS rounds; the table gives each one's median wall
time and what it adds to the interpreter's own start (`python -c pass`, the floor
any Python command pays). The bytecode cache is on, as on a user's machine
(PYTHONDONTWRITEBYTECODE is dropped from the environment).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from common import median, write_section

ROUNDS = 15
BIN = Path(sys.executable).parent
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "prefloop --help": [str(BIN / "prefloop"), "--help"],
    "prefloop config": [str(BIN / "prefloop"), "config"],
    "prefloop ab analyze --help": [str(BIN / "prefloop"), "ab", "analyze", "--help"],
}
TARGETS = {"prefloop --help": 0.3, "prefloop config": 0.6}


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for argv in COMMANDS.values():
        timed(argv, env)  # warm: bytecode written, files in the page cache
    runs: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(ROUNDS):
        for name, argv in COMMANDS.items():
            runs[name].append(timed(argv, env))
    floor = median(runs["python -c pass"])
    rows = []
    for name, times in runs.items():
        m = median(times)
        target = f"under {TARGETS[name]:g} s" if name in TARGETS else ""
        rows.append(
            f"| `{name}` | {m:.3f} | {m - floor:+.3f} | {m / floor:.1f}x | "
            f"{min(times):.3f}–{max(times):.3f} | {target} |"
        )
        print(f"  {name}: median {m:.3f} s ({m / floor:.1f}x python -c pass)")
    body = f"""
Wall time of one command, median of {ROUNDS} alternating rounds after a warm-up run each,
bytecode cache on. "added" is the median less that of `python -c pass`, the interpreter's
own start. `--help` imports click and the command modules only; `config` adds the
settings (pydantic-settings); no command imports a room, chDB, Ray or torch before it runs.

| command | median s | added s | × python -c pass | range s | target |
|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    write_section("CLI: start-up against python -c pass", body)
    print(body)


if __name__ == "__main__":
    main()
