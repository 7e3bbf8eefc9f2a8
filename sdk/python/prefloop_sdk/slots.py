"""Spool slots: one directory per live client under a shared ``spool_dir``.

Several processes (the workers of one web app) may share a ``spool_dir``: each client
takes the first ``slot-N`` whose lock it can get. The lock is an ``flock`` that the
kernel drops when its process dies, so a dead process's slot is free for the next
client, which re-sends what it holds.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import SpoolError

__all__ = ["free_slots", "open_slot"]


def open_slot(root: Path) -> tuple[Path, int]:
    """Lock the first free ``slot-N`` under ``root``; returns the slot and its lock fd.

    A slot's lock is an ``flock`` that the kernel drops when its process dies, so a
    slot left by a killed process is free for the next client, which re-sends it.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpoolError(
            f"cannot create the spool directory {root}: {exc}. Pass a writable spool_dir."
        ) from exc
    for n in range(10_000):
        slot = root / f"slot-{n}"
        try:
            slot.mkdir(exist_ok=True)
            fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(
                f"cannot use the spool directory {slot}: {exc}. Pass a writable spool_dir."
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live client holds it
        return slot, fd
    raise SpoolError(f"all 10000 slots under {root} are held by live clients")


def free_slots(root: Path, own: Path) -> Iterator[tuple[Path, int]]:
    """Other slots under ``root`` that no live client holds, each locked while iterated."""
    for slot in sorted(root.glob("slot-*")):
        if slot == own or not slot.is_dir():
            continue
        try:
            fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            yield slot, fd
        finally:
            os.close(fd)  # closing drops the lock
