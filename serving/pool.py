"""The model versions one router replica holds, and the batches it runs on them.

Each replica of the A/B router holds every version its routing serves (two in an
experiment), so choosing the arm and generating happen in one process: no second
deployment hop per request. Requests for all versions queue into one
``@serve.batch`` queue; each batch is split by version and the versions' parts run
side by side in threads, since a back end's ``generate`` blocks.

A version dropped from the routing is closed once its last request is done.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.context import _get_internal_replica_context

from prefloop.model_registry import ModelRegistry, ModelVersion

from .backends.base import Backend, Generation, GenerationRequest

__all__ = ["ModelPool", "VersionRetired", "open_backend"]

log = logging.getLogger(__name__)


class VersionRetired(LookupError):
    """A version the pool no longer holds (the routing changed under the request)."""


def open_backend(
    registry: ModelRegistry,
    version: str,
    *,
    cache_dir: Path,
    device: str = "cpu",
    max_batch_size: int = 8,
) -> Backend:
    """Load ``version`` from the registry with the back end its manifest names."""
    entry: ModelVersion = registry.get(version)
    if entry.backend == "echo":
        from .backends.echo import EchoBackend

        return EchoBackend(version)
    from .backends.hf import TransformersBackend

    return TransformersBackend(
        registry.local_path(version, cache_dir),
        model_version=version,
        device=device,
        max_batch_size=max_batch_size,
    )


class ModelPool:
    def __init__(
        self,
        registry: ModelRegistry,
        *,
        cache_dir: Path,
        device: str = "cpu",
        max_batch_size: int = 8,
        batch_wait_s: float = 0.0,
    ) -> None:
        self.registry, self.cache_dir, self.device = registry, cache_dir, device
        self.max_batch_size = max_batch_size
        self._backends: dict[str, Backend] = {}
        self._retiring: dict[str, Backend] = {}
        self._in_use: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        # @serve.batch needs a Serve replica; elsewhere (tests, tools) each request
        # is a batch of its own
        self._in_replica = _get_internal_replica_context() is not None
        if self._in_replica:
            batcher: Any = self._batched
            batcher.set_max_batch_size(max_batch_size)
            batcher.set_batch_wait_timeout_s(batch_wait_s)

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(self._backends)

    def load(self, versions: tuple[str, ...]) -> None:
        """Hold exactly ``versions``: load the missing ones, retire the others."""
        for version in versions:
            if version not in self._backends:
                with self._lock:
                    revived = self._retiring.pop(version, None)
                backend = revived or open_backend(
                    self.registry,
                    version,
                    cache_dir=self.cache_dir,
                    device=self.device,
                    max_batch_size=self.max_batch_size,
                )
                self._backends[version] = backend
                log.info("model %s loaded", version)
        with self._lock:
            for version in [v for v in self._backends if v not in versions]:
                self._retiring[version] = self._backends.pop(version)
            self._close_idle()

    def acquire(self, version: str) -> Backend:
        """The back end of ``version``, kept open until :meth:`release`."""
        with self._lock:
            backend = self._backends.get(version) or self._retiring.get(version)
            if backend is None:
                raise VersionRetired(version)
            self._in_use[version] += 1
            return backend

    def release(self, version: str) -> None:
        with self._lock:
            self._in_use[version] -= 1
            self._close_idle()

    @contextmanager
    def use(self, version: str) -> Iterator[Backend]:
        """The back end of ``version``, kept open until the block ends."""
        backend = self.acquire(version)
        try:
            yield backend
        finally:
            self.release(version)

    async def generate(self, version: str, request: GenerationRequest) -> Generation:
        """One request's generation, batched with others (any version) in a replica."""
        with self.use(version):  # held from the routing decision: a switch cannot retire it
            if self._in_replica:
                result = await self._batched((version, request))
            else:
                result = (await self.run_batch([(version, request)]))[0]
        if isinstance(result, Exception):
            raise result
        return result

    def close(self) -> None:
        with self._lock:
            for backend in [*self._backends.values(), *self._retiring.values()]:
                backend.close()
            self._backends.clear()
            self._retiring.clear()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def _batched(
        self, items: list[tuple[str, GenerationRequest]]
    ) -> list[Generation | Exception]:
        return await self.run_batch(items)

    async def run_batch(
        self, items: list[tuple[str, GenerationRequest]]
    ) -> list[Generation | Exception]:
        """Generate for (version, request) pairs: one ``generate`` call per version.

        A version that fails, or was retired meanwhile, gives its exception in its
        requests' places; the other version's requests are not affected.
        """
        by_version: defaultdict[str, list[int]] = defaultdict(list)
        for index, (version, _) in enumerate(items):
            by_version[version].append(index)
        results: list[Generation | Exception] = [VersionRetired("")] * len(items)

        async def run(version: str, indices: list[int]) -> None:
            requests = [items[i][1] for i in indices]
            try:
                backend = self.acquire(version)
            except VersionRetired as exc:
                for index in indices:
                    results[index] = exc
                return
            try:
                if backend.blocking:
                    generations = await asyncio.to_thread(backend.generate, requests)
                else:
                    generations = backend.generate(requests)
                for index, generation in zip(indices, generations, strict=True):
                    results[index] = generation
            except Exception as exc:  # this version's requests fail, not the other arm's
                for index in indices:
                    results[index] = exc
            finally:
                self.release(version)

        await asyncio.gather(*(run(v, indices) for v, indices in by_version.items()))
        return results

    def _close_idle(self) -> None:
        """Close the retired versions no request holds (called under the lock).

        Closing waits for a generation still running on the model (one whose request
        timed out), so it happens in a thread: never on the event loop, never under
        the lock.
        """
        idle = [self._retiring.pop(v) for v in list(self._retiring) if self._in_use[v] == 0]
        for backend in idle:
            self._in_use.pop(backend.model_version, None)
            threading.Thread(target=_close, args=(backend,), daemon=True).start()


def _close(backend: Backend) -> None:
    backend.close()
    log.info("model %s closed", backend.model_version)
