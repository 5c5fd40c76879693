"""CdrWriter against a real PostgreSQL, including fault injection."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import signal
import sys
import threading
from pathlib import Path

import asyncpg
import pytest

from cdr.config import CdrConfig
from cdr.db import EmbeddedPostgres, migrate
from cdr.record import COLUMNS, CallDetailRecord
from cdr.spool import Position, Spool
from cdr.writer import _STAGING, _STAGING_SQL, CdrWriter, WriterClosedError, _Signal
from tests.cdr.factory import make_record
from tests.cdr.test_in_progress import up_until
from tests.cdr.test_record import tricky_record
from tests.cdr.writer_child import record_uuid
from tests.held_copy import HELD_LOCK, copy_held, hold_inserts
from tests.ops.harness import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio]

UTC = dt.UTC
HELSINKI = dt.timezone(dt.timedelta(hours=2))
FAST = CdrConfig(batch_age=0.005, retry_initial=0.05, retry_max=0.5, shutdown_timeout=30.0)
REPO = Path(__file__).parents[2]


async def count_rows(pool: asyncpg.Pool) -> tuple[int, int]:
    async with pool.acquire() as con:
        row = await con.fetchrow("SELECT count(*), count(DISTINCT call_uuid) FROM cdr")
    return row[0], row[1]


def counting_writer(
    pool: asyncpg.Pool, config: CdrConfig, spool_dir: Path, commits: list[int]
) -> CdrWriter:
    """A writer that appends the rows of each transaction it commits to ``commits``."""
    return CdrWriter(
        pool,
        config,
        spool_dir=spool_dir,
        on_committed=lambda rows, _records, _seconds: commits.append(rows),
    )


async def test_rows_arrive_and_missing_partitions_are_created(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # No partition exists at all: every month is created on demand, nothing lost.
    months = [dt.datetime(2026, m, 15, tzinfo=UTC) for m in (1, 5, 11)]
    records = [make_record(started_at=months[i % 3]) for i in range(300)]
    async with CdrWriter(pg_pool, FAST, spool_dir=tmp_path) as writer:
        for r in records[:-1]:
            writer.submit(r)
        await writer.write(records[-1])
    assert await count_rows(pg_pool) == (300, 300)
    assert writer.partitions_created == 3
    assert writer.rows_committed == 300
    assert writer.spool_bytes() == 0
    assert writer.oldest_spooled_age() == 0.0
    assert writer.last_copy_seconds is not None
    with pytest.raises(WriterClosedError):
        writer.submit(records[0])


async def test_the_commit_hook_gets_the_copy_time(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    # voipgw_cdr_copy_duration_seconds is graphed in Grafana: it was fed 0.0 for every
    # batch. The hook now gets how long each transaction's COPYs and insert took.
    seen: list[tuple[int, float]] = []
    async with CdrWriter(
        pg_pool,
        FAST,
        spool_dir=tmp_path,
        on_committed=lambda rows, _records, seconds: seen.append((rows, seconds)),
    ) as writer:
        await writer.write(make_record())
    assert sum(rows for rows, _ in seen) == 1
    assert all(seconds > 0 for _, seconds in seen)
    assert seen[-1][1] == writer.last_copy_seconds


async def test_batches_within_insert_interval_share_a_transaction_and_close_inserts_them(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # An interval far beyond the test: after the first transaction, the batches spooled
    # later wait for it, and only close() (which must not wait for it) can insert them.
    config = dataclasses.replace(FAST, insert_interval=3600.0, shutdown_timeout=10.0)
    commits: list[int] = []
    first, *later = [make_record() for _ in range(5)]
    end = make_record(duration=61.5)
    async with counting_writer(pg_pool, config, tmp_path, commits) as writer:
        # The first batch after a pause is inserted at once.
        await writer.write(first)
        for _ in range(400):
            if commits:
                break
            await asyncio.sleep(0.05)
        assert commits == [1]
        # Five batches, each acknowledged (fsynced) before the next: a call's
        # in-progress record spooled with the first, its end with the last.
        writer.answered(up_until(end, 0))
        for record in [*later, end]:
            await writer.write(record)
        assert writer.records_spooled == 1 + 4 + 1 + 1
        assert await count_rows(pg_pool) == (1, 1)
        assert writer.spool_bytes() > 0
    assert commits == [1, 6]
    assert writer.spool_bytes() == 0
    assert await count_rows(pg_pool) == (6, 6)
    async with pg_pool.acquire() as con:
        ended_by = await con.fetchval(
            "SELECT ended_by::text FROM cdr WHERE call_uuid = $1", end.call_uuid
        )
    assert ended_by == str(end.ended_by)


async def test_same_record_twice_is_one_row(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    record = make_record()
    async with CdrWriter(pg_pool, FAST, spool_dir=tmp_path / "a") as writer:
        await writer.write(record)
    async with CdrWriter(pg_pool, FAST, spool_dir=tmp_path / "b") as again:
        await again.write(record)
        await again.write(make_record())
    assert await count_rows(pg_pool) == (2, 2)
    assert (again.rows_committed, again.rows_duplicate) == (1, 1)


async def test_full_queue_spools_instead_of_dropping(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    config = CdrConfig(queue_size=10, batch_size=10, batch_age=0.001)
    async with CdrWriter(pg_pool, config, spool_dir=tmp_path) as writer:
        # Synchronous burst: the background task cannot run, so the queue overflows.
        for _ in range(2000):
            writer.submit(make_record())
            assert writer.queue_depth() <= 10
        # Every 11th submit found the queue full and spooled it with the new record.
        assert writer.records_overflowed == 2000 - writer.queue_depth() == 1991
        assert writer.spool_bytes() > 0
    assert await count_rows(pg_pool) == (2000, 2000)


async def test_spooled_records_replay_on_next_start(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    records = [make_record() for _ in range(1000)]
    # A pool that cannot connect: PostgreSQL is "down" for this writer.
    dead = f"postgresql://postgres@/voipgw?host={tmp_path}/nowhere"
    config = CdrConfig(batch_age=0.005, retry_initial=0.05, retry_max=0.1, shutdown_timeout=0.3)
    async with asyncpg.create_pool(dead, min_size=0) as dead_pool:
        async with CdrWriter(dead_pool, config, spool_dir=tmp_path / "spool") as writer:
            await asyncio.gather(*(writer.write(r) for r in records))
            await asyncio.sleep(0.3)
            assert not writer.database_available
            assert writer.spool_bytes() > 0
            assert writer.oldest_spooled_age() > 0
        assert writer.rows_committed == 0
    assert await count_rows(pg_pool) == (0, 0)
    # memory_rows=0: the replay reads everything back from disk.
    replay = CdrConfig(batch_age=0.005, batch_size=300, memory_rows=0)
    async with CdrWriter(pg_pool, replay, spool_dir=tmp_path / "spool") as writer:
        for _ in range(200):
            if writer.spool_bytes() == 0:
                break
            await asyncio.sleep(0.05)
    assert await count_rows(pg_pool) == (1000, 1000)
    assert writer.rows_committed == 1000


@pytest.fixture
def private_pg(pg_state_dir: Path):
    """A PostgreSQL of this test alone, which the test may stop and start."""
    server = EmbeddedPostgres(pg_state_dir / "pgdata")
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")


async def test_postgres_stopped_mid_stream_loses_and_duplicates_nothing(
    private_pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    dsn = private_pg.dsn("postgres")
    con = await asyncpg.connect(dsn)
    await migrate(con)
    await con.close()
    total = 10_000
    start = dt.datetime(2026, 11, 1, tzinfo=UTC)
    acked: list = []
    outage = {}
    enough = asyncio.Event()

    async def produce(writer: CdrWriter) -> None:
        for base in range(0, total, 100):
            batch = [
                make_record(call_uuid=record_uuid(i), started_at=start + dt.timedelta(seconds=i))
                for i in range(base, base + 100)
            ]
            await asyncio.gather(*(writer.write(r) for r in batch))
            acked.extend(r.call_uuid for r in batch)
            if len(acked) >= 2_000:
                enough.set()
            await asyncio.sleep(0.01)  # about 10,000 records/s: ~1 s of traffic

    async def outage_window(writer: CdrWriter) -> None:
        await enough.wait()
        await asyncio.to_thread(private_pg.stop, "immediate")
        outage["stopped_at"] = len(acked)
        await asyncio.sleep(1.5)
        outage["failed_while_down"] = not writer.database_available
        outage["spooled_while_down"] = writer.spool_bytes()
        await asyncio.to_thread(private_pg.start)
        outage["restarted_at"] = len(acked)

    async with asyncpg.create_pool(dsn, min_size=0, max_size=4) as pool:
        async with CdrWriter(pool, FAST, spool_dir=tmp_path / "spool") as writer:
            await asyncio.gather(produce(writer), outage_window(writer))
        # The outage really happened in the middle of the stream.
        assert 2_000 <= outage["stopped_at"] < total
        assert outage["failed_while_down"]
        assert outage["spooled_while_down"] > 0
        assert len(acked) == total
        async with pool.acquire() as con:
            rows = {r[0] for r in await con.fetch("SELECT call_uuid FROM cdr")}
            assert await con.fetchval("SELECT count(*) FROM cdr") == total  # 0 duplicated
        assert set(acked) - rows == set()  # 0 lost
        assert writer.spool_bytes() == 0


async def _replay_behind_a_held_copy(
    pg_dsn: str, tmp_path: Path, config: CdrConfig, cut: bool
) -> CdrWriter:
    """Replays 10,000 spooled records whose first COPY (~3 MB) stops reading half-way.

    The replay's one connection gets the writer's staging table early, its rows held
    (tests/held_copy.py). ``cut`` then terminates that backend; otherwise the writer
    must give up on its own after ``command_timeout``. Returns the writer once its
    spool is empty (closed).
    """
    spool = tmp_path / "spool"
    dead = f"postgresql://postgres@/voipgw?host={tmp_path}/nowhere"
    down = CdrConfig(batch_age=0.005, retry_initial=0.05, retry_max=0.1, shutdown_timeout=0.3)
    async with (
        asyncpg.create_pool(dead, min_size=0) as dead_pool,
        CdrWriter(dead_pool, down, spool_dir=spool) as writer,
    ):
        await asyncio.gather(*(writer.write(make_record()) for _ in range(10_000)))
    holder = await asyncpg.connect(pg_dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", HELD_LOCK)
        async with asyncpg.create_pool(pg_dsn, min_size=1, max_size=1) as pool:
            async with pool.acquire() as con:
                backend = await con.fetchval("SELECT pg_backend_pid()")
                await con.execute(_STAGING_SQL)
                await hold_inserts(con, _STAGING, temporary=True)
            async with CdrWriter(pool, config, spool_dir=spool) as writer:
                await copy_held(holder, backend)
                if cut:
                    await holder.execute("SELECT pg_terminate_backend($1)", backend)
                await wait_until(
                    "the spool to be committed",
                    lambda: asyncio.sleep(0, writer.spool_bytes()),
                    lambda n: n == 0,
                    10,
                )
    finally:
        await holder.close()  # releases the lock: a backend left waiting on it ends
    return writer


async def test_a_copy_whose_connection_is_lost_is_retried_at_once(
    pg_dsn: str, pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # asyncpg alone left this COPY waiting for ever (cdr.db.bounded_by_connection).
    writer = await _replay_behind_a_held_copy(pg_dsn, tmp_path, FAST, cut=True)
    assert "ConnectionDoesNotExistError" in str(writer.last_error)
    assert await count_rows(pg_pool) == (10_000, 10_000)


async def test_a_copy_the_server_stops_reading_fails_at_the_command_timeout(
    pg_dsn: str, pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # asyncpg's own timeout does not bound a COPY waiting for the socket to drain.
    config = dataclasses.replace(FAST, command_timeout=1.0)
    writer = await _replay_behind_a_held_copy(pg_dsn, tmp_path, config, cut=False)
    assert writer.last_error == "TimeoutError: PostgreSQL did not finish within 1 s"
    assert await count_rows(pg_pool) == (10_000, 10_000)


@pytest.mark.parametrize("database_up", [True, False], ids=["db-up", "db-down"])
async def test_sigkilled_writer_loses_and_duplicates_nothing(
    pg_dsn: str, pg_pool: asyncpg.Pool, tmp_path: Path, database_up: bool
) -> None:
    spool = tmp_path / "spool"
    child_dsn = pg_dsn if database_up else f"postgresql://postgres@/x?host={tmp_path}/down"
    total = 20_000
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.cdr.writer_child",
        child_dsn,
        str(spool),
        str(total),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    acked: list[int] = []
    # Kill mid-stream, once a few thousand records were acknowledged.
    async with asyncio.timeout(60):
        while len(acked) < 3_000:
            line = await child.stdout.readline()
            if not line:
                break
            acked.append(int(line))
    child.send_signal(signal.SIGKILL)
    # Acknowledgements already written to the pipe before the kill count too.
    rest = await child.stdout.read()
    acked += [int(x) for x in rest.split()]
    assert await child.wait() == -signal.SIGKILL
    assert 3_000 <= len(acked) < total, "the child was not killed mid-stream"

    async with CdrWriter(pg_pool, FAST, spool_dir=spool) as writer:
        replaying = writer.spool_bytes()
        for _ in range(400):
            if writer.spool_bytes() == 0:
                break
            await asyncio.sleep(0.05)
    if not database_up:
        assert replaying > 0
        assert writer.rows_committed >= len(acked)
    async with pg_pool.acquire() as con:
        rows = {r[0] for r in await con.fetch("SELECT call_uuid FROM cdr")}
        count = await con.fetchval("SELECT count(*) FROM cdr")
    assert count == len(rows)  # 0 duplicated
    assert {record_uuid(i) for i in acked} - rows == set()  # 0 lost
    assert rows <= {record_uuid(i) for i in range(total)}


async def test_text_a_caller_controls_arrives_exactly(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # Quotes, commas, newlines, the NULL marker's spelling, empty text, NUL, non-ASCII
    # and NULLs all come back from PostgreSQL as they went in (NUL as U+FFFD).
    texts = ["", "nan", '"quoted", comma', "two\nlines\r\n", "Äänekoski €", "nul\x00byte"]
    records = [tricky_record(text) for text in texts]
    nulls = dataclasses.replace(
        make_record(answered=False),
        callee_routed=None,
        p_asserted_identity=None,
        user_agent=None,
        recording_notice_played_at=None,
        ringing_at=None,
        post_dial_delay_seconds=None,
    )
    odd_zone = make_record(started_at=dt.datetime(2026, 10, 5, 14, 0, 0, 1, tzinfo=HELSINKI))
    async with CdrWriter(pg_pool, FAST, spool_dir=tmp_path) as writer:
        for record in [*records, nulls, odd_zone]:
            await writer.write(record)
    async with pg_pool.acquire() as con:
        stored = {
            row["call_uuid"]: tuple(row)
            for row in await con.fetch(f"SELECT {', '.join(COLUMNS)} FROM cdr")
        }
    for record in [*records, nulls, odd_zone]:
        expected = tuple(
            value.replace("\x00", "\ufffd") if isinstance(value, str) else value
            for value in record.as_row()
        )
        got = stored[record.call_uuid]
        assert got == expected, [
            (name, g, e) for name, g, e in zip(COLUMNS, got, expected, strict=True) if g != e
        ]


async def test_spool_of_an_older_gateway_replays(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    # Before CSV batches the spool held one JSON object per record: an upgrade with such
    # a spool left over must insert those records, mixed with new ones.
    old = [make_record() for _ in range(50)]
    spool = Spool(tmp_path)
    spool.open()
    spool.append([record.to_json() for record in old])
    spool.close()
    new = make_record()
    async with CdrWriter(pg_pool, FAST, spool_dir=tmp_path) as writer:
        await writer.write(new)
        for _ in range(100):
            if writer.spool_bytes() == 0:
                break
            await asyncio.sleep(0.05)
    assert await count_rows(pg_pool) == (51, 51)


async def test_parallel_inserts_checkpoint_only_what_is_committed(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # Four connections insert small batches at once, and a spool replay from disk is
    # split among them: every row arrives once and the spool empties.
    records = [make_record() for _ in range(3_000)]
    config = CdrConfig(
        batch_size=100, batch_age=0.001, insert_connections=4, memory_rows=500, queue_size=250
    )
    async with CdrWriter(pg_pool, config, spool_dir=tmp_path) as writer:
        for i, record in enumerate(records):
            writer.submit(record)
            if i % 50 == 0:
                await asyncio.sleep(0)
    assert writer.spool_bytes() == 0
    assert writer.rows_committed == 3_000
    assert await count_rows(pg_pool) == (3_000, 3_000)


async def test_location_columns_on_a_database_upgraded_from_before_them(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Migration 0003 on a database that already had 0300's caller-ID columns: the
    new columns land last in the table (not where cdr.record.COLUMNS names them), a
    row written before stays valid with them NULL, and the writer, which names its
    columns, writes and reads them all the same."""
    from routing.decision import LocationSource

    old = make_record(started_at=dt.datetime(2026, 3, 2, tzinfo=UTC))
    async with pg_pool.acquire() as con:
        # The database as it was before 0003: without its columns, type and record.
        await con.execute(
            "ALTER TABLE cdr DROP COLUMN location_source, DROP COLUMN callback_identity;"
            " DROP TYPE cdr_location_source;"
            " DELETE FROM schema_migrations WHERE version = '0003_cdr_location.sql'"
        )
        await con.execute(
            "CREATE TABLE IF NOT EXISTS cdr_2026_03 PARTITION OF cdr"
            " FOR VALUES FROM ('2026-03-01') TO ('2026-04-01')"
        )
        before = [c for c in COLUMNS if c not in ("location_source", "callback_identity")]
        row = dict(zip(COLUMNS, old.as_row(), strict=True))
        await con.copy_records_to_table(
            "cdr", records=[tuple(row[c] for c in before)], columns=before
        )
        await migrate(con)
        order = [
            r["attname"]
            for r in await con.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'cdr'::regclass"
                " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            )
        ]
    assert order[-2:] == ["location_source", "callback_identity"]
    new = dataclasses.replace(
        make_record(started_at=dt.datetime(2026, 3, 3, tzinfo=UTC)),
        location_source=LocationSource.SITE_ADDRESS,
        callback_identity=False,
    )
    async with CdrWriter(pg_pool, FAST, spool_dir=tmp_path) as writer:
        await writer.write(new)
    async with pg_pool.acquire() as con:
        rows = {
            r["call_uuid"]: CallDetailRecord.from_row(r)
            for r in await con.fetch(f"SELECT {', '.join(COLUMNS)} FROM cdr")
        }
    assert rows[old.call_uuid].location_source is None
    assert rows[old.call_uuid].callback_identity is None
    assert rows[new.call_uuid] == new


async def test_signal_wait_ends_at_its_bound_or_when_set() -> None:
    # The writer's timed waits (batch age, insert interval): a bound reached is no
    # error, a set() wakes every waiter at once, and a set flag is not waited for.
    signal_ = _Signal()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await signal_.wait(0.05)
    assert loop.time() - started >= 0.04
    waiters = [asyncio.ensure_future(signal_.wait(30.0)) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    signal_.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
    started = loop.time()
    await signal_.wait(30.0)  # still set
    assert loop.time() - started < 1.0
    signal_.clear()
    cancelled = asyncio.ensure_future(signal_.wait(30.0))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not signal_._waiters  # a cancelled wait leaves nothing behind


async def test_a_full_transaction_does_not_wait_for_the_insert_interval(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # Batches spooled within the interval do not wake the drainers, except the one
    # that makes the waiting rows more than a transaction holds: a transaction's
    # worth then goes at once, the rest waits for the interval (here, for close()).
    config = dataclasses.replace(FAST, insert_interval=3600.0, batch_size=3)
    commits: list[int] = []
    async with counting_writer(pg_pool, config, tmp_path, commits) as writer:
        await writer.write(make_record())
        for _ in range(3):
            await writer.write(make_record())
        await asyncio.sleep(0.5)
        assert commits == [1]
        await writer.write(make_record())
        for _ in range(100):
            if len(commits) == 2:
                break
            await asyncio.sleep(0.02)
        assert commits == [1, 3]
    assert commits == [1, 3, 1]
    assert await count_rows(pg_pool) == (5, 5)


async def committed(writer: CdrWriter) -> int:
    return writer.rows_committed


class HeldFsync:
    """Spool.sync held until released (or failing), to see what waits for it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.error: OSError | None = None
        real = Spool.sync

        def sync(spool: Spool) -> Position:
            self.entered.set()
            self.release.wait(10)
            if self.error is not None:
                raise self.error
            return real(spool)

        monkeypatch.setattr(Spool, "sync", sync)


async def test_write_is_acknowledged_only_once_fsynced(
    pg_pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with CdrWriter(pg_pool, FAST, spool_dir=tmp_path) as writer:
        held = HeldFsync(monkeypatch)
        acknowledged = asyncio.ensure_future(writer.write(make_record()))
        assert await asyncio.to_thread(held.entered.wait, 5)
        await asyncio.sleep(0.2)  # forty batch ages: written, not fsynced
        assert not acknowledged.done()
        assert writer.records_spooled == 1
        held.release.set()
        await asyncio.wait_for(acknowledged, 5)
    assert await count_rows(pg_pool) == (1, 1)


async def test_a_failed_fsync_fails_write_and_the_record_still_arrives(
    pg_pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dataclasses.replace(FAST, insert_interval=0.0)
    async with CdrWriter(pg_pool, config, spool_dir=tmp_path) as writer:
        held = HeldFsync(monkeypatch)
        held.error = OSError(5, "Input/output error")
        held.release.set()
        with pytest.raises(OSError, match="Input/output error"):
            await asyncio.wait_for(writer.write(make_record()), 5)
        # Not acknowledged, but written and held in memory: PostgreSQL gets it.
        await wait_until("the row", lambda: committed(writer), lambda rows: rows == 1, 5)
        held.error = None
    assert await count_rows(pg_pool) == (1, 1)


async def test_submitted_records_between_fsyncs_are_fsynced_at_close(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # fsync_interval far beyond the test: only the first batch after the start and
    # close() fsync; the rest is written (safe from a crash of the process) and
    # inserted meanwhile.
    config = dataclasses.replace(FAST, fsync_interval=60.0, insert_interval=0.0)
    writer = CdrWriter(pg_pool, config, spool_dir=tmp_path)
    await writer.start()
    spool = writer._spool
    for _ in range(3):
        writer.submit(make_record())
        await asyncio.sleep(0.05)
    await wait_until("the rows", lambda: committed(writer), lambda rows: rows == 3, 5)
    written = spool.end()
    assert spool.durable() < written
    await writer.close()
    assert spool.durable() == written
    assert await count_rows(pg_pool) == (3, 3)
