"""Spool: durability framing, torn tails, rotation, checkpoint and lock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cdr.spool import (
    MAGIC,
    ORPHAN_LOCK_WAIT,
    Position,
    Spool,
    SpoolError,
    SpoolFlusher,
    encode_frame,
    scan_frames,
)


def payloads(n: int, prefix: str = "r") -> list[bytes]:
    return [f'{{"{prefix}":{i}}}'.encode() for i in range(n)]


def read_all(spool: Spool) -> list[bytes]:
    out, _ = spool.read(spool.checkpoint(), spool.end(), 1_000_000)
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.cdr"))


def test_append_read_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    start, end = spool.append(payloads(3))
    assert start < end
    assert read_all(spool) == payloads(3)
    assert spool.pending_bytes() == sum(len(encode_frame(p)) for p in payloads(3))
    spool.commit(end)
    assert read_all(spool) == []
    assert spool.pending_bytes() == 0
    spool.close()


def test_uncommitted_records_replay_after_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    _, first_end = spool.append(payloads(2, "a"))
    spool.append(payloads(2, "b"))
    spool.commit(first_end)
    spool.close()

    again = Spool(tmp_path)
    checkpoint = again.open()
    assert checkpoint == first_end
    assert read_all(again) == payloads(2, "b")
    again.close()


def test_torn_tail_is_ignored_and_new_appends_survive(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(payloads(5))
    spool.close()
    # Crash mid-append: half a frame at the end of the segment.
    (seg,) = segments(tmp_path)
    with open(seg, "ab") as f:
        f.write(encode_frame(b'{"torn":true}')[:7])

    again = Spool(tmp_path)
    again.open()
    again.append(payloads(2, "after"))
    assert read_all(again) == payloads(5) + payloads(2, "after")
    again.close()


@pytest.mark.parametrize("cut", [1, 4, 8, 12])
def test_torn_frame_at_any_byte(tmp_path: Path, cut: int) -> None:
    frames = b"".join(encode_frame(p) for p in payloads(3))
    last = encode_frame(b'{"x":1}')
    found, valid_end = scan_frames(MAGIC + frames + last[:cut])
    assert [p for p, _ in found] == payloads(3)
    assert valid_end == len(MAGIC) + len(frames)


def test_corrupt_crc_stops_the_segment(tmp_path: Path) -> None:
    good = encode_frame(b'{"ok":1}')
    bad = bytearray(encode_frame(b'{"ok":2}'))
    bad[-1] ^= 0xFF
    found, valid_end = scan_frames(MAGIC + good + bytes(bad) + good)
    assert [p for p, _ in found] == [b'{"ok":1}']
    assert valid_end == len(MAGIC) + len(good)
    assert scan_frames(b"not a spool") == ([], 0)


def test_rotation_and_segment_deletion_after_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    spool.open()
    big = [b"x" * 100_000 for _ in range(5)]
    ends = [spool.append([p])[1] for p in big * 5]
    assert len(segments(tmp_path)) >= 2
    assert len(read_all(spool)) == 25
    spool.commit(ends[-1])
    assert len(segments(tmp_path)) == 1  # only the active segment remains
    spool.close()


def test_partial_read_and_limit(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(payloads(10))
    got, pos = spool.read(spool.checkpoint(), spool.end(), 4)
    assert got == payloads(10)[:4]
    rest, end = spool.read(pos, spool.end(), 100)
    assert rest == payloads(10)[4:]
    assert end == spool.end()
    spool.close()


def test_lock_prevents_second_process(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.open()
    pid = os.fork()
    if pid == 0:  # child: the flock belongs to another open file description
        try:
            Spool(tmp_path).open()
        except SpoolError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    first.close()


#: Holds the spool at argv[1] for argv[2] seconds after printing "held".
HOLDER = """
import sys, time
from cdr.spool import Spool
Spool(sys.argv[1]).open()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""
#: Starts HOLDER (argv[1], argv[2]) and exits once it holds the spool: it is orphaned.
ORPHANER = """
import subprocess, sys
holder = subprocess.Popen([sys.executable, "-c", sys.argv[3], sys.argv[1], sys.argv[2]],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
print(holder.stdout.readline().strip(), holder.pid, flush=True)
"""


def test_a_held_spool_fails_at_once_naming_its_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(SpoolError, match=rf"in use by another process \(pid {holder.pid}: "):
            Spool(tmp_path).open()
        assert time.monotonic() - started < 1.0  # its parent (this test) lives
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def test_a_spool_held_by_an_orphan_is_waited_for(tmp_path: Path) -> None:
    """A worker whose supervisor was SIGKILLed holds its spool until the kernel's
    PR_SET_PDEATHSIG kills it too: a restart at once waits for it."""
    orphaner = subprocess.run(
        [sys.executable, "-c", ORPHANER, str(tmp_path), "1.0", HOLDER],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    said, pid = orphaner.stdout.split()
    assert said == "held"
    started = time.monotonic()
    spool = Spool(tmp_path)
    spool.open()
    waited = time.monotonic() - started
    spool.close()
    assert 0.2 < waited < ORPHAN_LOCK_WAIT, waited
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_commit_is_monotonic(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    _, a = spool.append(payloads(1))
    _, b = spool.append(payloads(1))
    spool.commit(b)
    spool.commit(a)  # an older position never moves the checkpoint back
    assert spool.checkpoint() == b
    assert (tmp_path / "checkpoint").read_text() == f"{b.segment} {b.offset}\n"
    assert isinstance(b, Position)
    spool.close()


class CountingSpool(Spool):
    """A spool that counts its fsyncs by sync() call and can be made to fail them."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.syncs = 0
        self.fail: OSError | None = None

    def sync(self) -> Position:
        if self.fail is not None:
            raise self.fail
        self.syncs += 1
        return super().sync()


def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, every fsync's fd is appended to the list returned (and fsynced)."""
    fsynced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        fsynced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return fsynced


def test_write_is_readable_at_once_and_durable_only_after_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    spool.open()
    fsynced = record_fsyncs(monkeypatch)
    opened = spool.durable()
    _, end = spool.write(payloads(3))
    assert fsynced == []  # the event loop's part never waits for the disk
    assert spool.durable() == opened < end
    assert read_all(spool) == payloads(3)  # a crash of the process keeps it (page cache)
    assert spool.sync() == end == spool.durable()
    assert len(fsynced) == 1
    assert spool.sync() == end and len(fsynced) == 1  # nothing new: no fsync
    spool.close()


def test_rotation_by_write_leaves_both_fsyncs_to_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    spool.open()
    fsynced = record_fsyncs(monkeypatch)
    big = b"x" * 600_000
    spool.write([big])
    spool.write([big])  # the first segment is full now
    _, end = spool.write([big])  # so this one starts a new segment
    assert len(segments(tmp_path)) == 2 and end.segment == spool.durable().segment + 1
    assert fsynced == []
    assert spool.sync() == end
    # The full segment, the new one and the directory holding its entry.
    assert len(fsynced) == 3
    spool.close()
    reopened = Spool(tmp_path)
    reopened.open()
    assert read_all(reopened) == [big, big, big]
    reopened.close()


def flusher_of(spool: Spool, interval: float) -> tuple[SpoolFlusher, list[Position], list[OSError]]:
    durable: list[Position] = []
    errors: list[OSError] = []
    flusher = SpoolFlusher(spool, interval, durable.append, errors.append, retry=0.05)
    flusher.start()
    return flusher, durable, errors


def wait_until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_flusher_fsyncs_batches_written_within_its_interval_together(tmp_path: Path) -> None:
    spool = CountingSpool(tmp_path)
    spool.open()
    opened = spool.syncs
    flusher, durable, _ = flusher_of(spool, interval=0.5)
    _, first = spool.write(payloads(1))
    flusher.kick()  # the first batch after a pause: fsynced at once
    wait_until(lambda: durable == [first])
    started = time.monotonic()
    for _ in range(5):  # five 20 ms batches within the interval
        _, last = spool.write(payloads(1))
        flusher.kick()
        time.sleep(0.02)
    wait_until(lambda: len(durable) == 2)
    assert durable[1] == last
    assert time.monotonic() - started >= 0.4  # it waited for the interval's end
    assert spool.syncs - opened == 2  # six batches, two fsyncs
    flusher.stop()
    spool.close()


def test_an_urgent_kick_does_not_wait_for_the_interval(tmp_path: Path) -> None:
    spool = CountingSpool(tmp_path)
    spool.open()
    flusher, durable, _ = flusher_of(spool, interval=30.0)
    spool.write(payloads(1))
    flusher.kick()
    wait_until(lambda: len(durable) == 1)
    _, end = spool.write(payloads(1))
    flusher.kick(urgent=True)  # someone waits for this record's acknowledgement
    wait_until(lambda: len(durable) == 2, timeout=2.0)
    assert durable[1] == end
    flusher.stop()  # does not wait out the interval either
    spool.close()


def test_a_failed_fsync_is_reported_and_tried_again(tmp_path: Path) -> None:
    spool = CountingSpool(tmp_path)
    spool.open()
    spool.fail = OSError(5, "Input/output error")
    flusher, durable, errors = flusher_of(spool, interval=0.0)
    _, end = spool.write(payloads(1))
    flusher.kick()
    wait_until(lambda: len(errors) >= 2)  # reported, and retried after ``retry``
    assert durable == [] and spool.durable() < end
    spool.fail = None
    wait_until(lambda: durable == [end])
    flusher.stop()
    spool.close()


def test_sync_does_not_hold_up_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The event loop writes while the flusher's thread is in a (slow) fsync.
    spool = Spool(tmp_path)
    spool.open()
    in_fsync, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        in_fsync.set()
        release.wait(5)
        real_fsync(fd)

    spool.write(payloads(1))
    monkeypatch.setattr(os, "fsync", slow_fsync)
    syncing = threading.Thread(target=spool.sync)
    syncing.start()
    assert in_fsync.wait(5)
    started = time.monotonic()
    _, end = spool.write(payloads(2))
    assert time.monotonic() - started < 1.0
    release.set()
    syncing.join()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert spool.durable() < end  # written after that sync looked
    assert spool.sync() == end
    spool.close()


def test_a_failing_callback_does_not_stop_the_flusher(tmp_path: Path) -> None:
    spool = CountingSpool(tmp_path)
    spool.open()
    durable: list[Position] = []

    def on_durable(position: Position) -> None:
        durable.append(position)
        if len(durable) == 1:
            raise RuntimeError("a bug in the owner")

    flusher = SpoolFlusher(spool, 0.0, on_durable, lambda exc: None)
    flusher.start()
    spool.write(payloads(1))
    flusher.kick()
    wait_until(lambda: len(durable) == 1)
    _, end = spool.write(payloads(1))
    flusher.kick()
    wait_until(lambda: len(durable) == 2)  # still fsyncing after the failure
    assert durable[1] == end
    flusher.stop()
    spool.close()


def test_a_write_failing_part_way_is_never_appended_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ENOSPC after half a batch: the half is a torn tail, and the next batch must not
    # follow it (a reader stops at the torn frame and would never see the next one).
    spool = Spool(tmp_path)
    spool.open()
    spool.write(payloads(2, "before"))
    real_write = os.write
    failures = [OSError(28, "No space left on device")]

    def half_then_fail(fd: int, data: bytes | memoryview) -> int:
        if failures:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise failures.pop()
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        spool.write(payloads(3, "lost"))
    start, _ = spool.write(payloads(2, "after"))
    assert len(segments(tmp_path)) == 2 and start.offset == len(MAGIC)
    assert read_all(spool) == payloads(2, "before") + payloads(2, "after")
    spool.close()
    reopened = Spool(tmp_path)
    reopened.open()  # the replay after a crash
    # Both batches, and of the failed one its whole first frame (the writer retries a
    # failed batch anyway: replays are idempotent), not the torn one.
    assert read_all(reopened) == (
        payloads(2, "before") + payloads(3, "lost")[:1] + payloads(2, "after")
    )
    reopened.close()


def test_a_segment_that_cannot_be_started_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    spool.open()
    spool.write([b"x" * (1 << 20)])  # full: the next write starts a segment
    real_write = os.write
    failures = [OSError(28, "No space left on device")]

    def magic_fails(fd: int, data: bytes | memoryview) -> int:
        if failures and bytes(data) == MAGIC:
            raise failures.pop()
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", magic_fails)
    with pytest.raises(OSError, match="No space left"):
        spool.write(payloads(1))
    assert len(segments(tmp_path)) == 1  # the half-made file is gone again
    _, end = spool.write(payloads(1))
    assert len(segments(tmp_path)) == 2
    assert spool.sync() == end
    spool.close()
