"""Two model back-end replicas sharing one GPU: tokens/s, memory, greedy determinism.

Run from the repository root on a GPU machine::

    python3 bench/gpu/backend_gpu.py --out $OUT/gpu_backend.md

and, as a dry run on any machine, ``--device cpu --tiny``. It builds a ~200 M
parameter random-weight Llama offline (``tiny_model`` with a bigger shape) in
``--model-dir``, then runs two replicas of ``TransformersBackend`` on the one
device at the same time: each generates a greedy batch of 8 chat requests, one
request alone, and the batch again, which must give the same text. With Ray
importable the replicas are Ray actors holding ``num_gpus=0.5`` each, the share
a Serve deployment of two replicas would ask for; without Ray they are two
spawned processes. It exits non-zero when CUDA is missing (unless
``--device cpu``), a replica fails, or a greedy repeat differs.

The host needs torch, transformers and tokenizers only: prefloop's back-end
modules are loaded from this checkout without running the package
``__init__`` files above them (prefloop_sdk's pulls in the Kafka and Avro clients).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import math
import multiprocessing
import os
import platform
import queue
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PHASES = ("batch", "single", "repeat", "raw")
# prefloop dependencies a GPU host does not have: none of them may be loaded here
ABSENT_ON_GPU_HOSTS = (
    "confluent_kafka",
    "fastavro",
    "pydantic",
    "pydantic_settings",
    "faust",
    "clickhouse_connect",
    "chdb",
    "trl",
    "datasets",
)


def unexpected_modules(preloaded: set[str]) -> list[str]:
    """The modules a GPU host lacks that were imported since ``preloaded`` was taken."""
    return [m for m in ABSENT_ON_GPU_HOSTS if m in sys.modules and m not in preloaded]


def load_prefloop() -> None:
    """Register prefloop's packages as bare modules that point at this checkout."""
    packages = {
        "prefloop_sdk": ROOT / "sdk/python/prefloop_sdk",
        "prefloop": ROOT / "prefloop",
        "prefloop.serving": ROOT / "serving",
        "prefloop.serving.backends": ROOT / "serving/backends",
    }
    for name, path in packages.items():
        if name in sys.modules:
            continue
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(path)]
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def prompts(count: int) -> list[list[dict[str, str]]]:
    """``count`` chats of different lengths, from the tokenizer's own corpus."""
    from prefloop.tiny_model import chat_corpus

    corpus = chat_corpus()
    chats = []
    for i in range(count):
        question = " ".join(corpus[(7 * i + k) % len(corpus)] for k in range(1 + i % 3))
        chats.append([{"role": "user", "content": question}])
    return chats


class Replica:
    """One back end and its measurements; the same class in a process or a Ray actor."""

    def __init__(self, rank: int, options: dict[str, Any]) -> None:
        self.rank, self.options = rank, options
        self.backend: Any = None
        self.texts: dict[str, list[str]] = {}
        self.preloaded: set[str] = set()

    def load(self) -> float:
        self.preloaded = set(sys.modules)  # a Ray worker has loaded Ray's own dependencies
        load_prefloop()
        quiet_transformers()
        import torch

        from prefloop.serving.backends.hf import TransformersBackend

        if self.options["device"] == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
        started = time.perf_counter()
        self.backend = TransformersBackend(
            self.options["model_dir"],
            model_version=f"replica-{self.rank}",
            device=self.options["device"],
            dtype=self.options["dtype"],
            max_batch_size=self.options["batch"],
        )
        seconds = time.perf_counter() - started
        # warm-up at the measured shapes (kernels, allocator, caches), outside the runs
        self.backend.generate(self.requests(self.options["batch"], self.options["tokens"]))
        self.backend.generate(self.requests(1, self.options["tokens"]))
        self.raw_generate()
        if torch.cuda.is_available() and self.options["device"] != "cpu":
            torch.cuda.reset_peak_memory_stats()
        return seconds

    def requests(self, count: int, tokens: int) -> list[Any]:
        from prefloop.serving.backends.base import GenerationRequest

        return [GenerationRequest(chat, max_tokens=tokens) for chat in prompts(count)]

    def raw_generate(self) -> int:
        """The baseline: the same batch through transformers' own generate, no back end."""
        model, tokenizer = self.backend._model, self.backend._tokenizer
        tokenizer.padding_side = "left"
        texts = [
            tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in prompts(self.options["batch"])
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True).to(model.device)
        out = model.generate(
            **batch,
            max_new_tokens=self.options["tokens"],
            min_new_tokens=self.options["tokens"],
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        return int((out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0])

    def run(self, phase: str) -> dict[str, Any]:
        import torch

        if phase == "raw":
            start, clock = time.time(), time.perf_counter()
            tokens = self.raw_generate()
            seconds = time.perf_counter() - clock
            return {
                "rank": self.rank,
                "phase": phase,
                "start": start,
                "end": start + seconds,
                "seconds": seconds,
                "tokens": tokens,
                "peak_mib": None,
                "repeat_identical": True,
                "single_is_batch_row": True,
                "unexpected_modules": unexpected_modules(self.preloaded),
            }
        count = 1 if phase == "single" else self.options["batch"]
        requests = self.requests(count, self.options["tokens"])
        start, clock = time.time(), time.perf_counter()
        generations = self.backend.generate(requests)
        seconds = time.perf_counter() - clock
        self.texts[phase] = [g.text for g in generations]
        on_gpu = torch.cuda.is_available() and self.options["device"] != "cpu"
        return {
            "rank": self.rank,
            "phase": phase,
            "start": start,
            "end": start + seconds,
            "seconds": seconds,
            "tokens": sum(g.completion_tokens for g in generations),
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None,
            "repeat_identical": self.texts.get("repeat") == self.texts.get("batch"),
            "single_is_batch_row": self.texts.get("single", [None])[0]
            == self.texts.get("batch", [None])[0],
            "unexpected_modules": unexpected_modules(self.preloaded),
        }


def process_replica(rank: int, options: dict[str, Any], barrier: Any, results: Any) -> None:
    """A replica in a spawned process: all phases, in step with the other through ``barrier``."""
    try:
        replica = Replica(rank, options)
        load_seconds = replica.load()
        for phase in PHASES:
            barrier.wait()
            results.put({**replica.run(phase), "load_s": load_seconds})
    except BaseException:
        barrier.abort()  # the other replica must not wait for this one forever
        results.put({"rank": rank, "error": traceback.format_exc()})


def run_in_processes(options: dict[str, Any]) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2, timeout=options["timeout"])
    results = context.Queue()
    workers = [
        context.Process(target=process_replica, args=(rank, options, barrier, results))
        for rank in range(2)
    ]
    for worker in workers:
        worker.start()
    rows = []
    deadline = time.monotonic() + options["timeout"]
    while len(rows) < 2 * len(PHASES) and not any("error" in r for r in rows):
        try:
            rows.append(results.get(timeout=max(1.0, deadline - time.monotonic())))
        except queue.Empty:
            rows.append({"rank": "both", "error": f"no result within {options['timeout']} s"})
    for worker in workers:
        worker.join(timeout=30)
    return rows


def run_in_ray(options: dict[str, Any]) -> list[dict[str, Any]]:
    import ray  # only here: a GPU host without Ray never imports it

    on_gpu = options["device"] != "cpu"
    # a private instance: never join (or load) a cluster someone else is running
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=True)
    try:
        actor = ray.remote(num_gpus=0.5 if on_gpu else 0, num_cpus=1)(Replica)
        replicas = [actor.remote(rank, options) for rank in range(2)]
        loads = ray.get([r.load.remote() for r in replicas], timeout=options["timeout"])
        rows = []
        for phase in PHASES:
            done = ray.get([r.run.remote(phase) for r in replicas], timeout=options["timeout"])
            rows += [{**row, "load_s": loads[row["rank"]]} for row in done]
        return rows
    finally:
        ray.shutdown()


def has_ray() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except ImportError:
        return False


def host_lines(device: str) -> list[str]:
    import tokenizers
    import torch
    import transformers

    lines = [
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}"
    ]
    if device == "cpu":
        lines.append(f"device: CPU, {os.cpu_count()} cores")
    else:
        props = torch.cuda.get_device_properties(0)
        lines.append(
            f"device: {props.name}, {props.total_memory / 2**30:.1f} GiB, "
            f"{torch.cuda.device_count()} visible"
        )
    return lines


def build_model(options: dict[str, Any]) -> tuple[str, float]:
    from prefloop.tiny_model import tiny_model

    shape: dict[str, Any]
    if options["tiny"]:
        shape = {"dtype": "float32"}
    else:
        shape = {
            "vocab_size": 4096,
            "hidden_size": 1024,
            "layers": 16,
            "heads": 16,
            "intermediate_size": 2816,
            "dtype": "bfloat16",
        }
    started = time.perf_counter()
    path = tiny_model(options["model_dir"], **shape)
    seconds = time.perf_counter() - started
    from safetensors import safe_open

    with safe_open(path / "model.safetensors", "pt") as weights:
        count = sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())  # noqa: SIM118
    layers, hidden = shape.get("layers", 4), shape.get("hidden_size", 128)
    description = (
        f"random-weight Llama, {layers} layers x {hidden} hidden, {count / 1e6:.1f} M parameters, "
        f"{shape['dtype']}"
    )
    return description, seconds


def report(rows: list[dict[str, Any]], header: list[str]) -> str:
    by = {(r["rank"], r["phase"]): r for r in rows}

    def rate(r: dict[str, Any]) -> str:
        return f"{r['tokens'] / r['seconds']:,.0f}"

    def mib(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f}"

    def yes(flag: bool) -> str:
        return "yes" if flag else "NO"

    table = [
        "| replica | load s | batch tokens | batch s | batch tokens/s | raw generate tokens/s "
        "| single tokens/s | peak GPU MiB | repeat identical | single = batch row 0 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rank in (0, 1):
        batch, single, repeat, raw = (by[(rank, p)] for p in PHASES)
        table.append(
            f"| {rank} | {batch['load_s']:.1f} | {batch['tokens']} | {batch['seconds']:.2f} "
            f"| {rate(batch)} | {rate(raw)} | {rate(single)} | {mib(repeat['peak_mib'])} "
            f"| {yes(repeat['repeat_identical'])} | {yes(repeat['single_is_batch_row'])} |"
        )
    total = {}
    for phase in ("batch", "single", "raw"):
        both = [by[(rank, phase)] for rank in (0, 1)]
        window = max(r["end"] for r in both) - min(r["start"] for r in both)
        total[phase] = (sum(r["tokens"] for r in both), window)
    peaks = [by[(rank, "repeat")]["peak_mib"] for rank in (0, 1)]
    table.append(
        f"| both, concurrently | | {total['batch'][0]} | {total['batch'][1]:.2f} "
        f"| {total['batch'][0] / total['batch'][1]:,.0f} "
        f"| {total['raw'][0] / total['raw'][1]:,.0f} "
        f"| {total['single'][0] / total['single'][1]:,.0f} "
        f"| {mib(None if None in peaks else sum(peaks))} | | |"
    )
    return "\n".join(
        ["## Model back end: two replicas sharing one device", "", *header, "", *table]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--device", default="cuda", help='"cuda" (default) or "cpu"')
    parser.add_argument("--tiny", action="store_true", help="a 1 M parameter model (dry run)")
    parser.add_argument("--tokens", type=int, help="new tokens per request (128; tiny: 16)")
    parser.add_argument("--batch", type=int, default=8, help="requests per batch")
    parser.add_argument("--model-dir", type=Path, help="where the model is built and reused")
    parser.add_argument("--no-ray", action="store_true", help="processes even if Ray is there")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per step")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never ask a hub

    preloaded = set(sys.modules)
    load_prefloop()
    quiet_transformers()
    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        print(
            f"CUDA is not available (torch {torch.__version__}, CUDA build {torch.version.cuda}): "
            "run this on a GPU machine, or pass --device cpu for a dry run",
            file=sys.stderr,
        )
        return 2
    tag = "tiny" if args.tiny else "200m"
    options = {
        "device": args.device,
        "dtype": "float32" if args.device == "cpu" else "bfloat16",
        "batch": args.batch,
        "tokens": args.tokens or (16 if args.tiny else 128),
        "tiny": args.tiny,
        "model_dir": str(args.model_dir or Path("/tmp") / f"prefloop-backend-gpu-{tag}"),
        "timeout": args.timeout,
    }
    description, build_s = build_model(options)
    header = [f"- {line}" for line in host_lines(args.device)]
    header.append(f"- model: {description}, built in {build_s:.1f} s ({options['model_dir']})")
    if has_ray() and not args.no_ray:
        share = "num_gpus=0.5" if args.device != "cpu" else "num_gpus=0 (CPU)"
        mode = f"2 Ray actors with {share} each, as two Serve replicas would hold"
        print(f"Ray is installed: running the replicas as Ray actors ({share})", flush=True)
        runner = run_in_ray
    else:
        why = "--no-ray" if args.no_ray else "Ray is not installed on this host"
        mode = f"2 spawned processes ({why}: checking the back end alone)"
        print(f"{why}: checking the back end alone", flush=True)
        runner = run_in_processes
    header.append(f"- replicas: {mode}, both on {args.device} ({options['dtype']})")
    header.append(
        f"- each replica, both at once: a greedy batch of {options['batch']} chats x "
        f"{options['tokens']} new tokens, one chat alone, then the batch again"
    )
    imported_here = unexpected_modules(preloaded)  # before Ray brings its own
    started = time.perf_counter()
    rows = runner(options)
    errors = [r for r in rows if "error" in r]
    for error in errors:
        print(f"replica {error['rank']} failed:\n{error['error']}", file=sys.stderr)
    if errors:
        return 1
    header.append(f"- replicas loaded and ran in {time.perf_counter() - started:.1f} s")
    text = report(rows, header)
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    problems = []
    if not all(r["repeat_identical"] for r in rows if r["phase"] == "repeat"):
        problems.append("a greedy repeat gave different text")
    loaded = sorted({m for r in rows for m in r["unexpected_modules"]}.union(imported_here))
    if loaded:
        problems.append(f"modules a GPU host lacks were imported: {', '.join(loaded)}")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
