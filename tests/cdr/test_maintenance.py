"""Partition maintenance against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import asyncpg
import pytest

from cdr.maintenance import existing_partitions, maintain
from cdr.partitions import Month, create_partition_sql
from routing.decision import FlowRelay
from tests.cdr.factory import make_record

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio]

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 22, 12, tzinfo=UTC)


async def insert(con: asyncpg.Connection, records: list) -> None:
    from cdr.record import COLUMNS

    await con.copy_records_to_table("cdr", records=[r.as_row() for r in records], columns=COLUMNS)


async def test_creates_current_and_three_months_ahead(pg_pool: asyncpg.Pool) -> None:
    report = await maintain(pg_pool, NOW)
    assert report.created == ("cdr_2026_11", "cdr_2026_12", "cdr_2027_01", "cdr_2027_02")
    again = await maintain(pg_pool, NOW)
    assert again.created == ()
    async with pg_pool.acquire() as con:
        assert sorted(await existing_partitions(con)) == list(report.created)
        # No default partition: a row outside every range must fail, not vanish.
        with pytest.raises(asyncpg.CheckViolationError, match="no partition of relation"):
            await insert(con, [make_record(started_at=dt.datetime(2030, 1, 1, tzinfo=UTC))])


async def test_clock_16_months_later_rolls_up_then_drops(pg_pool: asyncpg.Pool) -> None:
    await maintain(pg_pool, NOW)
    records = [make_record(started_at=NOW + dt.timedelta(minutes=i)) for i in range(7)]
    records += [make_record(started_at=NOW, answered=False) for _ in range(3)]
    records += [make_record(started_at=NOW, customer="globex", emergency=True)]
    async with pg_pool.acquire() as con:
        await insert(con, records)

    later = NOW + dt.timedelta(days=16 * 31)  # 2028-03
    report = await maintain(pg_pool, later)
    retired = dict(report.retired)
    assert retired["cdr_2026_11"] == 11
    async with pg_pool.acquire() as con:
        assert await con.fetchval("SELECT to_regclass('cdr_2026_11')") is None
        rows = await con.fetch(
            "SELECT customer, disposition::text, emergency, calls, billable_seconds "
            "FROM cdr_monthly_aggregate WHERE month = '2026-11-01' ORDER BY 1, 2"
        )
        assert [tuple(r) for r in rows] == [
            ("acme", "answered", False, 7, 7 * 62),
            ("acme", "busy", False, 3, 0),
            ("globex", "answered", True, 1, 62),
        ]
        # Months still inside the 15-month window are kept.
        kept = await existing_partitions(con)
        assert "cdr_2027_01" in kept
        assert "cdr_2026_12" not in kept  # ends 2027-01-01, before the cutoff 2027-01-01 12:00
    # Idempotent: running again neither double-counts nor fails.
    await maintain(pg_pool, later)
    async with pg_pool.acquire() as con:
        assert await con.fetchval("SELECT sum(calls) FROM cdr_monthly_aggregate") == 11


async def test_partition_survives_until_its_aggregate_is_written(pg_pool: asyncpg.Pool) -> None:
    await maintain(pg_pool, NOW)
    async with pg_pool.acquire() as con:
        await insert(con, [make_record(started_at=NOW) for _ in range(5)])
        # Make the roll-up fail: the partition (detached by then) must keep its rows.
        await con.execute(
            """
            CREATE FUNCTION fail_agg() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'aggregate unavailable'; END $$;
            CREATE TRIGGER fail_agg BEFORE INSERT ON cdr_monthly_aggregate
                FOR EACH ROW EXECUTE FUNCTION fail_agg();
            """
        )
    later = NOW + dt.timedelta(days=16 * 31)
    with pytest.raises(asyncpg.RaiseError, match="aggregate unavailable"):
        await maintain(pg_pool, later)
    async with pg_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM cdr_2026_11") == 5
        assert await con.fetchval("SELECT count(*) FROM cdr_monthly_aggregate") == 0
        await con.execute("DROP TRIGGER fail_agg ON cdr_monthly_aggregate")
    report = await maintain(pg_pool, later)  # resumes with the detached leftover
    assert ("cdr_2026_11", 5) in report.retired
    async with pg_pool.acquire() as con:
        assert await con.fetchval("SELECT to_regclass('cdr_2026_11')") is None
        assert await con.fetchval("SELECT sum(calls) FROM cdr_monthly_aggregate") == 5


async def test_pending_detach_is_finalized(pg_pool: asyncpg.Pool) -> None:
    month = Month(year=2025, month=1)
    async with pg_pool.acquire() as con:
        await con.execute(create_partition_sql(month))
        await insert(con, [make_record(started_at=month.start)])
        # Simulate a DETACH CONCURRENTLY interrupted after its first transaction.
        await con.execute(
            "UPDATE pg_inherits SET inhdetachpending = true "
            "WHERE inhrelid = 'cdr_2025_01'::regclass"
        )
        assert (await existing_partitions(con))["cdr_2025_01"] is True
    report = await maintain(pg_pool, NOW)
    assert ("cdr_2025_01", 1) in report.retired


async def test_two_instances_maintain_at_once(pg_pool: asyncpg.Pool) -> None:
    await maintain(pg_pool, NOW)
    async with pg_pool.acquire() as con:
        await insert(con, [make_record(started_at=NOW) for _ in range(4)])
    later = NOW + dt.timedelta(days=16 * 31)
    reports = await asyncio.gather(*(maintain(pg_pool, later) for _ in range(4)))
    assert sum(dict(r.retired).get("cdr_2026_11", 0) for r in reports) == 4
    async with pg_pool.acquire() as con:
        assert await con.fetchval("SELECT sum(calls) FROM cdr_monthly_aggregate") == 4


async def test_a_relayed_call_is_rolled_up_once(pg_pool: asyncpg.Pool) -> None:
    # One call relayed to the flow owner has two rows; the owner's is not counted.
    await maintain(pg_pool, NOW)
    placed = dataclasses.replace(make_record(started_at=NOW), flow_relay=FlowRelay.TO_OWNER)
    delivered = dataclasses.replace(make_record(started_at=NOW), flow_relay=FlowRelay.FROM_SIBLING)
    async with pg_pool.acquire() as con:
        await insert(con, [placed, delivered, make_record(started_at=NOW)])
    report = await maintain(pg_pool, NOW + dt.timedelta(days=16 * 31))
    assert ("cdr_2026_11", 3) in report.retired  # rows rolled up, both legs included
    async with pg_pool.acquire() as con:
        assert await con.fetchval("SELECT sum(calls) FROM cdr_monthly_aggregate") == 2
        assert await con.fetchval("SELECT sum(billable_seconds) FROM cdr_monthly_aggregate") == (
            2 * 62
        )
