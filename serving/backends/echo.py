"""The no-op model: it answers with the last user message, at no cost.

For load tests and the serving benchmark, where the model's own time would hide
what the router costs. Tokens are whitespace-separated words; ``max_tokens``
truncates the answer (``finish_reason`` ``"length"``) as a real model would.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

from .base import Backend, Generation, GenerationRequest

__all__ = ["EchoBackend"]


class EchoBackend(Backend):
    blocking = False  # no model: a thread hop would cost more than the answer

    def __init__(self, model_version: str) -> None:
        self.model_version = model_version

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [self._answer(request) for request in requests]

    def stream(self, request: GenerationRequest) -> Generator[str, None, Generation]:
        answer = self._answer(request)
        for index, word in enumerate(answer.text.split(" ")):
            yield word if index == 0 else f" {word}"
        return answer

    def close(self) -> None:
        pass

    def _answer(self, request: GenerationRequest) -> Generation:
        last = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
        words = f"{self.model_version} heard: {last}".split()
        prompt_tokens = sum(len(m["content"].split()) for m in request.messages)
        if len(words) > request.max_tokens:
            return Generation(
                " ".join(words[: request.max_tokens]), prompt_tokens, request.max_tokens, "length"
            )
        return Generation(" ".join(words), prompt_tokens, len(words), "stop")
