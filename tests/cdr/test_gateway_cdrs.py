"""End to end: a real ``voipgw run`` with real peers, and what its records and metrics say.

* Phones register through the gateway (SIPp, digest authentication): /metrics and
  ``voipgw status`` count the bindings the registrar holds, and an un-REGISTER takes
  one away (issue 13, defect 4).
* The PBX (a trusted peer, SIPp) calls a registered phone (a SIPp UAS on the port it
  registered from): the CDR names the subscriber's customer and number, so
  ``voipgw cdr itemize`` and ``voipgw cdr subject-access`` find it, numbers are numbers
  and durations have three decimals; the gateway logs the decision (defect 5).
* A phone's call is challenged (407) and retried with credentials: one call, one CDR,
  one count in ``voipgw_calls_total``; the challenge is counted on its own (defect 5).

The database is the test's own (``pg_dsn``); the gateway migrates and seeds it.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from tests.interop.sipp import SippUas, free_port, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    REALM,
    GatewayProcess,
    GatewaySetup,
    prepare,
    remove_state,
    set_password,
    state_directory,
    sum_samples,
    voipgw,
    wait_until,
)

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres, pytest.mark.asyncio]

PASSWORDS = {"alice": "alice-pw-13", "bob": "bob-pw-13"}
ALICE_E164 = "+358401000001"
#: The outside caller the PBX forwards (From user part).
OUTSIDE = "+358501234567"


async def register(setup: GatewaySetup, user: str, *, expires: int, port: int = 0) -> None:
    result = await run_uac(
        "uac-register",
        setup.target,
        service=user,
        timeout=10,
        extra_args=[
            *("-au", user, "-ap", PASSWORDS[user], "-auth_uri", REALM),
            *("-set", "domain", REALM, "-set", "expires", str(expires)),
            *(("-p", str(port)) if port else ()),
        ],
    )
    assert result.ok, result.describe()


@pytest_asyncio.fixture
async def pbx() -> AsyncIterator[SippUas]:
    async with SippUas("uas-answer", host=HOST, timeout=120) as uas:
        yield uas


async def start(
    pbx: SippUas, dsn: str, *, authenticate_calls: bool = False
) -> tuple[GatewaySetup, GatewayProcess]:
    state = state_directory()
    setup = prepare(
        state,
        upstream=pbx.uri,
        database_url=dsn,
        cdr={"batch_age": 0.2},
        authenticate_calls=authenticate_calls,
    )
    gateway = GatewayProcess(setup)
    try:
        await gateway.start()
        for user, password in PASSWORDS.items():
            await set_password(setup.config, user, password)
    except BaseException:
        await gateway.stop()
        remove_state(state)
        raise
    return setup, gateway


async def stop(setup: GatewaySetup, gateway: GatewayProcess) -> None:
    try:
        await gateway.stop()
    finally:
        remove_state(setup.state)


async def cdrs(dsn: str) -> list[asyncpg.Record]:
    con = await asyncpg.connect(dsn)
    try:
        return list(await con.fetch("SELECT * FROM cdr ORDER BY started_at"))
    finally:
        await con.close()


def status_value(text: str, label: str) -> float:
    match = re.search(rf"^\s+{re.escape(label)}\s+(\S+)$", text, re.MULTILINE)
    assert match is not None, text
    return float(match.group(1))


@pytest.mark.timeout(120)
async def test_registered_bindings_counted_in_metrics_and_status(pbx: SippUas, pg_dsn: str) -> None:
    setup, gateway = await start(pbx, pg_dsn)
    try:
        bindings = "voipgw_registered_bindings"
        assert await gateway.metric(bindings) == 0
        alice_port = free_port(HOST)
        await register(setup, "alice", expires=600, port=alice_port)
        await register(setup, "bob", expires=600)
        await wait_until("2 bindings", lambda: gateway.metric(bindings), lambda v: v == 2, 15)
        status = await voipgw("status", "--url", f"http://{HOST}:{setup.metrics_port}")
        assert status_value(status, "bindings (all instances)") == 2, status
        # Expires 0 for the same contact removes alice's binding (RFC 3261 10.2.2).
        await register(setup, "alice", expires=0, port=alice_port)
        await wait_until("1 binding", lambda: gateway.metric(bindings), lambda v: v == 1, 15)
    finally:
        await stop(setup, gateway)


@pytest.mark.timeout(120)
async def test_inbound_call_to_a_subscriber_is_hers_in_itemization_and_subject_access(
    pbx: SippUas, pg_dsn: str
) -> None:
    setup, gateway = await start(pbx, pg_dsn)
    try:
        phone_port = free_port(HOST)
        await register(setup, "alice", expires=600, port=phone_port)
        async with SippUas("uas-answer", host=HOST, port=phone_port, timeout=30) as phone:
            inbound = await run_uac(
                "uac-emergency",
                setup.target,
                local_ip=HOST,  # the PBX: a trusted peer
                call_duration=0.3,
                timeout=15,
                extra_args=["-key", "caller", OUTSIDE, "-key", "ruri", f"sip:alice@{REALM}"],
            )
        assert inbound.ok, inbound.describe() + gateway.tail()
        assert phone.result is not None
        assert phone.result.successful_calls == 1, phone.result.describe()
        (row,) = await wait_until("the CDR", lambda: cdrs(pg_dsn), lambda r: len(r) == 1, 15)
        assert row["customer"] == "setera"
        assert row["callee_dialled"] == ALICE_E164
        # The outside party's number from the PBX's From URI.
        assert row["caller"] == OUTSIDE
        assert row["disposition"] == "answered"

        url = ("--database-url", pg_dsn)
        for number in (ALICE_E164, OUTSIDE):
            found = await voipgw("cdr", "subject-access", "--number", number, *url)
            assert [r["call_id"] for r in csv.DictReader(io.StringIO(found))] == [row["call_id"]], (
                number
            )

        month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
        itemized = await voipgw("cdr", "itemize", "--customer", "setera", "--month", month, *url)
        (line,) = list(csv.DictReader(io.StringIO(itemized)))
        assert line["callee_dialled"] == ALICE_E164
        assert line["caller"] == OUTSIDE
        assert re.fullmatch(r"\d+\.\d{3}", line["duration_seconds"]), line
        assert re.fullmatch(r"\d+", line["billable_seconds"]), line

        # One info line for the decision, as for outgoing calls.
        assert f"call {row['call_id']}: inbound" in gateway.tail(100_000)
    finally:
        await stop(setup, gateway)


@pytest.mark.timeout(120)
async def test_authentication_challenge_is_part_of_the_call(pbx: SippUas, pg_dsn: str) -> None:
    setup, gateway = await start(pbx, pg_dsn, authenticate_calls=True)
    try:
        ruri = f"sip:0401234567@{setup.target}"
        call = await run_uac(
            "uac-call-auth",
            setup.target,
            local_ip=OFFICE_IP,
            call_duration=0.3,
            timeout=15,
            extra_args=[
                *("-key", "caller", "alice", "-key", "ruri", ruri),
                *("-au", "alice", "-ap", PASSWORDS["alice"], "-auth_uri", ruri[4:]),
            ],
        )
        assert call.ok, call.describe() + gateway.tail()
        rows = await wait_until(
            "the answered call's CDR",
            lambda: cdrs(pg_dsn),
            lambda r: any(x["disposition"] == "answered" for x in r),
            15,
        )
        await asyncio.sleep(0.5)  # a challenge's row would have been written first
        rows = await cdrs(pg_dsn)
        assert [(r["disposition"], r["final_status"]) for r in rows] == [("answered", 200)]
        assert rows[0]["customer"] == "setera"
        await wait_until(
            "no active call", lambda: gateway.metric("voipgw_active_calls"), lambda v: v == 0, 10
        )
        text = await gateway.scrape()
        assert sum_samples(text, "voipgw_calls_total") == 1
        assert sum_samples(text, "voipgw_calls_total", outcome="answered") == 1
        assert sum_samples(text, "voipgw_call_auth_challenges_total") == 1
    finally:
        await stop(setup, gateway)
