"""``voipgw cdr replay-spool``: a dead instance's spool, replayed from anywhere, adds
each record once (issue 16; deploy/OPERATIONS.md "Several instances")."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from cdr.record import CallDetailRecord, encode_csv_batch
from cdr.spool import Spool
from tests.cdr.factory import make_record
from tests.ops.harness import voipgw

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio]

RECORDS = 30


def spool_with(directory: Path, records: list[CallDetailRecord]) -> None:
    spool = Spool(directory)
    spool.open()
    try:
        spool.append([encode_csv_batch(records)])
    finally:
        spool.close()


async def test_replaying_a_spool_twice_adds_each_record_once(
    pg_pool: asyncpg.Pool, pg_dsn: str, tmp_path: Path
) -> None:
    records = [make_record() for _ in range(RECORDS)]
    # The first spool, and a copy of the same records as if its checkpoint had been
    # lost after the commit (a crash between commit and checkpoint).
    spool_with(tmp_path / "dead", records)
    spool_with(tmp_path / "again", records)
    args = ("--database-url", pg_dsn)
    first = await voipgw("cdr", "replay-spool", "--spool-dir", str(tmp_path / "dead"), *args)
    second = await voipgw("cdr", "replay-spool", "--spool-dir", str(tmp_path / "again"), *args)
    assert first.startswith(f"{RECORDS} rows inserted, 0 already present; 0 bytes left"), first
    assert second.startswith(f"0 rows inserted, {RECORDS} already present; 0 bytes left"), second
    assert await pg_pool.fetchval("SELECT count(*) FROM cdr") == RECORDS
    assert await pg_pool.fetchval("SELECT count(DISTINCT call_id) FROM cdr") == RECORDS


async def test_replaying_a_gateway_with_workers_replays_every_worker_spool(
    pg_pool: asyncpg.Pool, pg_dsn: str, tmp_path: Path
) -> None:
    # [server] workers = 2: the configured spool directory holds one spool per worker
    # (gateway.workers.plan), and the dead gateway's records are in those.
    root = tmp_path / "cdr-spool"
    spool_with(root / "w1", [make_record() for _ in range(RECORDS)])
    spool_with(root / "w2", [make_record() for _ in range(RECORDS // 3)])
    out = await voipgw("cdr", "replay-spool", "--spool-dir", str(root), "--database-url", pg_dsn)
    total = RECORDS + RECORDS // 3
    assert out.startswith(f"{total} rows inserted, 0 already present; 0 bytes left"), out
    assert f"w1: {RECORDS} rows inserted" in out, out
    assert f"w2: {RECORDS // 3} rows inserted" in out, out
    assert await pg_pool.fetchval("SELECT count(*) FROM cdr") == total
