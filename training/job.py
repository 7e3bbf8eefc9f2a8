"""The training job: one retrain request into one registered, evaluated version.

Run by the trainer service as a Ray job (``python -m prefloop.training.job``), on
whatever node has the resources it asks for; ``prefloop train`` runs the same. It
reads exactly the pairs the request names, trains from the base version's weights,
evaluates the result against the base, and registers it with its manifest (written
last: a job killed on the way leaves no version). A version already registered
under the request's name is the job's own earlier result, and is returned as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from prefloop.errors import PrefloopError, first_line
from prefloop.model_registry import (
    ModelRegistry,
    ModelVersion,
    UnknownModelError,
)
from prefloop.settings import Settings, load_settings
from prefloop.training.config import DPOJobConfig
from prefloop.training.exceptions import TrainingError
from prefloop.training.pairs import read_pairs, split

__all__ = ["run_job"]

LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "prefloop")


def _libraries() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = package_version(name)
        except PackageNotFoundError:
            continue
    return found


def run_job(
    settings: Settings,
    request: Mapping[str, Any],
    version: str,
    config: DPOJobConfig,
    progress: Callable[[str], None] = print,
) -> ModelVersion:
    """Train, evaluate and register ``version`` for ``request`` (a RETRAIN_REQUESTED)."""
    from prefloop.training.evaluation import default_judge, default_safety, evaluate, load_callable

    registry = ModelRegistry.from_settings(settings)
    try:
        done = registry.get(version)
    except UnknownModelError:
        pass
    else:
        progress(f"training: {version} is already registered (an earlier run of this request)")
        return done
    base = str(request["model_version"])
    try:
        parent = registry.get(base)
    except UnknownModelError as exc:
        raise TrainingError(f"cannot train from {base!r}: {exc}") from exc
    if parent.backend != "transformers":
        raise TrainingError(
            f"cannot train from {base!r}: it is served by the {parent.backend} back end, which "
            "has no weights; train from a transformers model"
        )
    judge = load_callable(settings.eval_judge, default_judge, "judge (PREFLOOP_EVAL_JUDGE)")
    safety = load_callable(settings.eval_safety, default_safety, "policy (PREFLOOP_EVAL_SAFETY)")
    ranges = list(request.get("pair_ranges") or [])
    pairs = read_pairs(settings, ranges, base)
    train, heldout = split(pairs.pairs, config.heldout_fraction, config.seed)
    progress(
        f"training: {len(pairs.pairs)} pairs of {base} ({len(train)} to train on, "
        f"{len(heldout)} held out; {pairs.duplicates} duplicates and {pairs.other_versions} "
        "of other versions left out)"
    )
    import torch  # only once the request is known to be trainable: it takes seconds

    from prefloop.training.dpo import train_dpo

    use_gpu = settings.train_num_gpus > 0 and torch.cuda.is_available()
    base_dir = registry.local_path(base, settings.home / "cache" / "models")
    scratch = settings.home / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix=f"{version}.", dir=scratch) as tmp:
        out = Path(tmp) / "model"
        result = train_dpo(
            base_dir, train, config, out, progress=lambda p: progress(p.line()), use_gpu=use_gpu
        )
        progress(f"training: evaluating {version} against {base} ...")
        evaluation = evaluate(out, base_dir, heldout, beta=config.beta, judge=judge, safety=safety)
        lineage = {
            "parent": base,
            "request_id": request.get("event_id"),
            "pair_ranges": ranges,
            "pair_count": len(pairs.pairs),
            "train_pairs": len(train),
            "heldout_pairs": len(heldout),
            "sources": pairs.sources(),
            "heldout_pair_ids": [p.pair_id for p in heldout],
        }
        training = {
            "hyperparameters": json.loads(config.to_json()),
            "libraries": _libraries(),
            "device": "cuda" if use_gpu else "cpu",
            "metrics": result.metrics(),
            "started_ms": int(started * 1000),
            "seconds": round(time.time() - started, 3),
        }
        entry = registry.register(
            version,
            out,
            parent=base,
            detail={"trained_on": f"{len(train)} pairs", "request": str(request.get("event_id"))},
            lineage=lineage,
            training=training,
            evaluation=evaluation.to_json(),
        )
    progress(f"training: registered {version} (parent {base}) in {registry.url}")
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prefloop.training.job")
    parser.add_argument("--request", required=True, help="the RETRAIN_REQUESTED, as JSON")
    parser.add_argument("--version", required=True, help="the version to register")
    parser.add_argument(
        "--config", default=None, help="hyperparameters as JSON (default: settings)"
    )
    args = parser.parse_args(argv)
    try:
        import datasets

        datasets.disable_progress_bars()
        settings = load_settings()
        config = DPOJobConfig.from_json(args.config or settings.train_config)
        run_job(
            settings,
            json.loads(args.request),
            args.version,
            config,
            lambda line: print(line, flush=True),
        )
    except PrefloopError as exc:
        print(f"error: {first_line(exc)}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
