"""Issue 16 part 3 end to end: the PostgreSQL primary is SIGKILLed under load and its
standby promoted; the gateway, given both in one multi-host URL, goes on.

A primary/standby pair (tests/pgpair.py, synchronous streaming replication) and
``voipgw run`` with ``[database] url = "postgresql://primary,standby/voipgw?
target_session_attrs=read-write"``. SIPp places :data:`CALLS` ordinary calls at
:data:`RATE` calls/s from the office LAN to a SIPp PBX; :data:`KILL_AFTER` seconds in
the primary's postmaster is SIGKILLed and, :data:`PROMOTE_AFTER` seconds later (a
failover manager's detection time), the standby is promoted (``pg_ctl promote``).

An emergency call placed while no database is writable is answered by the centre
(routed from memory), and its callback window, written behind, reaches the new
primary.

Asserted: every call completes (SIPp counts the failures; the bound is 0), a REGISTER
after the promotion is stored in the new primary (retried after 503 + Retry-After as
a phone does, while the spool's replay keeps the new primary busy; the attempts are
printed), and once the spool has replayed the
new primary holds one CDR row per completed call, no Call-ID twice.

Defaults keep the suite's run to 30 s of load; the issue's run is
``VOIPGW_FAILOVER_CALLS=3000 VOIPGW_FAILOVER_KILL_AFTER=20``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

from gateway.registrar.service import RETRY_AFTER_DB_DOWN
from tests.interop.sipp import SippUas, free_port, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    OFFICE_IP_2,
    REALM,
    GatewayProcess,
    GatewaySetup,
    prepare,
    remove_state,
    set_password,
    state_directory,
    wait_until,
)
from tests.pgpair import PgPair

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres]

CALLS = int(os.environ.get("VOIPGW_FAILOVER_CALLS", "1500"))
RATE = float(os.environ.get("VOIPGW_FAILOVER_RATE", "50"))
KILL_AFTER = float(os.environ.get("VOIPGW_FAILOVER_KILL_AFTER", "10"))
#: Seconds between the kill and the promotion: what Patroni or an operator takes.
PROMOTE_AFTER = 2.0
PASSWORD = "failover-alice-pw-1"
#: Seconds a phone keeps retrying its REGISTER after the promotion (503 + Retry-After).
REGISTER_BOUND = 60.0
GUARD_LIMITS = """
requests_per_second = 0
invites_per_second = 0
"""


async def register_like_a_phone(setup: GatewaySetup, user: str, password: str) -> int:
    """REGISTERs as a phone does after a failover: a 503 (the registrar could not
    reach the database in its 1 s bound and does not remember this user) is retried
    after its Retry-After. Returns the attempts it took; fails on anything else."""
    port = free_port(HOST)
    deadline = time.monotonic() + REGISTER_BOUND
    attempts = 0
    while True:
        attempts += 1
        result = await run_uac(
            "uac-register",
            setup.target,
            service=user,
            timeout=10,
            extra_args=[
                *("-au", user, "-ap", password, "-auth_uri", REALM),
                *("-set", "domain", REALM, "-set", "expires", "600", "-p", str(port)),
            ],
        )
        if result.ok:
            return attempts
        assert "SIP/2.0 503" in result.errors, result.describe()
        assert time.monotonic() + RETRY_AFTER_DB_DOWN < deadline, result.describe()
        await asyncio.sleep(RETRY_AFTER_DB_DOWN)


async def fetch(url: str, sql: str) -> list[asyncpg.Record]:
    con = await asyncpg.connect(url, timeout=5)
    try:
        return await con.fetch(sql)
    finally:
        await con.close()


@pytest.mark.timeout(CALLS / RATE + 240)
@pytest.mark.asyncio
async def test_primary_killed_under_load_standby_promoted_calls_and_cdrs_go_on() -> None:
    state = state_directory()
    pair = PgPair(Path(tempfile.mkdtemp(prefix="voipgw-pgpair-")))
    try:
        await asyncio.to_thread(pair.start)
        new_primary = pair.node_url(pair.standby)
        async with (
            SippUas("uas-answer", host=HOST, timeout=CALLS / RATE + 200) as pbx,
            SippUas("uas-psap-answer", host=HOST, timeout=CALLS / RATE + 200) as kerava,
        ):
            setup = prepare(
                state,
                upstream=pbx.uri,
                database_url=pair.url(),
                centre_ports={"kerava": kerava.port},
            )
            with setup.config.open("a", encoding="utf-8") as config:
                config.write(GUARD_LIMITS)  # one office phone places every call
            gateway = GatewayProcess(setup)
            await gateway.start()
            try:
                await set_password(setup.config, "alice", PASSWORD)
                load = asyncio.ensure_future(
                    run_uac(
                        "uac-emergency",
                        setup.target,
                        local_ip=OFFICE_IP,
                        calls=CALLS,
                        rate=RATE,
                        call_duration=0.1,
                        timeout=CALLS / RATE + 90,
                        extra_args=[
                            *("-key", "caller", "bob"),
                            *("-key", "ruri", f"sip:0401234567@{setup.target}"),
                        ],
                    )
                )
                await asyncio.sleep(KILL_AFTER)
                pair.kill_primary()
                killed_at = time.monotonic()
                # Alice dials 112 while no database is writable: routed from memory.
                emergency = asyncio.ensure_future(
                    run_uac(
                        "uac-emergency",
                        setup.target,
                        local_ip=OFFICE_IP_2,
                        call_duration=0.2,
                        timeout=30,
                        extra_args=[
                            *("-key", "caller", "alice"),
                            *("-key", "ruri", f"sip:112@{setup.target}"),
                        ],
                    )
                )
                await asyncio.sleep(PROMOTE_AFTER)
                await asyncio.to_thread(pair.promote)
                promoted_at = time.monotonic()
                emergency_result = await emergency
                ready = await wait_until(
                    "the gateway to reach the new primary",
                    gateway.readyz,
                    lambda r: "database" not in r[1].get("degraded", []),
                    limit=60,
                )
                back_after = time.monotonic() - promoted_at
                register_attempts = await register_like_a_phone(setup, "alice", PASSWORD)
                bindings = await fetch(
                    new_primary,
                    "SELECT aor, host(received_host) AS host FROM registrar_bindings"
                    " WHERE aor LIKE 'sip:alice@%' AND expires_at > now()",
                )
                # Its callback window, written behind once a primary takes writes.
                window = await wait_until(
                    "the emergency call's callback window on the new primary",
                    lambda: fetch(
                        new_primary,
                        "SELECT host, centre FROM emergency_callbacks"
                        " WHERE callback_number = '358401000001'",
                    ),
                    lambda r: len(r) == 1 and r[0]["centre"] == "kerava",
                    limit=60,
                )
                result = await load
                load_done = time.monotonic()
                await wait_until(
                    "the spool to empty",
                    lambda: gateway.metric("voipgw_cdr_spool_bytes"),
                    lambda n: n == 0,
                    limit=60,
                )
                spool_empty_after = time.monotonic() - load_done
                rows = await wait_until(
                    "a CDR row per completed call on the new primary",
                    lambda: fetch(new_primary, "SELECT call_id FROM cdr"),
                    lambda r: len(r) >= result.successful_calls + emergency_result.successful_calls,
                    limit=60,
                )
            finally:
                await gateway.stop()
            log = gateway.tail(2_000_000)
    finally:
        await asyncio.to_thread(pair.stop)
        shutil.rmtree(pair.root, ignore_errors=True)
        remove_state(state)

    registrar_warnings = [
        line for line in log.splitlines() if "voipgw.registrar" in line and "warning" in line
    ]
    print("registrar warnings:", *registrar_warnings[-6:], sep="\n  ")
    call_ids = [row["call_id"] for row in rows]
    duplicated = len(call_ids) - len(set(call_ids))
    print(
        f"{CALLS} calls at {RATE:g}/s (achieved {result.call_rate:.1f}/s); primary "
        f"SIGKILLed {KILL_AFTER:g} s in, standby promoted {PROMOTE_AFTER:g} s later "
        f"(promotion took {promoted_at - killed_at - PROMOTE_AFTER:.2f} s); gateway ready "
        f"on the new primary {back_after:.2f} s after the promotion; spool empty "
        f"{spool_empty_after:.2f} s after the load ended; calls: {result.successful_calls} completed, "
        f"{result.failed_calls} failed; CDR rows on the new primary: {len(rows)} (load + emergency call), "
        f"{duplicated} duplicated Call-IDs; REGISTER after promotion: {bindings}, {register_attempts} attempt(s); emergency call "
        f"during the outage: {emergency_result.successful_calls}/1 answered, its window on "
        f"the new primary: {[dict(r) for r in window]}"
    )
    assert ready[0] == 200
    assert emergency_result.ok, emergency_result.describe()
    assert window[0]["host"] == OFFICE_IP_2
    assert result.ok, result.describe()[:2000] + log[-3000:]
    assert result.failed_calls == 0
    assert [(row["aor"], row["host"]) for row in bindings] == [("sip:alice@voipgw.demo", HOST)]
    # One row per completed call: the load's and the emergency call's.
    assert result.successful_calls == CALLS
    assert len(rows) == CALLS + emergency_result.successful_calls == CALLS + 1
    assert duplicated == 0
