"""The embedded PostgreSQL dies under load; calls to a registered phone go on.

``voipgw run`` (the installed script) owns its embedded PostgreSQL. A SIPp phone
registers as alice; then the PBX (127.0.0.1, a trusted peer) calls her at
:data:`RATE` calls/s while the test SIGKILLs the postmaster. Every call connects,
including those placed while the server is down (the location service answers from
memory), the gateway restarts the server within the back-off bound, counts the restart
(``voipgw_database_restarts_total``), and every call leaves exactly one CDR row once
the spool has replayed.

The issue's own figure (a 60 s SIGKILL under 50 calls/s) is a manual run; this keeps
the load to :data:`CALLS` / :data:`RATE` seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from cdr.db import RESTART_BACKOFF_MAX, SUPERVISE_INTERVAL, EmbeddedPostgres
from tests.interop.sipp import SippUas, free_port, run_uac
from tests.ops.harness import (
    HOST,
    REALM,
    GatewayProcess,
    prepare,
    register_phone,
    remove_state,
    set_password,
    state_directory,
    wait_until,
)

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres]

# The issue's own run (60 s at 50 calls/s, the kill 20 s in) is too long for the suite:
# VOIPGW_DB_AWAY_CALLS=3000 VOIPGW_DB_AWAY_RATE=50 VOIPGW_DB_AWAY_KILL_AFTER=20.
CALLS = int(os.environ.get("VOIPGW_DB_AWAY_CALLS", "150"))
RATE = float(os.environ.get("VOIPGW_DB_AWAY_RATE", "10"))
KILL_AFTER = float(os.environ.get("VOIPGW_DB_AWAY_KILL_AFTER", "4"))
PASSWORD = "away-alice-pw-1"
#: Seconds from the kill until the server answers again: the supervisor notices within
#: its interval, the dead postmaster is reaped, then attempts back off up to the max;
#: pg_ctl start and crash recovery take a few seconds of this.
RESTART_BOUND = SUPERVISE_INTERVAL + 2 * RESTART_BACKOFF_MAX + 10.0


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def answers(dsn: str) -> bool:
    try:
        con = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        return bool(await con.fetchval("SELECT 1"))
    finally:
        await con.close()


def warnings_of(log: str) -> str:
    """The gateway's warning and error lines (why a call failed), for messages."""
    return "\n".join(
        line for line in log.splitlines() if '"level": "warning"' in line or '"error"' in line
    )[-6000:]


@pytest.mark.timeout(180)
@pytest.mark.asyncio
async def test_postmaster_sigkilled_calls_to_a_registered_phone_go_on() -> None:
    state = state_directory()
    pgdata = state / "pgdata"
    try:
        setup = prepare(state, upstream=f"sip:{HOST}:{free_port(HOST)}")
        gateway = GatewayProcess(setup)
        await gateway.start()
        try:
            await set_password(setup.config, "alice", PASSWORD)
            phone_port = await register_phone(setup, "alice", PASSWORD)
            dsn = EmbeddedPostgres(pgdata)
            assert await asyncio.to_thread(dsn.start) is False  # attaches only
            url = dsn.dsn("voipgw")
            async with SippUas("uas-answer", host=HOST, port=phone_port, timeout=120) as phone:
                pbx = asyncio.ensure_future(
                    run_uac(
                        "uac-emergency",
                        setup.target,
                        local_ip=HOST,
                        calls=CALLS,
                        rate=RATE,
                        call_duration=0.2,
                        timeout=CALLS / RATE + 40,
                        extra_args=["-key", "caller", "pbx", "-key", "ruri", f"sip:alice@{REALM}"],
                    )
                )
                await asyncio.sleep(KILL_AFTER)
                killed = postmaster_pid(pgdata)
                assert killed is not None
                os.kill(killed, signal.SIGKILL)
                killed_at = time.monotonic()
                killed_wall = dt.datetime.now(dt.UTC)
                await wait_until(
                    "PostgreSQL to answer again",
                    lambda: answers(url),
                    bool,
                    limit=RESTART_BOUND + 5,
                )
                back_after = time.monotonic() - killed_at
                back_wall = dt.datetime.now(dt.UTC)
                assert postmaster_pid(pgdata) != killed
                result = await pbx
            assert result.ok, result.describe()[:1500] + warnings_of(gateway.tail(300_000))
            assert phone.result is not None
            assert phone.result.successful_calls == CALLS, phone.result.describe()
            restarts = await gateway.metric("voipgw_database_restarts_total")
            con = await asyncpg.connect(url)
            try:
                await wait_until(
                    f"{CALLS} CDR rows",
                    lambda: con.fetchval("SELECT count(*) FROM cdr"),
                    lambda n: n >= CALLS,
                    limit=30,
                )
                rows = await con.fetch("SELECT call_id, final_status, started_at FROM cdr")
            finally:
                await con.close()
            log = gateway.log.read_text(encoding="utf-8", errors="replace")
        finally:
            await gateway.stop()
        during = [r for r in rows if killed_wall <= r["started_at"] <= back_wall]
        assert len(rows) == CALLS
        assert len({r["call_id"] for r in rows}) == CALLS
        assert all(r["final_status"] == 200 for r in rows)
        assert during, "no call was placed while PostgreSQL was down"
        assert restarts == 1
        assert back_after <= RESTART_BOUND
        assert "embedded PostgreSQL restarted" in log
        print(
            f"postmaster SIGKILLed: back after {back_after:.1f}s (bound {RESTART_BOUND:g}s), "
            f"{restarts:g} restart; {CALLS} calls connected, {len(during)} of them placed "
            f"while PostgreSQL was down; {len(rows)} CDR rows (0 lost, 0 duplicated)"
        )
    finally:
        remove_state(state)
