"""CallDetailRecord: validation, JSON round trip, column order matches the table."""

from __future__ import annotations

import dataclasses
import datetime as dt

import asyncpg
import pytest

from cdr.record import COLUMNS, CallDetailRecord, Disposition
from tests.cdr.factory import make_record


def test_json_roundtrip_equal() -> None:
    for record in (make_record(), make_record(answered=False), make_record(emergency=True)):
        assert CallDetailRecord.from_json(record.to_json()) == record


def test_json_is_self_describing() -> None:
    text = make_record().to_json().decode()
    assert text.startswith('{"call_uuid":')
    assert text.endswith(',"v":1}')
    assert '"disposition":"answered"' in text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "malformed"),
        (b'{"v":2}', "version"),
        (b'{"v":1}', "missing field"),
        (b"\xff", "malformed"),
    ],
)
def test_json_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CallDetailRecord.from_json(data)


def test_as_row_follows_columns() -> None:
    record = make_record()
    row = record.as_row()
    assert len(row) == len(COLUMNS)
    for name, value in zip(COLUMNS, row, strict=True):
        expected = getattr(record, name)
        assert value == getattr(expected, "value", expected), name
    assert row[COLUMNS.index("disposition")] == "answered"
    assert row[COLUMNS.index("call_uuid")] == record.call_uuid


def test_validation() -> None:
    record = make_record()
    with pytest.raises(ValueError, match="timezone-aware"):
        dataclasses.replace(record, started_at=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="before started_at"):
        dataclasses.replace(record, ended_at=record.started_at - dt.timedelta(seconds=1))
    with pytest.raises(ValueError, match="not a SIP status"):
        dataclasses.replace(record, final_status=99)
    assert Disposition("no-answer") is Disposition.NO_ANSWER


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_columns_match_table_order(pg_pool: asyncpg.Pool) -> None:
    async with pg_pool.acquire() as con:
        names = await con.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'cdr'::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
    assert tuple(r["attname"] for r in names) == COLUMNS
