"""Faults around a running ``voipgw run``, each bounded in time.

* The PBX (a SIPp UAS upstream) is SIGKILLed mid-run: every call still gets a final
  answer (no caller hangs), and once the transaction timers have run out
  (Timer B/F = 64*T1 = 32 s) no call is left in ``voipgw_active_calls``.
* PostgreSQL (a server the test runs, ``[database] url``) is stopped with pg_ctl for
  20 s while calls continue: the spool grows (``voipgw_cdr_spool_bytes``) and after
  the restart every call's CDR is in the table, once.
* The gateway is SIGKILLed and started again: a registration made before the kill
  still routes a call from the PBX to the registered SIPp UAS, and the CDRs of calls
  completed before the kill are in the table (spool replay).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import pytest

from cdr.db import EmbeddedPostgres, ensure_database
from tests.interop.sipp import SippUas, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    OFFICE_IP_2,
    REALM,
    GatewayProcess,
    KillableUas,
    cdr_rows,
    prepare,
    register_phone,
    remove_state,
    running_gateway,
    set_password,
    spooled_records,
    state_directory,
    wait_until,
)

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres]

ORDINARY = "sip:0401234567@{target}"


def caller_keys(caller: str, ruri: str) -> list[str]:
    return ["-key", "caller", caller, "-key", "ruri", ruri]


# ---------------------------------------------------------------------- (a) PBX killed

PBX_CALLS = 16
PBX_RATE = 2.0
PBX_HOLD = 3.0
PBX_KILL_AFTER = 3.0
#: RFC 3261 Timer B and F: 64*T1 with T1 = 0.5 s.
TIMER_B = 32.0


@pytest.mark.timeout(90)
@pytest.mark.asyncio
async def test_pbx_killed_mid_run_calls_fail_fast_and_nothing_leaks() -> None:
    state = state_directory()
    try:
        pbx = KillableUas("uas-answer", host=HOST, timeout=60)
        setup = prepare(state, upstream=pbx.uri)
        async with pbx, running_gateway(setup) as gateway:
            uac = asyncio.ensure_future(
                run_uac(
                    "uac-long-call-or-failure",
                    setup.target,
                    local_ip=OFFICE_IP,
                    calls=PBX_CALLS,
                    rate=PBX_RATE,
                    call_duration=PBX_HOLD,
                    timeout=TIMER_B + 20,
                    extra_args=caller_keys("bob", ORDINARY.format(target=setup.target)),
                )
            )
            await asyncio.sleep(PBX_KILL_AFTER)
            pbx.kill_now()
            killed_at = time.monotonic()
            result = await uac
            # Every call got a final answer and ended (ACK, or BYE answered).
            assert result.ok, result.describe()
            answered = await gateway.metric(
                "voipgw_sip_responses_total", code="200", method="INVITE", direction="out"
            )
            failures = {
                code: await gateway.metric(
                    "voipgw_sip_responses_total", code=code, method="INVITE", direction="out"
                )
                for code in ("408", "480", "500", "502", "503", "504")
            }
            assert answered + sum(failures.values()) == PBX_CALLS, (answered, failures)
            assert sum(failures.values()) >= 4, failures
            assert set(k for k, v in failures.items() if v) <= {"408", "502", "503"}, failures
            slowest = max(result.setup_times)
            # No caller waited longer than the B leg's Timer B (plus scheduling).
            assert slowest <= TIMER_B + 2, result.setup_times
            # Once Timer B/F have run out nothing of the dead PBX's calls remains.
            await wait_until(
                "voipgw_active_calls == 0",
                lambda: gateway.metric("voipgw_active_calls"),
                lambda v: v == 0,
                limit=max(1.0, killed_at + TIMER_B + 3 - time.monotonic()),
            )
            print(
                f"PBX killed: {answered:g} answered, failures {failures}, "
                f"slowest final answer {slowest:.2f}s, active calls 0 "
                f"{time.monotonic() - killed_at:.1f}s after the kill"
            )
    finally:
        remove_state(state)


# ---------------------------------------------------------------------- (b) DB down

DB_CALLS = 30
DB_RATE = 1.0
DB_DOWN_AFTER = 4.0
DB_DOWN_FOR = 20.0


async def postgres_outage(*, registrar: bool, calls: int, down_for: float) -> None:
    """Calls at 1/s while the test's PostgreSQL is stopped for ``down_for`` seconds."""
    state = state_directory()
    pg = EmbeddedPostgres(state / "pg" / "pgdata")
    try:
        await asyncio.to_thread(pg.start)
        await ensure_database(pg.dsn(), "voipgw")
        dsn = pg.dsn("voipgw")
        async with SippUas("uas-answer", host=HOST, timeout=100) as pbx:
            setup = prepare(
                state,
                upstream=pbx.uri,
                database_url=dsn,
                cdr={"retry_initial": 0.2, "retry_max": 2.0},
                registrar=registrar,
            )
            async with running_gateway(setup) as gateway:
                uac = asyncio.ensure_future(
                    run_uac(
                        "uac-emergency",
                        setup.target,
                        local_ip=OFFICE_IP,
                        calls=calls,
                        rate=DB_RATE,
                        call_duration=0.5,
                        timeout=60,
                        extra_args=caller_keys("bob", ORDINARY.format(target=setup.target)),
                    )
                )
                await asyncio.sleep(DB_DOWN_AFTER)
                committed_before = len(await cdr_rows(dsn))
                await asyncio.to_thread(pg.stop, "fast")
                down_at = time.monotonic()
                spool_peak = 0.0
                readiness_down: list[tuple[int, dict[str, Any]]] = []
                while time.monotonic() - down_at < down_for:
                    spool_peak = max(spool_peak, await gateway.metric("voipgw_cdr_spool_bytes"))
                    readiness_down.append(await gateway.readyz())
                    await asyncio.sleep(1.0)
                await asyncio.to_thread(pg.start)
                # A database the gateway does not own is reported, not restarted.
                ready_back = await wait_until(
                    "/readyz to report the database up",
                    gateway.readyz,
                    lambda r: r[1].get("dependencies", {}).get("database") is True,
                    limit=15,
                )
                result = await uac
                # Calls went on while the database was away.
                assert result.ok, result.describe()[:3000] + gateway.tail(3000)
                rows = await wait_until(
                    f"{calls} CDR rows",
                    lambda: cdr_rows(dsn),
                    lambda r: len(r) >= calls,
                    limit=30,
                )
                spool_after = await wait_until(
                    "the spool to empty",
                    lambda: gateway.metric("voipgw_cdr_spool_bytes"),
                    lambda v: v == 0,
                    limit=15,
                )
        assert committed_before >= 1
        # Reported down while away, without taking the instance out of its pool.
        assert any(body["degraded"] == ["database"] for _, body in readiness_down)
        assert all(status == 200 for status, _ in readiness_down), readiness_down
        assert ready_back[0] == 200 and ready_back[1]["degraded"] == []
        assert spool_peak > 0, "voipgw_cdr_spool_bytes never grew while PostgreSQL was down"
        assert pbx.result is not None
        assert pbx.result.successful_calls == calls, pbx.result.describe()
        call_ids = Counter(row.call_id for row in rows)
        assert len(rows) == calls, call_ids.most_common(3)
        assert len(call_ids) == calls
        assert all(row.final_status == 200 for row in rows)
        print(
            f"PostgreSQL down {down_for:g}s: {calls} calls ok, spool peak "
            f"{spool_peak:g} bytes, {len(rows)} rows after recovery (0 lost, 0 duplicated), "
            f"spool {spool_after:g} bytes"
        )
    finally:
        await asyncio.to_thread(pg.stop, "immediate")
        remove_state(state)


@pytest.mark.timeout(120)
@pytest.mark.asyncio
async def test_postgres_down_for_20s_calls_continue_and_no_cdr_is_lost() -> None:
    # Without [registrar]: the call path itself never reads the database.
    await postgres_outage(registrar=False, calls=DB_CALLS, down_for=DB_DOWN_FOR)


@pytest.mark.timeout(90)
@pytest.mark.asyncio
async def test_postgres_down_with_registrar_ordinary_calls_continue() -> None:
    await postgres_outage(registrar=True, calls=12, down_for=6.0)


# ---------------------------------------------------------------------- (c) SIGKILL

KILL_CALLS = 5
EMERGENCY_CALLS = 2
PASSWORD = "ops-alice-pw-1"


@pytest.mark.timeout(150)
@pytest.mark.asyncio
async def test_sigkill_and_restart_keep_registrations_and_cdrs() -> None:
    state = state_directory()
    try:
        async with (
            SippUas("uas-answer", host=HOST, timeout=120) as pbx,
            SippUas("uas-psap-answer", host=HOST, timeout=120) as kerava,
        ):
            setup = prepare(state, upstream=pbx.uri, centre_ports={"kerava": kerava.port})
            first = GatewayProcess(setup, "voipgw-1.log")
            await first.start()
            try:
                await set_password(setup.config, "alice", PASSWORD)
                # The phone registers from the port its UAS will listen on later.
                phone_port = await register_phone(setup, "alice", PASSWORD)
                calls = await run_uac(
                    "uac-emergency",
                    setup.target,
                    local_ip=OFFICE_IP,
                    calls=KILL_CALLS,
                    rate=5,
                    call_duration=0.2,
                    timeout=20,
                    extra_args=caller_keys("bob", ORDINARY.format(target=setup.target)),
                )
                assert calls.ok, calls.describe()
                # PostgreSQL goes away: emergency calls (which never wait for the
                # database) still complete, and their CDRs can only be spooled.
                await asyncio.to_thread(EmbeddedPostgres(state / "pgdata").stop, "fast")
                emergency = await run_uac(
                    "uac-emergency",
                    setup.target,
                    local_ip=OFFICE_IP_2,
                    calls=EMERGENCY_CALLS,
                    rate=5,
                    call_duration=0.2,
                    timeout=20,
                    extra_args=caller_keys("alice", f"sip:112@{setup.target}"),
                )
                assert emergency.ok, emergency.describe()
                # Long enough for the records to be spooled (fsynced), no more.
                await asyncio.sleep(1.0)
                first.signal(signal.SIGKILL)
                assert await first.wait(10) == -signal.SIGKILL
            finally:
                await first.kill()
            # What the dead gateway left to replay: at least the emergency calls'.
            pending = spooled_records(setup.spool_dir)
            assert len(pending) >= EMERGENCY_CALLS, pending

            second = GatewayProcess(setup, "voipgw-2.log")
            await second.start()
            try:
                # A call from the PBX (a trusted peer) to alice reaches her phone.
                async with SippUas("uas-answer", host=HOST, port=phone_port, timeout=30) as phone:
                    inbound = await run_uac(
                        "uac-emergency",
                        setup.target,
                        local_ip=HOST,
                        timeout=15,
                        extra_args=caller_keys("pbx", f"sip:alice@{REALM}"),
                    )
                assert inbound.ok, inbound.describe() + second.tail()
                assert phone.result is not None
                assert phone.result.successful_calls == 1, phone.result.describe()
                pg = EmbeddedPostgres(state / "pgdata")
                # The gateway runs it; this only attaches (start() reuses a live server).
                assert await asyncio.to_thread(pg.start) is False
                dsn = pg.dsn("voipgw")
                rows = await wait_until(
                    "the pre-kill CDRs",
                    lambda: cdr_rows(dsn),
                    lambda r: len(r) >= KILL_CALLS + EMERGENCY_CALLS,
                    limit=20,
                )
            finally:
                await second.stop()
        ordinary = [row for row in rows if "0401234567" in row.callee_dialled]
        replayed = [row for row in rows if row.callee_dialled == "112"]
        assert len(ordinary) == KILL_CALLS
        assert len(replayed) == EMERGENCY_CALLS
        # The spool may also hold a record whose row had committed before the
        # checkpoint moved; replay is idempotent, so it is still one row.
        pending_ids = {str(r["call_id"]) for r in pending}
        assert {row.call_id for row in replayed} <= pending_ids
        assert pending_ids <= {row.call_id for row in rows}
        assert len({row.call_id for row in rows}) == len(rows)
        before_kill = ordinary + replayed
        assert len({row.call_id for row in before_kill}) == len(before_kill)
        print(
            f"SIGKILL: {len(pending)} records replayed from the spool, {len(before_kill)} "
            f"pre-kill CDRs in the table, registration survived"
        )
    finally:
        remove_state(state)
