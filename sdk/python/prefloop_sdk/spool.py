"""The durable local journal: what the client has not yet seen acknowledged by Kafka.

Layout of a spool directory (``spool_dir``)::

    spool_dir/slot-0/lock                       held (flock) by the one live client using the slot
    spool_dir/slot-0/ack                        the delivered watermark: position + CRC-32
    spool_dir/slot-0/seg-00000000000000000000.log  append-only segments, named by the
    spool_dir/slot-0/seg-00000000000008388736.log  position of their first byte
    spool_dir/slot-1/...                        a second process on the same spool_dir

A segment is a sequence of frames, ``u32 length, u32 CRC-32 of the body, body`` (little
endian), followed by zeros while it is being written (it is preallocated); a body is
``u8 topic length, topic, u16 key length (0xFFFF: no key), key, value``. Positions are
byte offsets in one space across segments, so the watermark is one number: every frame
that ends at or before it was delivered.

Why an event whose emit returned survives a SIGKILL: the frame was copied into a
shared file mapping, that is into the kernel's page cache, which outlives the process
(as it would after a ``write``). ``msync`` (every ``fsync_interval``, from the delivery
thread) guards against a machine crash: what was written in the last interval before
one can be lost, and a torn last frame is cut off when the journal is opened again.

Replay repeats events: the watermark advances only when the producer has settled
everything it was given (see ``delivery``), at most about a second apart under steady
load, so after a crash the events delivered since are sent again. Consumers
de-duplicate by the event id (``event_id``, ``interaction_id``, ...).

A ``Journal`` is not thread-safe by itself: the client's lock serialises ``append``;
only the delivery thread calls ``read``, ``set_acked``, ``persist``, ``prepare``, ``sync``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from .errors import SpoolError
from .segments import MappedFile, Segment

__all__ = ["FRAME", "Frame", "Journal", "decode_body", "encode_body", "topic_head"]

log = logging.getLogger("prefloop_sdk.spool")

FRAME = struct.Struct("<II")  # body length, CRC-32 of the body
_ACK = struct.Struct("<QI")  # watermark position, CRC-32 of its 8 bytes
_SEGMENT = re.compile(r"seg-(\d{20})\.log")
_NO_KEY = 0xFFFF
_READ_CHUNK = 1 << 20
_SPARE_SUFFIX = ".segment.tmp"
_pack_frame_into = FRAME.pack_into
_MIN_BODY = 3  # a topic length byte and a key length

Frame = tuple[int, str, bytes | None, bytes]
"""A journal record read back: (end position, topic, key, value)."""


def encode_body(topic_head: bytes, key: bytes | None, value: bytes) -> bytes:
    """A frame body; ``topic_head`` is ``bytes([len(topic)]) + topic`` (see ``topic_head``)."""
    if key is None:
        return b"".join((topic_head, b"\xff\xff", value))
    return b"".join((topic_head, len(key).to_bytes(2, "little"), key, value))


def topic_head(topic: str) -> bytes:
    """The topic as a frame body starts with it (at most 255 bytes, as Kafka allows 249)."""
    raw = topic.encode()
    if len(raw) > 255:
        raise ValueError(f"topic name {topic!r} is longer than Kafka allows")
    return bytes([len(raw)]) + raw


def decode_body(body: bytes) -> tuple[str, bytes | None, bytes]:
    """``(topic, key, value)`` of a frame body."""
    size = body[0]
    topic = body[1 : 1 + size].decode()
    at = 1 + size
    key_len = int.from_bytes(body[at : at + 2], "little")
    at += 2
    if key_len == _NO_KEY:
        return topic, None, body[at:]
    return topic, body[at : at + key_len], body[at + key_len :]


def _segment_name(base: int) -> str:
    return f"seg-{base:020d}.log"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The append-only segments and the delivered watermark of one slot directory.

    Frames are written into a memory-mapped, preallocated segment: a memcpy into the
    page cache, which survives the process exactly as a ``write`` does, at a fraction
    of the cost (no system call, no contention with the ``fsync`` of the delivery
    thread). ``max_bytes`` bounds the undelivered bytes (``end - acked``): ``append``
    refuses a frame beyond it. ``segment_bytes`` is the size of a segment; a segment
    is deleted once every frame in it was delivered. A journal opened on existing
    segments only reads them: new frames go to a new segment.
    """

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.corrupt_bytes = 0  # cut off while opening: torn tails, damaged frames
        self._segments: list[Segment] = []  # live segments, ascending
        self._tail: Segment | None = None  # the one being written
        self._spare: tuple[Path, MappedFile] | None = None  # the next segment, prepared
        self._spares_made = 0
        self._read_fds: dict[int, int] = {}
        self._to_sync: list[Segment] = []  # rotated segments awaiting msync + close
        self._sync_lock = threading.Lock()
        self._dir_dirty = False
        self._unsynced = False
        try:
            self._ack_fd = os.open(directory / "ack", os.O_RDWR | os.O_CREAT, 0o600)
            self.acked = self._read_ack()
            self._recover()
            self.persisted = self.acked
            self._persist_ack()
        except OSError as exc:
            raise SpoolError(f"cannot open the spool journal in {directory}: {exc}") from exc

    # -- opening -----------------------------------------------------------

    def _read_ack(self) -> int:
        data = os.pread(self._ack_fd, _ACK.size, 0)
        if len(data) != _ACK.size:
            return 0
        pos, crc = _ACK.unpack(data)
        if zlib.crc32(data[:8]) != crc:
            log.warning(
                "spool %s: the ack file is damaged; re-sending the whole journal "
                "(consumers de-duplicate by event id)",
                self.directory,
            )
            return 0
        return int(pos)

    def _recover(self) -> None:
        """Scan the segments: cut damaged frames, drop delivered segments, count the rest."""
        for leftover in self.directory.glob(f"*{_SPARE_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        bases = sorted(
            int(m.group(1)) for p in self.directory.iterdir() if (m := _SEGMENT.fullmatch(p.name))
        )
        self.pending_frames = 0
        for base in bases:
            path = self.directory / _segment_name(base)
            data = path.read_bytes()
            ends: list[int] = []  # frame ends, relative to the segment
            good = 0
            while good + FRAME.size <= len(data):
                size, crc = FRAME.unpack_from(data, good)
                end = good + FRAME.size + size
                if size == 0 or end > len(data):
                    break
                if zlib.crc32(data[good + FRAME.size : end]) != crc:
                    break
                good = end
                ends.append(end)
            if good < len(data):
                garbage = len(data) - good - data.count(0, good)
                if garbage:
                    self.corrupt_bytes += len(data) - good
                    log.warning(
                        "spool %s: cut %d byte(s) of a damaged or torn frame off %s",
                        self.directory,
                        len(data) - good,
                        path.name,
                    )
                os.truncate(path, good)  # the preallocated zeros, or the damage
            if base < self.acked < base + good and (self.acked - base) not in set(ends):
                # not a frame boundary (a damaged watermark): back to the one before it
                self.acked = base + max((e for e in ends if base + e < self.acked), default=0)
            pending = sum(1 for e in ends if base + e > self.acked)
            if pending == 0:
                path.unlink()  # every frame in it was delivered, or it is empty
                continue
            self._segments.append(Segment(base, good))
            self.pending_frames += pending
        # new frames go to a new segment, after everything there is or was
        self.end = max(self._segments[-1].end if self._segments else 0, self.acked)

    # -- the emit path (under the client's lock) -----------------------------

    def append(self, body: bytes) -> int:
        """Write one frame; its end position, or -1 when the bound would be passed.

        Raises ``OSError`` when the disk refuses a new segment (full, read-only).
        """
        size = FRAME.size + len(body)
        if self.end - self.acked + size > self.max_bytes:
            return -1
        seg = self._tail
        if seg is None or seg.size + size > seg.capacity:
            seg = self._rotate(size)
        at = seg.size
        mm = seg.mm
        _pack_frame_into(mm, at, len(body), zlib.crc32(body))
        mm[at + FRAME.size : at + size] = body
        seg.size = at + size
        self.end += size
        self._unsynced = True
        return self.end

    def _rotate(self, need: int) -> Segment:
        base = self.end
        path = self.directory / _segment_name(base)
        capacity = max(self.segment_bytes, need)
        with self._sync_lock:  # prepare() may be making a spare right now
            spare, self._spare = self._spare, None
        if spare is not None and spare[1].capacity >= capacity:
            os.rename(spare[0], path)
            mapping = spare[1]
        else:
            if spare is not None:
                self._discard_spare(spare)
            mapping = MappedFile(path, capacity)
        seg = Segment(base, 0)
        seg.capacity = mapping.capacity
        seg.map = mapping
        seg.mm = mapping.mm
        old, self._tail = self._tail, seg
        if old is not None:
            with self._sync_lock:
                self._to_sync.append(old)
        self._segments.append(seg)
        self._dir_dirty = True
        return seg

    # -- the delivery thread --------------------------------------------------

    def prepare(self) -> None:
        """Map the next segment ahead of time once the current one is half full, so the
        emit path does not pay for allocating it."""
        tail = self._tail
        if self._spare is not None or tail is None or tail.size * 2 < tail.capacity:
            return
        self._spares_made += 1
        path = self.directory / f"next-{self._spares_made}{_SPARE_SUFFIX}"
        try:
            mapping = MappedFile(path, self.segment_bytes)
        except OSError:
            return  # the emit path will try again, and count a failure as a drop
        with self._sync_lock:
            if self._spare is None:
                self._spare = (path, mapping)
                return
        self._discard_spare((path, mapping))

    def _discard_spare(self, spare: tuple[Path, MappedFile]) -> None:
        spare[1].close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spare[0])

    def read(self, start: int, stop: int, limit: int) -> list[Frame]:
        """Up to ``limit`` frames from position ``start`` on, ending at or before ``stop``."""
        frames: list[Frame] = []
        pos = self.next_position(start)
        while len(frames) < limit and pos < stop:
            seg = self._segment_of(pos)
            if seg is None:
                break
            fd = self._read_fds.get(seg.base)
            if fd is None:
                fd = os.open(self.directory / _segment_name(seg.base), os.O_RDONLY)
                self._read_fds[seg.base] = fd
            seg_stop = min(seg.end, stop)
            data = os.pread(fd, min(seg_stop - pos, _READ_CHUNK), pos - seg.base)
            at = 0
            while len(frames) < limit and at + FRAME.size <= len(data):
                size = FRAME.unpack_from(data, at)[0]
                if size < _MIN_BODY:
                    raise SpoolError(
                        f"spool {self.directory}: no frame at position {pos + at} "
                        f"(segment {_segment_name(seg.base)}): the journal was changed under "
                        "the client"
                    )
                end = at + FRAME.size + size
                if end > len(data):
                    if at == 0:  # one frame larger than a chunk: read it whole
                        data = os.pread(fd, end, pos - seg.base)
                        continue
                    break
                frames.append((pos + end, *decode_body(data[at + FRAME.size : end])))
                at = end
            if at == 0:
                break  # nothing readable (cannot happen with a recovered journal)
            pos = self.next_position(pos + at)
        return frames

    def _segment_of(self, pos: int) -> Segment | None:
        for seg in list(self._segments):
            if seg.base <= pos < seg.end:
                return seg
        return None

    def next_position(self, pos: int) -> int:
        """``pos``, or the start of the next segment when ``pos`` is past the end of one."""
        for seg in list(self._segments):
            if seg.end > pos:
                return max(pos, seg.base)
        return pos

    def set_acked(self, pos: int) -> None:
        """Advance the delivered watermark (in memory; ``persist`` writes it)."""
        if pos > self.acked:
            self.acked = pos

    def persist(self) -> None:
        """Write the watermark and delete the segments it has passed."""
        if self.acked == self.persisted:
            return
        self._persist_ack()
        self.persisted = self.acked
        while self._segments:
            seg = self._segments[0]
            if seg.end > self.acked or seg is self._tail:
                break
            if seg.map is not None:
                with self._sync_lock:
                    if seg in self._to_sync:
                        self._to_sync.remove(seg)
                seg.close()
            fd = self._read_fds.pop(seg.base, None)
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / _segment_name(seg.base))
            self._segments.pop(0)

    def _persist_ack(self) -> None:
        raw = self.acked.to_bytes(8, "little")
        os.pwrite(self._ack_fd, _ACK.pack(self.acked, zlib.crc32(raw)), 0)

    def sync(self) -> None:
        """Write what was appended since the last call to disk (msync, fsync)."""
        with self._sync_lock:
            rotated, self._to_sync = self._to_sync, []
        for seg in rotated:
            seg.close()
        tail = self._tail
        if self._unsynced and tail is not None:
            self._unsynced = False
            tail.sync()
        if self._dir_dirty:
            self._dir_dirty = False
            _fsync_dir(self.directory)

    @property
    def unsynced(self) -> bool:
        return bool(self._unsynced or self._to_sync or self._dir_dirty)

    @property
    def undelivered_bytes(self) -> int:
        return self.end - self.acked

    def close(self) -> None:
        """Persist the watermark, write everything to disk and close every file."""
        try:
            self.persist()
            self.sync()
            if self._tail is not None:
                self._tail.close()
                self._tail = None
            os.fsync(self._ack_fd)
        finally:
            if self._spare is not None:
                self._discard_spare(self._spare)
                self._spare = None
            for fd in [self._ack_fd, *self._read_fds.values()]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._read_fds.clear()

    def drain(self) -> Iterator[Frame]:
        """Every undelivered frame, in order (for adopting an orphaned slot)."""
        pos = self.acked
        while True:
            frames = self.read(pos, self.end, 1024)
            if not frames:
                return
            yield from frames
            pos = frames[-1][0]

    def clear(self) -> None:
        """Delete every segment and the watermark (after adoption); the slot stays usable."""
        for seg in self._segments:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / _segment_name(seg.base))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / "ack")
        self._segments.clear()
