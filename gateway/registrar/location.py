"""The location service: bindings and credentials from PostgreSQL, or from memory while
it is away.

Theory of operation
-------------------

PostgreSQL is the truth every instance shares (:mod:`.store`). Each instance keeps, in
a :class:`BindingCache`, what it has read or written there: the current bindings of
every AoR it looked up or registered, and the H(A1) values of users it authenticated.

*Database up.* Every lookup, credential read and REGISTER goes to the database, and
the answer replaces what memory held for that AoR or user; :meth:`LocationService.
refresh` re-reads every remembered AoR in one query now and then, so bindings another
instance changed reach memory even for AoRs nobody called lately.

*Database away* (an error that says the server is unreachable, not a query the server
refused, or no answer within :data:`DB_TIMEOUT`). Answers come from memory:

* a lookup returns the remembered bindings that have not expired (expiry is honoured
  with the local clock); an AoR with no such binding is one the gateway cannot decide
  about (another instance may have taken its registration), and the caller is told
  :class:`LocationUnavailable`, never "not registered";
* a REGISTER is authenticated with the remembered H(A1), planned by the same
  :func:`~gateway.registrar.bindings.plan_update` against the remembered bindings,
  applied in memory and queued; an unknown user is :class:`LocationUnavailable`.

For :data:`RETRY_INTERVAL` after a failure nothing waits on the database at all.

*Write-through.* :meth:`LocationService.write_through` replays the queued REGISTERs in
order through :meth:`BindingStore.apply` (so the per-AoR advisory lock and the
Call-ID/CSeq rules of RFC 3261 10.3 apply against what other instances wrote), each
with its expiries shortened by the time it waited, so a binding expires when the phone
was told. Until an AoR's queue is empty, memory answers for it: the database does not
hold those registrations yet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Final, TypeVar

import asyncpg

from gateway.registrar.bindings import (
    Binding,
    ContactUpdate,
    RegisterError,
    RegisterUpdate,
    plan_update,
)
from gateway.registrar.digest import Algorithm
from gateway.registrar.store import BindingStore
from gateway.sip.events import Endpoint

log = logging.getLogger("voipgw.registrar")

#: Seconds one database operation may take before memory answers instead.
DB_TIMEOUT: Final = 1.0
#: Seconds after a failure during which nothing waits on the database.
RETRY_INTERVAL: Final = 1.0
#: Seconds between write-through attempts and between refreshes of remembered AoRs.
SYNC_INTERVAL: Final = 1.0
REFRESH_INTERVAL: Final = 30.0

#: Errors that mean "the database is unreachable": memory answers. A query the server
#: refuses (a missing table, a constraint) is not an outage and still fails the request.
DB_AWAY_ERRORS: Final = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutdown, starting up, crashed
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections
    # A pooled connection whose server died mid-operation can be left in a protocol
    # state asyncpg refuses to leave ("cannot switch to state 12; another operation
    # is in progress"): seen under load when the postmaster was SIGKILLed.
    asyncpg.exceptions.InternalClientError,
)

_T = TypeVar("_T")
_Credential = tuple[str, str, Algorithm]


class LocationUnavailable(Exception):
    """The database is away and memory holds nothing current about this AoR or user:
    the gateway cannot decide (answered 503 with Retry-After, RFC 3261 21.5.4)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingRegister:
    """A REGISTER accepted into memory while the database was away.

    Attributes:
        update: the parsed REGISTER.
        received: where it came from.
        accepted_at: when it was accepted, wall-clock seconds.
    """

    update: RegisterUpdate
    received: Endpoint
    accepted_at: float


def _at(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


def _order(binding: Binding) -> tuple[float, dt.datetime, int]:
    # The store's ORDER BY: COALESCE(q, 1.0) DESC, registered_at DESC, id DESC.
    return (binding.q if binding.q is not None else 1.0, binding.registered_at, binding.id)


def aged(update: RegisterUpdate, waited: float) -> RegisterUpdate:
    """The update as it should be written ``waited`` seconds late: each contact's expiry
    shortened by that, and 0 (removal) for one that ran out meanwhile."""
    spent = math.floor(waited)
    return replace(
        update,
        contacts=tuple(
            replace(c, expires=max(0, c.expires - spent) if c.expires else 0)
            for c in update.contacts
        ),
    )


class BindingCache:
    """One instance's memory of bindings and credentials (pure: ``now`` is an argument,
    wall-clock seconds).

    Only AoRs with unexpired bindings are kept: memory never claims a user is *not*
    registered, because during an outage another instance may have registered her.
    """

    def __init__(self) -> None:
        self._bindings: dict[str, tuple[Binding, ...]] = {}
        self._pending: dict[str, list[PendingRegister]] = {}
        self._ha1: dict[_Credential, str] = {}
        # Negative, so they never collide with the database's row ids.
        self._ids = itertools.count(-1, -1)

    # ------------------------------------------------------------------ bindings

    def remember(self, aor: str, bindings: list[Binding], now: float) -> None:
        """Replaces what memory holds for ``aor`` with the database's answer."""
        current = tuple(b for b in bindings if b.expires_at > _at(now))
        if current:
            self._bindings[aor] = current
        else:
            self._bindings.pop(aor, None)

    def current(self, aor: str, now: float) -> list[Binding] | None:
        """The remembered unexpired bindings of ``aor``, best first, with ``expires``
        counted from ``now``; None when memory holds none."""
        moment = _at(now)
        alive = [
            replace(b, expires=math.ceil((b.expires_at - moment).total_seconds()))
            for b in self._bindings.get(aor, ())
            if b.expires_at > moment
        ]
        return sorted(alive, key=_order, reverse=True) or None

    def remembered_aors(self) -> list[str]:
        """The AoRs memory holds bindings of."""
        return list(self._bindings)

    def forget_expired(self, now: float) -> int:
        """Drops AoRs whose bindings have all expired; returns how many went."""
        gone = [aor for aor in self._bindings if self.current(aor, now) is None]
        for aor in gone:
            del self._bindings[aor]
        return len(gone)

    def apply(
        self,
        update: RegisterUpdate,
        received: Endpoint,
        now: float,
        flow_owner: str | None = None,
    ) -> list[Binding]:
        """Applies a REGISTER in memory (RFC 3261 10.3 step 7, as the store does) and
        queues it for write-through.

        Returns:
            The AoR's bindings after it.

        Raises:
            RegisterError: out-of-order Call-ID/CSeq (nothing is changed).
        """
        current = self.current(update.aor, now) or []
        plan = plan_update(current, update)
        moment = _at(now)
        deleted = set(plan.delete)
        updates = dict(plan.update)
        result = [
            _refreshed(b, updates[b.id], update, received, moment, flow_owner)
            if b.id in updates
            else b
            for b in current
            if b.id not in deleted
        ]
        result += [
            _refreshed(
                Binding(
                    id=next(self._ids),
                    aor=update.aor,
                    contact=c.uri,
                    call_id=update.call_id,
                    cseq=update.cseq,
                    received=received,
                    registered_at=moment,
                    expires_at=moment,
                    expires=0,
                ),
                c,
                update,
                received,
                moment,
                flow_owner,
            )
            for c in plan.insert
        ]
        self.remember(update.aor, result, now)
        self._pending.setdefault(update.aor, []).append(
            PendingRegister(update=update, received=received, accepted_at=now)
        )
        return self.current(update.aor, now) or []

    # ------------------------------------------------------------------ write-through

    def has_pending(self, aor: str) -> bool:
        """Whether REGISTERs of ``aor`` accepted into memory still wait to be written."""
        return bool(self._pending.get(aor))

    def pending_aors(self) -> list[str]:
        """AoRs with REGISTERs waiting to be written, oldest first."""
        return [aor for aor, queue in self._pending.items() if queue]

    def next_pending(self, aor: str) -> PendingRegister | None:
        """The oldest REGISTER of ``aor`` still to be written."""
        queue = self._pending.get(aor)
        return queue[0] if queue else None

    def written(self, aor: str, pending: PendingRegister) -> None:
        """Removes ``pending`` from the queue once the database has it."""
        queue = self._pending.get(aor, [])
        if queue and queue[0] is pending:
            queue.pop(0)
        if not queue:
            self._pending.pop(aor, None)

    def pending_count(self) -> int:
        """REGISTERs waiting to be written, all AoRs."""
        return sum(len(queue) for queue in self._pending.values())

    # ------------------------------------------------------------------ credentials

    def remember_ha1(self, key: _Credential, ha1: str | None) -> None:
        """Keeps (or, for a user the database no longer has, drops) an H(A1)."""
        if ha1 is None:
            self._ha1.pop(key, None)
        else:
            self._ha1[key] = ha1

    def ha1(self, key: _Credential) -> str | None:
        """The remembered H(A1), or None."""
        return self._ha1.get(key)


def _refreshed(
    binding: Binding,
    contact: ContactUpdate,
    update: RegisterUpdate,
    received: Endpoint,
    moment: dt.datetime,
    flow_owner: str | None,
) -> Binding:
    # The columns BindingStore's UPDATE sets, with the expiry from the local clock.
    return dataclasses.replace(
        binding,
        contact=contact.uri,
        display_name=contact.display_name,
        params=contact.params_text,
        q=contact.q,
        instance_id=contact.instance_id,
        reg_id=contact.reg_id,
        call_id=update.call_id,
        cseq=update.cseq,
        received=received,
        user_agent=update.user_agent,
        expires_at=moment + dt.timedelta(seconds=contact.expires),
        expires=contact.expires,
        flow_owner=flow_owner,
        path=update.path,
    )


class LocationService:
    """Bindings and credentials through a :class:`BindingStore`, answered from memory
    while the database is away (see the module docstring).

    Args:
        store: the database store.
        clock: wall-clock seconds (binding expiry).
        monotonic: seconds for the retry interval.
        db_timeout: seconds one database operation may take.
        retry_interval: seconds after a failure during which memory answers alone.
        flow_owner: this instance's ``[cluster] sip_uri``, recorded on the bindings
            of REGISTERs accepted into memory (the store records it on the others).
    """

    def __init__(
        self,
        store: BindingStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        db_timeout: float = DB_TIMEOUT,
        retry_interval: float = RETRY_INTERVAL,
        flow_owner: str | None = None,
    ) -> None:
        self.store = store
        self.flow_owner = flow_owner
        self.clock = clock
        self.monotonic = monotonic
        self.db_timeout = db_timeout
        self.retry_interval = retry_interval
        self.cache = BindingCache()
        #: False from a failed database operation until one succeeds.
        self.database_available = True
        self._retry_at = -math.inf
        self._write_lock = asyncio.Lock()

    async def _db(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Runs one database operation under the time bound.

        Raises:
            LocationUnavailable: the database is away (now, or failed within the retry
                interval).
        """
        if self.monotonic() < self._retry_at:
            raise LocationUnavailable("database away")
        try:
            async with asyncio.timeout(self.db_timeout):
                result = await operation()
        except DB_AWAY_ERRORS as exc:
            self._retry_at = self.monotonic() + self.retry_interval
            if self.database_available:
                log.warning("registrar database away (%s): answering from memory", exc)
            self.database_available = False
            raise LocationUnavailable("database away") from exc
        if not self.database_available:
            log.warning("registrar database back")
        self.database_available = True
        return result

    async def lookup(self, aor: str) -> list[Binding]:
        """The current bindings of a canonical AoR, best first.

        Raises:
            LocationUnavailable: the database is away and memory holds no current
                binding of ``aor``.
        """
        if not self.cache.has_pending(aor):
            try:
                bindings = await self._db(lambda: self.store.lookup(aor))
            except LocationUnavailable:
                pass
            else:
                self.cache.remember(aor, bindings, self.clock())
                return bindings
        remembered = self.cache.current(aor, self.clock())
        if remembered is None:
            raise LocationUnavailable(f"no memory of {aor}")
        return remembered

    async def get_ha1(self, username: str, realm: str, algorithm: Algorithm) -> str | None:
        """A user's H(A1) (None: no such user), remembered for an outage.

        Raises:
            LocationUnavailable: the database is away and memory holds no H(A1).
        """
        key = (username, realm, algorithm)
        try:
            ha1 = await self._db(lambda: self.store.get_ha1(username, realm, algorithm))
        except LocationUnavailable:
            remembered = self.cache.ha1(key)
            if remembered is None:
                raise
            return remembered
        self.cache.remember_ha1(key, ha1)
        return ha1

    async def apply(self, update: RegisterUpdate, received: Endpoint) -> list[Binding]:
        """Applies an authenticated REGISTER: in the database, or in memory (queued
        for write-through) while it is away.

        Returns:
            The AoR's bindings after it.

        Raises:
            RegisterError: out-of-order Call-ID/CSeq.
        """
        if self.cache.has_pending(update.aor):
            # Earlier REGISTERs of this AoR must reach the database first.
            await self._write_through(update.aor)
        if not self.cache.has_pending(update.aor):
            try:
                bindings = await self._db(lambda: self.store.apply(update, received))
            except LocationUnavailable:
                pass
            else:
                self.cache.remember(update.aor, bindings, self.clock())
                return bindings
        return self.cache.apply(update, received, self.clock(), self.flow_owner)

    async def write_through(self) -> int:
        """Writes the REGISTERs accepted into memory to the database, in order.

        Returns:
            How many were written (or dropped as out of order).
        """
        done = 0
        for aor in self.cache.pending_aors():
            done += await self._write_through(aor)
            if self.cache.has_pending(aor):
                break  # the database went away again
        return done

    async def _write_through(self, aor: str) -> int:
        done = 0
        async with self._write_lock:
            while (pending := self.cache.next_pending(aor)) is not None:
                update = aged(pending.update, self.clock() - pending.accepted_at)
                try:
                    bindings = await self._db(
                        functools.partial(self.store.apply, update, pending.received)
                    )
                except LocationUnavailable:
                    return done
                except RegisterError as exc:
                    # Another instance wrote a later REGISTER of this AoR meanwhile:
                    # RFC 3261 10.3 step 7 says the older one fails, as it would have.
                    log.info("REGISTER %s from the outage not written: %s", aor, exc)
                    bindings = None
                self.cache.written(aor, pending)
                if bindings is not None and not self.cache.has_pending(aor):
                    self.cache.remember(aor, bindings, self.clock())
                done += 1
        if done:
            log.info("REGISTER %s: %d accepted during the outage written through", aor, done)
        return done

    async def refresh(self) -> None:
        """Re-reads every remembered AoR (without pending writes) in one query."""
        aors = [a for a in self.cache.remembered_aors() if not self.cache.has_pending(a)]
        if not aors:
            return
        fresh = await self._db(lambda: self.store.lookup_many(aors))
        now = self.clock()
        for aor in aors:
            if not self.cache.has_pending(aor):
                self.cache.remember(aor, fresh.get(aor, []), now)

    async def sync_forever(
        self, interval: float = SYNC_INTERVAL, refresh_interval: float = REFRESH_INTERVAL
    ) -> None:
        """Writes through and refreshes memory until cancelled."""
        next_refresh = self.monotonic() + refresh_interval
        while True:
            try:
                if self.cache.pending_count():
                    await self.write_through()
                if self.monotonic() >= next_refresh:
                    next_refresh = self.monotonic() + refresh_interval
                    await self.refresh()
                self.cache.forget_expired(self.clock())
            except LocationUnavailable:
                pass  # the database is away: memory keeps answering; try next round
            await asyncio.sleep(interval)
