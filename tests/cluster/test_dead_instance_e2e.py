"""Issue 16 part 2 end to end: instance A is SIGKILLed with answered calls up; instance
B, sharing its PostgreSQL, declares it dead and closes its in-progress CDRs.

Bound: the rows are closed within ``dead_after`` plus one ``heartbeat_interval`` (a
survivor's tick) after A's last heartbeat, plus the closing transaction and the event
loop's lag on a shared test machine (:data:`LAG`). The test prints the measured
figure. Then A's spool is replayed from elsewhere with ``voipgw cdr replay-spool``,
twice: no row is duplicated.
"""

from __future__ import annotations

import asyncio
import signal
import time

import asyncpg
import pytest

from tests.interop.sipp import SippUas, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    GatewayProcess,
    GatewaySetup,
    prepare,
    remove_state,
    state_directory,
    voipgw,
    wait_until,
)

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres]

CALLS = 40
RATE = 20.0
HEARTBEAT = 0.5
DEAD_AFTER = 3.0
#: What a loaded, shared 2-core machine may add to a tick (loop lag, the transaction).
LAG = 2.0
EXTRA = f"""
requests_per_second = 0
invites_per_second = 0

[cluster]
heartbeat_interval = {HEARTBEAT}
dead_after = {DEAD_AFTER}
"""
HELD = "sip:0402222222@{target}"


def clustered(setup: GatewaySetup) -> GatewaySetup:
    # [guard] is the harness config's last table: the limits go there, then [cluster].
    with setup.config.open("a", encoding="utf-8") as config:
        config.write(EXTRA)
    return setup


async def rows_of(dsn: str, setup: GatewaySetup) -> list[asyncpg.Record]:
    """The CDR rows of the gateway of ``setup`` (of each of its workers)."""
    con = await asyncpg.connect(dsn)
    try:
        return await con.fetch(
            "SELECT call_id, ended_by::text, ended_at, answered_at FROM cdr"
            " WHERE gateway_instance = ANY($1)",
            setup.process_names,
        )
    finally:
        await con.close()


async def instance_row(dsn: str, instance: str) -> asyncpg.Record:
    con = await asyncpg.connect(dsn)
    try:
        return await con.fetchrow(
            "SELECT last_seen, declared_dead_at, declared_dead_by, calls_closed"
            " FROM cluster_instances WHERE instance = $1",
            instance,
        )
    finally:
        await con.close()


@pytest.mark.timeout(240)
@pytest.mark.asyncio
async def test_survivor_closes_a_sigkilled_instances_calls(pg_dsn: str) -> None:
    states = [state_directory(), state_directory()]
    names = [f"ops-{state.name[-8:]}" for state in states]
    try:
        async with SippUas("uas-answer", host=HOST, timeout=200) as pbx:
            setups = [
                clustered(prepare(state, upstream=pbx.uri, database_url=pg_dsn)) for state in states
            ]
            a, b = GatewayProcess(setups[0]), GatewayProcess(setups[1])
            await a.start()
            await b.start()
            held = None
            try:
                await wait_until(
                    "both instances live",
                    lambda: b.metric("voipgw_cluster_instances"),
                    lambda n: n == 2,
                    limit=10,
                )
                held = asyncio.create_task(
                    run_uac(
                        "uac-long-call-or-failure",
                        setups[0].target,
                        local_ip=OFFICE_IP,
                        calls=CALLS,
                        rate=RATE,
                        call_duration=120,
                        timeout=20,
                        extra_args=[
                            *("-key", "caller", "bob"),
                            *("-key", "ruri", HELD.format(target=setups[0].target)),
                        ],
                    )
                )
                await wait_until(
                    f"{CALLS} in-progress rows of A",
                    lambda: rows_of(pg_dsn, setups[0]),
                    lambda r: len(r) == CALLS and all(x["ended_by"] is None for x in r),
                    limit=30,
                )
                killed_at = time.time()
                a.signal(signal.SIGKILL)
                assert await a.wait(10) == -signal.SIGKILL
                closed = await wait_until(
                    "A's rows closed by B",
                    lambda: rows_of(pg_dsn, setups[0]),
                    lambda r: all(x["ended_by"] is not None for x in r),
                    limit=DEAD_AFTER + HEARTBEAT + LAG + 20,
                )
                seen_closed_at = time.time()
                verdict = await instance_row(pg_dsn, names[0])
                dead_total = await b.metric("voipgw_cluster_dead_instances_total")
                closed_total = await b.metric("voipgw_cluster_calls_closed_total")
                live = await wait_until(
                    "B to count one live instance",
                    lambda: b.metric("voipgw_cluster_instances"),
                    lambda n: n == 1,
                    limit=10,
                )
                log = b.tail(200_000)
            finally:
                await a.kill()
                await b.stop()
                if held is not None:
                    await held
            # A's spool (with workers, each worker's), replayed from elsewhere (here
            # the test), twice.
            replays = [
                " / ".join(
                    [
                        await voipgw(
                            *("cdr", "replay-spool", "--spool-dir", str(spool)),
                            *("--database-url", pg_dsn),
                        )
                        for spool in setups[0].locked_spool_dirs
                    ]
                )
                for _ in range(2)
            ]
            after = await rows_of(pg_dsn, setups[0])
            # B stopped cleanly (SIGTERM): gone, not dead.
            b_left = await instance_row(pg_dsn, names[1])
    finally:
        for state in states:
            remove_state(state)

    assert len(closed) == CALLS
    assert {x["ended_by"] for x in closed} == {"instance-dead"}
    assert verdict["declared_dead_by"] == names[1]
    assert verdict["calls_closed"] == CALLS
    # Closed at A's last heartbeat: not after the kill, at most one interval before.
    gaps = [killed_at - x["ended_at"].timestamp() for x in closed]
    assert all(-0.05 <= gap <= HEARTBEAT + LAG for gap in gaps), sorted(gaps)[-3:]
    declared_after = (verdict["declared_dead_at"] - verdict["last_seen"]).total_seconds()
    assert DEAD_AFTER < declared_after <= DEAD_AFTER + HEARTBEAT + LAG, declared_after
    assert (dead_total, closed_total, live) == (1, CALLS, 1)
    assert f"instance {names[0]} is dead" in log
    # Replays are idempotent: the same rows, none duplicated, none reopened.
    assert len(after) == CALLS and len({x["call_id"] for x in after}) == CALLS
    assert {x["ended_by"] for x in after} == {"instance-dead"}
    assert all(r.startswith("0 rows inserted") for r in replays[1].split(" / ")), replays
    assert b_left is None
    print(
        f"dead_after {DEAD_AFTER} s, heartbeat {HEARTBEAT} s: A declared dead "
        f"{declared_after:.3f} s after its last heartbeat; {CALLS} rows closed, seen "
        f"closed {seen_closed_at - killed_at:.3f} s after the SIGKILL (polled every 0.25 s); "
        f"ends {min(gaps):.3f}-{max(gaps):.3f} s before the kill; replays: {replays}"
    )
