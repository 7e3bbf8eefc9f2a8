"""The model registry: versions in a directory or behind an fsspec URL."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from prefloop.model_registry import MANIFEST, ModelRegistry, RegistryError, UnknownModelError


def saved_model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "tokenizer.json").write_text("{}")
    return path


def test_versions_are_listed_oldest_first_with_their_manifest(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    assert registry.list() == []
    registry.register("v1", saved_model(tmp_path / "m1"), detail={"pairs": "500"})
    registry.register("v2", backend="echo", parent="v1")
    (tmp_path / "models" / "half-uploaded").mkdir()  # no manifest: not a version
    assert [v.version for v in registry.list()] == ["v1", "v2"]
    assert registry.get("v2").parent == "v1" and registry.get("v1").detail == {"pairs": "500"}
    assert (registry.local_path("v1", tmp_path / "cache") / "config.json").exists()


def test_bad_registrations_are_refused_with_the_fix(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.register("v1", backend="echo")
    with pytest.raises(RegistryError, match="immutable"):
        registry.register("v1", backend="echo")
    with pytest.raises(RegistryError, match="not a valid name"):
        registry.register("../etc", backend="echo")
    with pytest.raises(RegistryError, match="no config.json"):
        registry.register("v2", tmp_path)
    with pytest.raises(UnknownModelError, match=r"registered: v1\).*prefloop models register v9"):
        registry.get("v9")
    with pytest.raises(UnknownModelError):
        registry.register("v3", backend="echo", parent="v0")


def test_a_remote_registry_is_copied_into_the_local_cache_once(tmp_path: Path) -> None:
    registry = ModelRegistry(f"memory://registry-{uuid.uuid4().hex}")
    registry.register("v1", saved_model(tmp_path / "m1"))
    local = registry.local_path("v1", tmp_path / "cache")
    assert local == tmp_path / "cache" / "v1"
    assert {p.name for p in local.iterdir()} == {"config.json", "tokenizer.json", MANIFEST}
    (local / "config.json").write_text("cached")
    assert (registry.local_path("v1", tmp_path / "cache") / "config.json").read_text() == "cached"
