"""Issue 16 part 1 end to end: the RFC 6881 SP-35 callback window outlives the
instance that routed the emergency call.

Two ``voipgw run`` processes, A and B, share one PostgreSQL. Alice's phone (SIPp,
from the Espoo office LAN, on a fixed port) calls 112 through A; the Kerava centre
(a SIPp UAS) answers. A is SIGKILLed once the window is written; the centre then calls
Alice's number back through B, from the centre's own transport address. The INVITE
must reach Alice's phone (a SIPp UAS on the port the emergency call came from), not
the PBX (a SIPp UAS that must receive no call at all).

The database-away variant: one instance on its embedded PostgreSQL, stopped cleanly
(``pg_ctl stop``: the gateway does not restart a server an operator stopped) after
the emergency call: the instance still honours the window it remembers.
"""

from __future__ import annotations

import asyncio
import signal
import time

import asyncpg
import pytest

from cdr.db import EmbeddedPostgres
from tests.interop.sipp import SippUas, free_port, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    GatewayProcess,
    GatewaySetup,
    prepare,
    remove_state,
    state_directory,
    wait_until,
)

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres]

ALICE = "+358401000001"
"""Alice's callback number in the demo data (Setera, Espoo office)."""
CLUSTER = """
[cluster]
heartbeat_interval = 0.5
dead_after = 3.0
"""


def with_cluster(setup: GatewaySetup) -> GatewaySetup:
    with setup.config.open("a", encoding="utf-8") as config:
        config.write(CLUSTER)
    return setup


async def emergency_call(target: str, phone_port: int) -> None:
    """Alice dials 112 from her office phone at OFFICE_IP:phone_port."""
    result = await run_uac(
        "uac-emergency",
        target,
        local_ip=OFFICE_IP,
        call_duration=0.3,
        timeout=20,
        extra_args=[
            *("-key", "caller", "alice", "-key", "ruri", f"sip:112@{target}"),
            *("-p", str(phone_port)),
        ],
    )
    assert result.ok, result.describe()


async def centre_calls_back(target: str, centre_port: int) -> None:
    """The Kerava centre calls Alice's number from its own address (127.0.0.1:port)."""
    result = await run_uac(
        "uac-emergency",
        target,
        local_ip=HOST,
        call_duration=0.2,
        timeout=20,
        extra_args=[
            *("-key", "caller", "psap", "-key", "ruri", f"sip:{ALICE}@{target}"),
            *("-p", str(centre_port)),
        ],
    )
    assert result.ok, result.describe()


async def window_row(dsn: str) -> asyncpg.Record | None:
    con = await asyncpg.connect(dsn)
    try:
        return await con.fetchrow(
            "SELECT instance, contact, host, port, centre, expires_at - now() AS left_"
            " FROM emergency_callbacks WHERE callback_number = $1",
            ALICE.lstrip("+"),
        )
    finally:
        await con.close()


@pytest.mark.timeout(240)
@pytest.mark.asyncio
async def test_centre_calls_back_through_another_instance_after_a_sigkill(pg_dsn: str) -> None:
    states = [state_directory(), state_directory()]
    phone_port = free_port(OFFICE_IP)
    try:
        async with SippUas("uas-answer", host=HOST, timeout=200) as pbx:
            kerava = SippUas("uas-psap-answer", host=HOST, timeout=200)
            setups = [
                with_cluster(
                    prepare(
                        state,
                        upstream=pbx.uri,
                        centre_ports={"kerava": kerava.port},
                        database_url=pg_dsn,
                    )
                )
                for state in states
            ]
            a, b = GatewayProcess(setups[0]), GatewayProcess(setups[1])
            await a.start()
            await b.start()
            try:
                async with kerava:
                    await emergency_call(setups[0].target, phone_port)
                # The window is written behind the call: wait for the row of the
                # ended call (its centre is set at the end), then kill A.
                row = await wait_until(
                    "the window in PostgreSQL",
                    lambda: window_row(pg_dsn),
                    lambda r: r is not None and r["centre"] == "kerava",
                    limit=20,
                )
                assert (row["host"], row["port"]) == (OFFICE_IP, phone_port)
                assert 25 * 60 < row["left_"].total_seconds() <= 30 * 60
                await a.kill()
                async with SippUas(
                    "uas-answer", host=OFFICE_IP, port=phone_port, timeout=60
                ) as phone:
                    started = time.monotonic()
                    await centre_calls_back(setups[1].target, kerava.port)
                    took = time.monotonic() - started
                assert phone.result is not None
                assert phone.result.successful_calls == 1, phone.result.describe()
                print(f"callback through B answered by Alice's phone in {took:.3f} s")
                # B took the window A wrote (B's memory had none: read from PostgreSQL).
                log = b.tail(400_000)
                line = f"emergency callback to sip:alice@{OFFICE_IP}:{phone_port}"
                assert line in log, log[-3000:]
                assert any(f"via {name})" in log for name in setups[0].process_names), log[-3000:]
            finally:
                await a.kill()
                await b.stop()
        assert pbx.result is not None
        assert pbx.result.incoming_calls == 0, pbx.result.describe()
    finally:
        for state in states:
            remove_state(state)


@pytest.mark.timeout(240)
@pytest.mark.asyncio
async def test_window_honoured_from_memory_while_postgresql_is_stopped() -> None:
    state = state_directory()
    phone_port = free_port(OFFICE_IP)
    try:
        async with SippUas("uas-answer", host=HOST, timeout=200) as pbx:
            kerava = SippUas("uas-psap-answer", host=HOST, timeout=200)
            setup = prepare(state, upstream=pbx.uri, centre_ports={"kerava": kerava.port})
            gateway = GatewayProcess(setup)
            await gateway.start()
            try:
                async with kerava:
                    await emergency_call(setup.target, phone_port)
                # A clean stop: the gateway leaves it stopped (cdr/db.py).
                await asyncio.to_thread(EmbeddedPostgres(state / "pgdata").stop)
                assert not (state / "pgdata" / "postmaster.pid").exists()
                async with SippUas(
                    "uas-answer", host=OFFICE_IP, port=phone_port, timeout=60
                ) as phone:
                    started = time.monotonic()
                    await centre_calls_back(setup.target, kerava.port)
                    took = time.monotonic() - started
                assert phone.result is not None
                assert phone.result.successful_calls == 1, phone.result.describe()
                print(f"callback with PostgreSQL stopped answered in {took:.3f} s")
                assert not (state / "pgdata" / "postmaster.pid").exists()
            finally:
                gateway.signal(signal.SIGTERM)
                await gateway.wait(45)
                await gateway.kill()
        assert pbx.result is not None
        assert pbx.result.incoming_calls == 0, pbx.result.describe()
    finally:
        remove_state(state)
