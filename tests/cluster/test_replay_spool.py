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
