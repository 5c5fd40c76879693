"""CDR writer benchmark: sustained rows/s into the partitioned table, and latency.

Run: ``.venv/bin/python -m tests.bench.bench_cdr [--rate 60000] [--seconds 5]``
or, for the A/B of ``insert_interval``: ``... -m tests.bench.bench_cdr --ab [--rounds 5]``

One run on a fresh embedded PostgreSQL (or ``VOIPGW_TEST_DATABASE_URL``): a producer
submits records at ``--rate`` per second (0: as fast as the event loop allows) through
``CdrWriter.submit`` for ``--seconds``; the writer batches, spools (fsync), COPYs and
commits. Printed:

* sustained rows/s: rows committed / (last commit - first submit);
* end-of-call -> committed latency p50/p99/max: per record, from ``submit`` (the end of
  the call) to the return of the commit of its batch (spool checkpoint included).

``--ab``: the writer's cost per call at a gateway's rate (``--rate``, 500 calls/s
unless given) with ``insert_interval`` 0 (A: a transaction per spooled batch) and
the default (B), measured in turn (A,B,B,A,...) on one PostgreSQL, each from a fresh
spool and an empty table. Printed per measurement: this process's CPU time (all its
threads: encoding, fsync, asyncpg) per record in µs, and transactions per second;
then the median B/A ratio of the rounds with its min-max. PostgreSQL's own CPU is not
counted.

``--ab --vs batch_age=0.1`` (any ``CdrConfig`` fields, comma-separated): the same A/B with
A the default configuration and B the default with those settings. Issue 17 measured
the writer's cost per spooled batch this way: at 500 records/s, ``--vs batch_age=0.1``
against the default (0.02) read a B/A ratio of 0.739 (0.581-0.754, 3 rounds; A 118-126,
B 69-95 µs per record): some 0.4 ms of CPU per spooled batch, in its thread hop and
bookkeeping. Since the event loop writes the batches and a thread of its own fsyncs
them (``cdr.spool.SpoolFlusher``), the default reads 60-90 µs per record, and ``--vs
fsync_interval=0`` (an fsync per batch) B/A 0.922 (0.834-1.009, 4 rounds): alone, with
an idle event loop, the writer does not show the interval's gain; in the gateway,
whose loop is busy when the thread wakes, ``tests/bench/interleave.py`` read the
default 3-6 % cheaper per call than ``fsync_interval = 0``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import statistics
import time
import tomllib
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from cdr.config import CdrConfig
from cdr.db import migrate
from cdr.maintenance import maintain
from cdr.record import CallDetailRecord
from cdr.writer import CdrWriter
from tests.bench.database import bench_database
from tests.cdr.factory import make_record


def _records(count: int) -> list[CallDetailRecord]:
    base = make_record()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    # dataclasses.replace re-runs validation; building from one template keeps the
    # producer cheap so that it measures the writer, not record construction.
    out = []
    for i in range(count):
        out.append(
            make_record(
                call_uuid=uuid.uuid4(),
                started_at=start + dt.timedelta(microseconds=i),
                customer=f"cust{i % 50}",
                caller=f"+35840{i:07d}",
            )
            if i < 1
            else _clone(base, start + dt.timedelta(microseconds=i), i)
        )
    return out


def _clone(base: CallDetailRecord, started_at: dt.datetime, i: int) -> CallDetailRecord:
    fields = {name: getattr(base, name) for name in base.__dataclass_fields__}
    fields.update(
        call_uuid=uuid.uuid4(),
        started_at=started_at,
        ended_at=started_at + dt.timedelta(seconds=65),
        ringing_at=started_at + dt.timedelta(seconds=1),
        answered_at=started_at + dt.timedelta(seconds=3),
        recording_notice_played_at=started_at + dt.timedelta(seconds=1),
        customer=f"cust{i % 50}",
        caller=f"+35840{i:07d}",
    )
    return CallDetailRecord(**fields)


async def _migrate(dsn: str) -> None:
    con = await asyncpg.connect(dsn)
    try:
        await migrate(con)
    finally:
        await con.close()


async def _run(dsn: str, spool: Path, rate: int, seconds: float, connections: int) -> None:
    await _migrate(dsn)
    total = int(rate * seconds) if rate else 300_000
    records = _records(total)
    submitted: dict[uuid.UUID, float] = {}
    latencies: list[float] = []
    last_commit = 0.0

    committed_rows = 0

    def committed(rows: int, batch: Sequence[CallDetailRecord], _seconds: float) -> None:
        # ``batch`` lacks the records the writer had to re-read from its spool (beyond
        # ``memory_rows``): their latency is not sampled, their rows are counted.
        nonlocal last_commit, committed_rows
        now = time.perf_counter()
        last_commit = now
        committed_rows += rows
        latencies.extend(now - submitted[r.call_uuid] for r in batch)

    # The shipped defaults (batch size and age, buffer, two insert connections), except
    # that shutdown waits for the backlog: the figure is about committed rows.
    config = CdrConfig(shutdown_timeout=300.0, insert_connections=connections)
    async with asyncpg.create_pool(dsn, min_size=2, max_size=connections + 2) as pool:
        await maintain(pool, dt.datetime.now(dt.UTC))
        async with CdrWriter(pool, config, spool_dir=spool, on_committed=committed) as writer:
            chunk = 500
            first = time.perf_counter()
            for n in range(0, total, chunk):
                if rate:
                    due = first + n / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                now = time.perf_counter()
                for record in records[n : n + chunk]:
                    submitted[record.call_uuid] = now
                    writer.submit(record)
                if not rate:
                    await asyncio.sleep(0)
            offered_end = time.perf_counter()
        async with pool.acquire() as con:
            rows = await con.fetchval("SELECT count(*) FROM cdr")
    assert rows == total == committed_rows, (rows, total, committed_rows)
    elapsed = last_commit - first
    q = statistics.quantiles(latencies, n=100)
    print(
        f"records: {total}, offered rate: {rate or 'unpaced'}/s over {offered_end - first:.2f}s, "
        f"{connections} insert connections, batches of {config.batch_size}"
    )
    print(f"sustained: {total / elapsed:,.0f} rows/s committed ({elapsed:.2f}s)")
    print(
        f"end-of-call -> committed latency: p50 {q[49] * 1000:.1f} ms, "
        f"p99 {q[98] * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    print(
        f"last COPY+INSERT: {writer.last_copy_seconds or 0:.3f}s for up to "
        f"{config.batch_size} rows; overflowed to spool from call path: "
        f"{writer.records_overflowed}; latency sampled for {len(latencies)} rows "
        f"(the rest went through the spool file beyond memory_rows)"
    )


async def _measure(
    dsn: str, spool: Path, config: CdrConfig, rate: int, seconds: float
) -> tuple[float, float]:
    """One run at ``rate``: (this process's CPU µs per record, transactions per second)."""
    async with asyncpg.create_pool(dsn, min_size=2, max_size=config.insert_connections + 2) as pool:
        async with pool.acquire() as con:
            await con.execute("TRUNCATE cdr")
        records = _records(int(rate * seconds))
        transactions = 0

        def committed(_rows: int, _batch: Sequence[CallDetailRecord], _seconds: float) -> None:
            nonlocal transactions
            transactions += 1

        # Records every 10 ms, as a gateway's calls end a few at a time.
        step = max(1, rate // 100)
        cpu = time.process_time()
        first = time.perf_counter()
        async with CdrWriter(pool, config, spool_dir=spool, on_committed=committed) as writer:
            for n in range(0, len(records), step):
                delay = first + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                for record in records[n : n + step]:
                    writer.submit(record)
        elapsed = time.perf_counter() - first
        cpu = time.process_time() - cpu
        async with pool.acquire() as con:
            rows = await con.fetchval("SELECT count(*) FROM cdr")
    assert rows == len(records) == writer.rows_committed, (rows, len(records))
    return cpu / len(records) * 1e6, transactions / elapsed


def config_with(base: CdrConfig, settings: str) -> CdrConfig:
    """``base`` with ``settings`` ("field=value,field=value"), each value written as
    in the config file (TOML, as ``tests/bench/ab.py --base-set`` takes them) and of
    the field's own type: ``in_progress_records=false`` is False (``bool("false")``
    would be True), ``fsync_interval=0`` is 0.0."""
    changes: dict[str, object] = {}
    for setting in filter(None, settings.split(",")):
        name, _, text = setting.partition("=")
        current = getattr(base, name.strip())
        value = tomllib.loads(f"value = {text.strip()}")["value"]
        changes[name.strip()] = type(current)(value)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def _ab(
    dsn: str, root: Path, rate: int, seconds: float, rounds: int, vs: str | None = None
) -> None:
    await _migrate(dsn)
    async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        await maintain(pool, dt.datetime.now(dt.UTC))
    default = CdrConfig(shutdown_timeout=300.0)
    if vs is None:
        sides = {"A": dataclasses.replace(default, insert_interval=0.0), "B": default}
        described = (
            f"A: insert_interval 0, B: insert_interval {default.insert_interval}"
            f" (batch_age {default.batch_age})"
        )
    else:
        sides = {"A": default, "B": config_with(default, vs)}
        described = f"A: the default, B: {vs}"
    print(f"{rate} records/s for {seconds:.0f}s per measurement; {described}")
    ratios: list[float] = []
    run = 0
    for n in range(rounds):
        cost: dict[str, float] = {}
        for side in "AB" if n % 2 == 0 else "BA":
            run += 1
            us, tps = await _measure(dsn, root / f"spool{run}", sides[side], rate, seconds)
            cost[side] = us
            print(f"round {n + 1} {side}: {us:7.1f} µs CPU per record, {tps:6.1f} transactions/s")
        ratios.append(cost["B"] / cost["A"])
    print(
        f"B/A CPU per record: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {rounds} rounds)"
    )


def main() -> None:
    """Runs the benchmark once and prints rows/s and latency percentiles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=None, help="records/s offered (0: max)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--connections", type=int, default=CdrConfig().insert_connections, help="insert connections"
    )
    parser.add_argument("--ab", action="store_true", help="A/B of insert_interval 0 vs default")
    parser.add_argument(
        "--vs", default=None, help="with --ab: B is the default with these field=value settings"
    )
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds")
    args = parser.parse_args()
    with bench_database("voipgw-bench-") as (dsn, root):
        if args.ab:
            rate = 500 if args.rate is None else args.rate
            if rate <= 0:
                parser.error("--ab needs a fixed --rate")
            if args.vs is not None:
                try:
                    config_with(CdrConfig(), args.vs)
                except (AttributeError, TypeError, ValueError) as exc:
                    parser.error(f"--vs {args.vs}: {exc}")
            asyncio.run(_ab(dsn, root, rate, args.seconds, args.rounds, args.vs))
        else:
            rate = 60_000 if args.rate is None else args.rate
            asyncio.run(_run(dsn, root / "spool", rate, args.seconds, args.connections))


if __name__ == "__main__":
    main()
