"""``voipgw run`` with two worker processes sharing one SIP port (gateway.workers).

One gateway, ``[server] workers = 2``, its embedded PostgreSQL, a SIPp PBX, a SIPp
emergency centre and a SIPp phone:

* ordinary calls from many source ports (SIPp ``-t un``) are spread by the kernel
  over both workers: each worker's CDRs (``gateway_instance`` ``<name>-w1``/``-w2``)
  and its ``voipgw_calls_total`` (labelled ``worker`` on the supervisor's /metrics)
  count some of them, and together every one;
* a phone registered through worker 1 (its own port) is reached by a PBX call
  arriving at worker 2 (its own port): the binding is in PostgreSQL;
* an emergency call reaches the centre;
* worker 1 SIGKILLed is started again by the supervisor
  (``voipgw_worker_restarts_total``), while worker 2 answers the calls placed
  meanwhile; afterwards both take calls again.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from cdr.db import EmbeddedPostgres
from tests.interop.sipp import SippUas, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    OFFICE_IP_2,
    REALM,
    GatewayProcess,
    GatewaySetup,
    pid_alive,
    prepare,
    remove_state,
    set_password,
    state_directory,
    wait_until,
)

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres]

PASSWORD = "workers-test-pw-1"
SPREAD_CALLS = 40


#: SIPp ``-t un`` (a socket per call) refuses to start when its default socket
#: limit exceeds the open-files limit.
MAX_SOCKETS = ["-max_socket", "1000"]


def ordinary_keys(target: str) -> list[str]:
    return ["-key", "caller", "bob", "-key", "ruri", f"sip:0401234567@{target}"]


def worker_target(setup: GatewaySetup, index: int) -> str:
    return f"{HOST}:{setup.worker_sip_port + index - 1}"


async def cdrs_by_worker(dsn: str) -> Counter[str]:
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch("SELECT gateway_instance, count(*) FROM cdr GROUP BY 1")
    finally:
        await con.close()
    return Counter({row[0]: row[1] for row in rows})


async def worker_pids(gateway: GatewayProcess) -> dict[str, int]:
    """Worker index -> pid, from the supervisor's children (/proc)."""
    assert gateway.proc is not None
    proc = Path("/proc") / str(gateway.proc.pid)
    children = (proc / "task" / str(gateway.proc.pid) / "children").read_text().split()
    pids: dict[str, int] = {}
    for pid in children:
        try:
            argv = (Path("/proc") / pid / "cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"--worker" in argv:
            pids[argv[argv.index(b"--worker") + 1].decode()] = int(pid)
    return pids


@pytest.mark.timeout(240)
@pytest.mark.asyncio
async def test_two_workers_share_calls_registrations_and_survive_a_kill() -> None:
    state = state_directory()
    try:
        async with (
            SippUas("uas-answer", host=HOST, timeout=200) as pbx,
            SippUas("uas-psap-answer", host=HOST, timeout=200) as kerava,
        ):
            setup = prepare(
                state, upstream=pbx.uri, centre_ports={"kerava": kerava.port}, workers=2
            )
            name = f"ops-{state.name[-8:]}"
            gateway = GatewayProcess(setup)
            await gateway.start()
            try:
                server = EmbeddedPostgres(state / "pgdata")
                assert await asyncio.to_thread(server.start) is False  # the supervisor's
                dsn = server.dsn("voipgw")
                pids = await worker_pids(gateway)
                assert sorted(pids) == ["1", "2"], gateway.tail()

                # 1. Calls from many source ports: the kernel spreads them.
                spread = await run_uac(
                    "uac-emergency",
                    setup.target,
                    transport="un",
                    local_ip=OFFICE_IP,
                    calls=SPREAD_CALLS,
                    rate=20,
                    call_duration=0.2,
                    timeout=40,
                    extra_args=[*ordinary_keys(setup.target), *MAX_SOCKETS],
                )
                assert spread.ok, spread.describe()
                by_worker = await wait_until(
                    f"{SPREAD_CALLS} CDRs",
                    lambda: cdrs_by_worker(dsn),
                    lambda c: sum(c.values()) >= SPREAD_CALLS,
                    limit=30,
                )
                spread_by_worker = dict(by_worker)
                assert set(by_worker) == {f"{name}-w1", f"{name}-w2"}, by_worker
                assert sum(by_worker.values()) == SPREAD_CALLS, by_worker
                metric_1 = await gateway.metric("voipgw_calls_total", worker="1")
                metric_2 = await gateway.metric("voipgw_calls_total", worker="2")
                assert metric_1 == by_worker[f"{name}-w1"]
                assert metric_2 == by_worker[f"{name}-w2"]

                # 2. Registered through worker 1, called through worker 2.
                await set_password(setup.config, "alice", PASSWORD)
                phone_port = await register_through(worker_target(setup, 1))
                async with SippUas("uas-answer", host=HOST, port=phone_port, timeout=60) as phone:
                    inbound = await run_uac(
                        "uac-emergency",
                        worker_target(setup, 2),
                        local_ip=HOST,
                        calls=1,
                        call_duration=0.2,
                        timeout=20,
                        extra_args=["-key", "caller", "pbx", "-key", "ruri", f"sip:alice@{REALM}"],
                    )
                    assert inbound.ok, inbound.describe() + gateway.tail()
                    await phone.wait(10)
                assert phone.result is not None
                assert phone.result.successful_calls == 1, phone.result.describe()
                by_worker = await wait_until(
                    "the inbound call's CDR",
                    lambda: cdrs_by_worker(dsn),
                    lambda c: sum(c.values()) >= SPREAD_CALLS + 1,
                    limit=30,
                )
                assert by_worker[f"{name}-w2"] == metric_2 + 1, by_worker

                # 3. An emergency call.
                emergency = await run_uac(
                    "uac-emergency",
                    setup.target,
                    local_ip=OFFICE_IP_2,
                    calls=1,
                    call_duration=0.2,
                    timeout=30,
                    extra_args=[
                        "-key",
                        "caller",
                        "alice",
                        "-key",
                        "ruri",
                        f"sip:112@{setup.target}",
                    ],
                )
                assert emergency.ok, emergency.describe()[-1500:] + gateway.tail(20000)
                answered = await gateway.metric("voipgw_emergency_calls_total", outcome="answered")
                assert answered == 1

                # 4. Worker 1 SIGKILLed: the supervisor starts it again; worker 2
                # answers meanwhile (its own port, so the kernel's choice of the dead
                # worker's socket cannot decide the outcome).
                os.kill(pids["1"], signal.SIGKILL)
                during = await run_uac(
                    "uac-emergency",
                    worker_target(setup, 2),
                    local_ip=OFFICE_IP,
                    calls=5,
                    rate=10,
                    call_duration=0.2,
                    timeout=20,
                    extra_args=ordinary_keys(setup.target),
                )
                assert during.ok, during.describe()
                ready = await wait_until(
                    "worker 1 restarted and ready",
                    gateway.readyz,
                    lambda r: r[0] == 200,
                    limit=60,
                )
                assert ready[1]["checks"] == {"worker 1": True, "worker 2": True}, ready
                restarted = await worker_pids(gateway)
                assert restarted["1"] != pids["1"] and restarted["2"] == pids["2"]
                assert await gateway.metric("voipgw_worker_restarts_total", worker="1") == 1
                assert await gateway.metric("voipgw_worker_restarts_total", worker="2") == 0
                after = await run_uac(
                    "uac-emergency",
                    worker_target(setup, 1),
                    local_ip=OFFICE_IP_2,
                    calls=3,
                    rate=10,
                    call_duration=0.2,
                    timeout=20,
                    extra_args=ordinary_keys(setup.target),
                )
                assert after.ok, after.describe()
                final = await wait_until(
                    "every CDR",
                    lambda: cdrs_by_worker(dsn),
                    lambda c: sum(c.values()) >= SPREAD_CALLS + 1 + 1 + 5 + 3,
                    limit=30,
                )
            finally:
                status = await gateway.stop()
            assert status == 0, gateway.tail()
        print(
            f"2 workers: {SPREAD_CALLS} spread calls {spread_by_worker};"
            f" final CDRs by worker {dict(final)}; worker 1 restarted once"
        )
    finally:
        remove_state(state)


async def register_through(target: str) -> int:
    """Registers alice through ``target``; returns the phone's port."""
    from tests.interop.sipp import free_port

    port = free_port(HOST)
    registered = await run_uac(
        "uac-register",
        target,
        service="alice",
        timeout=10,
        extra_args=[
            *("-au", "alice", "-ap", PASSWORD, "-auth_uri", REALM),
            *("-set", "domain", REALM, "-set", "expires", "600"),
            *("-p", str(port)),
        ],
    )
    assert registered.ok, registered.describe()
    return port


@pytest.mark.timeout(120)
@pytest.mark.asyncio
async def test_workers_die_with_a_sigkilled_supervisor() -> None:
    """A supervisor that crashes takes its workers with it (no orphans holding the
    shared port beside the next supervisor's workers)."""
    state = state_directory()
    try:
        setup = prepare(state, upstream=f"sip:{HOST}:5080", workers=2)
        gateway = GatewayProcess(setup)
        await gateway.start()
        try:
            pids = await worker_pids(gateway)
            assert len(pids) == 2
            gateway.signal(signal.SIGKILL)
            await gateway.wait(10)

            async def alive() -> list[int]:
                return [pid for pid in pids.values() if pid_alive(pid)]

            await wait_until("the workers to exit", alive, lambda left: left == [], limit=10)
        finally:
            await gateway.kill()
    finally:
        remove_state(state)
