"""The RFC 6881 SP-35 emergency callback windows, shared by every instance.

RFC 6881 SP-35/40: "during the call and for 30 minutes after", a call from an
emergency centre to the caller's number reaches the device that made the emergency
call, bypassing the PBX's forwarding and do-not-disturb. The centre may call back
through any instance behind the SRV name, or through the same instance after a
restart, so the window lives in PostgreSQL (``emergency_callbacks``, migration 0600)
as well as in the memory of the instance that routed the emergency call.

Theory of operation:

* Rule 1, the emergency call never waits for the database. :meth:`opened` and
  :meth:`call_ended` change memory at once and queue the row; a task writes queued
  rows behind (:meth:`write_behind_forever`), coalescing by number and retrying with
  back-off while PostgreSQL is away. A window is therefore durable a moment after the
  routing decision, not before it.
* Rule 2, memory first. A centre's call is looked up in memory (no await); only a
  number this instance knows nothing of is read from PostgreSQL, bounded by
  :data:`LOOKUP_TIMEOUT`; a database that does not answer in time, or fails, makes the
  call an ordinary one (what it was before windows were shared), never a failed one.
  After a failure the database is not asked again for :data:`RETRY_LOOKUP_AFTER`, so a
  dead database costs each call at most nothing, and one call per interval the bound.
* Rule 3, restarts reload. :meth:`load` reads every unexpired window at start.
* Rule 4, a call up keeps its shared window open: every :data:`REFRESH_INTERVAL` the
  expiry of this instance's emergency calls still up is written as now plus the
  window, so an instance dying mid-call leaves a window at most that much short.
* Rule 5, worker processes share their windows on the machine too
  (:class:`SiblingWindows`): a centre's call reaches whichever worker the kernel
  gives its source, which reads a sibling's window from a local file before asking
  PostgreSQL.

Expiry is wall-clock time (Unix seconds) because it is shared: instances' clocks are
NTP-synchronised far better than the 30-minute window needs. While this instance's own
emergency call is up its window is open whatever the expiry says; the row's expiry is
the last refresh plus the window until the call ends, then its end plus the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg

from gateway.sip.events import Endpoint

log = logging.getLogger("voipgw.cluster.callbacks")

#: RFC 6881 SP-35/40: how long after an emergency call a call back from the centre
#: goes straight to the device that made it, in seconds.
CALLBACK_WINDOW = 30 * 60.0
#: Seconds a centre's call waits at most for the database's answer (Rule 2): well
#: below a centre's INVITE retransmission (T1, 0.5 s) so nobody notices.
LOOKUP_TIMEOUT = 0.3
#: Seconds after a failed read before the database is asked again (Rule 2).
RETRY_LOOKUP_AFTER = 1.0
#: Seconds between refreshes of the shared expiry of emergency calls still up.
REFRESH_INTERVAL = 60.0
#: Back-off of the write-behind task while PostgreSQL is away, in seconds.
WRITE_RETRY_INITIAL = 0.2
WRITE_RETRY_MAX = 5.0

#: The directory of :class:`SiblingWindows` in ``[gateway] state_dir``.
WINDOWS_DIR = "callback-windows"

#: The database away, or (multi-host url) no host of it a primary yet.
_DB_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

_UPSERT_SQL = """
INSERT INTO emergency_callbacks
    (callback_number, aor, contact, transport, host, port, centre, instance, call_id,
     updated_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), $10)
ON CONFLICT (callback_number) DO UPDATE SET
    aor = EXCLUDED.aor, contact = EXCLUDED.contact, transport = EXCLUDED.transport,
    host = EXCLUDED.host, port = EXCLUDED.port, centre = EXCLUDED.centre,
    instance = EXCLUDED.instance, call_id = EXCLUDED.call_id, updated_at = now(),
    expires_at = EXCLUDED.expires_at
-- The latest window wins: a retried older write never shortens a newer one.
WHERE emergency_callbacks.expires_at <= EXCLUDED.expires_at
"""
_COLUMNS = "callback_number, aor, contact, transport, host, port, centre, instance, call_id"
_FIND_SQL = (
    f"SELECT {_COLUMNS}, expires_at FROM emergency_callbacks "
    "WHERE callback_number = $1 AND expires_at > now()"
)
_OPEN_SQL = f"SELECT {_COLUMNS}, expires_at FROM emergency_callbacks WHERE expires_at > now()"
_PURGE_SQL = "DELETE FROM emergency_callbacks WHERE expires_at < now() - interval '1 day'"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackWindow:
    """Where a centre's call back to an emergency caller goes (RFC 6881 SP-35/40).

    Attributes:
        number: the callback number, E.164 digits only (the key).
        aor: the caller's address of record (From URI), for the log.
        contact: the device's Contact URI: the Request-URI of the call back.
        endpoint: the transport address the emergency call came from.
        centre: the centre that answered the emergency call, once known.
        instance: the gateway instance that routed the emergency call.
        call_id: the emergency call's Call-ID, for the log.
        expires_at: when the window closes, Unix seconds.
        in_call: this instance's emergency call is still up (memory only): open
            whatever ``expires_at`` says.
    """

    number: str
    aor: str | None
    contact: str
    endpoint: Endpoint
    centre: str | None
    instance: str
    call_id: str | None
    expires_at: float
    in_call: bool = False

    def is_open(self, now: float) -> bool:
        return self.in_call or now < self.expires_at

    def row(self) -> tuple[object, ...]:
        """The row of ``emergency_callbacks``, in :data:`_UPSERT_SQL`'s order."""
        return (
            self.number,
            self.aor,
            self.contact,
            self.endpoint.transport,
            self.endpoint.host,
            self.endpoint.port,
            self.centre,
            self.instance,
            self.call_id,
            dt.datetime.fromtimestamp(self.expires_at, dt.UTC),
        )

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> CallbackWindow:
        return cls(
            number=row["callback_number"],
            aor=row["aor"],
            contact=row["contact"],
            endpoint=Endpoint(row["transport"], row["host"], row["port"]),
            centre=row["centre"],
            instance=row["instance"],
            call_id=row["call_id"],
            expires_at=row["expires_at"].timestamp(),
        )


class SiblingWindows:
    """The windows of one machine's worker processes, for each other (Rule 5).

    One file per callback number in a directory the workers share (in ``[gateway]
    state_dir``), written (a temporary file renamed over it) whenever a worker
    remembers a window, read by a worker whose memory has none of a centre's call:
    a centre's call back reaches whichever worker the kernel gives its source, and
    that worker must honour the window without PostgreSQL too. Written as the shared
    table has it: its expiry, never "in call" (a worker that dies mid-call must not
    leave a window open for ever); the worker whose call is up refreshes the expiry.

    Args:
        directory: the shared directory (created if missing).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, entry: CallbackWindow) -> None:
        """Writes ``entry`` for the siblings (no fsync: they share this machine's
        page cache, and a window a power cut loses is PostgreSQL's to keep)."""
        document = {
            "number": entry.number,
            "aor": entry.aor,
            "contact": entry.contact,
            "endpoint": [entry.endpoint.transport, entry.endpoint.host, entry.endpoint.port],
            "centre": entry.centre,
            "instance": entry.instance,
            "call_id": entry.call_id,
            "expires_at": entry.expires_at,
        }
        path = self.directory / entry.number
        temporary = path.with_name(f".{entry.number}.{os.getpid()}")
        try:
            temporary.write_text(json.dumps(document), encoding="utf-8")
            os.replace(temporary, path)
        except OSError as exc:
            log.warning("callback window of %s not shared with the workers: %s", entry.number, exc)

    def read(self, number: str) -> CallbackWindow | None:
        """The window a sibling wrote for ``number``, or None (none, or unreadable)."""
        try:
            document = json.loads((self.directory / number).read_text(encoding="utf-8"))
            transport, host, port = document["endpoint"]
            return CallbackWindow(
                number=document["number"],
                aor=document["aor"],
                contact=document["contact"],
                endpoint=Endpoint(transport, host, int(port)),
                centre=document["centre"],
                instance=document["instance"],
                call_id=document["call_id"],
                expires_at=float(document["expires_at"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("callback window of %s unreadable: %s", number, exc)
            return None

    def purge(self, now: float) -> None:
        """Removes the windows closed before ``now`` (Unix seconds)."""
        for path in self.directory.iterdir():
            entry = self.read(path.name) if not path.name.startswith(".") else None
            if entry is None or not entry.is_open(now):
                with contextlib.suppress(OSError):
                    path.unlink()


class EmergencyCallbacks:
    """The callback windows: this instance's memory, written behind to PostgreSQL.

    Args:
        pool: the gateway database, or None (memory only: tests, tools).
        instance: this instance's name (the rows it writes carry it).
        window: the window after the emergency call ends, in seconds.
        clock: wall-clock time, Unix seconds.
        refresh_interval: seconds between refreshes of the shared expiry of
            emergency calls still up (:data:`REFRESH_INTERVAL`).
        siblings: the windows shared with this machine's other worker processes
            (Rule 5); None: one process.
    """

    def __init__(
        self,
        pool: asyncpg.Pool | None = None,
        *,
        instance: str = "",
        window: float = CALLBACK_WINDOW,
        clock: Callable[[], float] = time.time,
        refresh_interval: float = REFRESH_INTERVAL,
        siblings: SiblingWindows | None = None,
    ) -> None:
        self.siblings = siblings
        self.pool = pool
        self.refresh_interval = refresh_interval
        self.instance = instance
        self.window = window
        self.clock = clock
        self._memory: dict[str, CallbackWindow] = {}
        self._unwritten: dict[str, CallbackWindow] = {}
        self._queued = asyncio.Event()
        self._skip_reads_until = 0.0
        self._idle = asyncio.Event()
        self._idle.set()
        #: rows written to PostgreSQL / write attempts that failed (for tests, status)
        self.written = 0
        self.write_failures = 0

    # -- the call path (no awaits on the database) -------------------------------

    def opened(
        self,
        number: str,
        *,
        contact: str,
        endpoint: Endpoint,
        aor: str | None = None,
        call_id: str | None = None,
    ) -> None:
        """An emergency call from ``number``'s device was routed: its window opens.

        Args:
            number: the callback number, E.164 digits.
            contact: the device's Contact URI.
            endpoint: where the emergency call came from.
            aor: the caller's From URI.
            call_id: the emergency call's Call-ID.
        """
        self._remember(
            CallbackWindow(
                number=number,
                aor=aor,
                contact=contact,
                endpoint=endpoint,
                centre=None,
                instance=self.instance,
                call_id=call_id,
                expires_at=self.clock() + self.window,
                in_call=True,
            )
        )

    def call_ended(self, number: str, *, centre: str | None = None) -> None:
        """The emergency call from ``number`` ended: its window runs for ``window``
        seconds from now.

        Args:
            number: the callback number, E.164 digits.
            centre: the centre that answered, if one did.
        """
        entry = self._memory.get(number)
        if entry is None:
            return
        self._remember(
            replace(
                entry,
                in_call=False,
                centre=centre or entry.centre,
                expires_at=self.clock() + self.window,
            )
        )

    def local(self, number: str) -> CallbackWindow | None:
        """The open window of ``number`` this instance remembers (Rule 2), else None."""
        entry = self._memory.get(number)
        if entry is None:
            return None
        if not entry.is_open(self.clock()):
            del self._memory[number]
            return None
        return entry

    def __len__(self) -> int:
        return len(self._memory)

    def _remember(self, entry: CallbackWindow) -> None:
        # Emergency calls are rare: forgetting the closed windows here, on each new
        # one, keeps memory bounded by the calls of the last window at O(n) apiece.
        now = self.clock()
        for number in [n for n, e in self._memory.items() if not e.is_open(now)]:
            del self._memory[number]
        self._memory[entry.number] = entry
        if self.siblings is not None:
            self.siblings.write(entry)
        if self.pool is not None:
            self._unwritten[entry.number] = entry
            self._idle.clear()
            self._queued.set()

    # -- the database ------------------------------------------------------------

    async def find(self, number: str) -> CallbackWindow | None:
        """The open window of ``number``: memory first, then PostgreSQL within
        :data:`LOOKUP_TIMEOUT` (Rule 2). Never raises for the database.

        Args:
            number: the called number, E.164 digits.

        Returns:
            The window, or None (none open, or the database could not tell in time).
        """
        entry = self.local(number)
        if entry is None and self.siblings is not None:
            entry = self.siblings.read(number)
            if entry is not None and entry.is_open(self.clock()):
                self._memory.setdefault(number, entry)
                return entry
            entry = None
        if entry is not None or self.pool is None:
            return entry
        now = self.clock()
        if now < self._skip_reads_until:
            return None
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT):
                row = await self.pool.fetchrow(_FIND_SQL, number)
        except _DB_ERRORS as exc:
            self._skip_reads_until = now + RETRY_LOOKUP_AFTER
            log.warning(
                "callback window of %s not readable from the database (%s): ordinary call",
                number,
                type(exc).__name__ if isinstance(exc, TimeoutError) else exc,
            )
            return None
        if row is None:
            return None
        entry = CallbackWindow.from_row(row)
        # Remembered without writing it back (it is the database's already).
        self._memory.setdefault(number, entry)
        return entry

    async def load(self) -> int:
        """Reads every open window into memory (Rule 3); a database that is away is
        logged and skipped (windows then come one by one through :meth:`find`).

        Returns:
            Windows loaded.
        """
        if self.siblings is not None:
            await asyncio.to_thread(self.siblings.purge, self.clock())
        if self.pool is None:
            return 0
        try:
            async with asyncio.timeout(5.0):
                rows = await self.pool.fetch(_OPEN_SQL)
                await self.pool.execute(_PURGE_SQL)
        except _DB_ERRORS as exc:
            log.warning("emergency callback windows not loaded (%s): read on demand", exc)
            return 0
        for row in rows:
            entry = CallbackWindow.from_row(row)
            self._memory.setdefault(entry.number, entry)
        if rows:
            log.info("loaded %d open emergency callback window(s)", len(rows))
        return len(rows)

    async def write_behind_forever(self) -> None:
        """Writes queued windows to PostgreSQL, retrying with back-off (Rule 1)."""
        backoff = WRITE_RETRY_INITIAL
        while True:
            try:
                async with asyncio.timeout(self.refresh_interval):
                    await self._queued.wait()
            except TimeoutError:
                self._refresh_calls_up()
                continue
            self._queued.clear()
            batch = self._unwritten
            self._unwritten = {}
            try:
                await self._write(list(batch.values()))
            except asyncio.CancelledError:
                self._requeue(batch)
                raise
            except _DB_ERRORS as exc:
                self.write_failures += 1
                self._requeue(batch)
                log.warning(
                    "%d emergency callback window(s) not written (%s); retrying in %.1f s",
                    len(batch),
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, WRITE_RETRY_MAX)
                continue
            self.written += len(batch)
            if not self._unwritten:
                self._idle.set()
            backoff = WRITE_RETRY_INITIAL

    def _refresh_calls_up(self) -> None:
        """Moves the shared expiry of this instance's emergency calls still up to now
        plus the window: should the instance die mid-call, the window others honour
        ends at most ``refresh_interval`` short of the call's end plus the window."""
        now = self.clock()
        for entry in list(self._memory.values()):
            if entry.in_call and entry.instance == self.instance:
                self._remember(replace(entry, expires_at=now + self.window))

    async def written_behind(self) -> None:
        """Returns once every window queued so far is in PostgreSQL (shutdown, tests:
        bound it with ``asyncio.timeout``)."""
        await self._idle.wait()

    def _requeue(self, batch: dict[str, CallbackWindow]) -> None:
        for number, entry in batch.items():
            # A newer version queued meanwhile wins.
            self._unwritten.setdefault(number, entry)
        self._queued.set()

    async def _write(self, entries: list[CallbackWindow]) -> None:
        assert self.pool is not None
        async with asyncio.timeout(10.0):
            await self.pool.executemany(_UPSERT_SQL, [entry.row() for entry in entries])
