"""Partition maintenance: create months ahead, retire months past retention.

Run :func:`maintain` periodically (the gateway does it hourly; ``voipgw db maintain``
does it once). It is safe from several instances at once: the work happens under a
session advisory lock taken with ``pg_try_advisory_lock``, and an instance that does not
get the lock skips the round, because the holder is doing the same idempotent work.

Why not pg_partman: it is an extension that must be installed into the server, which an
operator-run PostgreSQL may not allow and the embedded wheel does not ship; our needs
(monthly ranges, one parent, an aggregate before drop) are a page of code, and the
aggregate step has to sit between detach and drop, which pg_partman's retention does not
offer. If pg_partman is present it is simply not used.

Retiring one month (the privacy policy keeps call logs 15 months and anonymized data
without limit):

1. ``ALTER TABLE cdr DETACH PARTITION cdr_YYYY_MM CONCURRENTLY`` (outside a transaction;
   it takes only SHARE UPDATE EXCLUSIVE on the parent, so call inserts continue). A
   detach interrupted half-way is completed with ``... FINALIZE``.
2. One transaction: add the month's calls into ``cdr_monthly_aggregate`` and ``DROP TABLE``
   the detached table. A call relayed to its callee's flow owner counts once: the
   owner's row is left out (``cdr.record.CALL_RECORD_CONDITION``).

Detaching *before* the roll-up means no row can reach the table after it was counted
(a late CDR for that month then fails to find a partition and the writer re-creates
one, which a later round retires in turn). Rolling up and dropping in *one* transaction
makes the roll-up exactly-once: either both happened or neither did, so a crash at any
point leaves either the rows or their aggregate, never both and never neither. A
detached table left by a crash between the steps is found by name and finished.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import asyncpg

from cdr.partitions import (
    PARENT,
    Month,
    create_partition_sql,
    month_of_partition,
    months_to_create,
    months_to_retire,
)
from cdr.record import CALL_RECORD_CONDITION

_log = logging.getLogger(__name__)

#: Advisory lock key for maintenance, shared by all instances.
MAINTENANCE_LOCK_KEY = 0x766F6970_6777_0002

_ROLLUP_SQL = """
INSERT INTO cdr_monthly_aggregate AS a
    (month, customer, call_class, disposition, emergency,
     calls, total_seconds, billable_seconds)
SELECT $1::date, customer, call_class, disposition, emergency,
       count(*), sum(duration_seconds), sum(billable_seconds)
FROM {table}{calls_only}
GROUP BY customer, call_class, disposition, emergency
ON CONFLICT (month, customer, call_class, disposition, emergency) DO UPDATE SET
    calls = a.calls + EXCLUDED.calls,
    total_seconds = a.total_seconds + EXCLUDED.total_seconds,
    billable_seconds = a.billable_seconds + EXCLUDED.billable_seconds
"""

_HAS_FLOW_RELAY_SQL = (
    "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = $1::regclass "
    "AND attname = 'flow_relay' AND NOT attisdropped)"
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MaintenanceReport:
    """What one :func:`maintain` round did."""

    skipped: bool
    """True when another instance held the maintenance lock."""
    created: tuple[str, ...] = ()
    """Partitions created."""
    retired: tuple[tuple[str, int], ...] = ()
    """Partitions dropped, with the number of rows rolled up from each."""


async def existing_partitions(con: asyncpg.Connection) -> dict[str, bool]:
    """Returns the attached partitions of ``cdr``.

    Args:
        con: a connection.

    Returns:
        Partition name -> True if a concurrent detach of it is pending.
    """
    rows = await con.fetch(
        """
        SELECT c.relname, i.inhdetachpending
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = $1::regclass
        """,
        PARENT,
    )
    return {row["relname"]: row["inhdetachpending"] for row in rows}


async def detached_leftovers(con: asyncpg.Connection) -> list[str]:
    """Returns ``cdr_YYYY_MM`` tables that are not attached (a retirement interrupted).

    Args:
        con: a connection.

    Returns:
        Table names.
    """
    rows = await con.fetch(
        """
        SELECT c.relname FROM pg_class c
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind = 'r' AND NOT c.relispartition
          AND c.relname ~ '^cdr_[0-9]{4}_[0-9]{2}$'
        """
    )
    return [row["relname"] for row in rows]


async def ensure_partitions(con: asyncpg.Connection, months: list[Month]) -> list[str]:
    """Creates the partitions of ``months`` that do not exist yet.

    Args:
        con: a connection (not inside a failed transaction).
        months: months that need a partition.

    Returns:
        Names of the partitions this call created.
    """
    have = await existing_partitions(con)
    created = []
    for month in sorted(set(months)):
        if month.partition_name in have:
            continue
        await con.execute(create_partition_sql(month))
        created.append(month.partition_name)
    if created:
        _log.info("created CDR partitions %s", ", ".join(created))
    return created


async def retire_partition(con: asyncpg.Connection, name: str, *, pending: bool | None) -> int:
    """Detaches (if attached), rolls up and drops one partition.

    Args:
        con: a connection outside any transaction (DETACH CONCURRENTLY requires it).
        name: partition table name (``cdr_YYYY_MM``).
        pending: None if the table is already detached, else whether a concurrent
            detach is pending (then it is finalized rather than started).

    Returns:
        Number of CDR rows rolled up into the aggregate.

    Raises:
        ValueError: ``name`` is not a partition name.
        asyncpg.PostgresError: a step failed; the rows are still in the table (attached
            or detached) and the next round resumes.
    """
    month = month_of_partition(name)
    if month is None:
        raise ValueError(f"not a CDR partition name: {name!r}")
    if pending is not None:
        mode = "FINALIZE" if pending else "CONCURRENTLY"
        await con.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {name} {mode}")
    async with con.transaction():
        # ACCESS EXCLUSIVE also makes a second, unlocked caller wait rather than count
        # the same rows while we are between INSERT and DROP.
        await con.execute(f"LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE")
        rows: int = await con.fetchval(f"SELECT count(*) FROM {name}")
        # A month detached before migration 0740 has no flow_relay, nor any relayed
        # call's second row to leave out.
        marked = await con.fetchval(_HAS_FLOW_RELAY_SQL, name)
        calls_only = f" WHERE {CALL_RECORD_CONDITION}" if marked else ""
        await con.execute(_ROLLUP_SQL.format(table=name, calls_only=calls_only), month.start.date())
        await con.execute(f"DROP TABLE {name}")
    _log.info("retired CDR partition %s (%d rows rolled up)", name, rows)
    return rows


async def maintain(
    pool: asyncpg.Pool,
    now: dt.datetime,
    retention_months: int = 15,
    ahead: int = 3,
) -> MaintenanceReport:
    """Creates partitions ``ahead`` months ahead and retires those past retention.

    Args:
        pool: pool on the gateway database.
        now: the current time (timezone-aware); tests move it.
        retention_months: how long call records are kept (privacy policy: 15).
        ahead: months of partitions to keep ready beyond the current one.

    Returns:
        What was done (``skipped`` when another instance holds the lock).

    Raises:
        asyncpg.PostgresError, OSError: the database failed; rerunning is safe.
    """
    async with pool.acquire() as con:
        if not await con.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK_KEY):
            return MaintenanceReport(skipped=True)
        try:
            created = await ensure_partitions(con, months_to_create(now, ahead))
            attached = await existing_partitions(con)
            retired = []
            for name in await detached_leftovers(con):
                retired.append((name, await retire_partition(con, name, pending=None)))
            for month in months_to_retire(list(attached), now, retention_months):
                name = month.partition_name
                retired.append((name, await retire_partition(con, name, pending=attached[name])))
        finally:
            await con.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK_KEY)
    return MaintenanceReport(skipped=False, created=tuple(created), retired=tuple(retired))
