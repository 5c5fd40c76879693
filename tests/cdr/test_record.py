"""CallDetailRecord: validation, CSV batch and JSON round trips, column order."""

from __future__ import annotations

import dataclasses
import datetime as dt

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr.record import (
    COLUMNS,
    CallDetailRecord,
    Disposition,
    csv_batch_columns,
    decode_csv_batch,
    decode_spool_payload,
    encode_csv_batch,
)
from tests.cdr.factory import make_record

# Text a caller controls reaches the CDR (User-Agent, numbers, reasons): every character
# that means something in CSV, the NULL marker's own spelling, and non-ASCII.
NASTY_TEXT = ["", "nan", '"', '""x"', "a,b", "line\nbreak", "cr\rlf", "tab\t", "Äänekoski €", "\\N"]


def tricky_record(text: str, **overrides: object) -> CallDetailRecord:
    """A record whose every free-text field is ``text`` (NULL-able ones too)."""
    record = make_record(**overrides)  # type: ignore[arg-type]
    return dataclasses.replace(
        record,
        call_id=text,
        customer=text,
        caller=text,
        callee_dialled=text,
        callee_routed=text,
        user_agent=text,
        final_reason=text,
        device_kind=text,
        site=text,
        gateway_instance=text,
    )


def test_csv_batch_roundtrip() -> None:
    records = [
        make_record(),
        make_record(answered=False),
        make_record(emergency=True),
        dataclasses.replace(
            make_record(),
            callee_routed=None,
            p_asserted_identity=None,
            device_kind=None,
            site=None,
            user_agent=None,
            recording_notice_language=None,
            recording_notice_played_at=None,
            ringing_at=None,
            answered_at=None,
            post_dial_delay_seconds=None,
            final_reason=None,
        ),
        *(tricky_record(text) for text in NASTY_TEXT),
    ]
    payload = encode_csv_batch(records)
    assert decode_csv_batch(payload) == records
    assert decode_spool_payload(payload) == records
    # Text "nan" and empty text stay text; NULL stays NULL.
    decoded = decode_csv_batch(encode_csv_batch([tricky_record("nan"), tricky_record("")]))
    assert [d.user_agent for d in decoded] == ["nan", ""]
    assert decode_csv_batch(encode_csv_batch(records[3:4]))[0].user_agent is None


def test_csv_batch_is_self_describing() -> None:
    record = make_record(answered=False)
    payload = encode_csv_batch([record])
    header, first_row = payload.decode().splitlines()
    assert header == ",".join(f'"{name}"' for name in COLUMNS)
    assert csv_batch_columns(payload) == (COLUMNS, len(header) + 1)
    fields = first_row.split(",")
    assert fields[COLUMNS.index("call_uuid")] == f'"{record.call_uuid.hex}"'
    assert fields[COLUMNS.index("disposition")] == '"busy"'
    assert fields[COLUMNS.index("emergency")] == "0"
    assert fields[COLUMNS.index("answered_at")] == "nan"  # NULL: bare nan
    started = record.started_at.timestamp() * 1_000_000
    assert fields[COLUMNS.index("started_at")] == str(round(started))


@settings(max_examples=200, deadline=None)
@given(text=st.text(), micros=st.integers(min_value=0, max_value=10**12))
def test_csv_batch_roundtrip_any_text(text: str, micros: int) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
    record = tricky_record(text, started_at=start)
    # NUL is the one change: PostgreSQL text cannot hold it.
    stored = tricky_record(text.replace("\x00", "\ufffd"), started_at=start)
    stored = dataclasses.replace(stored, call_uuid=record.call_uuid)
    assert decode_csv_batch(encode_csv_batch([record])) == [stored]


@pytest.mark.parametrize(
    "payload",
    [b"", b"no header line", b'"call_uuid","nonsense"\n', b'"call_uuid","call_uuid"\n'],
)
def test_csv_batch_errors(payload: bytes) -> None:
    with pytest.raises(ValueError, match="CDR CSV"):
        decode_csv_batch(payload)


def test_nan_durations_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        dataclasses.replace(make_record(), duration_seconds=float("nan"))


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


def test_caller_id_columns_round_trip_and_older_spools_replay() -> None:
    """The caller-ID columns (issue 15) travel through both spool encodings; a batch
    or JSON record spooled before they existed replays with them NULL."""
    from cdr.record import (
        COLUMNS,
        CallDetailRecord,
        decode_csv_batch,
        decode_spool_payload,
        encode_csv_batch,
    )
    from routing.decision import CallerId

    record = dataclasses.replace(
        make_record(),
        presented_number="+358402000001",
        asserted_number="+358401000001",
        caller_id=CallerId.REPLACED,
        caller_id_reason="not-held",
    )
    assert decode_csv_batch(encode_csv_batch([record])) == [record]
    assert CallDetailRecord.from_json(record.to_json()) == record
    new = ("presented_number", "asserted_number", "caller_id", "caller_id_reason")
    assert COLUMNS[-5:-1] == new  # flow_relay (migration 0740) came after them
    old_columns = COLUMNS[:-5]
    line = record.as_csv_line().rsplit(",", 5)[0] + "\n"
    old_batch = (",".join(f'"{c}"' for c in old_columns) + "\n" + line).encode()
    (replayed,) = decode_spool_payload(old_batch)
    assert replayed == dataclasses.replace(
        record, presented_number=None, asserted_number=None, caller_id=None, caller_id_reason=None
    )
    import json

    obj = json.loads(record.to_json())
    for name in (*new, "flow_relay"):
        del obj[name]
    (from_json,) = decode_spool_payload(json.dumps(obj).encode())
    assert from_json == replayed


def test_location_columns_round_trip_and_older_spools_replay() -> None:
    """The emergency location columns (issue 14) sit after ``ended_by`` (migration
    0003), travel through both spool encodings, and a batch spooled before they
    existed replays with them NULL."""
    from cdr.record import COLUMNS, decode_csv_batch, decode_spool_payload, encode_csv_batch
    from routing.decision import LocationSource

    assert COLUMNS[COLUMNS.index("ended_by") + 1 : COLUMNS.index("ended_by") + 3] == (
        "location_source",
        "callback_identity",
    )
    for source in LocationSource:
        for callback in (True, False, None):
            record = dataclasses.replace(
                make_record(), location_source=source, callback_identity=callback
            )
            assert decode_csv_batch(encode_csv_batch([record])) == [record]
            assert CallDetailRecord.from_json(record.to_json()) == record
    record = dataclasses.replace(
        make_record(), location_source=LocationSource.SITE_ADDRESS, callback_identity=False
    )
    kept = [c for c in COLUMNS if c not in ("location_source", "callback_identity")]
    line = record.as_csv_line()
    assert line.count(',"site-address",0,') == 1
    old_line = line.replace(',"site-address",0,', ",")
    old_batch = (",".join(f'"{c}"' for c in kept) + "\n" + old_line).encode()
    (replayed,) = decode_spool_payload(old_batch)
    assert replayed == dataclasses.replace(record, location_source=None, callback_identity=None)


def test_flow_relay_column_round_trips_and_older_spools_replay() -> None:
    """The mark of a relayed call's two records (migration 0740) is the last column,
    travels through both spool encodings, and a batch or JSON record spooled before
    it existed replays with it NULL (a call through one process)."""
    import json

    from cdr.record import COLUMNS, decode_csv_batch, decode_spool_payload, encode_csv_batch
    from routing.decision import FlowRelay

    assert COLUMNS[-1] == "flow_relay"
    for relay in (*FlowRelay, None):
        record = dataclasses.replace(make_record(), flow_relay=relay)
        assert decode_csv_batch(encode_csv_batch([record])) == [record]
        assert CallDetailRecord.from_json(record.to_json()) == record
        assert record.as_row()[-1] == (None if relay is None else relay.value)
    record = dataclasses.replace(make_record(), flow_relay=FlowRelay.FROM_SIBLING)
    line = record.as_csv_line()
    assert line.endswith(',"from-sibling"\n')
    old_batch = (
        ",".join(f'"{c}"' for c in COLUMNS[:-1]) + "\n" + line.rsplit(",", 1)[0] + "\n"
    ).encode()
    (replayed,) = decode_spool_payload(old_batch)
    assert replayed == dataclasses.replace(record, flow_relay=None)
    obj = json.loads(record.to_json())
    del obj["flow_relay"]
    assert decode_spool_payload(json.dumps(obj).encode()) == [replayed]
    # An in-progress record run on keeps its mark.
    extended = record.extended_to(record.ended_at, None)
    assert extended.flow_relay is FlowRelay.FROM_SIBLING
