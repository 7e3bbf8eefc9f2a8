"""The Transformers back end: one ``model.generate`` call per batch, on CPU or GPU.

Requests of one batch share a single forward pass per token even when their
parameters differ: prompts are left-padded, each request's ``max_tokens`` and
``stop`` strings end its own row (:class:`_PerRequestStop`), and each sampled
request draws from its own seeded generator (:class:`_PerRequestSampler`), so a
request gives the same text alone or in a batch.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from .base import Backend, FinishReason, Generation, GenerationRequest
from .exceptions import BackendError, GenerationError, ModelLoadError

__all__ = ["DTYPES", "TransformersBackend"]

DTYPES = ("auto", "float32", "bfloat16", "float16")


class TransformersBackend(Backend):
    """A causal language model loaded with Transformers from a local directory.

    ``device`` is ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``dtype`` ``"auto"``
    keeps the dtype the weights were saved in. Batches larger than
    ``max_batch_size`` run as several ``generate`` calls, one after another.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        model_version: str,
        device: str = "cpu",
        dtype: str = "auto",
        max_batch_size: int = 8,
    ) -> None:
        path = Path(model_dir)
        if dtype not in DTYPES:
            raise ModelLoadError(path, f"dtype {dtype!r} is not supported", f"use one of {DTYPES}")
        if max_batch_size < 1:
            raise ModelLoadError(path, f"max_batch_size={max_batch_size}", "give at least 1")
        self.model_version = model_version
        self.max_batch_size = max_batch_size
        self.device = _device(path, device)
        _check_model_dir(path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model: Any = AutoModelForCausalLM.from_pretrained(
                path,
                dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                local_files_only=True,
            )
            model.to(self.device).eval()
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(
                path,
                f"{type(exc).__name__}: {exc}",
                "check that the directory is complete (save_pretrained of a causal LM and "
                "its tokenizer) and fits on the device",
            ) from exc
        if not tokenizer.chat_template:
            raise ModelLoadError(
                path, "its tokenizer has no chat template", "save the tokenizer with one"
            )
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # generated tokens must follow every prompt directly
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos = frozenset(eos if isinstance(eos, list) else [eos])
        self._tokenizer: Any = tokenizer
        self._model: Any = model
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        results: list[Generation] = []
        for start in range(0, len(requests), self.max_batch_size):
            results += self._run(requests[start : start + self.max_batch_size])
        return results

    def stream(self, request: GenerationRequest) -> Generator[str, None, Generation]:
        self._check_open()
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["result"] = self._run([request], streamer=streamer, cancel=cancel)[0]
            except BaseException as exc:  # handed to the consumer's thread below
                outcome["error"] = exc
                streamer.end()

        worker = threading.Thread(target=work, name=f"stream-{self.model_version}", daemon=True)
        worker.start()
        sent, seen = "", ""
        try:
            for piece in streamer:
                seen += piece
                ready = _releasable(seen, request.stop)
                if len(ready) > len(sent):
                    yield ready[len(sent) :]
                    sent = ready
                if any(s in seen for s in request.stop):
                    break
            worker.join()
            if "error" in outcome:
                raise outcome["error"]
            # the final text is authoritative: what was held back, or trimmed at a stop
            result: Generation = outcome["result"]
            if result.text.startswith(sent) and len(result.text) > len(sent):
                yield result.text[len(sent) :]
            return result
        finally:
            cancel.set()
            worker.join()

    def close(self) -> None:
        with self._lock:
            if self._model is None:
                return
            self._model = self._tokenizer = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _check_open(self) -> None:
        if self._model is None:
            raise BackendError(
                f"the back end of model {self.model_version} is closed: create a new one"
            )

    def _run(
        self,
        requests: Sequence[GenerationRequest],
        *,
        streamer: TextIteratorStreamer | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Generation]:
        if not requests:
            return []
        self._check_open()
        tokenizer = self._tokenizer
        prompts = [
            tokenizer.apply_chat_template(
                [dict(m) for m in r.messages], tokenize=False, add_generation_prompt=True
            )
            for r in requests
        ]
        # the chat template writes the special tokens itself
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(self.device)
        width = batch["input_ids"].shape[1]
        stop = _PerRequestStop(requests, width, tokenizer, self.device, cancel)
        processors = LogitsProcessorList()
        if any(r.temperature > 0 for r in requests):
            processors.append(_PerRequestSampler(requests, self.device))
        config = GenerationConfig(
            max_new_tokens=max(r.max_tokens for r in requests),
            do_sample=False,  # sampled rows are drawn by _PerRequestSampler
            eos_token_id=sorted(self._eos),
            pad_token_id=tokenizer.pad_token_id,
        )
        try:
            with self._lock, torch.inference_mode():
                self._check_open()
                output = self._model.generate(
                    **batch,
                    generation_config=config,
                    logits_processor=processors,
                    stopping_criteria=StoppingCriteriaList([stop]),
                    streamer=streamer,
                )
        except torch.OutOfMemoryError as exc:
            raise GenerationError(
                self.model_version,
                len(requests),
                "out of device memory",
                "lower max_batch_size or the requests' max_tokens",
            ) from exc
        except RuntimeError as exc:
            raise GenerationError(
                self.model_version, len(requests), f"{exc}", "see the chained exception"
            ) from exc
        prompt_tokens = batch["attention_mask"].sum(dim=1).tolist()
        rows = output[:, width:].tolist()
        return [
            self._finish(r, ids, n, stop.stopped_at[i])
            for i, (r, ids, n) in enumerate(zip(requests, rows, prompt_tokens, strict=True))
        ]

    def _finish(
        self, request: GenerationRequest, ids: list[int], prompt_tokens: int, stopped_at: int
    ) -> Generation:
        end, reason = min(len(ids), request.max_tokens), "length"
        eos = next((k for k, token in enumerate(ids[:end]) if token in self._eos), None)
        if eos is not None:
            end, reason = eos + 1, "stop"
        if stopped_at and stopped_at <= end:
            end, reason = stopped_at, "stop"
        text = self._tokenizer.decode(ids[:end], skip_special_tokens=True)
        cut = [text.find(s) for s in request.stop if s in text]
        if cut:
            text = text[: min(cut)]
        finish: FinishReason = "stop" if reason == "stop" else "length"
        return Generation(text, int(prompt_tokens), end, finish)


class _PerRequestStop(StoppingCriteria):
    """Ends each row at its own ``max_tokens``, at its first stop string, or on cancel.

    ``stopped_at[i]`` is the number of tokens row ``i`` had generated when one of
    its stop strings first appeared in its text (0 while none has).
    """

    def __init__(
        self,
        requests: Sequence[GenerationRequest],
        width: int,
        tokenizer: Any,
        device: torch.device,
        cancel: threading.Event | None,
    ) -> None:
        self.width, self.tokenizer, self.cancel = width, tokenizer, cancel
        self.limits = torch.tensor([r.max_tokens for r in requests], device=device)
        self.stops = [tuple(r.stop) for r in requests]
        self.stopped_at = [0] * len(requests)

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> Any:
        generated = input_ids.shape[1] - self.width
        done = self.limits <= generated
        for i, stops in enumerate(self.stops):
            if stops and not self.stopped_at[i]:
                text = self.tokenizer.decode(input_ids[i, self.width :], skip_special_tokens=True)
                if any(s in text for s in stops):
                    self.stopped_at[i] = generated
        marked = [i for i, at in enumerate(self.stopped_at) if at]
        if marked:
            done[marked] = True
        if self.cancel is not None and self.cancel.is_set():
            done[:] = True
        return done


class _PerRequestSampler(LogitsProcessor):
    """Draws the next token of every sampled row with that request's own generator.

    The drawn token is left as the only finite logit, so the greedy step of
    ``generate`` picks it; greedy rows (temperature 0) are left untouched.
    """

    def __init__(self, requests: Sequence[GenerationRequest], device: torch.device) -> None:
        self.rows = []
        for i, r in enumerate(requests):
            if r.temperature > 0:
                generator = torch.Generator(device=device)
                if r.seed is None:
                    generator.seed()
                else:
                    generator.manual_seed(r.seed)
                self.rows.append((i, r.temperature, r.top_p, generator))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for i, temperature, top_p, generator in self.rows:
            probs = torch.softmax(scores[i].float() / temperature, dim=-1)
            if top_p < 1:
                ordered, order = probs.sort(descending=True)
                # keep the smallest head whose mass reaches top_p (always the top token)
                outside = ordered.cumsum(-1) - ordered >= top_p
                probs = probs.scatter(0, order[outside], 0.0)
            token = torch.multinomial(probs, 1, generator=generator)
            scores[i] = float("-inf")
            scores[i, token] = 0.0
        return scores


def _releasable(seen: str, stops: Sequence[str]) -> str:
    """The part of the streamed text that can be sent: before any stop string, and
    without a tail that might be the start of one."""
    for s in stops:
        if s in seen:
            seen = seen[: seen.find(s)]
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(seen)), hold, -1):
            if seen.endswith(s[:k]):
                hold = k
                break
    return seen[: len(seen) - hold]


def _device(path: Path, device: str) -> torch.device:
    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(path, f"{device!r} is not a device", 'use "cpu" or "cuda:0"') from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            path, "CUDA is not available on this host", 'use device="cpu" or a GPU machine'
        )
    if parsed.type not in ("cpu", "cuda"):
        raise ModelLoadError(path, f"device {device!r} is not supported", 'use "cpu" or "cuda"')
    return parsed


def _check_model_dir(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(
            path,
            "no such directory",
            "fix the path, or write a model there (save_pretrained; "
            "prefloop.testing.tiny_model builds a small one); models load from local "
            "directories only, never from a hub",
        )
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelLoadError(
            path,
            "it is not a model directory (no config.json)",
            "point model_dir at the folder that save_pretrained wrote",
        )
