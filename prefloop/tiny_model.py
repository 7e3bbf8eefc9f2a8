"""Tiny Llama models built offline, for tests and device checks.

:func:`tiny_model` trains a byte-level BPE tokenizer on a built-in corpus of
chat-like sentences, builds a ``LlamaForCausalLM`` with random weights from a
fixed seed and saves both (safetensors) into a directory that
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``
load like any downloaded model. Nothing is fetched from a hub.

This module imports only torch, transformers and tokenizers, so that a GPU
host without prefloop's other dependencies can build a model with it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["ANSWERS", "CHAT_TEMPLATE", "QUESTIONS", "SPECIAL_TOKENS", "TOPICS", "chat_corpus",
           "tiny_model"]  # fmt: skip

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, BOS, EOS, "<|system|>", "<|user|>", "<|assistant|>")

# Every message ends with the end-of-sequence token, so a trained model learns to
# stop after its answer; the generation prompt opens the assistant's turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_MARKER = "prefloop-tiny.json"  # written last: its presence means the directory is complete
_DTYPES = ("float32", "bfloat16", "float16")

QUESTIONS = (
    "Can you explain {} in simple words?",
    "What is the best way to learn {}?",
    "Why do people care about {}?",
    "Give me three tips about {}.",
    "How would you describe {} to a child?",
    "Is {} hard to get right?",
    "Write a short note about {}.",
)
ANSWERS = (
    "Sure! {} is easier than it looks once you try a small example.",
    "Start with the basics of {}, then practise a little every day.",
    "People care about {} because it saves time and avoids mistakes.",
    "Thanks for asking. {} works best when you keep things simple.",
    "I am not sure, but {} usually depends on what you want to do.",
)
TOPICS = (
    "cooking pasta", "learning French", "saving money", "running a marathon",
    "writing poems", "the weather", "growing tomatoes", "sorting lists",
    "training a model", "fixing a bike", "reading maps", "playing chess",
    "drinking coffee", "planning a trip", "taking photos", "painting walls",
    "baking bread", "writing Python", "sleeping well", "making friends",
    "the moon", "old trains", "jazz music", "quiet mornings",
)  # fmt: skip


def chat_corpus() -> list[str]:
    """A few hundred short chat-like sentences, the same on every call."""
    questions = [q.format(t) for t, q in itertools.product(TOPICS, QUESTIONS)]
    answers = [a.format(t[:1].upper() + t[1:]) for t, a in itertools.product(TOPICS, ANSWERS)]
    return questions + answers


def tiny_model(
    directory: str | os.PathLike[str],
    *,
    vocab_size: int = 1024,
    hidden_size: int = 128,
    layers: int = 4,
    heads: int | None = None,
    intermediate_size: int | None = None,
    dtype: str = "float32",
    seed: int = 0,
) -> Path:
    """Build (once) a random-weight Llama and its tokenizer in ``directory``; return its path.

    The defaults give about one million parameters. ``vocab_size`` is the
    tokenizer's target; the small corpus may yield fewer tokens, and the model's
    embedding matrix matches the tokenizer actually trained. ``heads`` defaults to
    one per 64 hidden units, ``intermediate_size`` to 8/3 of ``hidden_size``
    rounded up to a multiple of 64. The same arguments give the same weights.

    A directory already holding a model built with the same arguments is reused
    as it is; one holding anything else is refused, never overwritten.
    """
    target = Path(directory)
    if dtype not in _DTYPES:
        raise ValueError(f"tiny_model(dtype={dtype!r}) is not valid: use one of {_DTYPES}")
    heads = heads or max(1, hidden_size // 64)
    if intermediate_size is None:
        intermediate_size = -(-hidden_size * 8 // 3 // 64) * 64
    if hidden_size % heads:
        raise ValueError(f"tiny_model: hidden_size={hidden_size} is not a multiple of {heads=}")
    spec = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "layers": layers,
        "heads": heads,
        "intermediate_size": intermediate_size,
        "dtype": dtype,
        "seed": seed,
    }
    if _reusable(target, spec):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp's 0o700 would hide the model from other users
    try:
        _build(staging, spec)
        try:
            # rename(2) replaces a missing or empty directory in one step, so a reader
            # never sees half a model
            staging.rename(target)
        except OSError:
            if not _reusable(target, spec):  # another process may have finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _reusable(target: Path, spec: dict[str, Any]) -> bool:
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return False
    marker = target / _MARKER
    if not marker.is_file():
        raise FileExistsError(
            f"{target} exists and holds something other than a tiny model: "
            "give tiny_model an empty or new directory"
        )
    built = json.loads(marker.read_text(encoding="utf-8"))
    if built != spec:
        raise FileExistsError(
            f"{target} holds a tiny model built with {built}, not {spec}: "
            "give tiny_model another directory for these arguments"
        )
    return True


def _build(directory: Path, spec: dict[str, Any]) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer(spec["vocab_size"])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["heads"],
        max_position_embeddings=2048,
        tie_word_embeddings=False,  # tied, a random model repeats its last token forever
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # a private generator state: building a model must not reseed the caller's RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        model = LlamaForCausalLM(config)
    model.to(getattr(torch, spec["dtype"]))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / _MARKER).write_text(json.dumps(spec, sort_keys=True), encoding="utf-8")


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any text encodes
        show_progress=False,
    )
    bpe.train_from_iterator(chat_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(SPECIAL_TOKENS[3:]),
        chat_template=CHAT_TEMPLATE,
    )
