"""Local durable spool for CDRs: what is acknowledged is on disk until PostgreSQL has it.

Files in the spool directory::

    LOCK                         flock()ed by the one process using this spool, which
                                 writes "<its pid> <its parent's pid>" into it
    checkpoint                   "<segment> <offset>\\n": everything before it is committed
    seg-00000000000000000007.cdr one segment (append-only)

A segment starts with the 8-byte magic ``VGWCDR1\\n`` and then holds frames::

    +----------------+----------------+--------------------------+
    | length: u32 BE | crc32: u32 BE  | payload (length bytes)   |
    +----------------+----------------+--------------------------+

A payload is a batch of CDRs as self-describing CSV whose first line names the columns
(``cdr.record.encode_csv_batch``; its module docstring gives the format), so a spool can
be read with nothing but a CSV reader. Spools written before CSV batches hold one JSON
object per frame (``CallDetailRecord.to_json``, ``"v": 1``); both are read.
``crc32`` (zlib) covers the payload.

Rules that make it crash-safe:

* :meth:`Spool.write` appends a batch of frames to the segment file: from then on the
  records survive a crash of the process (they are in the kernel's page cache).
  :meth:`Spool.sync` fsyncs what was written (and, for a segment just started, the
  directory entry), which makes it survive a power cut too; only then does the
  writer acknowledge a record someone waits for. :meth:`Spool.append` does both.
  Writing and fsyncing are separate so that the event loop can write (a copy into
  the page cache) while a thread fsyncs (:class:`SpoolFlusher`): a thread hop per
  batch cost the gateway more than the write itself (issue 17).
* Every :meth:`Spool.open` starts a *new* segment, so a torn tail left by a crash
  mid-write is only ever at the end of an old segment: readers stop at the first frame
  whose length or CRC is wrong, and nothing is ever appended after garbage. A write
  that fails part-way (a full disk) leaves such a tail too, so the next write starts
  a new segment as well.
* :meth:`Spool.commit` moves the checkpoint forward (write temp file, rename: atomic,
  deliberately not fsynced) only after the rows are committed in PostgreSQL; segments
  wholly before the checkpoint are then deleted. A crash between the database commit
  and the checkpoint, or a power cut that loses the newest checkpoint, replays those
  records, which the database's ``ON CONFLICT DO NOTHING`` absorbs: delivery is
  at-least-once into an idempotent table.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

from cdr.heartbeat import FILE_NAME as HEARTBEAT_FILE

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

MAGIC = b"VGWCDR1\n"
"""First bytes of every segment."""
HEADER = struct.Struct(">II")
"""Frame header: payload length, CRC-32 of the payload."""
MAX_FRAME_BYTES = 64 << 20
"""A longer length field can only be garbage (a frame of 1,000 CDRs is about 400 KB)."""
MIN_SEGMENT_BYTES = 1 << 20
"""Smallest rotation size an operator may configure."""
DEFAULT_SEGMENT_BYTES = 64 << 20
"""Rotate to a new segment once the current one reaches this size."""

ORPHAN_LOCK_WAIT = 10.0
"""Seconds :meth:`Spool.open` waits for a lock held by an orphaned process: a worker
whose supervisor died (it dies by PR_SET_PDEATHSIG a moment after the supervisor, see
gateway.workers.supervisor.die_with_supervisor), which an immediate restart meets."""
_LOCK_POLL = 0.05
"""Seconds between attempts to take a lock held by an orphaned process."""

_READ_CHUNK = MAX_FRAME_BYTES + HEADER.size
"""Bytes read at a time: one chunk always holds at least one whole valid frame."""
_SEGMENT_PREFIX = "seg-"
_SEGMENT_SUFFIX = ".cdr"
_LOCK_NAME = "LOCK"
_CHECKPOINT_NAME = "checkpoint"
_CHECKPOINT_TMP_NAME = "checkpoint.tmp"


def _segment_numbers(directory: Path) -> list[int]:
    """The sequence numbers of the segment files in ``directory``, in order."""
    found = []
    for path in directory.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}"):
        digits = path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)]
        if digits.isdigit():
            found.append(int(digits))
    return sorted(found)


def _segment_path(directory: Path, seq: int) -> Path:
    return directory / f"{_SEGMENT_PREFIX}{seq:020d}{_SEGMENT_SUFFIX}"


#: A worker process's spool is ``<[cdr] spool_dir>/w<N>`` (gateway.workers.plan): one
#: writer per spool, and the workers of one gateway are N writers.
WORKER_SPOOL_PREFIX = "w"


def worker_spool_dir(root: Path, index: int) -> Path:
    """Worker ``index``'s spool under the configured spool directory ``root``."""
    return root / f"{WORKER_SPOOL_PREFIX}{index}"


def worker_spool_dirs(root: Path) -> list[tuple[int, Path]]:
    """The worker spools found under ``root`` as (worker index, directory), in index
    order: those of the workers running now and those of any earlier run with more
    workers."""
    found = []
    if root.is_dir():
        for path in root.iterdir():
            digits = path.name[len(WORKER_SPOOL_PREFIX) :]
            if path.name.startswith(WORKER_SPOOL_PREFIX) and digits.isdigit() and path.is_dir():
                found.append((int(digits), path))
    return sorted(found)


def holds_segments(directory: Path) -> bool:
    """Whether ``directory`` holds spool segments of its own (records maybe not yet
    committed): a spool directory used by a single-process gateway, not only the parent
    of worker spools."""
    return bool(_segment_numbers(directory))


def retire_spool(directory: Path) -> None:
    """Removes a spool that holds nothing uncommitted any more (an orphaned one, just
    replayed in full): its segments, checkpoint, lock and its writer's liveness file
    (``cdr.heartbeat``), then the directory if that leaves it empty (worker spools
    under it stay, and so does any file that is not the spool's).

    Args:
        directory: the spool directory, closed by its writer.
    """
    names = [_LOCK_NAME, _CHECKPOINT_NAME, _CHECKPOINT_TMP_NAME, HEARTBEAT_FILE]
    names += [_segment_path(directory, seq).name for seq in _segment_numbers(directory)]
    for name in names:
        (directory / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty
        directory.rmdir()


class SpoolError(RuntimeError):
    """The spool directory cannot be used (locked by another process, unreadable)."""


class Position(NamedTuple):
    """A place in the spool; positions order like the records they follow."""

    segment: int
    """Segment sequence number."""
    offset: int
    """Byte offset in that segment."""


def encode_frame(payload: bytes) -> bytes:
    """Returns ``payload`` framed with its length and CRC.

    Raises:
        ValueError: the payload exceeds :data:`MAX_FRAME_BYTES`.
    """
    if len(payload) > MAX_FRAME_BYTES:
        raise ValueError(f"spool frame has {len(payload)} bytes, max {MAX_FRAME_BYTES}")
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def scan_frames(data: bytes, start: int = len(MAGIC)) -> tuple[list[tuple[bytes, int]], int]:
    """Decodes consecutive valid frames of a segment's bytes.

    Args:
        data: segment contents (starting with the magic).
        start: offset of the first frame to read.

    Returns:
        ``([(payload, offset after it), ...], valid_end)``; ``valid_end`` is where the
        first torn or corrupt frame starts (or ``len(data)``).
    """
    if not data.startswith(MAGIC):
        return [], 0
    return _scan(memoryview(data)[start:], start)


def _scan(data: memoryview, base: int) -> tuple[list[tuple[bytes, int]], int]:
    """Decodes frames from ``data``, which starts at segment offset ``base``."""
    out: list[tuple[bytes, int]] = []
    pos = 0
    size = len(data)
    while pos + HEADER.size <= size:
        length, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if length > MAX_FRAME_BYTES or end > size:
            break
        payload = bytes(data[pos + HEADER.size : end])
        if zlib.crc32(payload) != crc:
            break
        out.append((payload, base + end))
        pos = end
    return out, base + pos


class Spool:
    """An append-only, checkpointed spool in one directory (thread-safe).

    Args:
        directory: spool directory (created if missing).
        segment_bytes: rotation size of a segment.
    """

    def __init__(self, directory: Path, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._active = 0
        self._ends: dict[int, int] = {}
        self._checkpoint = Position(0, len(MAGIC))
        # Written but maybe not yet fsynced: segments rotated away (their fds stay
        # open until a sync has fsynced them) and whether the directory holds an entry
        # not yet fsynced. ``_durable`` is the end of what the last sync made durable.
        self._unsynced_fds: list[int] = []
        self._directory_unsynced = False
        # A write failed part-way: the active segment may end in a torn frame, after
        # which nothing may be appended (readers stop there).
        self._torn = False
        self._durable = Position(0, len(MAGIC))
        # One sync at a time (the flusher's and a synchronous append's); a writer
        # never waits for it unless it asks for durability itself.
        self._sync_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------

    def open(self) -> Position:
        """Locks the directory, recovers segments and starts a new active segment.

        Returns:
            The checkpoint: where replay of uncommitted records starts (it may equal
            :meth:`end`, meaning nothing to replay).

        Raises:
            SpoolError: another process holds the spool (one orphaned since it took
                the lock, such as a worker whose supervisor was killed, for up to
                :data:`ORPHAN_LOCK_WAIT` first: it is on its way out).
            OSError: the directory is not usable.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _take_lock(self.directory / _LOCK_NAME, time.monotonic() + ORPHAN_LOCK_WAIT)
        checkpoint = self._read_checkpoint()
        for seq in self._segments():
            path = self._path(seq)
            if seq < checkpoint.segment:
                path.unlink()
                continue
            data = path.read_bytes()
            _, valid_end = scan_frames(data)
            if valid_end < len(data):
                # Expected after a crash mid-append: the tail was never acknowledged.
                _log.warning(
                    "CDR spool %s: ignoring %d bytes of torn tail", path.name, len(data) - valid_end
                )
            self._ends[seq] = valid_end
        self._active = max([*self._ends, checkpoint.segment, 0]) + 1
        self._checkpoint = self._normalize(checkpoint)
        self._fd = self._start_segment(self._active)
        self.sync()
        self._checkpoint = self._normalize(self._checkpoint)
        return self._checkpoint

    def close(self) -> None:
        """Closes the active segment and releases the directory lock."""
        with self._sync_lock, self._lock:
            for fd in self._unsynced_fds:
                os.close(fd)
            self._unsynced_fds.clear()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # -- writing -----------------------------------------------------------------

    def append(self, payloads: list[bytes]) -> tuple[Position, Position]:
        """Appends payloads durably: :meth:`write`, then :meth:`sync`.

        Returns:
            ``(start, end)`` positions of the appended frames.

        Raises:
            OSError: the write or fsync failed (nothing may be acknowledged then).
        """
        positions = self.write(payloads)
        self.sync()
        return positions

    def write(self, payloads: list[bytes]) -> tuple[Position, Position]:
        """Appends payloads to the active segment without fsync: they survive a crash
        of this process from now on, a power cut only once :meth:`sync` returned a
        position at or past their end. Never waits for the disk's flush, so it may
        run on the event loop (rotating to a new segment creates a file, whose fsync
        is also left to :meth:`sync`).

        Args:
            payloads: encoded records.

        Returns:
            ``(start, end)`` positions of the appended frames.

        Raises:
            OSError: the write failed; nothing of it counts as written. Part of it may
                be in the file, as a torn tail: the next write starts a new segment
                (as :meth:`open` does after a crash mid-write).
        """
        data = b"".join(encode_frame(p) for p in payloads)
        with self._lock:
            if self._fd is None:
                raise SpoolError("spool is not open")
            if self._torn or self._ends[self._active] >= self.segment_bytes:
                self._rotate()
            fd = self._fd
            start = Position(self._active, self._ends[self._active])
            view = memoryview(data)
            try:
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except OSError:
                self._torn = True
                raise
            self._ends[self._active] += len(data)
            return start, Position(self._active, self._ends[self._active])

    def _rotate(self) -> None:
        """Starts the next segment (lock held). If that fails nothing changes, and the
        next write tries again."""
        assert self._fd is not None
        fd = self._start_segment(self._active + 1)
        # The old segment's fd stays open until a sync has fsynced it.
        self._unsynced_fds.append(self._fd)
        self._fd = fd
        self._active += 1
        self._torn = False

    def sync(self) -> Position:
        """Makes everything written so far durable (fsync of the segments written since
        the last sync and, after a rotation, of the directory).

        Returns:
            The end of what is now durable.

        Raises:
            OSError: an fsync failed: what was written since the last successful sync
                may not be on disk (it stays in the segment and is tried again).
        """
        with self._sync_lock:
            with self._lock:
                fd = self._fd
                if fd is None:
                    raise SpoolError("spool is not open")
                end = Position(self._active, self._ends[self._active])
                if end <= self._durable:
                    return self._durable
                rotated = list(self._unsynced_fds)
                directory = self._directory_unsynced
            # The fds stay open meanwhile: only this method and close() (which takes
            # the sync lock first) close them.
            for old in rotated:
                os.fsync(old)
            os.fsync(fd)
            if directory:
                # The new segment's directory entry must survive a power cut as well
                # as its bytes.
                self._fsync_dir()
            with self._lock:
                for old in rotated:
                    self._unsynced_fds.remove(old)
                    os.close(old)
                if directory:
                    self._directory_unsynced = False
                self._durable = max(self._durable, end)
                return self._durable

    def durable(self) -> Position:
        """Returns the end of what the last :meth:`sync` made durable."""
        with self._lock:
            return self._durable

    def commit(self, upto: Position) -> None:
        """Records that everything before ``upto`` is in PostgreSQL, deleting old segments.

        Args:
            upto: end position of the committed records (a prefix of the spool).
        """
        with self._lock:
            upto = self._normalize(upto)
            if upto <= self._checkpoint:
                return
            # Atomic (rename) but not fsynced: the checkpoint only saves work. If a
            # power cut loses the newest one, the older checkpoint (or none, if the
            # file comes back empty) replays records PostgreSQL already holds, which
            # ON CONFLICT DO NOTHING absorbs. Two fsyncs per committed batch would
            # buy nothing but disk flushes on the call-handling machine.
            tmp = self.directory / _CHECKPOINT_TMP_NAME
            with open(tmp, "wb") as f:
                f.write(f"{upto.segment} {upto.offset}\n".encode())
            os.replace(tmp, self.directory / _CHECKPOINT_NAME)
            self._checkpoint = upto
            for seq in [s for s in self._ends if s < upto.segment]:
                self._path(seq).unlink(missing_ok=True)
                del self._ends[seq]

    # -- reading -----------------------------------------------------------------

    def read(self, start: Position, end: Position, limit: int) -> tuple[list[bytes], Position]:
        """Reads up to ``limit`` payloads in ``[start, end)``.

        Args:
            start: first position to read.
            end: stop here (an end returned by :meth:`append` or :meth:`end`).
            limit: maximum number of payloads.

        Returns:
            ``(payloads, position after the last one returned)``.
        """
        out: list[bytes] = []
        pos = self._normalize(start)
        while len(out) < limit and pos < end:
            seg_end = self._ends.get(pos.segment, 0)
            stop = end.offset if end.segment == pos.segment else seg_end
            with open(self._path(pos.segment), "rb") as f:
                f.seek(pos.offset)
                # Bounded reads: a frame cut at the chunk end is read again next time
                # (a frame is at most MAX_FRAME_BYTES, so each chunk yields one).
                data = f.read(min(stop - pos.offset, _READ_CHUNK))
            frames, _ = _scan(memoryview(data), pos.offset)
            if len(data) == _READ_CHUNK and frames:
                for payload, after in frames[: limit - len(out)]:
                    out.append(payload)
                    pos = Position(pos.segment, after)
                continue
            for payload, after in frames[: limit - len(out)]:
                out.append(payload)
                pos = Position(pos.segment, after)
            if len(out) >= limit or pos.segment >= end.segment:
                break
            # This segment is exhausted (its valid frames end at seg_end): go on.
            pos = self._normalize(Position(pos.segment, seg_end))
        return out, pos

    # -- state -------------------------------------------------------------------

    def checkpoint(self) -> Position:
        """Returns the committed position (replay starts here)."""
        with self._lock:
            return self._checkpoint

    def end(self) -> Position:
        """Returns the position after the last appended frame."""
        with self._lock:
            return Position(self._active, self._ends.get(self._active, len(MAGIC)))

    def pending_bytes(self) -> int:
        """Returns the number of spooled bytes not yet committed."""
        with self._lock:
            total = 0
            for seq, seg_end in self._ends.items():
                if seq > self._checkpoint.segment:
                    total += seg_end - len(MAGIC)
                elif seq == self._checkpoint.segment:
                    total += seg_end - self._checkpoint.offset
            return total

    # -- internals ---------------------------------------------------------------

    def _normalize(self, pos: Position) -> Position:
        """Moves a position at the end of a finished segment to the next segment's start."""
        while pos.segment != self._active:
            if pos.segment in self._ends and pos.offset < self._ends[pos.segment]:
                return pos
            later = [s for s in self._ends if s > pos.segment]
            if not later:
                return pos
            pos = Position(min(later), len(MAGIC))
        return pos

    def _segments(self) -> list[int]:
        return _segment_numbers(self.directory)

    def _path(self, seq: int) -> Path:
        return _segment_path(self.directory, seq)

    def _start_segment(self, seq: int) -> int:
        path = self._path(seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            if os.write(fd, MAGIC) != len(MAGIC):
                raise OSError(f"short write of the magic of {path.name}")
        except OSError:
            # Gone again, so that the next attempt can create it (O_EXCL).
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._directory_unsynced = True
        self._ends[seq] = len(MAGIC)
        return fd

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _read_checkpoint(self) -> Position:
        try:
            text = (self.directory / _CHECKPOINT_NAME).read_text()
        except FileNotFoundError:
            return Position(0, len(MAGIC))
        try:
            segment, offset = (int(part) for part in text.split())
        except ValueError:
            # The checkpoint is replaced atomically, so this is outside damage; replaying
            # from the oldest segment is safe (the table is idempotent).
            _log.error("CDR spool checkpoint is unreadable (%r); replaying everything", text)
            return Position(0, len(MAGIC))
        return Position(segment, offset)


class SpoolFlusher:
    """Fsyncs a spool from a thread of its own, so that the event loop only writes.

    The owner writes a batch (:meth:`Spool.write`) and calls :meth:`kick`; the thread
    fsyncs (:meth:`Spool.sync`) and reports the durable end to ``on_durable``. Batches
    written within ``interval`` of the last fsync share the next one: a kick waits for
    the interval to end, unless it is ``urgent`` (someone waits for the records to be
    acknowledged). At 500 calls/s that is ten fsyncs a second instead of fifty (one per
    20 ms batch); a fsync walks the file system's writeback path, and each woke a
    thread that had to take the GIL from the busy event loop. Measured with
    ``tests/bench/bench_cdr.py`` (issue 17): see ``[cdr] fsync_interval``.

    Args:
        spool: the open spool.
        interval: least seconds between two fsyncs (0: one per kick).
        on_durable: called, in the thread, with the durable end after each fsync.
        on_error: called, in the thread, when an fsync failed; the thread tries again
            after ``retry`` seconds.
        retry: seconds between attempts after a failed fsync.
    """

    def __init__(
        self,
        spool: Spool,
        interval: float,
        on_durable: Callable[[Position], None],
        on_error: Callable[[OSError | SpoolError], None],
        retry: float = 1.0,
    ) -> None:
        self._spool = spool
        self._interval = interval
        self._on_durable = on_durable
        self._on_error = on_error
        self._retry = retry
        self._kicked = threading.Event()
        self._hurry = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cdr-spool-fsync", daemon=True)

    def start(self) -> None:
        """Starts the thread."""
        self._thread.start()

    def kick(self, urgent: bool = False) -> None:
        """Something was written: fsync it within the interval (at once if urgent)."""
        if urgent:
            self._hurry.set()
        self._kicked.set()

    def stop(self) -> None:
        """Stops the thread after the fsync it is doing (the owner syncs what is left:
        :meth:`Spool.sync`)."""
        self._stopped.set()
        self._hurry.set()
        self._kicked.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        last = -self._interval
        while True:
            self._kicked.wait()
            if self._stopped.is_set():
                return
            wait = last + self._interval - time.monotonic()
            if wait > 0:
                self._hurry.wait(wait)
                if self._stopped.is_set():
                    return
            # Cleared before the fsync: what is written from now on kicks again.
            self._kicked.clear()
            self._hurry.clear()
            try:
                durable = self._spool.sync()
            except (OSError, SpoolError) as exc:
                _log.error("cannot fsync the CDR spool: %s", exc)
                self._report(self._on_error, exc)
                self._kicked.set()
                self._stopped.wait(self._retry)
                continue
            last = time.monotonic()
            self._report(self._on_durable, durable)

    @staticmethod
    def _report(callback: Callable[[_T], None], value: _T) -> None:
        # A failing callback must not end the thread: nothing would fsync after it.
        try:
            callback(value)
        except Exception:
            _log.exception("CDR spool flusher callback failed")


class LockHolder(NamedTuple):
    """The process that wrote a LOCK file: its pid, and its parent's when it locked."""

    pid: int
    parent: int


def _take_lock(path: Path, deadline: float) -> int:
    """Takes the spool's flock and writes this process's :class:`LockHolder` into it.

    Waits, until ``deadline`` (monotonic), only while the holder is orphaned (its
    parent is no longer the one it locked under) or exiting: a worker whose
    supervisor died is killed by the kernel a moment later, and a restart must not
    fail on its lock. A holder under its parent still is a running gateway: that
    fails at once.

    Raises:
        SpoolError: naming the holder.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            orphaned = holder is not None and _parent_of(holder.pid) != holder.parent
            if orphaned and time.monotonic() < deadline:
                time.sleep(_LOCK_POLL)
                continue
            raise SpoolError(
                f"CDR spool {path.parent} is in use by another process"
                f" ({_describe(holder, orphaned)})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {os.getppid()}\n".encode(), 0)
        return fd


def _read_holder(fd: int) -> LockHolder | None:
    try:
        pid, parent = os.pread(fd, 64, 0).split()
        return LockHolder(int(pid), int(parent))
    except (OSError, ValueError):
        return None  # written by a version that did not record it, or being written


def _parent_of(pid: int) -> int | None:
    """``pid``'s parent now (proc(5) stat field 4), None when it has exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _describe(holder: LockHolder | None, orphaned: bool) -> str:
    if holder is None:
        return "pid unknown"
    try:
        argv = Path(f"/proc/{holder.pid}/cmdline").read_bytes().split(b"\0")
        command = b" ".join(a for a in argv if a).decode("utf-8", "backslashreplace")
    except OSError:
        command = ""
    where = f"pid {holder.pid}" + (f": {command}" if command else "")
    if orphaned:
        where += f"; orphaned, still there after {ORPHAN_LOCK_WAIT:g} s"
    return where
