"""Invoice itemization and data-subject access, through the CLI."""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import datetime as dt
import io
import ipaddress

import asyncpg
import pytest

from cdr import cli
from cdr.export import ITEMIZE_COLUMNS, in_progress, itemize, subject_access
from cdr.maintenance import ensure_partitions
from cdr.partitions import Month
from cdr.record import COLUMNS, CallDetailRecord
from routing.decision import FlowRelay
from tests.cdr.factory import make_record

UTC = dt.UTC
SUBJECT = "+358401234567"


async def seed(dsn: str) -> None:
    records = [
        make_record(customer="acme", started_at=dt.datetime(2026, 10, 3, 8, tzinfo=UTC)),
        make_record(customer="acme", started_at=dt.datetime(2026, 10, 31, 23, 59, tzinfo=UTC)),
        make_record(customer="acme", started_at=dt.datetime(2026, 11, 1, tzinfo=UTC)),
        make_record(customer="globex", started_at=dt.datetime(2026, 10, 9, tzinfo=UTC)),
        # The subject as callee, and only as PAI behind another caller number.
        make_record(caller="+358900000001", callee=SUBJECT, customer="globex"),
        make_record(caller="+358900000002", pai=SUBJECT, customer="initech"),
        make_record(caller="+358900000003", callee="+358900000004"),
    ]
    con = await asyncpg.connect(dsn)
    try:
        await ensure_partitions(con, [Month.of(r.started_at) for r in records])
        await con.copy_records_to_table(
            "cdr", records=[r.as_row() for r in records], columns=COLUMNS
        )
    finally:
        await con.close()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[list[str]]:
    assert cli.main(argv) == 0
    return list(csv.reader(io.StringIO(capsys.readouterr().out)))


@pytest.mark.postgres
def test_itemize_one_customer_one_month(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(seed(pg_dsn))
    rows = run_cli(
        ["cdr", "itemize", "--customer", "acme", "--month", "2026-10", "--database-url", pg_dsn],
        capsys,
    )
    assert rows[0] == list(ITEMIZE_COLUMNS)
    started = [r[0] for r in rows[1:]]
    # acme's October calls (including the last minute), not November's nor globex's;
    # the stranger's call uses the factory default (acme, 2026-10-05).
    assert started == [
        "2026-10-03T08:00:00+00:00",
        "2026-10-05T12:00:00+00:00",
        "2026-10-31T23:59:00+00:00",
    ]
    assert all(r[ITEMIZE_COLUMNS.index("billable_seconds")] == "62" for r in rows[1:])


@pytest.mark.postgres
def test_subject_access_finds_caller_callee_and_pai(
    pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(seed(pg_dsn))
    rows = run_cli(["cdr", "subject-access", "--number", SUBJECT, "--database-url", pg_dsn], capsys)
    header, body = rows[0], rows[1:]
    assert header == list(COLUMNS)
    who = {(r[header.index("caller")], r[header.index("customer")]) for r in body}
    # 4 as caller (default factory caller), 1 as callee, 1 only as PAI; not the stranger.
    assert len(body) == 6
    assert ("+358900000001", "globex") in who
    assert ("+358900000002", "initech") in who
    assert all(SUBJECT in r for r in body)


@pytest.mark.postgres
def test_db_migrate_and_maintain_commands(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["db", "migrate", "--database-url", pg_dsn]) == 0
    assert "nothing (up to date)" in capsys.readouterr().out
    now = "2026-11-22T00:00:00+00:00"
    assert cli.main(["db", "maintain", "--database-url", pg_dsn, "--now", now]) == 0
    assert "created cdr_2027_02" in capsys.readouterr().out


def test_config_errors_name_the_field(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "voipgw.toml"
    config.write_text('[cdr]\nbatch_size = "big"\n')
    assert cli.main(["db", "migrate", "--config", str(config)]) == 2
    assert "cdr.batch_size: expected an integer" in capsys.readouterr().err


def test_register_adds_db_and_cdr() -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["cdr", "itemize", "--customer", "x", "--month", "2026-10"])
    assert args.month == Month(year=2026, month=10)
    assert callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["cdr", "itemize", "--customer", "x", "--month", "10/2026"])


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_exports_as_functions(pg_dsn: str, pg_pool: asyncpg.Pool) -> None:
    await seed(pg_dsn)
    out = io.StringIO()
    async with pg_pool.acquire() as con:
        assert await itemize(con, "nobody", Month(year=2026, month=10), out) == 0
        assert await subject_access(con, "+358999999999", io.StringIO()) == 0
    assert out.getvalue() == ",".join(ITEMIZE_COLUMNS) + "\n"


@pytest.mark.postgres
def test_itemize_shows_numbers_and_millisecond_durations(
    pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # As the gateway stored them before numbers were normalised: the From and
    # Request-URI as received, and the loop clock's difference as it came.
    record = make_record(
        customer="numbers",
        caller="sip:+358501234567@pbx.example;user=phone",
        callee="sip:0401234567@127.0.0.1:5060",
        duration=6.168999999999869,
    )

    async def store() -> None:
        con = await asyncpg.connect(pg_dsn)
        try:
            await ensure_partitions(con, [Month.of(record.started_at)])
            await con.copy_records_to_table("cdr", records=[record.as_row()], columns=COLUMNS)
        finally:
            await con.close()

    asyncio.run(store())
    rows = run_cli(
        ["cdr", "itemize", "--customer", "numbers", "--month", "2026-10", "--database-url", pg_dsn],
        capsys,
    )
    line = dict(zip(rows[0], rows[1], strict=True))
    assert line["caller"] == "+358501234567"
    assert line["callee_dialled"] == "0401234567"
    assert line["duration_seconds"] == "6.169"
    assert line["billable_seconds"] == "7"


ALICE, BOB, FRANK = "+358401000001", "+358401000002", "+358402000001"


def relayed_call(
    *, customer: str, owner_customer: str, callee: str, started_at: dt.datetime, ended: bool = True
) -> list[CallDetailRecord]:
    """The two rows of one call that instance A relayed to B, the holder of the
    callee's flow: A's as the caller placed it (``to-owner``), B's as the inbound
    call from a trusted sibling that B saw (``from-sibling``), a few ms later."""
    placed = dataclasses.replace(
        make_record(customer=customer, caller=ALICE, callee=callee, started_at=started_at),
        gateway_instance="gw-a",
        flow_relay=FlowRelay.TO_OWNER,
    )
    delivered = dataclasses.replace(
        make_record(
            customer=owner_customer,
            caller=ALICE,
            callee=callee,
            started_at=started_at + dt.timedelta(milliseconds=15),
        ),
        gateway_instance="gw-b",
        source_address=ipaddress.ip_address("192.0.2.20"),
        flow_relay=FlowRelay.FROM_SIBLING,
    )
    if ended:
        return [placed, delivered]
    return [r.extended_to(r.answered_at or r.ended_at, None) for r in (placed, delivered)]


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_a_relayed_call_is_itemized_and_counted_once_and_both_rows_disclosed(
    pg_pool: asyncpg.Pool,
) -> None:
    october = Month(year=2026, month=10)
    start = dt.datetime(2026, 10, 7, 9, tzinfo=UTC)
    # alice calls bob (one customer) and frank (another), both relayed; a third call
    # to bob is still up.
    records = [
        *relayed_call(customer="setera", owner_customer="setera", callee=BOB, started_at=start),
        *relayed_call(
            customer="setera",
            owner_customer="esimerkki",
            callee=FRANK,
            started_at=start + dt.timedelta(hours=1),
        ),
        *relayed_call(
            customer="setera",
            owner_customer="setera",
            callee=BOB,
            started_at=start + dt.timedelta(hours=2),
            ended=False,
        ),
    ]
    async with pg_pool.acquire() as con:
        await ensure_partitions(con, [october])
        await con.copy_records_to_table(
            "cdr", records=[r.as_row() for r in records], columns=COLUMNS
        )
        setera, esimerkki = io.StringIO(), io.StringIO()
        assert await itemize(con, "setera", october, setera) == 2
        # frank's customer did not place the call: the owner's row is not its bill.
        assert await itemize(con, "esimerkki", october, esimerkki) == 0
        assert await in_progress(con, "setera", october) == 1
        disclosed = io.StringIO()
        assert await subject_access(con, ALICE, disclosed) == len(records)
    lines = list(csv.DictReader(io.StringIO(setera.getvalue())))
    assert [(line["caller"], line["callee_dialled"]) for line in lines] == [
        (ALICE, BOB),
        (ALICE, FRANK),
    ]
    assert [line["started_at"] for line in lines] == [
        start.isoformat(),
        (start + dt.timedelta(hours=1)).isoformat(),
    ]
    rows = list(csv.DictReader(io.StringIO(disclosed.getvalue())))
    assert sorted(row["flow_relay"] for row in rows) == ["from-sibling"] * 3 + ["to-owner"] * 3
