"""DPO training: prefloop's job against a plain DPOTrainer script, and its defaults.

Not a test: a measurement. Three ways to train the same tiny Llama (random init,
built offline) on the same pairs with the same hyperparameters, each in a fresh
process (so its peak RSS is its own), alternating for ROUNDS rounds:

- ``plain``: a plain ``trl.DPOTrainer`` script with exactly prefloop's settings
  (reference log-probabilities precomputed, no reference model kept, no gradient
  checkpointing, float32 on the CPU);
- ``prefloop``: ``prefloop.training.dpo.train_dpo``, the job's own training code;
- ``prefloop-lora``: the same job with its LoRA setting (``lora: true``, rank 16):
  the base weights frozen, so the backward pass computes no gradients for them;
- ``trl-defaults``: ``DPOTrainer`` as TRL defaults it (a reference model copy run
  forward at every step, gradient checkpointing), but in float32 like the others:
  TRL's ``bf16=True`` default, kept on a CPU, times bf16 emulation, not DPO.

Timed from the trainer's construction to the saved model (the reference pass
included). Ratios: prefloop / plain (target at least 0.95x) and prefloop over TRL's
defaults (target at least 1.3x).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import median, write_section

ROUNDS = 5
PAIRS = 256
STEPS = 32  # one epoch of 256 pairs at batch 8: the reference pass amortised as in a job
SETTINGS = {"learning_rate": 1e-3, "batch_size": 8, "max_steps": STEPS, "max_length": 128,
            "beta": 0.1, "seed": 0}  # fmt: skip
MODEL = {"hidden_size": 256, "layers": 4, "vocab_size": 1024}

RUNNER = r"""
import copy, json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from training_pairs import preference_pairs
from prefloop.training.config import DPOJobConfig
from prefloop.training.pairs import select
way, base, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
settings = json.loads(sys.argv[5])
pairs = select(preference_pairs("v1", int(sys.argv[6])), "v1").pairs
import datasets
datasets.disable_progress_bars()
if way.startswith("prefloop"):
    from prefloop.training.dpo import train_dpo
    config = DPOJobConfig(**settings, lora=way == "prefloop-lora")
    result = train_dpo(base, pairs, config, out)
    seconds, tokens, steps = result.runtime_s, result.tokens, result.steps
else:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    rows = [{"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]
    precompute = way == "plain"
    args = DPOConfig(output_dir=str(out / "_t"), learning_rate=settings["learning_rate"],
                     per_device_train_batch_size=settings["batch_size"],
                     max_steps=settings["max_steps"], max_length=settings["max_length"],
                     beta=settings["beta"], seed=settings["seed"], data_seed=settings["seed"],
                     precompute_ref_log_probs=precompute, gradient_checkpointing=not precompute,
                     report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=True,
                     bf16=False, logging_steps=1)
    started = time.monotonic()
    trainer = DPOTrainer(model=model, ref_model=None if precompute else copy.deepcopy(model),
                         args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    output = trainer.train()
    trainer.model.save_pretrained(out)
    seconds, steps = time.monotonic() - started, output.global_step
    tokens = trainer._total_train_tokens
import resource
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "tokens": tokens, "steps": steps, "rss_mb": rss}))
"""


def run(way: str, base: Path) -> dict[str, float]:
    tests = Path(__file__).resolve().parents[1] / "tests"
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, way, str(base), out, str(tests),
             json.dumps(SETTINGS), str(PAIRS)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{way} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    from prefloop.tiny_model import tiny_model

    ways = ("plain", "prefloop", "prefloop-lora", "trl-defaults")
    with tempfile.TemporaryDirectory() as tmp:
        base = tiny_model(Path(tmp) / "model", **MODEL)
        params = sum(
            p.numel()
            for p in __import__("transformers")
            .AutoModelForCausalLM.from_pretrained(base)
            .parameters()
        )
        runs: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
        for n in range(ROUNDS):
            for way in ways:
                runs[way].append(run(way, base))
                print(f"  round {n + 1} {way}: {runs[way][-1]}", flush=True)
    rows = []
    med: dict[str, dict[str, float]] = {}
    for way in ways:
        steps = [r["steps"] / r["seconds"] for r in runs[way]]
        tokens = [r["tokens"] / r["seconds"] for r in runs[way]]
        med[way] = {"steps": median(steps), "tokens": median(tokens),
                    "rss": median([r["rss_mb"] for r in runs[way]])}  # fmt: skip
        rows.append(
            f"| {way} | {med[way]['steps']:.2f} | {med[way]['tokens']:,.0f} | "
            f"{', '.join(f'{s:.2f}' for s in steps)} | {med[way]['rss']:,.0f} |"
        )
    vs_plain = med["prefloop"]["steps"] / med["plain"]["steps"]
    vs_defaults = med["prefloop"]["steps"] / med["trl-defaults"]["steps"]

    vs_defaults_lora = med["prefloop-lora"]["steps"] / med["trl-defaults"]["steps"]

    def paired(other: str, ours: str = "prefloop") -> float:  # a round's ratio cancels drift
        rounds = zip(runs[other], runs[ours], strict=True)
        return median([theirs["seconds"] / ours["seconds"] for theirs, ours in rounds])

    body = f"""
DPO on a {params / 1e6:.1f} M-parameter Llama (random init from a config, tokenizer
trained offline), {PAIRS} pairs, {STEPS} steps of batch {SETTINGS["batch_size"]}, max length
{SETTINGS["max_length"]}, CPU, each way in a fresh process, {ROUNDS} alternating rounds;
timed from the trainer's construction to the saved model.

| way | median steps/s | median tokens/s | steps/s per round | peak RSS MiB |
|---|---|---|---|---|
{chr(10).join(rows)}

prefloop's job / a plain DPOTrainer script with the same settings: **{vs_plain:.2f}x**
(target at least 0.95x); median of the rounds' own ratios {paired("plain"):.2f}x. prefloop's
defaults (reference log-probabilities precomputed, no reference model in memory, no
gradient checkpointing) over TRL's (a reference copy run at every step, activations
recomputed): **{vs_defaults:.2f}x** (target at least 1.3x); median of the rounds' own
ratios {paired("trl-defaults"):.2f}x. With the job's LoRA setting (rank
16, base weights frozen): **{vs_defaults_lora:.2f}x** over TRL's defaults; median of the
rounds' own ratios {paired("trl-defaults", "prefloop-lora"):.2f}x.

At one epoch precomputing saves no reference forward: each pair is run through the
reference once either way, before training instead of at its step. What the job's
defaults save is the recomputation of activations (gradient checkpointing), about a
forward pass per step: a step of full fine-tuning costs about 3 forward passes, 4
with the reference, 5 with TRL's recomputation too, so 5/4 = 1.25x is the ceiling at
one epoch, and the rounds' median sits at it. Over E epochs precomputing saves E-1
reference passes of every pair, towards 5/3. LoRA's frozen base weights save their
gradients, but at 3.5 M parameters peft's adapters (every linear layer) cost more
time than they save.
"""
    write_section("Training: DPO steps/s, prefloop's job vs plain DPOTrainer", body)
    print(body)


if __name__ == "__main__":
    main()
