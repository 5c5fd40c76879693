"""A record for every answered call, whatever happens (issue 19): in-progress records,
their completion under the same key, interim updates, and the closure after a crash.

Against a real PostgreSQL; the crash itself is end to end in
``tests/interop/test_gateway_crash.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
from pathlib import Path

import asyncpg
import pytest

from cdr.config import CdrConfig
from cdr.export import in_progress, itemize
from cdr.heartbeat import Heartbeat
from cdr.partitions import Month
from cdr.record import CallDetailRecord, EndedBy, HangupSide, encode_csv_batch
from cdr.spool import Spool
from cdr.writer import CdrWriter
from tests.cdr.factory import make_record

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio]

UTC = dt.UTC
FAST = CdrConfig(batch_age=0.005, retry_initial=0.05, retry_max=0.5, shutdown_timeout=30.0)
SLOW_CUT = dataclasses.replace(FAST, batch_age=0.5)
"""A batch interval long enough for a test to end a call inside it."""

END = make_record(duration=61.5)
assert END.answered_at is not None
ANSWER: dt.datetime = END.answered_at


def up_until(record: CallDetailRecord, seconds: float) -> CallDetailRecord:
    """The in-progress record of ``record``'s call, ``seconds`` after the answer."""
    assert record.answered_at is not None
    return dataclasses.replace(
        record, ended_at=record.answered_at, ended_by=None, hangup_side=HangupSide.GATEWAY
    ).extended_to(record.answered_at + dt.timedelta(seconds=seconds), None)


IP = up_until(END, 0)
IP2 = up_until(END, 30)
RESTART = IP2.extended_to(ANSWER + dt.timedelta(seconds=31), EndedBy.GATEWAY_RESTART)


async def rows(pool: asyncpg.Pool) -> list[CallDetailRecord]:
    async with pool.acquire() as con:
        found = await con.fetch("SELECT * FROM cdr ORDER BY started_at")
    return [CallDetailRecord.from_row(row) for row in found]


async def replay_batches(
    pool: asyncpg.Pool, spool_dir: Path, batches: list[list[CallDetailRecord]]
) -> None:
    """Each batch is spooled as one frame and inserted in one transaction, in turn."""
    for batch in batches:
        spool = Spool(spool_dir)
        spool.open()
        spool.append([encode_csv_batch(batch)])
        spool.close()
        async with CdrWriter(pool, FAST, spool_dir=spool_dir) as writer:
            pass
        assert writer.spool_bytes() == 0


async def writer_tick() -> None:
    await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("batches", "expected"),
    [
        pytest.param([[IP], [END]], END, id="in-progress, then its end"),
        pytest.param([[IP, END]], END, id="both in one batch"),
        pytest.param([[END], [IP]], END, id="late replay of the in-progress record"),
        pytest.param([[IP], [IP2]], IP2, id="interim update"),
        pytest.param([[IP2], [IP]], IP2, id="older interim replayed late"),
        pytest.param([[IP, IP2, END]], END, id="three in one batch"),
        pytest.param([[IP], [RESTART]], RESTART, id="closed after a crash"),
        pytest.param([[IP], [RESTART], [END]], END, id="end replayed after the closure"),
        pytest.param([[IP], [END], [RESTART]], END, id="closure never undoes an end"),
        pytest.param([[END, END]], END, id="one record twice in a batch"),
    ],
)
async def test_one_row_holds_the_latest_truth(
    pg_pool: asyncpg.Pool,
    tmp_path: Path,
    batches: list[list[CallDetailRecord]],
    expected: CallDetailRecord,
) -> None:
    await replay_batches(pg_pool, tmp_path, batches)
    assert await rows(pg_pool) == [expected]


async def test_a_call_ended_within_the_batch_interval_is_one_row_written_once(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with CdrWriter(pg_pool, SLOW_CUT, spool_dir=tmp_path) as writer:
        writer.answered(IP)
        await writer.write(END)
    assert await rows(pg_pool) == [END]
    # The in-progress record never reached the spool: the short call cost one record.
    assert writer.records_spooled == 1


async def test_a_call_up_past_the_batch_is_visible_then_completed(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with CdrWriter(pg_pool, FAST, spool_dir=tmp_path) as writer:
        writer.answered(IP)
        for _ in range(200):
            if await rows(pg_pool):
                break
            await writer_tick()
        assert await rows(pg_pool) == [IP]
        month = Month.of(IP.started_at)
        async with pg_pool.acquire() as con:
            out = io.StringIO()
            # Not billed while in progress; counted as such.
            assert await itemize(con, IP.customer, month, out) == 0
            assert await in_progress(con, IP.customer, month) == 1
        await writer.write(END)
    assert await rows(pg_pool) == [END]
    assert writer.records_spooled == 2
    async with pg_pool.acquire() as con:
        out = io.StringIO()
        assert await itemize(con, END.customer, Month.of(END.started_at), out) == 1
        assert await in_progress(con, END.customer, Month.of(END.started_at)) == 0
    header, row = out.getvalue().splitlines()[:2]
    assert row.split(",")[header.split(",").index("ended_by")] == "caller"


async def test_interim_updates_run_the_duration_on(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    config = dataclasses.replace(FAST, interim_interval=300.0)
    async with CdrWriter(pg_pool, config, spool_dir=tmp_path) as writer:
        writer.answered(IP)
        assert writer.interim_updates(ANSWER + dt.timedelta(seconds=299)) == 0
        assert writer.interim_updates(ANSWER + dt.timedelta(seconds=300)) == 1
        # Updated once per interval, not at every tick.
        assert writer.interim_updates(ANSWER + dt.timedelta(seconds=301)) == 0
        assert writer.interim_updates(ANSWER + dt.timedelta(seconds=600)) == 1
    (row,) = await rows(pg_pool)
    assert row == up_until(END, 600)
    assert row.in_progress
    assert row.billable_seconds == 600
    assert row.duration_seconds == pytest.approx(604.0)


async def test_a_call_still_up_is_kept_as_its_builder_and_built_again_when_due(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # Issue 17: after the cut the writer holds how to build the call's record, not
    # the record; an interim update builds it again and runs it on.
    builds: list[CallDetailRecord] = []

    def build() -> CallDetailRecord:
        builds.append(dataclasses.replace(IP))
        return builds[-1]

    config = dataclasses.replace(FAST, interim_interval=300.0)
    async with CdrWriter(pg_pool, config, spool_dir=tmp_path) as writer:
        writer.answered(build, IP.call_uuid)
        for _ in range(200):
            if await rows(pg_pool):
                break
            await writer_tick()
        assert await rows(pg_pool) == [IP]
        assert len(builds) == 1
        assert writer.interim_updates(ANSWER + dt.timedelta(seconds=299)) == 0
        assert writer.interim_updates(ANSWER + dt.timedelta(seconds=300)) == 1
        assert writer.interim_updates(ANSWER + dt.timedelta(seconds=301)) == 0
        assert writer.interim_updates(ANSWER + dt.timedelta(seconds=600)) == 1
        for _ in range(200):
            if await rows(pg_pool) == [up_until(END, 600)]:
                break
            await writer_tick()
        assert await rows(pg_pool) == [up_until(END, 600)]
        assert len(builds) > 2  # built again from the builder, never kept
        await writer.write(END)
    assert await rows(pg_pool) == [END]


async def test_a_restart_closes_what_the_crashed_run_left_at_its_last_heartbeat(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    committed = up_until(make_record(), 10)  # its in-progress row reached PostgreSQL
    spooled = up_until(make_record(), 20)  # in the spool only, at the crash
    ended = make_record()  # ended before the crash, but its end was still spooled
    ended_ip = up_until(ended, 0)
    other = up_until(dataclasses.replace(make_record(), gateway_instance="gw-other"), 5)
    await replay_batches(pg_pool, spool_dir, [[committed, ended_ip, other]])
    spool = Spool(spool_dir)
    spool.open()
    spool.append([encode_csv_batch([spooled, ended])])
    spool.close()
    assert committed.answered_at is not None
    alive = committed.answered_at + dt.timedelta(seconds=45)
    Heartbeat(spool_dir).beat(alive.timestamp())

    async with CdrWriter(pg_pool, FAST, spool_dir=spool_dir, instance="gw-test") as writer:
        for _ in range(200):
            if writer.closed_left_behind:
                break
            await writer_tick()
    assert writer.closed_left_behind == 2
    by_uuid = {row.call_uuid: row for row in await rows(pg_pool)}
    assert len(by_uuid) == 4
    assert by_uuid[committed.call_uuid] == committed.extended_to(alive, EndedBy.GATEWAY_RESTART)
    assert by_uuid[spooled.call_uuid] == spooled.extended_to(alive, EndedBy.GATEWAY_RESTART)
    assert by_uuid[ended.call_uuid] == ended
    assert by_uuid[other.call_uuid] == other  # another instance's calls are its own
    assert by_uuid[committed.call_uuid].billable_seconds == 45
    # The new run beat on: the next crash is bounded by this run's heartbeat.
    last = Heartbeat(spool_dir).last()
    assert last is not None
    assert last > alive.timestamp()


async def test_older_gateways_spool_replays_with_ended_by_from_hangup_side(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # A CSV batch and a JSON record as the gateway before issue 19 spooled them: no
    # ended_by column.
    csv_record = make_record()
    json_record = dataclasses.replace(make_record(), hangup_side=HangupSide.CALLEE)
    batch = encode_csv_batch([csv_record]).decode().splitlines()
    # Every column from ended_by on came later (no field of this record holds a comma).
    cut = batch[0].split(",").index('"ended_by"')
    old_csv = "\n".join(",".join(line.split(",")[:cut]) for line in batch) + "\n"
    assert '"ended_by"' not in old_csv
    old_json = json_record.to_json().replace(b',"ended_by":"caller"', b"")
    assert b"ended_by" not in old_json
    spool = Spool(tmp_path)
    spool.open()
    spool.append([old_csv.encode(), old_json])
    spool.close()
    async with CdrWriter(pg_pool, FAST, spool_dir=tmp_path) as writer:
        pass
    assert writer.spool_bytes() == 0
    by_uuid = {row.call_uuid: row for row in await rows(pg_pool)}
    assert by_uuid[csv_record.call_uuid] == csv_record
    assert by_uuid[json_record.call_uuid] == dataclasses.replace(
        json_record, ended_by=EndedBy.CALLEE
    )


async def test_ended_by_is_one_vocabulary(pg_pool: asyncpg.Pool) -> None:
    from gateway.b2bua import EndedBy as CoreEndedBy

    async with pg_pool.acquire() as con:
        labels = await con.fetchval("SELECT enum_range(NULL::cdr_ended_by)::text[]")
    assert labels == [member.value for member in EndedBy]
    # What the B2BUA reports, the CDR can hold; the closures (a restart's, a
    # surviving instance's) are the CDR's own.
    closures = {"gateway-restart", "instance-dead"}
    assert {m.value for m in CoreEndedBy} == {m.value for m in EndedBy} - closures


async def test_heartbeat_survives_and_rejects_garbage(tmp_path: Path) -> None:
    beat = Heartbeat(tmp_path)
    assert beat.last() is None
    beat.beat(1767225600.25)
    beat.beat(1767225601.5)
    beat.close()
    assert Heartbeat(tmp_path).last() == 1767225601.5
    beat.path.write_bytes(b"\x00garbage")
    assert Heartbeat(tmp_path).last() is None
