"""Segment files of the spool journal: preallocated, memory-mapped, synced by range.

A frame is written into a shared file mapping, that is into the kernel's page cache,
which outlives the process as it would after a ``write``, with no system call on the
emit path (``os.write`` there cost 1 to 5 us, much of it contending with the delivery
thread's ``fsync``).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["MappedFile", "Segment"]


class MappedFile:
    """A preallocated file mapped for writing, and how to sync part of it.

    The slow calls go through libc by ctypes, which releases the GIL: ``mmap.flush``
    and ``mmap.madvise`` hold it through a whole ``msync`` (tens of ms for a few MB)
    or page population (~8 ms for 16 MiB), stalling every emitting thread.
    """

    __slots__ = ("_anchor", "addr", "capacity", "fd", "mm")

    def __init__(self, path: Path, capacity: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # allocated up front, a full disk is an OSError here, never a SIGBUS when a
            # write into the mapping finds no block
            allocate = getattr(os, "posix_fallocate", None)
            if allocate is not None:
                allocate(fd, 0, capacity)
            else:  # macOS: sparse
                os.ftruncate(fd, capacity)
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            mm = mmap.mmap(fd, capacity, flags=flags)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self.fd = fd
        self.mm = mm
        self.capacity = capacity
        self._anchor: Any = None
        self.addr = 0
        if _libc is not None:
            self._anchor = (ctypes.c_char * capacity).from_buffer(mm)
            self.addr = ctypes.addressof(self._anchor)
            # every page writable now (Linux >= 5.14): halves the cost of a frame on
            # ext4, whose first write to each page otherwise traps; an older kernel
            # refuses the advice, and the pages trap as they are first written
            _libc.madvise(self.addr, capacity, _MADV_POPULATE_WRITE)

    def sync(self, start: int, length: int) -> None:
        """Write ``length`` bytes from ``start`` (page-aligned) to disk."""
        if _libc is not None and self.addr:
            if _libc.msync(self.addr + start, length, _MS_SYNC):
                err = ctypes.get_errno()
                raise OSError(err, f"msync: {os.strerror(err)}")
        else:
            os.fsync(self.fd)

    def close(self, keep: int | None = None) -> None:
        """Unmap and close; ``keep``: cut the file to that many bytes first."""
        self._anchor = None  # releases the buffer export, so the mmap may close
        self.addr = 0
        self.mm.close()
        if keep is not None:
            os.ftruncate(self.fd, keep)
        os.close(self.fd)


class _Libc:
    """``msync`` and ``madvise`` from the C library (Linux only: their flag values)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.msync = libc.msync
        self.madvise = libc.madvise
        for fn in (self.msync, self.madvise):
            fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            fn.restype = ctypes.c_int


def _load_libc() -> _Libc | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return _Libc()
    except (OSError, AttributeError):
        return None


_libc = _load_libc()
_MS_SYNC = 4  # Linux
_MADV_POPULATE_WRITE = 23  # Linux >= 5.14


class Segment:
    """One segment file; the one being written is mapped (``map``)."""

    __slots__ = ("base", "capacity", "map", "mm", "size", "synced")

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size  # bytes of valid frames
        self.capacity = size
        self.synced = 0  # bytes known to be on disk
        self.map: MappedFile | None = None
        self.mm: Any = None  # map.mm, one attribute away on the emit path

    @property
    def end(self) -> int:
        return self.base + self.size

    def sync(self) -> None:
        """Sync the frames written since the last call, and only them: the pages beyond
        are prefaulted zeros, and writing them back would make every page trap again."""
        size = self.size
        if self.map is not None and size > self.synced:
            start = self.synced - self.synced % mmap.PAGESIZE
            self.map.sync(start, size - start)
            self.synced = size

    def close(self) -> None:
        """Sync, unmap and cut the file to its frames."""
        if self.map is not None:
            self.sync()
            self.mm = None
            self.map.close(keep=self.size)
            self.map = None
            self.capacity = self.size
