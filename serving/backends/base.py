"""What a model back end is: chat requests in, generations out, in batches.

A serving replica holds one :class:`Backend` for one model version. The A/B
router never sees the engine behind it, so the same deployment code runs a
Transformers model on a laptop and a vLLM engine on a GPU cluster.

``TransformersBackend`` (``hf.py``) is the implementation that runs anywhere.
A vLLM back end fills the same interface on GPU machines; it is not written
yet, and here is how it maps:

- ``__init__``: ``vllm.LLM(model=model_dir, dtype=dtype, gpu_memory_utilization=f)``,
  where ``f`` is the replica's share of the GPU (0.45 for two replicas at
  ``num_gpus=0.5``), from a local directory as here.
- ``generate``: one ``llm.chat(conversations, sampling_params=[...])`` call with one
  ``vllm.SamplingParams(max_tokens=, temperature=, top_p=, seed=, stop=)`` per
  request (vLLM takes a list, so per-request parameters cost nothing); from each
  ``RequestOutput``: ``outputs[0].text``, ``len(prompt_token_ids)``,
  ``len(outputs[0].token_ids)`` and ``outputs[0].finish_reason``, which is
  already ``"stop"`` or ``"length"``. ``temperature=0`` is greedy in both engines.
- ``stream``: the async engine (``AsyncLLMEngine``, ``AsyncLLM`` in vLLM's v1
  engine) yields cumulative outputs per request id; yield the new suffix of
  ``outputs[0].text`` each time.
- ``close``: drop the engine and free the GPU memory it reserved.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from .exceptions import InvalidRequestError

__all__ = ["ROLES", "Backend", "FinishReason", "Generation", "GenerationRequest"]

ROLES = frozenset({"system", "user", "assistant"})

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion to produce.

    ``temperature`` 0 means greedy decoding; ``seed`` makes sampling reproducible
    (the same request with the same seed gives the same text, alone or in a
    batch); ``stop`` strings end the completion and are not part of its text.
    """

    messages: Sequence[Mapping[str, str]]
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.messages:
            raise InvalidRequestError("messages", self.messages, "give at least one message")
        for message in self.messages:
            if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
                raise InvalidRequestError(
                    "messages", message, 'each message is {"role": ..., "content": ...}'
                )
            if message["role"] not in ROLES or not isinstance(message["content"], str):
                raise InvalidRequestError(
                    "messages", message, f"role is one of {sorted(ROLES)}, content a string"
                )
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise InvalidRequestError("max_tokens", self.max_tokens, "give a positive integer")
        if self.max_tokens < 1:
            raise InvalidRequestError("max_tokens", self.max_tokens, "give a positive integer")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise InvalidRequestError(
                "temperature", self.temperature, "give 0 (greedy) or a positive number"
            )
        if not (0 < self.top_p <= 1):
            raise InvalidRequestError("top_p", self.top_p, "give a number in (0, 1]")
        if self.seed is not None and not (isinstance(self.seed, int) and self.seed >= 0):
            raise InvalidRequestError("seed", self.seed, "give a non-negative integer or None")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise InvalidRequestError("stop", self.stop, "give a list of non-empty strings")


@dataclass(frozen=True)
class Generation:
    """The completion of one request.

    ``completion_tokens`` counts every token the model generated for it,
    including the end-of-sequence token or the token that completed a stop
    string; ``finish_reason`` is ``"stop"`` for either of those and
    ``"length"`` when ``max_tokens`` ran out.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


class Backend(ABC):
    """A loaded model version that turns batches of chat requests into text.

    One instance serves one replica; ``generate`` may be called from several
    threads and serialises access to the model itself.
    """

    model_version: str
    blocking: bool = True
    """Whether ``generate`` holds the caller while the model runs: the router then runs
    it in a thread. A back end that answers at once (the echo model) runs inline."""

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Complete a batch of requests; the results are in the order of the requests."""

    @abstractmethod
    def stream(self, request: GenerationRequest) -> Generator[str, None, Generation]:
        """Complete one request, yielding its text piece by piece as it is generated.

        The pieces joined are the text ``generate`` would return for the request; the
        generator's return value (``StopIteration.value``) is that whole
        :class:`Generation`, with its token counts and finish reason. Closing the
        iterator early stops the generation.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the model and the device memory it holds; idempotent."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
