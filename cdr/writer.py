"""CdrWriter: every ended call becomes a row in PostgreSQL, and nothing is lost on the way.

Theory of operation::

    submit() ──► bounded in-memory buffer ──► batch (size or age) ──► encode once as CSV
       │ buffer full                                                   ──► spool.write
       │                                          (flusher thread: fsync ┘ ──► acknowledged)
       └──────────► encode + spool.append + fsync (synchronously) ──────────┤
                                                                            ▼
          pending chunks, in spool order ──► (at most every insert_interval, merged)
                                             COPY the spooled CSV bytes into a TEMP staging
                                             table ──► INSERT INTO cdr SELECT ...
                                             ON CONFLICT DO NOTHING ──► commit
                                                                            ▼
                                                               spool.commit(checkpoint)

Rule 1: ``submit`` never blocks and never drops. A full buffer means the database is
slower than the calls, so the records go straight to the spool (one fsync on the event
loop, the price of not losing them); they are inserted later from there.

Rule 2: a record is acknowledged (``write`` returns) only once it is fsynced in the spool,
and the spool checkpoint moves only after PostgreSQL committed the rows. Whatever
happens in between (PostgreSQL restarts, the gateway is killed) the spool still holds
every acknowledged record that is not committed, and replay on the next start inserts it.
The event loop writes each batch into the spool file when it is cut (a copy into the
page cache, no waiting for the disk): from then on a crash of the process (kill -9,
OOM) loses none of it. A thread of its own fsyncs (``cdr.spool.SpoolFlusher``), at most
once per ``fsync_interval`` (0.1 s) for the batches written meanwhile, and at once
when someone waits in ``write``; only a power cut or a kernel crash can lose what it
has not fsynced yet, at most ``batch_age`` + ``fsync_interval`` of calls. Before, each
batch went to a worker thread to be encoded, written and fsynced and came back: at 500
calls/s that hop, fifty times a second, took more of the gateway's CPU than the
records' encoding (issue 17: ``bench_cdr``'s writer cost per record fell by a quarter,
the gateway's CPU per call by about 5 %). A failed fsync fails the ``write`` calls
waiting for it; the records stay in the spool file and in memory and are inserted all
the same.

The spool and the database keep separate cadences: each batch is written to the spool
after ``batch_age``, but the batches spooled within ``insert_interval`` (0.2 s by
default) of the last insert wait and are inserted together, in one transaction with
one checkpoint. A transaction's cost is mostly per transaction, not per row (a thread
hop, four PostgreSQL round trips, a checkpoint rename): at 500 calls/s, 20 ms batches
of ten records each paid it alone. The interval holds back only in-memory batches
smaller than ``batch_size``: the first batch after a pause goes at once, a backlog
(a full transaction's worth, or batches re-read from the spool) goes as fast as the
connections take it, and ``close`` inserts everything at once. Durability is the
spool's, so a kill -9 or a database failure within the interval loses nothing (Rule
2); the rows only reach the table up to ``insert_interval`` later.

Rule 3: replays are harmless. The table's key is ``(call_uuid, started_at)`` and the
insert is ``ON CONFLICT DO NOTHING``, so a record committed just before a crash and
replayed afterwards stays one row.

Rule 5, calls in progress (issue 19): ``answered`` hands over a call's *in-progress*
record (``ended_by`` NULL) when it is answered, and ``submit`` its final record when it
ends, under the same key. The in-progress record waits beside the buffer, keyed by
call, until the batch is cut (``batch_age``, 20 ms by default): a call that ends before
then (a short call) has its in-progress record dropped, and costs one row, one COPY
line and one CSV encoding as before. A call still up at the cut has its in-progress
record spooled with the batch, with the durability of a finished record (the same
write and fsync; a kill -9 loses only what the buffer held, ``batch_age``'s worth, as
it always has). Its final record then supersedes the row: the insert is ``ON CONFLICT DO UPDATE``
where the new row ranks higher (a real end > a ``gateway-restart`` closure > an
in-progress record, and among in-progress records the later one), so replays in any
order stay one row holding the latest truth. A call up longer than
``interim_interval`` gets a fresh in-progress record each interval (its duration so
far). On start, once the spool's replay is committed, the in-progress rows the
previous run of this instance left behind are closed as ``gateway-restart`` at the
last heartbeat (``cdr/heartbeat.py``, fsynced every ``heartbeat_interval``): such a
row's end is at most one heartbeat interval (plus loop lag) before the crash.

Rule 4: a row for a month without a partition fails with SQLSTATE 23514 ("no partition
of relation ... found for row"); the writer creates the missing months' partitions and
retries, so an early or late record is never rejected. Any other failure (PostgreSQL
down, timeouts) keeps everything in the spool and retries with exponential back-off.

Why one encoding: a record costs the Python process about 6 µs as a line of a CSV batch
(``cdr.record.encode_csv_batch``), against 20 µs as a JSON spool record plus 15 µs in
asyncpg's binary COPY encoder when it was encoded twice. The spool holds exactly the
bytes PostgreSQL is sent, so a replay from disk costs no decoding either.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import datetime as dt
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

import asyncpg

from cdr.config import CdrConfig
from cdr.db import bounded_by_connection
from cdr.heartbeat import Heartbeat
from cdr.maintenance import ensure_partitions
from cdr.partitions import Month
from cdr.record import (
    COLUMNS,
    CSV_NULL,
    TIMESTAMP_COLUMNS,
    CallDetailRecord,
    EndedBy,
    csv_batch_columns,
    decode_spool_payload,
    encode_csv_batch,
)
from cdr.spool import Position, Spool, SpoolError, SpoolFlusher

_log = logging.getLogger(__name__)

FRAME_ROWS = 1000
"""Records per spool frame (one CSV batch each): ~400 KB; a CDR's text comes from SIP
headers bounded by the parser's 32 KiB message head, so a frame stays far below
``cdr.spool.MAX_FRAME_BYTES``."""

_STAGING = "cdr_staging_csv"
# TEMP: no WAL and private to the session, so concurrent writers never see each
# other's staging rows; ON COMMIT DELETE ROWS empties it for the next batch. Timestamps
# arrive as integer microseconds since the Unix epoch (far cheaper to write than text)
# and become timestamptz in the INSERT. Created once per connection: the DO block
# checks first.
_STAGING_SQL = (
    "DO $$ BEGIN "
    f"IF to_regclass('pg_temp.{_STAGING}') IS NULL THEN "
    f"CREATE TEMP TABLE {_STAGING} (LIKE cdr INCLUDING DEFAULTS) ON COMMIT DELETE ROWS; "
    f"ALTER TABLE {_STAGING} "
    + ", ".join(f"ALTER COLUMN {name} TYPE bigint USING NULL" for name in TIMESTAMP_COLUMNS)
    + "; END IF; END $$"
)
_COLUMN_LIST = ", ".join(COLUMNS)
_SELECT_LIST = ", ".join(
    f"timestamptz 'epoch' + {name} * interval '1 microsecond' AS {name}"
    if name in TIMESTAMP_COLUMNS
    else name
    for name in COLUMNS
)
_KEY = "call_uuid, started_at"


#: End reasons that are closures of a call nobody saw end (rank 1 in :func:`_rank`): a
#: real end replayed later supersedes them.
CLOSURES = f"'{EndedBy.GATEWAY_RESTART}', '{EndedBy.INSTANCE_DEAD}'"


def _rank(table: str) -> str:
    """How final a row is: a real end (2) > a closure by a restart or by a surviving
    instance (1) > in progress (0)."""
    return (
        f"CASE WHEN {table}.ended_by IS NULL THEN 0 "
        f"WHEN {table}.ended_by IN ({CLOSURES}) THEN 1 ELSE 2 END"
    )


def _insert_sql(*, distinct: bool) -> str:
    """The insert from the staging table (Rule 3 and Rule 5).

    ``DO UPDATE`` costs nothing over ``DO NOTHING`` when the key is new (the common
    case: one row per call); it only updates an in-progress row that a later record
    supersedes. PostgreSQL refuses to update one row twice in one command (21000), so
    a batch holding two records of one call (an in-progress record and its end
    replayed together) is inserted with ``distinct``: one record per key, the most
    final first; from the start when the batch's records are in memory and share a
    key, else as a retry. Not by default: the sort costs every batch, the check and
    the retry only those.
    """
    source = f"SELECT {_SELECT_LIST} FROM {_STAGING}"
    if distinct:
        source = (
            f"SELECT DISTINCT ON ({_KEY}) * FROM ({source}) AS s "
            f"ORDER BY {_KEY}, {_rank('s')} DESC, ended_at DESC"
        )
    updated = [name for name in COLUMNS if name not in ("call_uuid", "started_at")]
    return (
        f"INSERT INTO cdr ({_COLUMN_LIST}) {source} "
        f"ON CONFLICT ({_KEY}) DO UPDATE SET "
        + ", ".join(f"{name} = EXCLUDED.{name}" for name in updated)
        + f" WHERE {_rank('EXCLUDED')} > {_rank('cdr')} OR ("
        "cdr.ended_by IS NULL AND EXCLUDED.ended_by IS NULL AND EXCLUDED.ended_at > cdr.ended_at)"
    )


_INSERT_SQL = _insert_sql(distinct=False)
_INSERT_DISTINCT_SQL = _insert_sql(distinct=True)
# A batch spooled before the column existed names no ended_by: every such record was a
# finished call, ended by its hangup side (cdr.record.DERIVED_COLUMNS).
_DERIVE_ENDED_BY_SQL = (
    f"UPDATE {_STAGING} SET ended_by = hangup_side::text::cdr_ended_by WHERE ended_by IS NULL"
)
_LEFT_BEHIND_SQL = (
    f"SELECT {_COLUMN_LIST} FROM cdr "
    "WHERE ended_by IS NULL AND gateway_instance = $1 AND started_at < $2"
)

# A survivor's closure of a dead instance's rows (close_in_progress): the same
# extended_to() as a restart's, written in place under the row locks of FOR UPDATE.
_IN_PROGRESS_FOR_UPDATE_SQL = (
    f"SELECT {_COLUMN_LIST} FROM cdr WHERE ended_by IS NULL AND gateway_instance = $1 FOR UPDATE"
)
_CLOSE_SQL = (
    "UPDATE cdr SET ended_at = $3, duration_seconds = $4, billable_seconds = $5, "
    "ended_by = $6::cdr_ended_by, hangup_side = $7::cdr_hangup_side "
    "WHERE call_uuid = $1 AND started_at = $2 AND ended_by IS NULL"
)


async def close_in_progress(
    con: asyncpg.Connection, instance: str, at: dt.datetime, ended_by: EndedBy
) -> int:
    """Closes every in-progress row of ``instance`` at ``at`` (or at its own last
    interim update if that is later), as a restart closes its own (Rule 5).

    For another instance's rows: run it inside the transaction that claimed the
    instance dead, so that the claim and the closure commit together. A real end
    replayed later from that instance's spool still supersedes the closure (rank 2 >
    1); a closure never supersedes another (the ``ended_by IS NULL`` guard).

    Args:
        con: a connection, inside a transaction.
        instance: the ``gateway_instance`` of the rows.
        at: the last moment the instance was known alive.
        ended_by: the closure's reason.

    Returns:
        Rows closed.
    """
    rows = await con.fetch(_IN_PROGRESS_FOR_UPDATE_SQL, instance)
    closed = [CallDetailRecord.from_row(row).extended_to(at, ended_by) for row in rows]
    await con.executemany(
        _CLOSE_SQL,
        [
            (
                r.call_uuid,
                r.started_at,
                r.ended_at,
                r.duration_seconds,
                r.billable_seconds,
                str(r.ended_by),
                str(r.hangup_side),
            )
            for r in closed
        ],
    )
    return len(closed)


# Failures after which the batch stays spooled and is retried: the server is down or
# restarting (connection errors, 57P01, 57P03), slow (timeouts), or rejects the batch
# for a reason an operator must fix; no failure is a reason to drop a record.
_RETRYABLE = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
    # A multi-host [database] url whose hosts all answer but none is a primary yet
    # (a standby not promoted): TargetServerAttributeNotMatched (issue 16).
    asyncpg.exceptions.InternalClientError,
)

_PARTITION_ATTEMPTS = 3


class WriterClosedError(RuntimeError):
    """A record was submitted after the writer was closed."""


class _Chunk:
    """Records spooled between two positions, possibly also held in memory."""

    __slots__ = ("end", "payloads", "records", "spooled_at", "start", "state")

    def __init__(
        self,
        start: Position,
        end: Position,
        payloads: list[bytes] | None,
        records: list[CallDetailRecord] | None,
        spooled_at: float,
    ) -> None:
        self.start = start
        self.end = end
        self.payloads = payloads
        """The spooled CSV batches, or None: re-read from the spool when due."""
        self.records = records
        """The records themselves while in memory (for ``on_committed``)."""
        self.spooled_at = spooled_at
        self.state = _WAITING
        """_WAITING for a drainer, _CLAIMED by one, _DONE (committed, maybe not yet
        checkpointed because an earlier chunk is still in flight)."""


_WAITING, _CLAIMED, _DONE = range(3)


class _Signal:
    """``asyncio.Event`` with a timeout on ``wait``, for the writer's own tasks.

    ``asyncio.wait_for(event.wait(), timeout)`` wraps the wait in a task of its own and
    cancels it at the timeout (CancelledError thrown in, TimeoutError raised and
    caught). The spooler and the drainers waited so around every batch, most often
    until the timeout (the batch age, the insert interval): ~50 batches a second at
    500 calls/s (issue 17). Here a wait is one future and one timer handle.
    """

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        """Sets the flag and wakes every task waiting."""
        if self._flag:
            return
        self._flag = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """Clears the flag: ``wait`` waits again."""
        self._flag = False

    async def wait(self, at_most: float) -> None:
        """Returns once the flag is set, or after ``at_most`` seconds (no error): a
        timeout is no failure here, only the end of a batch's wait."""
        if self._flag:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(at_most, _wake_up, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiters.remove(waiter)


def _wake_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_Item = tuple[CallDetailRecord, "asyncio.Future[None] | None"]

#: An in-progress record, or how to build it (the call path's builder, or an interim
#: update's :class:`_RunOn`).
_InProgress = CallDetailRecord | Callable[[], CallDetailRecord]


def _encoded(records: list[CallDetailRecord]) -> list[bytes]:
    """Records as spool payloads: CSV batches of at most FRAME_ROWS."""
    return [
        encode_csv_batch(records[i : i + FRAME_ROWS]) for i in range(0, len(records), FRAME_ROWS)
    ]


def _built(pending: _InProgress) -> CallDetailRecord:
    return pending if isinstance(pending, CallDetailRecord) else pending()


class _RunOn:
    """An interim update as a builder: the call's first in-progress record run on to
    ``ended_at``. Kept for a call still up instead of the record it builds (~0.8 KiB
    of datetimes, UUID and strings per call, rebuilt once per ``interim_interval``)."""

    __slots__ = ("ended_at", "origin")
    origin: CallDetailRecord | Callable[[], CallDetailRecord]
    ended_at: dt.datetime

    def __init__(self, origin: _InProgress, ended_at: dt.datetime) -> None:
        # Always from the first record: a run-on of a run-on would chain builders,
        # and extended_to from the first gives the same record (never an earlier end
        # than the last update's, should the clock step back).
        if isinstance(origin, _RunOn):
            ended_at = max(ended_at, origin.ended_at)
            origin = origin.origin
        self.origin = origin
        self.ended_at = ended_at

    def __call__(self) -> CallDetailRecord:
        return _built(self.origin).extended_to(self.ended_at, None)


#: ``on_committed(rows, records, copy_seconds)``: rows committed in one transaction
#: (duplicates included), those of their records still in memory (none for a replay
#: from disk), and how long the transaction's COPYs and insert took.
CommittedHook = Callable[[int, Sequence[CallDetailRecord], float], None]


class CdrWriter:
    """Writes call detail records to PostgreSQL through a durable local spool.

    Use as ``async with CdrWriter(pool, config) as writer:``; leaving the block flushes
    (within ``config.shutdown_timeout``; the rest stays spooled for the next start).

    Args:
        pool: asyncpg pool on the gateway database (may be unable to connect).
        config: the ``[cdr]`` config.
        spool_dir: overrides ``config.spool_dir``.
        on_committed: called after each commit (metrics, benchmarks); must be quick.
        instance: this gateway instance's name: on start, its in-progress records left
            by a previous run are closed (None: no closing, as for tools and tests).

    Attributes (for metrics; read-only):
        rows_committed: rows inserted since start.
        rows_duplicate: rows skipped as already present (replays).
        records_spooled: records appended to the spool since start.
        records_overflowed: records spooled from the call path because the buffer was full.
        partitions_created: partitions the writer created for rows without one.
        closed_left_behind: in-progress records of the previous run closed at start.
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
        on_committed: CommittedHook | None = None,
        instance: str | None = None,
    ) -> None:
        self._pool = pool
        self._config = config
        self._spool = Spool(Path(spool_dir or config.spool_dir), config.segment_bytes)
        self._heartbeat = Heartbeat(self._spool.directory)
        self._on_committed = on_committed
        self._instance = instance
        # In-progress records (or how to build them) waiting for the batch cut (Rule 5),
        # and how to build again the last record cut for each call still up, oldest
        # first (interim updates). A builder, not the record: an idle call holds the
        # summary its builder closes over, and the record is built again only when
        # an interim update is due (issue 17: memory per idle dialog).
        self._answered: dict[uuid.UUID, _InProgress] = {}
        self._open: dict[uuid.UUID, _InProgress] = {}
        # Closing the previous run's in-progress rows waits for the replay (Rule 5).
        self._left_behind: tuple[Position, float | None, dt.datetime] | None = None
        #: True from start until the left-behind records are closed and enqueued
        #: (``_left_behind`` is cleared while that is still under way).
        self._left_behind_open = False
        #: Set by a drainer after each piece of work that committed (caught_up).
        self._progress = asyncio.Event()
        self._tickers: list[asyncio.Task[None]] = []
        # A plain list, not an asyncio.Queue: the spooler takes whole batches by
        # slicing, where a queue costs a get_nowait() call per record.
        self._buffer: list[_Item] = []
        self._first_at = 0.0
        self._arrived = _Signal()
        self._filled = _Signal()
        self._pending: list[_Chunk] = []
        self._memory_rows = 0
        self._inflight: list[_Item] = []
        self._spooler: asyncio.Task[None] | None = None
        # Written batches are fsynced by this thread (Rule 2); the futures of write()
        # wait here, in spool order, until it reports their end durable.
        self._flusher: SpoolFlusher | None = None
        self._unacked: collections.deque[tuple[Position, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drainers: list[asyncio.Task[None]] = []
        # Claiming work is serialized (a replay reads the spool in order); inserting is
        # not: each drainer has its own connection and PostgreSQL backend.
        self._claim_lock = asyncio.Lock()
        self._partition_lock = asyncio.Lock()
        self._wake = _Signal()
        # When in-memory batches may next be claimed (insert_interval; monotonic).
        self._next_insert_at = 0.0
        self._closing = False
        self._closed = False
        self._stop_at = 0.0
        self.rows_committed = 0
        self.rows_duplicate = 0
        self.records_spooled = 0
        self.records_overflowed = 0
        self.partitions_created = 0
        self.closed_left_behind = 0
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
        """Opens the spool, schedules replay of uncommitted records, starts the tasks.

        Raises:
            SpoolError: another process uses the spool directory.
            OSError: the spool directory is unusable.
        """
        checkpoint = await asyncio.to_thread(self._spool.open)
        end = self._spool.end()
        self._loop = asyncio.get_running_loop()
        self._flusher = SpoolFlusher(
            self._spool,
            self._config.fsync_interval,
            on_durable=self._durable_in_thread,
            on_error=self._fsync_failed_in_thread,
            retry=self._config.retry_initial,
        )
        self._flusher.start()
        if self._instance is not None:
            # Read before this run's first heartbeat overwrites it.
            last_alive = await asyncio.to_thread(self._heartbeat.last)
            self._left_behind = (end, last_alive, dt.datetime.now(dt.UTC))
            self._left_behind_open = True
        await asyncio.to_thread(self._heartbeat.beat, time.time())
        if checkpoint < end:
            first, _ = await asyncio.to_thread(self._spool.read, checkpoint, end, 1)
            spooled_at = time.time()
            with contextlib.suppress(ValueError, IndexError):
                spooled_at = decode_spool_payload(first[0])[0].ended_at.timestamp()
            self._pending.append(_Chunk(checkpoint, end, None, None, spooled_at))
            _log.info("CDR spool holds uncommitted records from %s; replaying", checkpoint)
        # Separate tasks so that spooling the next batch overlaps the database work
        # on the previous ones, and several batches insert at once: one
        # PostgreSQL backend parsing, routing and indexing rows is the bottleneck.
        self._spooler = asyncio.create_task(self._spool_loop(), name="cdr-spooler")
        self._drainers = [
            asyncio.create_task(self._drain_loop(), name=f"cdr-drainer-{n}")
            for n in range(self._config.insert_connections)
        ]
        self._tickers = [
            asyncio.create_task(self._heartbeat_loop(), name="cdr-heartbeat"),
            asyncio.create_task(self._interim_loop(), name="cdr-interim"),
        ]

    async def close(self) -> None:
        """Flushes and stops: spools everything buffered, commits what it can in time.

        Records not committed within ``shutdown_timeout`` stay in the spool.
        """
        if self._closed or self._spooler is None:
            return
        loop = asyncio.get_running_loop()
        for ticker in self._tickers:
            ticker.cancel()
        await asyncio.gather(*self._tickers, return_exceptions=True)
        self._closing = True
        self._stop_at = loop.time() + self._config.shutdown_timeout
        self._wake.set()
        self._arrived.set()
        self._filled.set()
        tasks = asyncio.gather(self._spooler, *self._drainers)
        try:
            await asyncio.wait_for(asyncio.shield(tasks), self._config.shutdown_timeout + 1.0)
        except TimeoutError:
            tasks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tasks
        finally:
            # Whatever the task had not spooled yet (cancelled mid-batch) is spooled now;
            # spooling a batch twice is harmless (replay is idempotent).
            leftovers = [*self._inflight, *self._buffer, *self._take_answered()]
            self._buffer = []
            try:
                if leftovers:
                    self._spool_items(leftovers)
            finally:
                self._closed = True
                self._stop_flusher()
            with contextlib.suppress(OSError):
                # Calls still up stop being known alive now, not at the last beat.
                self._heartbeat.beat(time.time())
            self._heartbeat.close()
            self._spool.close()

    # -- call path ---------------------------------------------------------------

    def submit(self, record: CallDetailRecord) -> None:
        """Hands a record over without waiting (the call path's entry point).

        Args:
            record: the ended call's record.

        Raises:
            WriterClosedError: the writer is closed.
            OSError: the buffer was full and the spool disk failed.
        """
        self._enqueue((record, None))

    def answered(
        self,
        record: CallDetailRecord | Callable[[], CallDetailRecord],
        call_uuid: uuid.UUID | None = None,
    ) -> None:
        """Hands over the in-progress record of a call just answered (Rule 5).

        Most calls end before the batch cut, and their in-progress record is then
        never written: pass a callable (and the call's key) and the record is built
        only if the call is still up at the cut (issue 17: building it for every
        answered call was a few per cent of the gateway's CPU per call).

        Args:
            record: the call's record with ``ended_by`` None, or a callable that
                builds it.
            call_uuid: the record's key; required with a callable.

        Raises:
            WriterClosedError: the writer is closed.
        """
        if self._closed:
            raise WriterClosedError("CDR writer is closed")
        if isinstance(record, CallDetailRecord):
            call_uuid = record.call_uuid
        if call_uuid is None:
            raise ValueError("answered() with a builder needs the call's call_uuid")
        self._answered[call_uuid] = record
        if len(self._answered) == 1 and not self._buffer:
            self._first_at = time.monotonic()
            self._arrived.set()

    def _take_answered(self) -> list[_Item]:
        """The in-progress records waiting for the cut (built now), part of a batch."""
        if not self._answered:
            return []
        items: list[_Item] = []
        for key, pending in self._answered.items():
            record = _built(pending)
            self._open[key] = pending
            items.append((record, None))
        self._answered.clear()
        return items

    async def write(self, record: CallDetailRecord) -> None:
        """Hands a record over and waits until it is durable in the spool (acknowledged).

        Args:
            record: the ended call's record.

        Raises:
            WriterClosedError: the writer is closed.
            OSError: the spool disk failed.
            SpoolError: the spool was closed before the record was fsynced.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue((record, future))
        await future

    def _enqueue(self, item: _Item) -> None:
        if self._closed:
            raise WriterClosedError("CDR writer is closed")
        key = item[0].call_uuid
        # The call's in-progress record, if not yet cut into a batch, is replaced by
        # this one (Rule 5).
        self._open.pop(key, None)
        self._answered.pop(key, None)
        buffer = self._buffer
        buffer.append(item)
        held = len(buffer)
        if held == 1:
            self._first_at = time.monotonic()
            self._arrived.set()
        if held == self._config.batch_size:
            self._filled.set()
        if held > self._config.queue_size:
            # Spool rather than block (a blocked call path delays SIP answers) or drop
            # (a lost CDR is lost revenue and a broken retention promise). The whole
            # buffer goes along, so an overload costs one fsync per buffer-full, not
            # one per record.
            self._buffer = []
            self.records_overflowed += held
            self._spool_items(buffer)

    def _spool_items(self, items: list[_Item]) -> None:
        """Spools items on the event loop's thread (overflow and shutdown paths)."""
        records = [record for record, _ in items]
        try:
            start, end, payloads = self._append(records)
        except OSError as exc:
            for _, future in items:
                if future is not None and not future.done():
                    future.set_exception(exc)
            raise
        self._spooled(items, records, start, end, payloads)

    def _append(self, records: list[CallDetailRecord]) -> tuple[Position, Position, list[bytes]]:
        """Encodes records once and appends them durably (written and fsynced)."""
        payloads = _encoded(records)
        start, end = self._spool.append(payloads)
        return start, end, payloads

    def _write(self, records: list[CallDetailRecord]) -> tuple[Position, Position, list[bytes]]:
        """Encodes records once and writes them to the spool; the flusher fsyncs them."""
        payloads = _encoded(records)
        start, end = self._spool.write(payloads)
        return start, end, payloads

    def _spooled(
        self,
        items: list[_Item],
        records: list[CallDetailRecord],
        start: Position,
        end: Position,
        payloads: list[bytes],
    ) -> None:
        """Books written items; acknowledges those that wait once their end is durable
        (event loop thread only)."""
        self._add_chunk(start, end, payloads, records)
        waiting = False
        for _, future in items:
            if future is not None and not future.done():
                self._unacked.append((end, future))
                waiting = True
        durable = self._spool.durable()
        if durable >= end:
            self._acknowledge(durable)
        elif self._flusher is not None:
            self._flusher.kick(urgent=waiting)

    def _acknowledge(self, durable: Position) -> None:
        """Acknowledges the waiting records that ``durable`` covers (Rule 2)."""
        unacked = self._unacked
        while unacked and unacked[0][0] <= durable:
            _, future = unacked.popleft()
            if not future.done():
                future.set_result(None)

    def _fail_unacked(self, exc: OSError | SpoolError) -> None:
        """An fsync failed: the records written since the last one may not be on disk,
        so nobody waiting for them is told they are (write() raises). They stay in the
        spool file and in memory, and are inserted into PostgreSQL all the same."""
        while self._unacked:
            _, future = self._unacked.popleft()
            if not future.done():
                future.set_exception(exc)

    def _durable_in_thread(self, durable: Position) -> None:
        # The flusher's thread. Only write() waits for durability; submit()'s records
        # (the gateway's calls) wake nobody.
        if self._unacked and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._acknowledge, durable)

    def _fsync_failed_in_thread(self, exc: OSError | SpoolError) -> None:
        if self._unacked and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._fail_unacked, exc)

    def _stop_flusher(self) -> None:
        """Stops the flusher and fsyncs what it had not (close)."""
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None
        try:
            self._acknowledge(self._spool.sync())
        except (OSError, SpoolError) as exc:
            _log.error("cannot fsync the CDR spool at close: %s", exc)
            self._fail_unacked(exc)

    # -- stats -------------------------------------------------------------------

    def spool_writable(self) -> bool:
        """Whether the spool directory accepts writes (readiness while PostgreSQL is away)."""
        return os.access(self._spool.directory, os.W_OK)

    async def caught_up(self) -> None:
        """Returns once this run's start-up work is committed: the spool's replay, then
        the closure of the in-progress records the previous run left behind (Rule 5),
        which goes through the spool after it. For a writer opened only to replay a
        spool (:func:`replay_spool`): closed at once, its spooler would stop before the
        closure's records reach it. Waits as long as the database is away: bound it
        with ``asyncio.timeout``.
        """
        while self._left_behind_open or self._buffer or self.spool_bytes():
            self._progress.clear()
            await self._progress.wait()

    def queue_depth(self) -> int:
        """Returns the number of records waiting in memory to be spooled."""
        return len(self._buffer)

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

    # -- background tasks --------------------------------------------------------

    def _add_chunk(
        self,
        start: Position,
        end: Position,
        payloads: list[bytes],
        records: list[CallDetailRecord],
    ) -> None:
        chunk = _Chunk(start, end, payloads, records, time.time())
        if self._memory_rows + len(records) > self._config.memory_rows:
            # Re-read from the spool when its turn comes.
            chunk.payloads = chunk.records = None
        else:
            self._memory_rows += len(records)
        self.records_spooled += len(records)
        # Sorted by position: the checkpoint may only cover a prefix of the spool.
        # Every write now happens on the loop, in position order, so this appends;
        # insort keeps the order whoever writes next.
        bisect.insort(self._pending, chunk, key=lambda c: c.start)

    async def _spool_loop(self) -> None:
        """Moves buffered records into the spool in batches (size or age)."""
        while True:
            if not self._inflight:
                if self._closing and not self._buffer:
                    return
                self._inflight = await self._collect()
            if not self._inflight:
                continue
            items = self._inflight
            records = [record for record, _ in items]
            try:
                # On the loop: a copy into the page cache (the flusher fsyncs). A thread
                # hop per batch, as before, cost more CPU than the write (issue 17).
                start, end, payloads = self._write(records)
            except OSError as exc:
                # Not acknowledged; the batch stays in hand and is retried.
                _log.error("cannot write the CDR spool: %s", exc)
                await asyncio.sleep(self._config.retry_initial)
                continue
            self._spooled(items, records, start, end, payloads)
            self._inflight = []
            if self._worth_waking_drainers():
                self._wake.set()

    def _worth_waking_drainers(self) -> bool:
        """Whether a batch just spooled is worth waking the drainers for.

        Not when in-memory batches were already waiting for the insert interval before
        it and together they fill no transaction: the drainers were woken by the first
        of them and wait for the interval to end, which wakes them by itself. At 500
        calls/s ten batches arrive per interval, and each woke both drainers to find
        the interval still running (issue 17).
        """
        if self._closing or self._config.insert_interval <= 0:
            return True
        waiting = [chunk for chunk in self._pending if chunk.state == _WAITING]
        if len(waiting) < 2 or any(chunk.payloads is None for chunk in waiting):
            return True
        return sum(len(chunk.records or ()) for chunk in waiting) >= self._config.batch_size

    async def _collect(self) -> list[_Item]:
        """Waits for the next batch: ``batch_size`` records, or what ``batch_age`` brought."""
        config = self._config
        if not self._buffer and not self._answered:
            if self._closing:
                return []
            self._arrived.clear()
            await self._arrived.wait(0.2)
            if not self._buffer and not self._answered:
                return []
        if len(self._buffer) < config.batch_size and not self._closing:
            delay = self._first_at + config.batch_age - time.monotonic()
            if delay > 0:
                self._filled.clear()
                await self._filled.wait(delay)
        batch = self._buffer[: config.batch_size]
        del self._buffer[: config.batch_size]
        batch += self._take_answered()
        if self._buffer:
            self._first_at = time.monotonic()
        return batch

    async def _heartbeat_loop(self) -> None:
        """Fsyncs the liveness file every ``heartbeat_interval`` (Rule 5)."""
        interval = self._config.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self._heartbeat.beat, time.time())
            except OSError as exc:
                # The calls' records are still safe; only a crash's closure time
                # becomes less precise (the last beat that made it, or the last
                # interim update).
                _log.error("cannot write the liveness file: %s", exc)

    async def _interim_loop(self) -> None:
        """Rewrites each call's in-progress record once per ``interim_interval``."""
        interval = self._config.interim_interval
        while True:
            # A tenth of the interval: each call is updated at most that late.
            await asyncio.sleep(interval / 10)
            now = dt.datetime.now(dt.UTC)
            self.interim_updates(now)

    def interim_updates(self, now: dt.datetime) -> int:
        """Queues a fresh in-progress record for every call whose last one is at least
        ``interim_interval`` old.

        Args:
            now: wall-clock time.

        Returns:
            How many records were queued.
        """
        due = now - dt.timedelta(seconds=self._config.interim_interval)
        updated: list[tuple[uuid.UUID, _InProgress]] = []
        # Oldest first: stop at the first call updated recently enough (its record is
        # built only to read its end).
        for key, pending in self._open.items():
            if _built(pending).ended_at > due:
                break
            updated.append((key, pending))
        # Calls answered since the last cut (a batch age's worth; more only when the
        # clock jumps or the loop stalls): built here, this runs rarely.
        for key, pending in self._answered.items():
            if _built(pending).ended_at <= due:
                updated.append((key, pending))
        for key, pending in updated:
            self._open.pop(key, None)
            self.answered(_RunOn(pending, now), key)
        return len(updated)

    async def _drain_loop(self) -> None:
        """Claims spooled chunks and inserts them, backing off while PostgreSQL fails."""
        loop = asyncio.get_running_loop()
        config = self._config
        backoff = config.retry_initial
        while True:
            if self._closing and loop.time() >= self._stop_at:
                return
            left_behind = self._left_behind
            if left_behind is not None and self._spool.checkpoint() >= left_behind[0]:
                # The replay is committed: the previous run's in-progress rows are
                # all in the table now.
                self._left_behind = None
                work = self._close_left_behind(*left_behind[1:])
            else:
                left_behind = None
                claimed = await self._claim()
                if not isinstance(claimed, list):
                    spooler_done = self._spooler is None or self._spooler.done()
                    if self._closing and spooler_done and not self._pending:
                        return
                    # Woken early by a new batch (which may fill a transaction) or by
                    # close(), which inserts what waits without the interval.
                    self._wake.clear()
                    await self._wake.wait(min(0.2, claimed or 0.2))
                    continue
                work = self._drain(claimed)
            try:
                await work
            except _RETRYABLE as exc:
                if left_behind is not None:
                    self._left_behind = left_behind
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
                self._progress.set()

    async def _close_left_behind(self, last_alive: float | None, started: dt.datetime) -> None:
        """Closes the in-progress rows a previous run of this instance left behind.

        Each ends as ``gateway-restart`` at the last heartbeat, or at its own last
        interim update if that is later (or if there is no heartbeat). The closed
        records go through the spool like any record. Only rows of calls that started
        before this run are looked at: this run's own calls may already have rows.
        """
        assert self._instance is not None
        timeout = self._config.command_timeout
        async with self._pool.acquire(timeout=timeout) as con:
            rows = await con.fetch(_LEFT_BEHIND_SQL, self._instance, started, timeout=timeout)
        alive = (
            dt.datetime.fromtimestamp(last_alive, dt.UTC)
            if last_alive is not None
            else dt.datetime.min.replace(tzinfo=dt.UTC)
        )
        for row in rows:
            record = CallDetailRecord.from_row(row)
            self._enqueue((record.extended_to(alive, EndedBy.GATEWAY_RESTART), None))
        self.closed_left_behind += len(rows)
        self._left_behind_open = False
        if rows:
            _log.warning(
                "closed %d call records left in progress by the previous run as %s"
                " (last heartbeat %s)",
                len(rows),
                EndedBy.GATEWAY_RESTART,
                alive.isoformat() if last_alive is not None else "unknown",
            )

    async def _claim(self) -> list[_Chunk] | float | None:
        """Takes the next waiting chunks (up to ``batch_size`` rows) for one transaction.

        A chunk no longer held in memory is read back from the spool here, at most
        ``batch_size`` rows of it: the part read becomes a chunk of its own.

        Returns:
            The chunks; None when none waits; or, when in-memory chunks wait but less
            than ``insert_interval`` has passed since the last such claim (and they
            fill no transaction, and the writer is not closing), the seconds left.
        """
        limit = self._config.batch_size
        async with self._claim_lock:
            pending = self._pending
            index = next((i for i, c in enumerate(pending) if c.state == _WAITING), None)
            if index is None:
                return None
            head = pending[index]
            if head.payloads is None:
                payloads, upto = await asyncio.to_thread(
                    self._spool.read, head.start, head.end, max(1, limit // FRAME_ROWS)
                )
                if upto < head.end and payloads:
                    part = _Chunk(head.start, upto, payloads, None, head.spooled_at)
                    head.start = upto
                    pending.insert(index, part)
                    head = part
                else:
                    # The whole rest (nothing readable left: a torn or corrupt tail,
                    # which the spool never acknowledged, is passed over).
                    head.payloads = payloads
                head.state = _CLAIMED
                return [head]
            # Merge neighbouring in-memory chunks into one transaction.
            claimed = [head]
            rows = len(head.records or ())
            full = rows >= limit
            for chunk in pending[index + 1 :]:
                size = len(chunk.records or ())
                if chunk.state != _WAITING or chunk.payloads is None:
                    break
                if rows + size > limit:
                    full = True
                    break
                claimed.append(chunk)
                rows += size
            interval = self._config.insert_interval
            now = time.monotonic()
            if interval > 0 and not full and not self._closing:
                # Fewer rows than a transaction holds: let more batches join them.
                if (wait := self._next_insert_at - now) > 0:
                    return wait
                self._next_insert_at = now + interval
            for chunk in claimed:
                chunk.state = _CLAIMED
            return claimed

    async def _drain(self, claimed: list[_Chunk]) -> None:
        """Inserts claimed chunks, then checkpoints the committed prefix of the spool."""
        payloads = [payload for chunk in claimed for payload in chunk.payloads or ()]
        records = [record for chunk in claimed for record in chunk.records or ()]
        copy_seconds = 0.0
        try:
            if payloads:
                rows = await self._insert(payloads, records)
                # Set by that insert: no other flush can run before this line.
                copy_seconds = self.last_copy_seconds or 0.0
            else:
                rows = 0
        except BaseException:
            # Not committed (failed, or cancelled at shutdown): the next claim retries.
            for chunk in claimed:
                chunk.state = _WAITING
            raise
        for chunk in claimed:
            chunk.state = _DONE
        # The checkpoint covers only a prefix: a chunk committed while an earlier one
        # is still in flight waits for it (a crash then replays both, harmlessly).
        upto = None
        pending = self._pending
        while pending and pending[0].state == _DONE:
            chunk = pending.pop(0)
            self._memory_rows -= len(chunk.records or ())
            upto = chunk.end
        if upto is not None:
            await asyncio.to_thread(self._spool.commit, upto)
        if rows and self._on_committed is not None:
            self._on_committed(rows, records, copy_seconds)

    def _copy_sources(
        self, payloads: list[bytes]
    ) -> list[tuple[tuple[str, ...], list[memoryview]]]:
        """Groups the payloads' CSV rows by the columns they name, one COPY per group.

        Returns:
            ``[(columns, [rows of a batch, ...]), ...]`` in spool order; records of the
            older JSON encoding are converted into one more group.
        """
        groups: list[tuple[tuple[str, ...], list[memoryview]]] = []
        legacy: list[CallDetailRecord] = []
        for payload in payloads:
            if payload[:1] == b"{":
                # A record spooled by a gateway before CSV batches (one JSON object).
                try:
                    legacy.append(CallDetailRecord.from_json(payload))
                except ValueError as exc:
                    self._reject(payload, exc)
                continue
            try:
                columns, body = csv_batch_columns(payload)
            except ValueError as exc:
                self._reject(payload, exc)
                continue
            if not groups or groups[-1][0] != columns:
                groups.append((columns, []))
            groups[-1][1].append(memoryview(payload)[body:])
        if legacy:
            payload = encode_csv_batch(legacy)
            columns, body = csv_batch_columns(payload)
            groups.append((columns, [memoryview(payload)[body:]]))
        return groups

    def _reject(self, payload: bytes, exc: ValueError) -> None:
        # CRC-valid but undecodable: written by an unknown version. Keep a copy beside
        # the spool for the operator rather than block the pipeline.
        _log.error("undecodable CDR spool frame (%s), saved to rejected.cdr", exc)
        with open(self._spool.directory / "rejected.cdr", "ab") as f:
            f.write(payload + b"\n")

    async def _insert(self, payloads: list[bytes], records: list[CallDetailRecord]) -> int:
        """COPYs the batches and inserts them in one transaction; returns their rows."""
        sources = self._copy_sources(payloads)
        timeout = self._config.command_timeout
        # Merged batches often hold a call's in-progress record and its end (a call
        # that ended within insert_interval of the cut): seen in memory, the insert
        # deduplicates at once instead of failing with 21000 first (see _insert_sql).
        distinct = len({record.call_uuid for record in records}) < len(records)
        partition_attempts = 0

        async def transaction(con: asyncpg.Connection, distinct: bool) -> tuple[int, str]:
            rows = 0
            async with con.transaction():
                await con.execute(_STAGING_SQL, timeout=timeout)
                for columns, bodies in sources:
                    copied = await con.copy_to_table(
                        _STAGING,
                        source=_chunks(bodies),
                        columns=columns,
                        format="csv",
                        null=CSV_NULL,
                        timeout=timeout,
                    )
                    rows += int(copied.rsplit(" ", 1)[-1])
                    if "ended_by" not in columns:
                        await con.execute(_DERIVE_ENDED_BY_SQL, timeout=timeout)
                status = await con.execute(
                    _INSERT_DISTINCT_SQL if distinct else _INSERT_SQL, timeout=timeout
                )
            return rows, status

        while True:
            try:
                async with self._pool.acquire(timeout=timeout) as con:
                    started = time.perf_counter()
                    # Bounded from outside: a COPY on a lost connection never ends.
                    rows, status = await bounded_by_connection(
                        con, transaction(con, distinct), within=timeout
                    )
                    self.last_copy_seconds = time.perf_counter() - started
            except asyncpg.CardinalityViolationError:
                # Two records of one call in this batch (see _insert_sql).
                if distinct:
                    raise
                distinct = True
                continue
            except asyncpg.CheckViolationError as exc:
                # 23514 is also a failed CHECK constraint; only a missing partition is
                # ours to repair.
                partition_attempts += 1
                if (
                    "no partition of relation" not in str(exc)
                    or partition_attempts == _PARTITION_ATTEMPTS
                ):
                    raise
                months = await asyncio.to_thread(self._months, payloads, records)
                async with self._partition_lock, self._pool.acquire(timeout=timeout) as con:
                    created = await ensure_partitions(con, months)
                self.partitions_created += len(created)
                continue
            inserted = int(status.rsplit(" ", 1)[-1])
            self.rows_committed += inserted
            self.rows_duplicate += rows - inserted
            return rows

    @staticmethod
    def _months(payloads: list[bytes], records: list[CallDetailRecord]) -> list[Month]:
        """Months the rows fall in (decoding the batches when only they are at hand)."""
        if not records:
            records = []
            for payload in payloads:
                with contextlib.suppress(ValueError):
                    records.extend(decode_spool_payload(payload))
        return sorted({Month.of(record.started_at) for record in records})


async def _chunks(bodies: list[memoryview]) -> AsyncIterator[memoryview]:
    """Feeds several batches' rows to one COPY (one round trip instead of one each)."""
    for body in bodies:
        yield body


class SpoolReplay(NamedTuple):
    """What :func:`replay_spool` did: rows inserted, rows already present, spooled bytes
    left uncommitted (0: all in), and the last insert error (None: none)."""

    committed: int
    duplicate: int
    left: int
    error: str | None


async def replay_spool(
    pool: asyncpg.Pool, config: CdrConfig, spool_dir: Path, *, instance: str | None = None
) -> SpoolReplay:
    """Replays one spool directory into the database as a gateway does on start (the
    same writer, the same idempotent insert) and closes it again, waiting up to
    ``config.shutdown_timeout`` for the database.

    Args:
        pool: asyncpg pool on the gateway database.
        config: the ``[cdr]`` config.
        spool_dir: the spool to replay.
        instance: the instance that wrote it, whose in-progress records left behind
            are then closed (``gateway-restart``, at its last heartbeat) as when that
            instance starts again. None: none closed (``voipgw cdr replay-spool``).

    Raises:
        SpoolError: another process holds the spool.
        OSError: the directory is unusable.
    """
    writer = CdrWriter(pool, config, spool_dir=spool_dir, instance=instance)
    async with writer:
        # What is not committed by then stays in the spool (``left``).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(config.shutdown_timeout):
                await writer.caught_up()
    return SpoolReplay(
        writer.rows_committed, writer.rows_duplicate, writer.spool_bytes(), writer.last_error
    )
