"""CDR writer benchmark: sustained rows/s into the partitioned table, and latency.

Run: ``.venv/bin/python -m tests.bench.bench_cdr [--rate 60000] [--seconds 5]``

One run on a fresh embedded PostgreSQL (or ``VOIPGW_TEST_DATABASE_URL``): a producer
submits records at ``--rate`` per second (0: as fast as the event loop allows) through
``CdrWriter.submit`` for ``--seconds``; the writer batches, spools (fsync), COPYs and
commits. Printed:

* sustained rows/s: rows committed / (last commit - first submit);
* end-of-call -> committed latency p50/p99/max: per record, from ``submit`` (the end of
  the call) to the return of the commit of its batch (spool checkpoint included).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
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


async def _run(dsn: str, spool: Path, rate: int, seconds: float, connections: int) -> None:
    con = await asyncpg.connect(dsn)
    try:
        await migrate(con)
    finally:
        await con.close()
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


def main() -> None:
    """Runs the benchmark once and prints rows/s and latency percentiles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=60_000, help="records/s offered (0: max)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--connections", type=int, default=CdrConfig().insert_connections, help="insert connections"
    )
    args = parser.parse_args()
    with bench_database("voipgw-bench-") as (dsn, root):
        asyncio.run(_run(dsn, root / "spool", args.rate, args.seconds, args.connections))


if __name__ == "__main__":
    main()
