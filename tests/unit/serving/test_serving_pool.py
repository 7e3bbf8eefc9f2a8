"""The router's model pool on real (tiny) Transformers models from the registry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from prefloop.model_registry import ModelRegistry
from prefloop.serving.backends import BackendError, GenerationRequest
from prefloop.serving.pool import ModelPool
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
    with pytest.raises(BackendError, match="closed"):  # the last request done: closed
        backend.generate([ask("Hi")])
    with pytest.raises(KeyError), pool.use("v1"):
        pass
    pool.close()
