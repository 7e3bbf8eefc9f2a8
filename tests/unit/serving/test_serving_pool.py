"""The router's model pool on real (tiny) Transformers models from the registry."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from prefloop.model_registry import ModelRegistry
from prefloop.serving.backends import (
    BackendError,
    EchoBackend,
    GenerationError,
    GenerationRequest,
)
from prefloop.serving.pool import ModelPool, VersionRetired
from prefloop.testing import tiny_model


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    root = tmp_path_factory.mktemp("pool")
    registry = ModelRegistry(root / "models")
    for version, seed in (("v1", 0), ("v2", 1)):
        registry.register(version, tiny_model(root / f"built-{version}", seed=seed))
    return registry


def ask(text: str) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": text}], max_tokens=8)


def test_a_mixed_batch_gives_each_version_its_own_greedy_answer(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    pool = ModelPool(registry, cache_dir=tmp_path)
    pool.load(("v1", "v2"))
    try:
        alone = {
            (version, text): asyncio.run(pool.generate(version, ask(text))).text
            for version in ("v1", "v2")
            for text in ("Hi", "Tell me about chess")
        }
        items = [(version, ask(text)) for version, text in alone]
        together = [g.text for g in asyncio.run(pool.run_batch(items))]
    finally:
        pool.close()
    assert together == list(alone.values())  # batched with the other version: same text
    assert alone[("v1", "Hi")] != alone[("v2", "Hi")]  # two different models answered


def test_a_retired_version_is_closed_only_after_its_last_request(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    pool = ModelPool(registry, cache_dir=tmp_path)
    pool.load(("v1",))
    with pool.use("v1") as backend:
        pool.load(("v2",))  # v1 leaves the routing while a request holds it
        assert pool.versions == ("v2",)
        assert backend.generate([ask("Hi")])[0].text is not None  # still open
    deadline = time.monotonic() + 30  # the last request done: closed (in a thread)
    while True:
        try:
            backend.generate([ask("Hi")])
        except BackendError as exc:
            assert "closed" in str(exc)
            break
        assert time.monotonic() < deadline, "v1 was never closed"
        time.sleep(0.05)
    with pytest.raises(VersionRetired), pool.use("v1"):
        pass
    pool.close()


class Counting(EchoBackend):
    def __init__(self, model_version: str, fail: bool = False) -> None:
        super().__init__(model_version)
        self.calls, self.fail = 0, fail

    def generate(self, requests: Any) -> Any:
        self.calls += 1
        if self.fail:
            raise GenerationError(self.model_version, len(requests), "out of memory", "retry")
        return super().generate(requests)


def test_one_batch_runs_each_version_once_and_one_failing_version_fails_only_its_own(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    pool = ModelPool(registry, cache_dir=tmp_path / "cache")
    good, bad = Counting("v1"), Counting("v2", fail=True)
    pool._backends.update({"v1": good, "v2": bad})
    items = [
        (version, GenerationRequest([{"role": "user", "content": str(i)}]))
        for i, version in enumerate(["v1", "v2", "v1", "v2"])
    ]
    results = asyncio.run(pool.run_batch(items))
    assert (good.calls, bad.calls) == (1, 1)
    assert [getattr(r, "text", None) for r in results[::2]] == ["v1 heard: 0", "v1 heard: 2"]
    assert all(isinstance(r, GenerationError) for r in results[1::2])
