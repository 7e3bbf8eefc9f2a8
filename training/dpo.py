"""DPO with TRL on the pairs of one request, each pair's ``weight`` honoured.

TRL has no per-sample weights, so prefloop samples by weight: a pair of weight 0 is
left out before training (it has no effect at all), and when the remaining weights
differ the training sampler draws pairs with probability proportional to them
(``WeightedDPOTrainer``, from :func:`weighted_trainer_class`; with replacement, as
many draws an epoch as pairs).
Equal weights keep TRL's own shuffled epoch, so the job is then step for step the
plain ``DPOTrainer``.

Progress (step, loss, reward accuracy, ETA) goes to ``progress`` after each logged
step; the job prints it, so it shows in the Ray job's logs and in the terminal.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefloop.training.config import DPOJobConfig
from prefloop.training.exceptions import PairsError
from prefloop.training.pairs import Pair

__all__ = ["Progress", "TrainResult", "train_dpo", "trainable_rows", "weighted_trainer_class"]


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    loss: float | None
    reward_accuracy: float | None
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        if self.step <= 0 or self.total <= 0:
            return None
        return self.elapsed_s / self.step * max(0, self.total - self.step)

    def line(self) -> str:
        loss = "" if self.loss is None else f" loss {self.loss:.4f}"
        acc = "" if self.reward_accuracy is None else f" reward accuracy {self.reward_accuracy:.2f}"
        eta = "" if self.eta_s is None else f" ETA {self.eta_s:.0f} s"
        return f"training: step {self.step}/{self.total}{loss}{acc}{eta}"


@dataclass(frozen=True)
class TrainResult:
    steps: int
    train_pairs: int
    zero_weight_pairs: int
    final_loss: float | None
    reward_accuracy: float | None
    runtime_s: float
    tokens: int

    def metrics(self) -> dict[str, float]:
        values = {
            "train_steps": float(self.steps),
            "train_pairs": float(self.train_pairs),
            "zero_weight_pairs": float(self.zero_weight_pairs),
            "train_runtime_s": self.runtime_s,
            "train_tokens": float(self.tokens),
        }
        if self.final_loss is not None:
            values["train_loss"] = self.final_loss
        if self.reward_accuracy is not None:
            values["train_reward_accuracy"] = self.reward_accuracy
        return values


def trainable_rows(pairs: list[Pair]) -> tuple[list[dict[str, Any]], int]:
    """The rows DPOTrainer reads, the pairs of weight 0 left out; and how many were."""
    rows = [pair.as_row() for pair in pairs if pair.weight > 0]
    return rows, len(pairs) - len(rows)


def weighted_trainer_class() -> type:
    """``WeightedDPOTrainer``, defined on first use (TRL is a heavy import)."""
    import torch
    from trl import DPOTrainer

    class WeightedDPOTrainer(DPOTrainer):
        """``DPOTrainer`` whose sampler draws each pair in proportion to its ``weight``."""

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            dataset: Any = self.train_dataset
            weights = dataset["weight"] if "weight" in dataset.column_names else None
            if weights is None or len(set(weights)) <= 1:
                return super()._get_train_sampler(train_dataset)
            generator = torch.Generator().manual_seed(self.args.seed)
            return torch.utils.data.WeightedRandomSampler(
                weights, num_samples=len(weights), replacement=True, generator=generator
            )

    return WeightedDPOTrainer


def train_dpo(
    base_dir: Path,
    pairs: list[Pair],
    config: DPOJobConfig,
    out_dir: Path,
    progress: Callable[[Progress], None] | None = None,
    use_gpu: bool = False,
) -> TrainResult:
    """Train ``base_dir``'s model on ``pairs`` and save the result (model + tokenizer) in
    ``out_dir``; LoRA adapters are merged, so the output loads like any model."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig

    rows, zero = trainable_rows(pairs)
    if len(rows) < config.min_train_pairs:
        raise PairsError(
            f"{len(rows)} training pair(s) of positive weight ({zero} of weight 0 left out), "
            f"fewer than min_train_pairs={config.min_train_pairs}: wait for more pairs"
        )
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    dtype = torch.bfloat16 if use_gpu and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    args = DPOConfig(
        output_dir=str(out_dir / "_trainer"),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        beta=config.beta,
        # DPO's sigmoid loss, and the chosen answers' NLL beside it when asked (RPO)
        loss_type=["sigmoid", "sft"] if config.sft_weight > 0 else ["sigmoid"],
        loss_weights=[1.0, config.sft_weight] if config.sft_weight > 0 else None,
        max_length=config.max_length,
        precompute_ref_log_probs=config.precompute_ref,
        gradient_checkpointing=config.gradient_checkpointing,  # TRL's default is on
        logging_steps=config.logging_steps,
        seed=config.seed,
        data_seed=config.seed,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=not use_gpu,
        bf16=dtype == torch.bfloat16,  # TRL's default is on, on a CPU too: emulated there
    )
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    # without a reference TRL reloads one by name from a hub; a copy is the base itself.
    # Precomputed log-probabilities and LoRA (adapters off) need none.
    ref_model = None if (config.precompute_ref or config.lora) else copy.deepcopy(model)
    started = time.monotonic()

    class _Report(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if progress is None or not logs or "loss" not in logs:
                return
            progress(
                Progress(
                    step=state.global_step,
                    total=state.max_steps,
                    loss=float(logs["loss"]),
                    reward_accuracy=_float(logs.get("rewards/accuracies")),
                    elapsed_s=time.monotonic() - started,
                )
            )

    trainer = weighted_trainer_class()(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_Report()],
    )
    trainer.remove_callback(PrinterCallback)  # progress is ours: one line a logged step
    output = trainer.train()
    trained = trainer.model
    if config.lora:
        trained = trained.merge_and_unload()
    trained.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    last = logged[-1] if logged else {}
    return TrainResult(
        steps=int(output.global_step),
        train_pairs=len(rows),
        zero_weight_pairs=zero,
        final_loss=_float(last.get("loss")),
        reward_accuracy=_float(last.get("rewards/accuracies")),
        runtime_s=time.monotonic() - started,
        tokens=int(getattr(trainer, "_total_train_tokens", 0)),
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
