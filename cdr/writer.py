"""CdrWriter: every ended call becomes a row in PostgreSQL, and nothing is lost on the way.

Theory of operation::

    submit() ──► bounded asyncio.Queue ──► batch (size or age) ──► spool.append + fsync
       │ QueueFull                                                     │  (acknowledged)
       └──────────► spool.append + fsync (synchronously) ──────────────┤
                                                                       ▼
          pending chunks, in spool order ──► COPY into TEMP staging ──► INSERT INTO cdr
                                              SELECT ... ON CONFLICT DO NOTHING
                                                                       │ commit
                                                                       ▼
                                                            spool.commit(checkpoint)

Rule 1: ``submit`` never blocks and never drops. A full queue means the database is slower
than the calls, so the record goes straight to the spool (one fsync on the event loop,
the price of not losing it); it is inserted later from there.

Rule 2: a record is acknowledged (``write`` returns) only once it is fsynced in the spool,
and the spool checkpoint moves only after PostgreSQL committed the rows. Whatever
happens in between (PostgreSQL restarts, the gateway is killed) the spool still holds
every acknowledged record that is not committed, and replay on the next start inserts it.

Rule 3: replays are harmless. The table's key is ``(call_uuid, started_at)`` and the
insert is ``ON CONFLICT DO NOTHING``, so a record committed just before a crash and
replayed afterwards stays one row.

Rule 4: a row for a month without a partition fails with SQLSTATE 23514 ("no partition
of relation ... found for row"); the writer creates the missing months' partitions and
retries, so an early or late record is never rejected. Any other failure (PostgreSQL
down, timeouts) keeps everything in the spool and retries with exponential back-off.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import asyncpg

from cdr.config import CdrConfig
from cdr.maintenance import ensure_partitions
from cdr.partitions import Month
from cdr.record import COLUMNS, CallDetailRecord
from cdr.spool import Position, Spool

_log = logging.getLogger(__name__)

_STAGING = "cdr_staging"
# TEMP: no WAL and private to the session, so concurrent writers never see each
# other's staging rows; ON COMMIT DELETE ROWS empties it for the next batch.
_STAGING_SQL = f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (LIKE cdr) ON COMMIT DELETE ROWS"
_COLUMN_LIST = ", ".join(COLUMNS)
_INSERT_SQL = (
    f"INSERT INTO cdr ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_STAGING} "
    "ON CONFLICT (call_uuid, started_at) DO NOTHING"
)

# Failures after which the batch stays spooled and is retried: the server is down or
# restarting (connection errors, 57P01, 57P03), slow (timeouts), or rejects the batch
# for a reason an operator must fix; no failure is a reason to drop a record.
_RETRYABLE = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

_PARTITION_ATTEMPTS = 3


class WriterClosedError(RuntimeError):
    """A record was submitted after the writer was closed."""


class _Chunk:
    """Records spooled between two positions, possibly also held in memory."""

    __slots__ = ("end", "records", "spooled_at", "start")

    def __init__(
        self,
        start: Position,
        end: Position,
        records: list[CallDetailRecord] | None,
        spooled_at: float,
    ) -> None:
        self.start = start
        self.end = end
        self.records = records
        self.spooled_at = spooled_at


_Item = tuple[CallDetailRecord, "asyncio.Future[None] | None"]


class CdrWriter:
    """Writes call detail records to PostgreSQL through a durable local spool.

    Use as ``async with CdrWriter(pool, config) as writer:``; leaving the block flushes
    (within ``config.shutdown_timeout``; the rest stays spooled for the next start).

    Args:
        pool: asyncpg pool on the gateway database (may be unable to connect).
        config: the ``[cdr]`` config.
        spool_dir: overrides ``config.spool_dir``.
        on_committed: called with each batch of records after its commit (metrics,
            benchmarks); must be quick.

    Attributes (for metrics; read-only):
        rows_committed: rows inserted since start.
        rows_duplicate: rows skipped as already present (replays).
        records_spooled: records appended to the spool since start.
        records_overflowed: records spooled from the call path because the queue was full.
        partitions_created: partitions the writer created for rows without one.
        last_copy_seconds: duration of the last successful COPY + INSERT, in seconds.
        database_available: False while inserts fail.
        last_error: text of the last insert failure.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: CdrConfig,
        *,
        spool_dir: Path | None = None,
        on_committed: Callable[[Sequence[CallDetailRecord]], None] | None = None,
    ) -> None:
        self._pool = pool
        self._config = config
        self._spool = Spool(Path(spool_dir or config.spool_dir), config.segment_bytes)
        self._on_committed = on_committed
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(config.queue_size)
        self._pending: list[_Chunk] = []
        self._memory_rows = 0
        self._inflight: list[_Item] = []
        self._spooler: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = False
        self._stop_at = 0.0
        self.rows_committed = 0
        self.rows_duplicate = 0
        self.records_spooled = 0
        self.records_overflowed = 0
        self.partitions_created = 0
        self.last_copy_seconds: float | None = None
        self.database_available = True
        self.last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> CdrWriter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Opens the spool, schedules replay of uncommitted records, starts the task.

        Raises:
            SpoolError: another process uses the spool directory.
            OSError: the spool directory is unusable.
        """
        checkpoint = await asyncio.to_thread(self._spool.open)
        end = self._spool.end()
        if checkpoint < end:
            first, _ = await asyncio.to_thread(self._spool.read, checkpoint, end, 1)
            spooled_at = time.time()
            with contextlib.suppress(ValueError, IndexError):
                spooled_at = CallDetailRecord.from_json(first[0]).ended_at.timestamp()
            self._pending.append(_Chunk(checkpoint, end, None, spooled_at))
            _log.info("CDR spool holds uncommitted records from %s; replaying", checkpoint)
        # Two tasks so that encoding + fsync of the next batch overlaps the database
        # work on the previous one.
        self._spooler = asyncio.create_task(self._spool_loop(), name="cdr-spooler")
        self._drainer = asyncio.create_task(self._drain_loop(), name="cdr-drainer")

    async def close(self) -> None:
        """Flushes and stops: spools everything queued, commits what it can in time.

        Records not committed within ``shutdown_timeout`` stay in the spool.
        """
        if self._closed or self._spooler is None or self._drainer is None:
            return
        loop = asyncio.get_running_loop()
        self._closing = True
        self._stop_at = loop.time() + self._config.shutdown_timeout
        self._wake.set()
        tasks = asyncio.gather(self._spooler, self._drainer)
        try:
            await asyncio.wait_for(asyncio.shield(tasks), self._config.shutdown_timeout + 1.0)
        except TimeoutError:
            tasks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tasks
        finally:
            # Whatever the task had not spooled yet (cancelled mid-batch) is spooled now;
            # spooling a batch twice is harmless (replay is idempotent).
            leftovers = list(self._inflight)
            while not self._queue.empty():
                leftovers.append(self._queue.get_nowait())
            if leftovers:
                self._spool_items(leftovers)
            self._closed = True
            self._spool.close()

    # -- call path ---------------------------------------------------------------

    def submit(self, record: CallDetailRecord) -> None:
        """Hands a record over without waiting (the call path's entry point).

        Args:
            record: the ended call's record.

        Raises:
            WriterClosedError: the writer is closed.
            OSError: the queue was full and the spool disk failed.
        """
        self._enqueue((record, None))

    async def write(self, record: CallDetailRecord) -> None:
        """Hands a record over and waits until it is durable in the spool (acknowledged).

        Args:
            record: the ended call's record.

        Raises:
            WriterClosedError: the writer is closed.
            OSError: the spool disk failed.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue((record, future))
        await future

    def _enqueue(self, item: _Item) -> None:
        if self._closed:
            raise WriterClosedError("CDR writer is closed")
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            # Spool rather than block (a blocked call path delays SIP answers) or drop
            # (a lost CDR is lost revenue and a broken retention promise). The whole
            # queue goes along, so an overload costs one fsync per queue-full, not one
            # per record.
            items = [item]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            self.records_overflowed += len(items)
            self._spool_items(items)

    def _spool_items(self, items: list[_Item]) -> None:
        """Spools items on the event loop's thread (overflow and shutdown paths)."""
        try:
            start, end = self._append([record for record, _ in items])
        except OSError as exc:
            for _, future in items:
                if future is not None and not future.done():
                    future.set_exception(exc)
            raise
        self._spooled(items, start, end)

    def _append(self, records: list[CallDetailRecord]) -> tuple[Position, Position]:
        """Encodes and appends records durably; safe to run in a worker thread."""
        return self._spool.append([record.to_json() for record in records])

    def _spooled(self, items: list[_Item], start: Position, end: Position) -> None:
        """Books appended items and acknowledges them (event loop thread only)."""
        self._add_chunk(start, end, [record for record, _ in items])
        for _, future in items:
            if future is not None and not future.done():
                future.set_result(None)

    # -- stats -------------------------------------------------------------------

    def spool_writable(self) -> bool:
        """Whether the spool directory accepts writes (readiness while PostgreSQL is away)."""
        return os.access(self._spool.directory, os.W_OK)

    def queue_depth(self) -> int:
        """Returns the number of records waiting in memory to be spooled."""
        return self._queue.qsize()

    def spool_bytes(self) -> int:
        """Returns the bytes in the spool not yet committed to PostgreSQL."""
        return self._spool.pending_bytes()

    def oldest_spooled_age(self, now: float | None = None) -> float:
        """Returns how long the oldest uncommitted spooled record has waited, in seconds.

        Args:
            now: wall-clock time (``time.time()`` when omitted).

        Returns:
            0.0 when everything is committed.
        """
        if not self._pending:
            return 0.0
        current = time.time() if now is None else now
        return max(0.0, current - min(c.spooled_at for c in self._pending))

    # -- background task ---------------------------------------------------------

    def _add_chunk(self, start: Position, end: Position, records: list[CallDetailRecord]) -> None:
        kept: list[CallDetailRecord] | None = records
        if self._memory_rows + len(records) > self._config.memory_rows:
            kept = None  # re-read from the spool when its turn comes
        else:
            self._memory_rows += len(records)
        self.records_spooled += len(records)
        # Sorted by position: the checkpoint may only cover a prefix of the spool, and
        # an overflow append can land while the task's own append is in a thread.
        bisect.insort(self._pending, _Chunk(start, end, kept, time.time()), key=lambda c: c.start)

    async def _spool_loop(self) -> None:
        """Moves queued records into the spool in batches (size or age)."""
        while True:
            if not self._inflight:
                if self._closing and self._queue.empty():
                    return
                self._inflight = await self._collect(0.0 if self._closing else 0.2)
            if not self._inflight:
                continue
            items = self._inflight
            try:
                start, end = await asyncio.to_thread(self._append, [record for record, _ in items])
            except OSError as exc:
                # Not acknowledged; the batch stays in hand and is retried.
                _log.error("cannot write the CDR spool: %s", exc)
                await asyncio.sleep(self._config.retry_initial)
                continue
            self._spooled(items, start, end)
            self._inflight = []
            self._wake.set()

    async def _drain_loop(self) -> None:
        """Inserts spooled chunks, backing off while PostgreSQL fails."""
        loop = asyncio.get_running_loop()
        config = self._config
        backoff = config.retry_initial
        while True:
            if self._closing and loop.time() >= self._stop_at:
                return
            if not self._pending:
                spooler_done = self._spooler is None or self._spooler.done()
                if self._closing and spooler_done:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.2)
                continue
            try:
                await self._drain()
            except _RETRYABLE as exc:
                self.database_available = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                _log.warning("CDR insert failed, retrying in %.1fs: %s", backoff, self.last_error)
                delay = backoff
                if self._closing:
                    delay = min(delay, max(0.0, self._stop_at - loop.time()))
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, config.retry_max)
            else:
                if not self.database_available:
                    _log.info("CDR inserts work again")
                self.database_available = True
                backoff = config.retry_initial

    async def _collect(self, idle: float) -> list[_Item]:
        queue = self._queue
        config = self._config
        batch: list[_Item] = []
        try:
            batch.append(queue.get_nowait())
        except asyncio.QueueEmpty:
            if idle <= 0:
                return batch
            try:
                batch.append(await asyncio.wait_for(queue.get(), idle))
            except TimeoutError:
                return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.batch_age
        while len(batch) < config.batch_size:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _drain(self) -> None:
        """Inserts pending chunks in spool order, moving the checkpoint after each."""
        limit = self._config.batch_size
        while self._pending:
            head = self._pending[0]
            if head.records is None:
                payloads, upto = await asyncio.to_thread(
                    self._spool.read, head.start, head.end, limit
                )
                records = self._decode(payloads)
                consumed = 0
            else:
                # Merge neighbouring in-memory chunks into one transaction.
                records = list(head.records)
                upto = head.end
                consumed = 1
                for chunk in self._pending[1:]:
                    if chunk.records is None or len(records) + len(chunk.records) > limit:
                        break
                    records.extend(chunk.records)
                    upto = chunk.end
                    consumed += 1
            if records:
                await self._insert(records)
            await asyncio.to_thread(self._spool.commit, upto)
            if consumed:
                for chunk in self._pending[:consumed]:
                    self._memory_rows -= len(chunk.records or ())
                del self._pending[:consumed]
            elif upto >= head.end or not payloads:
                self._pending.pop(0)
            else:
                head.start = upto
            if records and self._on_committed is not None:
                self._on_committed(records)

    def _decode(self, payloads: list[bytes]) -> list[CallDetailRecord]:
        records = []
        for payload in payloads:
            try:
                records.append(CallDetailRecord.from_json(payload))
            except ValueError as exc:
                # CRC-valid but undecodable: written by an unknown version. Keep a copy
                # beside the spool for the operator rather than block the pipeline.
                _log.error("undecodable CDR in spool (%s), saved to rejected.jsonl", exc)
                with open(self._spool.directory / "rejected.jsonl", "ab") as f:
                    f.write(payload + b"\n")
        return records

    async def _insert(self, records: list[CallDetailRecord]) -> None:
        rows = [record.as_row() for record in records]
        timeout = self._config.command_timeout
        for attempt in range(_PARTITION_ATTEMPTS):
            try:
                async with self._pool.acquire(timeout=timeout) as con:
                    started = time.perf_counter()
                    async with con.transaction():
                        await con.execute(_STAGING_SQL)
                        await con.copy_records_to_table(
                            _STAGING, records=rows, columns=COLUMNS, timeout=timeout
                        )
                        status = await con.execute(_INSERT_SQL, timeout=timeout)
                    self.last_copy_seconds = time.perf_counter() - started
            except asyncpg.CheckViolationError as exc:
                # 23514 is also a failed CHECK constraint; only a missing partition is
                # ours to repair.
                if "no partition of relation" not in str(exc) or attempt + 1 == _PARTITION_ATTEMPTS:
                    raise
                months = sorted({Month.of(r.started_at) for r in records})
                async with self._pool.acquire(timeout=timeout) as con:
                    created = await ensure_partitions(con, months)
                self.partitions_created += len(created)
                continue
            inserted = int(status.rsplit(" ", 1)[-1])
            self.rows_committed += inserted
            self.rows_duplicate += len(rows) - inserted
            return
