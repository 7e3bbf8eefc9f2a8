"""The demo's own duration and peak memory, and its outcome over several seeds.

Not a test: a measurement. ``prefloop demo`` runs once per seed, each in an empty
state directory (so the tiny base model is pre-trained again and every topic and
table starts empty), as `make demo` runs it on a fresh clone. While it runs, every
process of its tree (the demo, Kafka, the ClickHouse owner, the Ray head and its
workers, the router's replicas, the stream worker, the verdict loop, the trainer and
its Ray job) is sampled every second: the peak of their summed resident set (RSS,
which counts the pages they share once per process, so an upper bound) and of their
summed proportional set (PSS, the shared pages divided among their users). The
targets: within 10 minutes on 2 cores, under 8 GiB resident at peak.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import median, write_section

SEEDS = (0, 1, 2)
BIN = Path(sys.executable).parent
TARGET_S, TARGET_GIB = 600.0, 8.0
HEADER = (
    "| seed | outcome | implicit score A -> B | always-valid p | held-out liking v1 -> v2 "
    "| wall time | peak RSS | peak PSS |\n|---|---|---|---|---|---|---|---|"
)


def tree_memory(root: psutil.Process) -> tuple[int, int]:
    """(RSS, PSS) summed over ``root`` and its descendants, in bytes."""
    rss = pss = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


def run(seed: int) -> dict[str, object]:
    home = Path(tempfile.mkdtemp(prefix=f"prefloop-demo-{seed}-"))
    argv = [str(BIN / "prefloop"), "demo", "--seed", str(seed)]
    env = {**dict(__import__("os").environ), "PREFLOOP_HOME": str(home)}
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            rss, pss = tree_memory(root)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            done.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    (home / "demo.log").write_text(out)
    out = " ".join(out.split())  # a console that is no terminal wraps long lines
    verdict = re.search(r"always-valid p=([0-9.e-]+)\)\)", out)
    lift = re.search(r"implicit_score better \((-?[0-9.]+) -> (-?[0-9.]+)", out)
    check = re.search(r"held-out check (agrees|does not agree): .* ([0-9.]+) against \S+ "
                      r"([0-9.]+) \(sign test p ([0-9.e-]+)\)", out)  # fmt: skip
    return {
        "seed": seed,
        "rc": proc.returncode,
        "promoted": proc.returncode == 0,
        "outcome": "PROMOTED" if proc.returncode == 0 else f"no promotion (exit {proc.returncode})",
        "seconds": seconds,
        "rss_gib": peak[0] / 2**30,
        "pss_gib": peak[1] / 2**30,
        "p": verdict.group(1) if verdict else "-",
        "score": f"{lift.group(1)} -> {lift.group(2)}" if lift else "-",
        "check": (f"{check.group(3)} -> {check.group(2)} (p {check.group(4)})" if check else "-"),
        "log": home / "demo.log",
    }


def main() -> None:
    results = []
    for seed in SEEDS:
        result = run(seed)
        print(result, flush=True)
        results.append(result)
    rows = "\n".join(
        f"| {r['seed']} | {r['outcome']} | {r['score']} | {r['p']} | {r['check']} | "
        f"{r['seconds']:.0f} s | "
        f"{r['rss_gib']:.2f} GiB | {r['pss_gib']:.2f} GiB |"
        for r in results
    )
    promoted = sum(bool(r["promoted"]) for r in results)
    seconds = median([float(r["seconds"]) for r in results])  # type: ignore[arg-type]
    rss = max(float(r["rss_gib"]) for r in results)  # type: ignore[arg-type]
    pss = max(float(r["pss_gib"]) for r in results)  # type: ignore[arg-type]
    body = f"""
`prefloop demo --seed N` (40 users, threshold 200, the default tiny model) from an empty
state directory, once per seed; every process of its tree sampled each second.

{HEADER}
{rows}

{promoted} of {len(results)} seeds promoted. Median wall time **{seconds / 60:.1f} min** (target
within {TARGET_S / 60:.0f} min); peak memory of all its processes together **{rss:.2f} GiB RSS**,
{pss:.2f} GiB PSS (target under {TARGET_GIB:.0f} GiB). The wall time includes the stack's start
and stop, the base model's pre-training and the report. The RSS sum counts the pages the
processes share (the Python and torch libraries each of about ten Python processes maps)
once per process; the PSS sum divides them among their users, so it is the memory the
run takes from the machine.
"""
    write_section("Demo: the loop, unattended, per seed", body)


if __name__ == "__main__":
    main()
