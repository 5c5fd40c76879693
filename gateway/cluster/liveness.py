"""Instances' heartbeats in PostgreSQL, and the closure of a dead instance's calls.

Each instance upserts its row of ``cluster_instances`` (migration 0601) every
``[cluster] heartbeat_interval``, stamped with the database's clock (``now()``), so
no two instances' clocks are ever compared. On the same tick it looks for instances
whose ``last_seen`` is older than ``[cluster] dead_after`` and not yet declared dead.

Exactly once, with several survivors racing: the claim is a conditional UPDATE::

    UPDATE cluster_instances SET declared_dead_at = now(), declared_dead_by = $me
    WHERE instance = $dead AND declared_dead_at IS NULL
      AND last_seen < now() - dead_after
    RETURNING ...

Two survivors running it at once: the second blocks on the row lock the first holds,
and once the first commits, PostgreSQL re-evaluates the WHERE clause on the new row
version (READ COMMITTED), finds ``declared_dead_at`` set and updates nothing. The
winner closes the dead instance's in-progress CDRs (``instance-dead``, ending at its
last heartbeat, :func:`cdr.writer.close_in_progress`) in the same transaction, so the
claim and the closure commit together or not at all; a survivor that dies in between
leaves the instance unclaimed for the next one. An instance that comes back clears
``declared_dead_at`` with its first heartbeat.

Bound: a dead instance's calls are closed within ``dead_after`` plus one
``heartbeat_interval`` (a survivor's tick) after its last heartbeat, plus the
transaction's own time, while any survivor reaches the database.

An instance running worker processes (``[server] workers``) is still one row: each
worker beats it, and it records every worker's CDR name and own SIP URI (migration
0730), so the claim closes all the workers' calls and a binding whose flow a worker
holds has its owner gone when the machine is. gateway/workers/plan.py says why a
worker that dies is not an instance that dies.

On the same tick each instance reads every row into a :class:`ClusterView` (how long
each instance has been silent, by the database's clock, and whether it was declared
dead), which the call path asks without awaiting anything: a call for a phone whose
flow another instance holds is not relayed to an instance known gone
(:meth:`ClusterView.gone`, gateway/registrar/routing.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from cdr.record import EndedBy
from cdr.writer import close_in_progress
from gateway.config import ClusterConfig
from gateway.edge.peers import uri_address

log = logging.getLogger("voipgw.cluster")

#: The database away, or (multi-host url) no host of it a primary yet.
DATABASE_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

# Every worker process of an instance beats its one row (gateway/workers/plan.py):
# the row collects each worker's CDR name and own URI (migration 0730).
_BEAT_SQL = """
INSERT INTO cluster_instances
    (instance, sip_uri, cdr_instance, started_at, last_seen, cdr_instances, worker_uris)
VALUES ($1, $2, $3, $4, now(), ARRAY[$3], $5::text[])
ON CONFLICT (instance) DO UPDATE SET
    sip_uri = EXCLUDED.sip_uri, cdr_instance = EXCLUDED.cdr_instance,
    started_at = EXCLUDED.started_at, last_seen = now(),
    declared_dead_at = NULL, declared_dead_by = NULL, calls_closed = NULL,
    cdr_instances = ARRAY(
        SELECT DISTINCT unnest(cluster_instances.cdr_instances || EXCLUDED.cdr_instances)),
    worker_uris = ARRAY(
        SELECT DISTINCT unnest(cluster_instances.worker_uris || EXCLUDED.worker_uris))
"""
_LIVE_SQL = """
SELECT count(*) FROM cluster_instances
WHERE declared_dead_at IS NULL AND last_seen >= now() - make_interval(secs => $1)
"""
_SUSPECTS_SQL = """
SELECT instance FROM cluster_instances
WHERE declared_dead_at IS NULL AND last_seen < now() - make_interval(secs => $1)
  AND instance <> $2
"""
_CLAIM_SQL = """
UPDATE cluster_instances SET declared_dead_at = now(), declared_dead_by = $3
WHERE instance = $1 AND declared_dead_at IS NULL
  AND last_seen < now() - make_interval(secs => $2)
RETURNING cdr_instance, cdr_instances, last_seen, declared_dead_at
"""
_VIEW_SQL = """
SELECT sip_uri, coalesce(worker_uris, '{}') AS worker_uris,
       extract(epoch FROM now() - last_seen)::float8 AS silent_for,
       declared_dead_at IS NOT NULL AS declared_dead
FROM cluster_instances
"""
_LEAVE_SQL = "DELETE FROM cluster_instances WHERE instance = $1 AND declared_dead_at IS NULL"
_CLOSED_SQL = "UPDATE cluster_instances SET calls_closed = $2 WHERE instance = $1"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadInstance:
    """An instance this one declared dead.

    Attributes:
        instance: its ``[cluster] instance`` name.
        last_seen: its last heartbeat (the database's clock).
        declared_at: when this instance declared it dead (the database's clock).
        calls_closed: its in-progress CDRs closed as ``instance-dead``.
    """

    instance: str
    last_seen: dt.datetime
    declared_at: dt.datetime
    calls_closed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSeen:
    """One row of ``cluster_instances`` as read.

    Attributes:
        sip_uri: the instance's ``[cluster] sip_uri``.
        silent_for: seconds since its last heartbeat when read (database clock).
        declared_dead: another instance has declared it dead.
        worker_uris: its worker processes' own URIs, the flow owners of the bindings
            they took (none when it runs as one process).
    """

    sip_uri: str
    silent_for: float
    declared_dead: bool
    worker_uris: tuple[str, ...] = ()

    def reached_at(self, host: str, port: int) -> bool:
        """Whether this instance, or one of its workers, is at ``host``:``port``."""
        for uri in (self.sip_uri, *self.worker_uris):
            address = uri_address("instance", uri)
            if address is not None and (address.host, address.port) == (host, port):
                return True
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterView:
    """The instances as this one last read them.

    Attributes:
        instances: every row of ``cluster_instances``.
        read_at: when they were read, monotonic seconds (this instance's clock: only
            the view's own age is measured with it, never another instance's time).
        dead_after: ``[cluster] dead_after``, seconds.
    """

    instances: tuple[InstanceSeen, ...]
    read_at: float
    dead_after: float

    def gone(self, sip_uri: str, now: float) -> bool:
        """Whether the instance at ``sip_uri`` is gone: every row with that address
        (an instance restarted under another name has two), as its own or one of its
        workers', was silent for more than ``dead_after``, or declared dead, when
        read. A worker is gone with its machine, not on its own: the supervisor
        starts it again at once (gateway/workers/plan.py).

        Never gone when this view is older than ``dead_after`` (this instance could
        not read the table: the other may have come back meanwhile) or has no row of
        that address (not heartbeating yet, or it stopped cleanly and removed its row:
        its port is then closed and a request to it fails at once anyway).

        Args:
            sip_uri: a binding's ``flow_owner``.
            now: monotonic seconds.
        """
        if now - self.read_at > self.dead_after:
            return False
        wanted = uri_address("owner", sip_uri)
        if wanted is None:
            return False
        rows = [seen for seen in self.instances if seen.reached_at(wanted.host, wanted.port)]
        return bool(rows) and all(
            seen.declared_dead or seen.silent_for > self.dead_after for seen in rows
        )


class Liveness:
    """This instance's heartbeat, and the watch over the others.

    Args:
        pool: the shared database.
        config: ``[cluster]``.
        cdr_instance: the name this instance's CDR rows carry.
        on_live: told the count of live instances after each tick (None: unknown).
        on_dead: told of each instance this one declared dead.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: ClusterConfig,
        *,
        cdr_instance: str,
        on_live: Callable[[int | None], None] | None = None,
        on_dead: Callable[[DeadInstance], None] | None = None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.cdr_instance = cdr_instance
        self.on_live = on_live
        self.on_dead = on_dead
        self.started_at = dt.datetime.now(dt.UTC)
        #: instances declared dead by this one, oldest first (status, tests)
        self.declared: list[DeadInstance] = []
        #: every instance as last read (None before the first read)
        self.view: ClusterView | None = None
        self.clock = time.monotonic

    async def beat(self) -> None:
        """Upserts this instance's heartbeat row.

        Raises:
            asyncpg.PostgresError, OSError, TimeoutError: the database failed.
        """
        c = self.config
        await self.pool.execute(
            _BEAT_SQL,
            c.instance,
            c.sip_uri,
            self.cdr_instance,
            self.started_at,
            [c.worker_uri] if c.worker_uri is not None else [],
            timeout=c.dead_after,
        )

    async def leave(self) -> None:
        """Removes this instance's row on a clean stop: it is gone, not dead, and the
        others have nothing to close (its calls ended as ``shutdown``). Of several
        workers draining, the first to finish removes it, a sibling still draining
        writes it again with its next beat, and the last one removes it for good.

        Raises:
            asyncpg.PostgresError, OSError, TimeoutError: the database failed (the
                others then declare it dead after ``dead_after``, and find nothing
                in progress).
        """
        await self.pool.execute(_LEAVE_SQL, self.config.instance, timeout=self.config.dead_after)

    async def live_instances(self) -> int:
        """Instances whose heartbeat is younger than ``dead_after``."""
        count = await self.pool.fetchval(_LIVE_SQL, self.config.dead_after)
        return int(count)

    async def read_view(self) -> ClusterView:
        """Reads every instance's row into :attr:`view`."""
        rows = await self.pool.fetch(_VIEW_SQL)
        self.view = ClusterView(
            instances=tuple(
                InstanceSeen(
                    sip_uri=row["sip_uri"],
                    silent_for=row["silent_for"],
                    declared_dead=row["declared_dead"],
                    worker_uris=tuple(row["worker_uris"]),
                )
                for row in rows
            ),
            read_at=self.clock(),
            dead_after=self.config.dead_after,
        )
        return self.view

    def owner_gone(self, sip_uri: str) -> bool:
        """Whether the heartbeats say the instance at ``sip_uri`` is gone
        (:meth:`ClusterView.gone`; never before the first read). No await: the call
        path asks it."""
        view = self.view
        return view is not None and view.gone(sip_uri, self.clock())

    async def reap(self) -> list[DeadInstance]:
        """Declares dead every instance silent for ``dead_after`` and closes its calls'
        records, each claim in its own transaction (see the module docstring).

        Returns:
            The instances this call declared dead (none when another survivor won).
        """
        c = self.config
        suspects = await self.pool.fetch(_SUSPECTS_SQL, c.dead_after, c.instance)
        found = []
        for suspect in suspects:
            name = suspect["instance"]
            async with self.pool.acquire() as con, con.transaction():
                claimed = await con.fetchrow(_CLAIM_SQL, name, c.dead_after, c.instance)
                if claimed is None:
                    continue  # another survivor won, or it came back
                closed = 0
                # Each worker's records (migration 0730); the one name of a row
                # written before workers.
                for cdr_instance in claimed["cdr_instances"] or [claimed["cdr_instance"]]:
                    closed += await close_in_progress(
                        con, cdr_instance, claimed["last_seen"], EndedBy.INSTANCE_DEAD
                    )
                await con.execute(_CLOSED_SQL, name, closed)
            dead = DeadInstance(
                instance=name,
                last_seen=claimed["last_seen"],
                declared_at=claimed["declared_dead_at"],
                calls_closed=closed,
            )
            log.warning(
                "instance %s is dead (last heartbeat %s, %.1f s before; dead_after %.1f s):"
                " closed %d call record(s) it left in progress as %s",
                name,
                dead.last_seen.isoformat(),
                (dead.declared_at - dead.last_seen).total_seconds(),
                c.dead_after,
                closed,
                EndedBy.INSTANCE_DEAD,
            )
            self.declared.append(dead)
            found.append(dead)
            if self.on_dead is not None:
                self.on_dead(dead)
        return found

    async def run_forever(self) -> None:
        """Beats, counts and reaps every ``heartbeat_interval``; a database that is
        away is logged once per outage and retried on the next tick."""
        failing = False
        while True:
            live: int | None = None
            try:
                async with asyncio.timeout(self.config.dead_after):
                    await self.beat()
                    await self.reap()
                    live = await self.live_instances()
                    await self.read_view()
            except DATABASE_ERRORS as exc:
                if not failing:
                    log.warning("cluster heartbeat failed (%s); retrying every tick", exc)
                failing = True
            else:
                if failing:
                    log.warning("cluster heartbeat written again")
                failing = False
            if self.on_live is not None:
                self.on_live(live)
            await asyncio.sleep(self.config.heartbeat_interval)
