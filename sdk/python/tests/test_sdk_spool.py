"""The spool journal on its own: frames, the watermark, recovery, bounds, slots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefloop_sdk import SpoolError
from prefloop_sdk.slots import free_slots, open_slot
from prefloop_sdk.spool import FRAME, Journal, encode_body, topic_head

HEAD = topic_head("p.feedback")


def _body(i: int, key: bytes | None = b"c-1") -> bytes:
    return encode_body(HEAD, key, f"value-{i}".encode())


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.log"))


def test_frames_read_back_in_order_with_topic_key_and_value(tmp_path: Path) -> None:
    journal = Journal(tmp_path, 1 << 20, 64 * 1024)
    ends = [journal.append(_body(i, None if i == 3 else f"c-{i}".encode())) for i in range(10)]
    frames = journal.read(journal.acked, journal.end, 100)
    assert [f[0] for f in frames] == ends
    assert frames[3][1:] == ("p.feedback", None, b"value-3")
    assert frames[7][1:] == ("p.feedback", b"c-7", b"value-7")
    assert [f[0] for f in journal.read(ends[4], journal.end, 2)] == ends[5:7]
    journal.close()


def test_reopening_finds_what_was_not_acknowledged(tmp_path: Path) -> None:
    journal = Journal(tmp_path, 1 << 20, 64 * 1024)
    ends = [journal.append(_body(i)) for i in range(20)]
    journal.set_acked(ends[11])
    journal.close()
    again = Journal(tmp_path, 1 << 20, 64 * 1024)
    assert again.pending_frames == 8
    assert again.acked == ends[11]
    values = [f[3] for f in again.drain()]
    assert values == [f"value-{i}".encode() for i in range(12, 20)]
    again.close()


def test_a_frame_written_without_close_survives_and_a_torn_one_is_cut(tmp_path: Path) -> None:
    journal = Journal(tmp_path, 1 << 20, 64 * 1024)
    for i in range(5):
        journal.append(_body(i))
    # no close(): as after a kill; then a torn frame as after a machine crash
    (segment,) = _segments(tmp_path)
    data = bytearray(segment.read_bytes())
    end = journal.end
    data[end : end + FRAME.size + 4] = FRAME.pack(100, 12345) + b"torn"
    segment.write_bytes(bytes(data))
    again = Journal(tmp_path, 1 << 20, 64 * 1024)
    assert again.pending_frames == 5
    assert again.corrupt_bytes > 0
    assert [f[3] for f in again.drain()] == [f"value-{i}".encode() for i in range(5)]
    assert segment.stat().st_size == end  # cut to its frames
    again.close()


def test_a_damaged_watermark_resends_rather_than_loses(tmp_path: Path) -> None:
    journal = Journal(tmp_path, 1 << 20, 64 * 1024)
    ends = [journal.append(_body(i)) for i in range(6)]
    journal.set_acked(ends[2])
    journal.close()
    ack = tmp_path / "ack"
    raw = bytearray(ack.read_bytes())
    raw[-1] ^= 0xFF  # break its checksum
    ack.write_bytes(bytes(raw))
    again = Journal(tmp_path, 1 << 20, 64 * 1024)
    assert again.pending_frames == 6  # everything again: duplicates, no loss
    again.close()


def test_the_bound_refuses_frames_until_the_watermark_moves(tmp_path: Path) -> None:
    body = _body(0)
    frame = FRAME.size + len(body)
    journal = Journal(tmp_path, 10 * frame, 64 * 1024)
    ends = [journal.append(body) for _ in range(10)]
    assert all(e > 0 for e in ends)
    assert journal.append(body) == -1
    journal.set_acked(ends[4])
    assert journal.append(body) > 0
    journal.close()


def test_segments_rotate_and_delivered_ones_are_deleted(tmp_path: Path) -> None:
    journal = Journal(tmp_path, 1 << 22, 64 * 1024)
    ends = [journal.append(_body(i) + bytes(1000)) for i in range(300)]
    assert len(_segments(tmp_path)) >= 4
    journal.set_acked(ends[200])
    journal.persist()
    left = _segments(tmp_path)
    assert 1 <= len(left) < 4
    frames = list(journal.drain())
    assert [f[0] for f in frames] == ends[201:]
    journal.close()
    assert Journal(tmp_path, 1 << 22, 64 * 1024).pending_frames == 99


def test_two_clients_get_two_slots_and_a_dead_ones_slot_is_free(tmp_path: Path) -> None:
    slot_a, fd_a = open_slot(tmp_path)
    slot_b, fd_b = open_slot(tmp_path)
    assert slot_a != slot_b
    assert [s for s, _ in free_slots(tmp_path, slot_b)] == []  # slot_a is held
    os.close(fd_a)  # what the kernel does when a process dies
    assert [s for s, _ in free_slots(tmp_path, slot_b)] == [slot_a]
    slot_c, fd_c = open_slot(tmp_path)
    assert slot_c == slot_a
    os.close(fd_b)
    os.close(fd_c)


def test_an_unusable_spool_directory_is_a_spool_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match="spool"):
        open_slot(blocker / "spool")
