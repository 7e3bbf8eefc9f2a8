"""Tiny Llama models built offline, for tests, the demo and device checks.

:func:`tiny_model` trains a byte-level BPE tokenizer on a built-in corpus of
chat-like sentences, builds a ``LlamaForCausalLM`` with random weights from a
fixed seed and saves both (safetensors) into a directory that
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``
load like any downloaded model. Nothing is fetched from a hub.

With ``pretrain_steps`` the random model is then briefly fine-tuned, supervised,
on the built-in chat conversations (:func:`chat_conversations`): it answers a
question in words, about its topic, and ends its turn. Each question is answered
in the corpus with one, two and three sentences alike, so the pre-trained model's
answers vary in length: a preference for concise answers is one it can learn.

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

__all__ = ["ANSWERS", "CHAT_TEMPLATE", "FOLLOW_UPS", "PRETRAIN_STEPS", "QUESTIONS",
           "SPECIAL_TOKENS", "TOPICS", "chat_conversations", "chat_corpus",
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

# enough supervised steps at the default size for answers in the corpus's words that
# stop (a build took 27 s with them on 2 CPU cores, tokenizer included)
PRETRAIN_STEPS = 150
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
# the sentences a longer answer goes on with
FOLLOW_UPS = (
    "It also helps to ask someone who has done it before.",
    "Many people find that writing things down makes it easier.",
    "Take your time and do not worry about small mistakes.",
    "In the end a little practice matters more than any trick.",
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
    answers = [_answer(a, t) for t, a in itertools.product(TOPICS, ANSWERS)]
    return questions + answers + list(FOLLOW_UPS)


def _answer(template: str, topic: str) -> str:
    """The answer about ``topic``, capitalised where it opens the sentence."""
    before = template.split("{}", 1)[0]
    opens = not before or before.endswith((". ", "! ", "? "))
    return template.format(topic[:1].upper() + topic[1:] if opens else topic)


def chat_conversations() -> list[tuple[str, str]]:
    """(question, answer) pairs, the same on every call: every question of the corpus,
    answered with one, two and three sentences (an answer, then follow-ups)."""
    conversations = []
    for (t, topic), (q, question) in itertools.product(enumerate(TOPICS), enumerate(QUESTIONS)):
        first = _answer(ANSWERS[(t + q) % len(ANSWERS)], topic)
        for extra in range(3):
            follow = [FOLLOW_UPS[(t + q + k) % len(FOLLOW_UPS)] for k in range(extra)]
            conversations.append((question.format(topic), " ".join([first, *follow])))
    return conversations


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
    pretrain_steps: int = 0,
) -> Path:
    """Build (once) a random-weight Llama and its tokenizer in ``directory``; return its path.

    ``pretrain_steps`` > 0 fine-tunes it on :func:`chat_conversations` for that many
    steps of 32 conversations (:data:`PRETRAIN_STEPS` suffices at the defaults).

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
    if type(pretrain_steps) is not int or pretrain_steps < 0:  # a bool is no step count
        raise ValueError(f"tiny_model({pretrain_steps=}) is not valid: use 0 or more steps")
    spec: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "layers": layers,
        "heads": heads,
        "intermediate_size": intermediate_size,
        "dtype": dtype,
        "seed": seed,
    }
    if pretrain_steps:  # absent when 0: a model built before the option is still reused
        spec["pretrain_steps"] = pretrain_steps
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
    if spec.get("pretrain_steps"):
        _pretrain(model, tokenizer, spec["pretrain_steps"], spec["seed"])
    model.to(getattr(torch, spec["dtype"]))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / _MARKER).write_text(json.dumps(spec, sort_keys=True), encoding="utf-8")


def _pretrain(model: Any, tokenizer: Any, steps: int, seed: int, batch_size: int = 32) -> None:
    """Supervised fine-tuning on the chat conversations: the loss on the answers only."""
    import torch

    rows = []
    for question, answer in chat_conversations():
        user = [{"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        whole = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": answer}], tokenize=False
        )
        ids = tokenizer(whole, add_special_tokens=False)["input_ids"]
        start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        rows.append((ids, start))
    width = max(len(ids) for ids, _ in rows)
    inputs = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    for n, (ids, start) in enumerate(rows):
        inputs[n, : len(ids)] = torch.tensor(ids)
        labels[n, start : len(ids)] = inputs[n, start : len(ids)]
    lengths = torch.tensor([len(ids) for ids, _ in rows])
    mask = (torch.arange(width) < lengths[:, None]).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
    model.train()
    with torch.random.fork_rng(devices=[]):
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            batch = torch.randint(len(rows), (batch_size,), generator=generator)
            out = model(input_ids=inputs[batch], attention_mask=mask[batch],
                        labels=labels[batch])  # fmt: skip
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()


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
