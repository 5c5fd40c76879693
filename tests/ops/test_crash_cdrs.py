"""Issue 19 end to end: the gateway is SIGKILLed with calls up, and no call loses its CDR.

``voipgw run`` (the installed command) relays SIPp calls to a SIPp PBX: first short
calls that end before the kill, then held calls that are all up (answered, 200 OK
relayed) when the gateway is SIGKILLed. Started again on the same state directory, it
replays its spool and closes what it left in progress. Then every answered call has
exactly one row: the short ones ended by the caller, the held ones closed as
``gateway-restart`` at most one heartbeat interval (plus loop lag) before the kill.
"""

from __future__ import annotations

import asyncio
import signal
import time

import asyncpg
import pytest

from cdr.db import EmbeddedPostgres
from tests.interop.sipp import SippUas, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    GatewayProcess,
    prepare,
    remove_state,
    state_directory,
    wait_until,
)

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres]

SHORT_CALLS = 100
HELD_CALLS = 250
RATE = 50.0
HEARTBEAT = 1.0
#: The loop lag a loaded, shared test machine may add to the heartbeat interval.
LAG = 1.0
GUARD_LIMITS = """
requests_per_second = 0
invites_per_second = 0
"""
SHORT = "sip:0401111111@{target}"
HELD = "sip:0402222222@{target}"


async def rows(dsn: str) -> list[asyncpg.Record]:
    con = await asyncpg.connect(dsn)
    try:
        return await con.fetch(
            "SELECT call_id, callee_dialled, disposition::text, ended_by::text,"
            " answered_at, ended_at FROM cdr"
        )
    finally:
        await con.close()


def uac_args(ruri: str) -> list[str]:
    return ["-key", "caller", "bob", "-key", "ruri", ruri]


@pytest.mark.timeout(120)
@pytest.mark.asyncio
async def test_sigkill_with_calls_up_loses_and_duplicates_no_cdr() -> None:
    await crash_and_restart(workers=None, then=None)


@pytest.mark.timeout(120)
@pytest.mark.asyncio
async def test_workers_killed_and_started_again_as_one_process_lose_no_cdr() -> None:
    """The operator goes from two workers back to one process after the crash: the
    workers' spools (w1, w2) are no process's now, and the single process replays them
    as the workers they were, closing their calls left in progress."""
    await crash_and_restart(workers=2, then=1)


async def crash_and_restart(workers: int | None, then: int | None) -> None:
    """Held calls up, SIGKILL, start again on the same state directory with ``then``
    workers ([server] workers; None: tests.ops.harness.TEST_WORKERS)."""
    state = state_directory()
    try:
        async with SippUas("uas-answer", host=HOST, timeout=90) as pbx:
            setup = prepare(
                state, upstream=pbx.uri, cdr={"heartbeat_interval": HEARTBEAT}, workers=workers
            )
            # One office phone places every call: the guard's per-source limits (10
            # INVITEs/s) would otherwise shed them. [guard] is the config's last table.
            with setup.config.open("a", encoding="utf-8") as config:
                config.write(GUARD_LIMITS)
            first = GatewayProcess(setup, "voipgw-1.log")
            await first.start()
            held_uac = None
            try:
                short = await run_uac(
                    "uac-long-call-or-failure",
                    setup.target,
                    local_ip=OFFICE_IP,
                    calls=SHORT_CALLS,
                    rate=RATE,
                    call_duration=0.2,
                    timeout=20,
                    extra_args=uac_args(SHORT.format(target=setup.target)),
                )
                assert short.ok, short.describe() + first.tail()
                # Held far longer than the test: SIPp gives up (its -timeout) after
                # the gateway is gone.
                held_uac = asyncio.create_task(
                    run_uac(
                        "uac-long-call-or-failure",
                        setup.target,
                        local_ip=OFFICE_IP,
                        calls=HELD_CALLS,
                        rate=RATE,
                        call_duration=120,
                        timeout=15,
                        extra_args=uac_args(HELD.format(target=setup.target)),
                    )
                )
                await wait_until(
                    "every held call up",
                    lambda: first.metric("voipgw_active_calls"),
                    lambda n: n >= HELD_CALLS,
                    limit=25,
                )
                # A moment for the last answers' in-progress records to be spooled
                # (one batch_age, 20 ms), as for any record.
                await asyncio.sleep(0.1)
                killed_at = time.time()
                first.signal(signal.SIGKILL)
                assert await first.wait(10) == -signal.SIGKILL
            finally:
                await first.kill()
                if held_uac is not None:
                    await held_uac

            if then is not None and then != setup.workers:
                setup = prepare(
                    state, upstream=pbx.uri, cdr={"heartbeat_interval": HEARTBEAT}, workers=then
                )
                with setup.config.open("a", encoding="utf-8") as config:
                    config.write(GUARD_LIMITS)
            second = GatewayProcess(setup, "voipgw-2.log")
            await second.start()
            try:
                pg = EmbeddedPostgres(state / "pgdata")
                assert await asyncio.to_thread(pg.start) is False  # the gateway's own
                dsn = pg.dsn("voipgw")
                found = await wait_until(
                    "every call's row, none in progress",
                    lambda: rows(dsn),
                    lambda r: (
                        len(r) >= SHORT_CALLS + HELD_CALLS
                        and all(row["ended_by"] is not None for row in r)
                    ),
                    limit=20,
                )
                if setup.workers == 1:
                    # Replayed in full, no process's spool: retired, so that the next
                    # start does not replay it again (a worker's is a directory).

                    async def worker_spools() -> list[str]:
                        return sorted(p.name for p in setup.spool_dir.glob("w*"))

                    await wait_until("worker spools retired", worker_spools, lambda w: not w, 10)
            finally:
                await second.stop()
    finally:
        remove_state(state)

    assert len({row["call_id"] for row in found}) == len(found), "a call has two rows"
    short_rows = [row for row in found if row["callee_dialled"].endswith("0401111111")]
    held_rows = [row for row in found if row["callee_dialled"].endswith("0402222222")]
    assert len(short_rows) == SHORT_CALLS
    assert len(held_rows) == HELD_CALLS
    assert len(found) == SHORT_CALLS + HELD_CALLS
    assert {row["ended_by"] for row in short_rows} == {"caller"}
    assert {row["ended_by"] for row in held_rows} == {"gateway-restart"}
    assert {row["disposition"] for row in found} == {"answered"}
    before = [killed_at - row["ended_at"].timestamp() for row in held_rows]
    # Closed at the last heartbeat: never after the kill (a small clock tolerance),
    # at most one interval plus lag before it.
    assert all(-0.05 <= gap <= HEARTBEAT + LAG for gap in before), sorted(before)[-5:]
    assert all(row["ended_at"] >= row["answered_at"] for row in held_rows)
    print(
        f"SIGKILL with {HELD_CALLS} calls up: {len(found)} rows for "
        f"{SHORT_CALLS + HELD_CALLS} answered calls, 0 duplicated; held calls closed "
        f"{min(before):.3f}-{max(before):.3f} s before the kill"
    )
