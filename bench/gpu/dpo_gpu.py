"""DPO training throughput on one GPU: prefloop's own ``train_dpo`` at batch 2, 8 and 32.

Run from the repository root on a GPU machine, with ``bench/gpu/wheels/`` (made by
``bash bench/gpu/wheels.sh``) carried along::

    python3 bench/gpu/dpo_gpu.py --out $OUT/dpo_gpu.md

and, as a dry run on any machine, ``--device cpu --steps 2 --batch-sizes 2``. It
exits non-zero when CUDA is missing (unless ``--device cpu``), when a run fails, or
when prefloop's modules reach a dependency a GPU host lacks.

What runs is the product's code: ``prefloop.training.dpo.train_dpo`` (the Ray job's
training step, ``WeightedDPOTrainer`` over TRL's ``DPOTrainer``) with a
``DPOJobConfig`` of the product's defaults (beta 0.1, max_length 1024, no gradient
checkpointing, no LoRA, bf16 on CUDA, float32 on a CPU), only ``batch_size``,
``max_steps``, ``logging_steps=1`` and ``precompute_ref`` set. Each batch size runs
twice: with the reference log-probabilities precomputed (the product's default: one
reference forward over the pairs before the first step) and with a reference model
copy run forward at every step (``precompute_ref: false``, TRL's own way).

The model is a random-weight Llama of SmolLM2-135M's published shape (30 layers, 576
hidden, 9 heads, 3 KV heads, 1536 intermediate, vocab 49152, tied embeddings, 134.5 M
parameters) with prefloop's offline byte-level tokenizer (``prefloop.tiny_model``): the
text uses a few thousand of the 49152 ids, which changes nothing in the compute. The
pairs are synthetic: prompt, chosen and rejected of 128-256 tokens each (uniform), so a
sequence (prompt + answer) is 256-512 tokens. A run is ``--warmup`` + ``--steps``
steps over exactly that many batches of pairs; the first ``--warmup`` steps (kernel
selection, allocator, and the reference pass in step 1's time) are not timed.

Measured per run: seconds per step (median of the timed steps, from the job's own
progress callback, one per step; TRL reads its metrics with ``.item()`` every step, so
the GPU is in step), pairs/s, tokens/s (prompt + answer tokens of chosen and rejected,
padding not counted: TRL's ``num_tokens``, averaged over the run's steps), peak GPU
memory (``max_memory_allocated`` and ``max_memory_reserved``, reset before each run;
model load, reference pass, training and save included) and an MFU estimate: 6 N
FLOPs per token for the policy's forward and backward, plus 2 N for the reference
forward when it runs every step (8 N), N the parameters (tied embeddings once),
attention scores' FLOPs left out (~10 % more at these lengths), over ``--peak-tflops``
(default 989: the H200's dense bf16 peak; a flag, not read from the card).

The host needs torch, transformers, tokenizers and accelerate. When ``trl`` is
missing it is installed from ``bench/gpu/wheels/`` (``pip install --no-index``, into
this Python); when pip cannot (no pip, a resolver conflict with the host's own
packages), the wheels for this Python are unpacked into a temporary directory put on
``sys.path``. prefloop's modules are loaded from this checkout without running the
package ``__init__`` files; the names the training modules import only for the Kafka
side of the job (settings, ``prefloop.kafka``, ``confluent_kafka``, the SDK's
decoder) are stand-ins that fail if used.
"""

from __future__ import annotations

import argparse
import gc
import importlib.machinery
import importlib.util
import itertools
import os
import platform
import random
import resource
import shutil
import site
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STARTED = time.monotonic()
ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / "bench/gpu/wheels"
# SmolLM2-135M's config.json (HuggingFaceTB/SmolLM2-135M), token ids aside
SMOLLM2_135M = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "initializer_range": 0.041666666666666664,
    "tie_word_embeddings": True,
}
TOKENS_PER_FIELD = (128, 256)  # prompt, chosen and rejected: uniform in this range
CPU_BASELINE = {"batch": 2, "s_per_step": 3.8}  # FIELD-NOTES: SmolLM2-135M, 2 CPU cores
# prefloop dependencies a GPU host does not have: prefloop's modules must not load them
ABSENT_ON_GPU_HOSTS = (
    "confluent_kafka",
    "fastavro",
    "pydantic",
    "pydantic_settings",
    "faust",
    "clickhouse_connect",
    "chdb",
    "ray",
)
STUB = "__prefloop_bench_stub__"


# --- TRL and datasets on a host without them -------------------------------------------


def _refresh_paths() -> None:
    """See what pip just installed: a user site created now is not on sys.path yet."""
    user_site = site.getusersitepackages()
    if os.path.isdir(user_site) and user_site not in sys.path:
        site.addsitedir(user_site)
    importlib.invalidate_caches()


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _unpack_wheels(wheels: Path) -> list[str]:
    """Unpack the wheels that fit this Python and that the host lacks; put them on sys.path."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    ranking = {tag: rank for rank, tag in enumerate(sys_tags())}
    best: dict[str, tuple[int, Path]] = {}
    for path in sorted(wheels.glob("*.whl")):
        name, _, _, tags = parse_wheel_filename(path.name)
        rank = min((ranking[t] for t in tags if t in ranking), default=None)
        if rank is not None and (name not in best or rank < best[name][0]):
            best[name] = (rank, path)
    target = Path(tempfile.mkdtemp(prefix="prefloop-dpo-wheels."))
    unpacked = []
    for name, (_, path) in sorted(best.items()):
        try:
            version(name)
            continue  # the host's own copy stays
        except PackageNotFoundError:
            pass
        with zipfile.ZipFile(path) as archive:
            archive.extractall(target)
        unpacked.append(path.name)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    return unpacked


def ensure_trl(wheels: Path) -> str:
    """Make ``trl`` and ``datasets`` importable; say how."""
    if _has("trl") and _has("datasets"):
        return "already installed"
    if sys.version_info < (3, 11):  # noqa: UP036  (a GPU host's Python, not the project's)
        raise SystemExit(
            f"trl is not installed and this is Python {platform.python_version()}: trl 1.16 "
            "(requirements.lock) needs Python 3.11 or later"
        )
    if not any(wheels.glob("*.whl")):
        raise SystemExit(
            f"trl is not installed and {wheels} holds no wheels: run `bash bench/gpu/wheels.sh` "
            "where there is network, and carry bench/gpu/wheels/ to this machine"
        )
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",
        "--disable-pip-version-check",
        "--find-links",
        str(wheels),
        "trl",
        "datasets",
    ]
    # a lent machine's system Python may be marked externally managed (PEP 668)
    env = {**os.environ, "PIP_BREAK_SYSTEM_PACKAGES": "1"}
    print(f"trl is not installed: {' '.join(command[2:])}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    _refresh_paths()
    if done.returncode == 0 and _has("trl") and _has("datasets"):
        return f"pip install from bench/gpu/wheels ({time.monotonic() - started:.0f} s)"
    print(
        f"pip install failed (rc {done.returncode}):\n{(done.stderr or done.stdout)[-2000:]}\n"
        "unpacking the wheels for this Python onto sys.path instead",
        file=sys.stderr,
        flush=True,
    )
    unpacked = _unpack_wheels(wheels)
    if not (_has("trl") and _has("datasets")):
        raise SystemExit(f"trl or datasets still not importable after unpacking {unpacked}")
    return f"pip failed (rc {done.returncode}); unpacked {len(unpacked)} wheels onto sys.path"


# --- prefloop's training modules, loaded bare ------------------------------------------


def _stub(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name, f"stand-in from {Path(__file__).name}: not usable here")
    setattr(module, STUB, True)
    for key, value in attributes.items():
        setattr(module, key, value)

    def missing(attribute: str) -> Any:
        raise AttributeError(f"{name}.{attribute}: {name} is a stand-in in the DPO benchmark")

    module.__getattr__ = missing  # type: ignore[method-assign]
    return module


def _unusable(what: str) -> type:
    class Unusable:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError(f"{what} is a stand-in in the DPO benchmark: nothing reads Kafka")

    Unusable.__name__ = what.rpartition(".")[2]
    return Unusable


def load_prefloop() -> None:
    """Register prefloop's packages as bare modules pointing at this checkout, and
    stand-ins for what ``training/config.py`` and ``training/pairs.py`` import only for
    the job's Kafka side (the benchmark builds its pairs itself)."""
    packages = {
        "prefloop_sdk": ROOT / "sdk/python/prefloop_sdk",
        "prefloop": ROOT / "prefloop",
        "prefloop.training": ROOT / "training",
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
    stubs = {
        "prefloop.settings": _stub("prefloop.settings", Settings=_unusable("Settings")),
        "prefloop.kafka": _stub("prefloop.kafka"),
        "confluent_kafka": _stub("confluent_kafka", TopicPartition=_unusable("TopicPartition")),
    }
    for name, module in stubs.items():
        if name not in sys.modules:  # the real one, when something loaded it first
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)
    sdk = sys.modules["prefloop_sdk"]
    if not hasattr(sdk, "decode"):
        sdk.decode = _unusable("prefloop_sdk.decode")  # type: ignore[attr-defined]


def unexpected_modules(preloaded: set[str]) -> list[str]:
    """The real modules a GPU host lacks that were imported since ``preloaded``."""
    return [
        m
        for m in ABSENT_ON_GPU_HOSTS
        if m in sys.modules and m not in preloaded and not getattr(sys.modules[m], STUB, False)
    ]


def quiet() -> None:
    import datasets
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()


# --- model and pairs -------------------------------------------------------------------


def build_model(directory: Path) -> tuple[int, float]:
    """SmolLM2-135M's shape, random weights (seed 0), bf16, with prefloop's offline
    tokenizer, saved in ``directory``; its parameter count and the seconds it took."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prefloop.tiny_model import _train_tokenizer

    started = time.perf_counter()
    tokenizer = _train_tokenizer(SMOLLM2_135M["vocab_size"])
    config = LlamaConfig(
        **SMOLLM2_135M,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())  # a tied matrix once
    model.to(torch.bfloat16)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return parameters, time.perf_counter() - started


def make_pairs(directory: Path, count: int, seed: int = 0) -> tuple[list[Any], float]:
    """``count`` synthetic pairs: prompt, chosen and rejected of 128-256 tokens each; and
    the mean tokens of a pair's two sequences (prompt + answer, twice)."""
    from transformers import AutoTokenizer

    from prefloop.tiny_model import chat_corpus
    from prefloop.training.pairs import Pair

    tokenizer = AutoTokenizer.from_pretrained(directory)
    sentences = chat_corpus()
    sizes = [len(tokenizer(" " + s, add_special_tokens=False)["input_ids"]) for s in sentences]
    rng = random.Random(seed)

    def text() -> tuple[str, int]:
        target, words, tokens = rng.randint(*TOKENS_PER_FIELD), [], 0
        while tokens < target:
            k = rng.randrange(len(sentences))
            words.append(sentences[k])
            tokens += sizes[k]
        return " ".join(words), tokens

    pairs, total = [], 0
    for i in range(count):
        (prompt, p), (chosen, c), (rejected, r) = text(), text(), text()
        total += 2 * p + c + r
        pairs.append(
            Pair(
                pair_id=f"bench-{i}",
                prompt=[{"role": "user", "content": prompt}],
                chosen=chosen,
                rejected=rejected,
                weight=1.0,
                source="SYNTHETIC",
                model_version="bench",
            )
        )
    return pairs, total / count


# --- runs ------------------------------------------------------------------------------


def run_one(
    model_dir: Path, pairs: list[Any], batch: int, precompute: bool, args: argparse.Namespace
) -> dict[str, Any]:
    import torch

    from prefloop.training.config import DPOJobConfig
    from prefloop.training.dpo import train_dpo

    on_gpu = args.device != "cpu"
    total = args.warmup + args.steps
    config = DPOJobConfig(
        batch_size=batch, max_steps=total, precompute_ref=precompute, logging_steps=1
    )
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    stamps: list[float] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="prefloop-dpo-out.") as out:
        result = train_dpo(
            model_dir,
            pairs[: batch * total],
            config,
            Path(out) / "model",
            progress=lambda p: stamps.append(p.elapsed_s),
            use_gpu=on_gpu,
        )
    wall = time.perf_counter() - started
    if len(stamps) != total or result.steps != total:
        raise RuntimeError(f"{len(stamps)} progress lines and {result.steps} steps, not {total}")
    durations = [b - a for a, b in itertools.pairwise(stamps)][args.warmup - 1 :]
    median = statistics.median(durations)
    tokens_per_step = result.tokens / result.steps
    return {
        "precompute": precompute,
        "batch": batch,
        "timed": len(durations),
        "s_per_step": median,
        "spread": (min(durations), max(durations)),
        "pairs_s": batch / median,
        "tokens_step": tokens_per_step,
        "tokens_s": tokens_per_step / median,
        "peak_alloc": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
        "peak_reserved": torch.cuda.max_memory_reserved() / 2**30 if on_gpu else None,
        "first_step_s": stamps[0],  # from train_dpo's start: tokenizing, reference pass, step 1
        "wall_s": wall,
    }


def estimate(previous: dict[str, Any], batch: int, total_steps: int) -> float:
    """Seconds a run at ``batch`` should take, from a finished run at a batch no larger:
    its model load and save as they were, its first step and the others scaled with the
    batch (linear: an overestimate where small batches leave the device idle)."""
    later_steps = previous["s_per_step"] * (total_steps - 1)
    fixed = max(0.0, previous["wall_s"] - previous["first_step_s"] - later_steps)
    return fixed + (previous["first_step_s"] + later_steps) * batch / previous["batch"]


# --- the report ------------------------------------------------------------------------


def host_lines(device: str, install: str) -> list[str]:
    import accelerate
    import datasets
    import torch
    import transformers
    import trl

    now = datetime.now(timezone.utc)  # noqa: UP017  (datetime.UTC is Python 3.11+)
    lines = [
        f"date: {now.strftime('%Y-%m-%d %H:%M UTC')}",
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
        f"trl {trl.__version__}, datasets {datasets.__version__}, "
        f"accelerate {accelerate.__version__}",
        f"trl and datasets: {install}",
    ]
    if device == "cpu":
        lines.append(f"device: CPU, {os.cpu_count()} cores, float32")
    else:
        props = torch.cuda.get_device_properties(0)
        lines.append(
            f"device: {props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
            f"{props.major}.{props.minor}, {torch.cuda.device_count()} visible; "
            f"host {os.cpu_count()} CPU cores; bf16"
        )
    return lines


def report(rows: list[dict[str, Any]], header: list[str], args: argparse.Namespace) -> str:
    on_gpu = args.device != "cpu"
    baseline = CPU_BASELINE["batch"] / CPU_BASELINE["s_per_step"]

    def gib(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    table = [
        "| reference | batch | s/step (median) | min-max s | pairs/s | tokens/step | tokens/s "
        "| MFU | peak alloc GiB | peak reserved GiB | to step 1 s | run s | pairs/s vs CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mode = "precomputed" if r["precompute"] else "model, every step"
        if "error" in r:
            error = " ".join(str(r["error"]).replace("|", "/").split())
            table.append(f"| {mode} | {r['batch']} | FAILED: {error} |" + " |" * 10)
            continue
        if "skipped" in r:
            table.append(f"| {mode} | {r['batch']} | skipped: {r['skipped']} |" + " |" * 10)
            continue
        flops = (6 if r["precompute"] else 8) * args.parameters * r["tokens_s"]
        mfu = f"{100 * flops / (args.peak_tflops * 1e12):.1f} %" if on_gpu else "n/a"
        table.append(
            f"| {mode} | {r['batch']} | {r['s_per_step']:.3f} "
            f"| {r['spread'][0]:.3f}-{r['spread'][1]:.3f} | {r['pairs_s']:,.1f} "
            f"| {r['tokens_step']:,.0f} | {r['tokens_s']:,.0f} | {mfu} | {gib(r['peak_alloc'])} "
            f"| {gib(r['peak_reserved'])} | {r['first_step_s']:.1f} | {r['wall_s']:.1f} "
            f"| {r['pairs_s'] / baseline:,.1f}x |"
        )
    notes = [
        "",
        f"s/step: median of the {args.steps} timed steps after {args.warmup} warm-up "
        "step(s); tokens: prompt + answer of chosen and rejected, padding not counted. "
        f"MFU: 6 N (precomputed reference) or 8 N (reference forward every step) FLOPs per "
        f"token, N = {args.parameters / 1e6:.1f} M, over {args.peak_tflops:g} TFLOP/s "
        "(--peak-tflops; default the H200's dense bf16 peak), attention scores left out. "
        "Peak memory: model load, reference pass, training and save, reset per run. "
        f"'to step 1': from train_dpo's start to the first step's end (tokenizing, the "
        f"reference pass when precomputed). vs CPU: against {baseline:.2f} pairs/s "
        f"({CPU_BASELINE['s_per_step']} s/step at batch {CPU_BASELINE['batch']}, SmolLM2-135M "
        "on 2 CPU cores, FIELD-NOTES; its sequence lengths are not recorded).",
    ]
    return "\n".join(
        [
            "## DPO training on one device: prefloop's train_dpo, SmolLM2-135M shape",
            "",
            *[f"- {line}" for line in header],
            "",
            *table,
            *notes,
        ]
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the markdown report here too")
    parser.add_argument("--device", default="cuda", help='"cuda" (default) or "cpu"')
    parser.add_argument("--batch-sizes", default="2,8,32", help="pairs per step, comma-separated")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (>= 1)")
    parser.add_argument(
        "--ref",
        choices=("both", "precompute", "model"),
        default="both",
        help="reference log-probs precomputed (the product's default), a reference model "
        "run every step, or both (default; the precomputed runs first)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="the device's dense bf16 peak for MFU (default: H200, 989)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=300.0,
        help="start no run that would end past this many seconds from the "
        "script's start (default 300)",
    )
    parser.add_argument("--wheels", type=Path, default=WHEELS, help="where trl's wheels are")
    args = parser.parse_args(argv)
    args.batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",") if b.strip()})
    if args.warmup < 1 or args.steps < 1 or not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error("--warmup and --steps must be at least 1, batch sizes positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
        ("TQDM_DISABLE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(name, value)  # everything is local; never ask a hub
    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        print(
            f"CUDA is not available (torch {torch.__version__}, CUDA build {torch.version.cuda}): "
            "run this on a GPU machine, or pass --device cpu for a dry run",
            file=sys.stderr,
        )
        return 2
    install = ensure_trl(args.wheels)
    import trl  # noqa: F401  (TRL's imports before the snapshot: they are its own)

    quiet()
    preloaded = set(sys.modules)
    load_prefloop()
    import prefloop.training.dpo  # noqa: F401  (the product's module, imported as the job does)

    loaded = unexpected_modules(preloaded)
    header = host_lines(args.device, install)
    work = Path(tempfile.mkdtemp(prefix="prefloop-dpo-bench."))
    rows: list[dict[str, Any]] = []
    try:
        model_dir = work / "model"
        args.parameters, build_s = build_model(model_dir)
        total = args.warmup + args.steps
        pairs, pair_tokens = make_pairs(model_dir, max(args.batch_sizes) * total)
        header.append(
            f"model: random-weight Llama of SmolLM2-135M's shape, {args.parameters / 1e6:.1f} M "
            f"parameters, saved as bf16, built in {build_s:.1f} s"
        )
        header.append(
            f"pairs: synthetic, prompt/chosen/rejected {TOKENS_PER_FIELD[0]}-"
            f"{TOKENS_PER_FIELD[1]} tokens each, ~{pair_tokens:.0f} tokens a pair "
            f"(both sequences); batch x {total} pairs a run, one epoch"
        )
        header.append(
            "config: DPOJobConfig defaults (beta 0.1, lr 5e-7, max_length 1024, no "
            "gradient checkpointing, no LoRA) with batch_size, max_steps, logging_steps=1, "
            "precompute_ref"
        )
        modes = {"both": (True, False), "precompute": (True,), "model": (False,)}[args.ref]
        done: list[dict[str, Any]] = []
        for precompute in modes:
            for batch in args.batch_sizes:
                elapsed = time.monotonic() - STARTED
                last = done[-1] if done else None
                guess = estimate(last, batch, total) if last and last["batch"] <= batch else 0.0
                if elapsed + guess > args.max_seconds:
                    why = f"{elapsed:.0f} s + ~{guess:.0f} s > --max-seconds {args.max_seconds:g}"
                    rows.append({"precompute": precompute, "batch": batch, "skipped": why})
                    print(f"skipping batch {batch}: {why}", flush=True)
                    continue
                print(f"run: batch {batch}, precompute_ref={precompute} ...", flush=True)
                try:
                    row = run_one(model_dir, pairs, batch, precompute, args)
                except Exception as exc:  # an OOM at one size must not lose the others
                    traceback.print_exc()
                    row = {
                        "precompute": precompute,
                        "batch": batch,
                        "error": f"{type(exc).__name__}: {str(exc)[:120]}",
                    }
                    if args.device != "cpu":
                        torch.cuda.empty_cache()
                else:
                    done.append(row)
                    print(
                        f"  {row['s_per_step']:.3f} s/step, {row['tokens_s']:,.0f} tokens/s, "
                        f"run {row['wall_s']:.1f} s",
                        flush=True,
                    )
                rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    header.append(
        f"whole script: {time.monotonic() - STARTED:.0f} s; peak host RSS {rss:.1f} GiB "
        "(this process, all runs)"
    )
    text = report(rows, header, args)
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    problems = [f"batch {r['batch']} failed" for r in rows if "error" in r]
    if loaded:
        problems.append(f"prefloop's modules imported what a GPU host lacks: {', '.join(loaded)}")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
