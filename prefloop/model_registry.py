"""The model registry: which model versions exist, and where their files are.

A registry is a directory (local by default, ``<home>/models``) or any fsspec URL
(``s3://bucket/models``, ``gs://...``) holding one folder per version::

    <registry>/<version>/prefloop-model.json   the manifest, written last
    <registry>/<version>/...                   the model's files (save_pretrained)

A folder without its manifest is an incomplete upload and is not a version. The
manifest names the back end that serves it (``transformers``, or ``echo``, the
no-op model of load tests, which has no files), the version it was trained from
and free-form details. Versions are immutable: registering a name twice is refused.

Training writes versions; serving reads them (:meth:`ModelRegistry.local_path`
copies a remote version into a local cache once). Both stand on this module, so it
lives in the core rather than in either room.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import fsspec

from prefloop.errors import PrefloopError
from prefloop.settings import Settings

__all__ = [
    "BACKENDS",
    "MANIFEST",
    "ModelRegistry",
    "ModelVersion",
    "RegistryError",
    "UnknownModelError",
    "candidate_version",
]

MANIFEST = "prefloop-model.json"
BACKENDS = ("transformers", "echo")
Backend = Literal["transformers", "echo"]
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RegistryError(PrefloopError):
    """A registry operation was refused; the message says why and what to do."""


class UnknownModelError(RegistryError, LookupError):
    """A model version that the registry does not hold."""

    def __init__(self, version: str, registry: str, known: list[str]) -> None:
        self.version = version
        listed = ", ".join(known) if known else "none"
        super().__init__(
            f"model version {version!r} is not in the registry at {registry} (registered: "
            f"{listed}): register it with `prefloop models register {version} --path DIR`"
        )


@dataclass(frozen=True)
class ModelVersion:
    """One registered version, as its manifest describes it."""

    version: str
    backend: Backend
    created_ms: int
    parent: str | None = None
    detail: dict[str, str] = field(default_factory=dict)
    # a trained version's record: the pairs it learnt from, how, and what it earned
    lineage: dict[str, Any] = field(default_factory=dict)  # pair ranges, counts, sources
    training: dict[str, Any] = field(default_factory=dict)  # hyperparameters, versions, metrics
    evaluation: dict[str, Any] = field(default_factory=dict)  # offline evaluation results
    gates: dict[str, Any] = field(default_factory=dict)  # quality gates and their outcome


def candidate_version(base: str, request_id: str) -> str:
    """The version a retrain request trains: its base's name and a digest of the request's
    id (the trigger, the trainer and whoever follows them name it alike)."""
    digest = uuid.uuid5(uuid.NAMESPACE_URL, f"prefloop-train/{request_id}").hex[:8]
    return f"{base[:48]}-dpo-{digest}"


def check_version_name(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise RegistryError(
            f"model version {version!r} is not a valid name: use up to 64 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return version


class ModelRegistry:
    """The versions under one directory or fsspec URL."""

    def __init__(self, url: str | Path) -> None:
        self.url = str(url).rstrip("/")
        self._fs, self._root = fsspec.core.url_to_fs(self.url)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        return cls(settings.model_registry or settings.home / "models")

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self._fs)

    def list(self) -> list[ModelVersion]:
        """Every complete version, oldest first."""
        if not self._fs.exists(self._root):
            return []
        versions = []
        for entry in self._fs.ls(self._root, detail=False):
            manifest = f"{entry}/{MANIFEST}"
            if self._fs.exists(manifest):
                versions.append(self._read(manifest))
        return sorted(versions, key=lambda v: (v.created_ms, v.version))

    def get(self, version: str) -> ModelVersion:
        manifest = f"{self._root}/{check_version_name(version)}/{MANIFEST}"
        if not self._fs.exists(manifest):
            raise UnknownModelError(version, self.url, [v.version for v in self.list()])
        return self._read(manifest)

    def register(
        self,
        version: str,
        path: str | Path | None = None,
        *,
        backend: Backend = "transformers",
        parent: str | None = None,
        detail: dict[str, str] | None = None,
        lineage: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Copy the model in ``path`` in as ``version``; the manifest is written last."""
        check_version_name(version)
        if backend not in BACKENDS:
            raise RegistryError(f"back end {backend!r} is unknown: use one of {BACKENDS}")
        target = f"{self._root}/{version}"
        if self._fs.exists(f"{target}/{MANIFEST}"):
            raise RegistryError(
                f"model version {version!r} is already registered at {self.url}: versions are "
                "immutable, register the new model under a new name"
            )
        if backend == "transformers" and (
            path is None or not (Path(path) / "config.json").is_file()
        ):
            raise RegistryError(
                f"{path} is not a saved model (no config.json): give the directory "
                "save_pretrained wrote, with its tokenizer"
            )
        if parent is not None:
            self.get(parent)
        self._fs.makedirs(target, exist_ok=True)
        if path is not None:
            for item in sorted(Path(path).iterdir()):
                if item.name != MANIFEST:
                    self._fs.put(str(item), f"{target}/{item.name}", recursive=item.is_dir())
        entry = ModelVersion(
            version,
            backend,
            int(time.time() * 1000),
            parent,
            dict(detail or {}),
            dict(lineage or {}),
            dict(training or {}),
            dict(evaluation or {}),
        )
        with self._fs.open(f"{target}/{MANIFEST}", "w") as handle:
            json.dump(asdict(entry), handle, indent=2)
        return entry

    def annotate(
        self,
        version: str,
        *,
        evaluation: dict[str, Any] | None = None,
        gates: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Record a version's evaluation or gate results in its manifest.

        The weights stay immutable; these are findings about them, added as they are
        made. The manifest is replaced whole (written beside it, then moved over it).
        """
        entry = self.get(version)
        changed = replace(
            entry,
            evaluation=entry.evaluation if evaluation is None else dict(evaluation),
            gates=entry.gates if gates is None else dict(gates),
        )
        path = f"{self._root}/{version}/{MANIFEST}"
        staging = f"{path}.{uuid.uuid4().hex}.tmp"
        with self._fs.open(staging, "w") as handle:
            json.dump(asdict(changed), handle, indent=2)
        self._fs.mv(staging, path)
        return changed

    def local_path(self, version: str, cache_dir: Path) -> Path:
        """A local directory holding ``version``'s files: itself, or a cached copy."""
        self.get(version)
        if self.is_local:
            return Path(self._root) / version
        target = cache_dir / version
        if not (target / MANIFEST).exists():
            # each process downloads into its own folder and renames it into place;
            # when another was faster, its copy is used and this one dropped
            partial = cache_dir / f".{version}.{uuid.uuid4().hex}.partial"
            partial.mkdir(parents=True)
            try:
                self._fs.get(f"{self._root}/{version}/", str(partial), recursive=True)
                partial.rename(target)
            except OSError:
                if not (target / MANIFEST).exists():
                    raise
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        return target

    def _read(self, manifest: str) -> ModelVersion:
        with self._fs.open(manifest, "r") as handle:
            data: dict[str, Any] = json.load(handle)
        return ModelVersion(
            version=data["version"],
            backend=data["backend"],
            created_ms=int(data["created_ms"]),
            parent=data.get("parent"),
            detail=dict(data.get("detail") or {}),
            lineage=dict(data.get("lineage") or {}),
            training=dict(data.get("training") or {}),
            evaluation=dict(data.get("evaluation") or {}),
            gates=dict(data.get("gates") or {}),
        )


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
