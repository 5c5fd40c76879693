"""Issue 16: an emergency callback to a phone behind NAT follows the phone's flow.

Two ``voipgw run`` instances, A and B, share one PostgreSQL. Alice's phone is behind
a NAT that lets in only the instance it talked to (:class:`~tests.cluster.rig.NatPhone`,
as in test_flow_owner.py): it registers through A from the office network and calls
112 through A (the Kerava centre, a SIPp UAS, answers). The centre then calls Alice's
number back through B, from its own transport address:

1. A alive: B relays the callback to A (which holds the flow); the INVITE reaches
   the phone from A's address, nothing from B's, and the PBX gets no call.
2. A SIGKILLed, and B's view of the heartbeats says so: an ordinary call for Alice
   at B gets 480 at once; the callback is tried at the phone's address from B as a
   last resort (the NAT drops it) and answered 480 with Retry-After after the bound
   (gateway/registrar/routing.py says why). Both times are printed.
3. The phone re-registers through B: B's callback reaches it from B's address.

The restart variant: A SIGKILLed and started again on its address (same ``sip_uri``,
state and name); the phone does not re-register (its NAT mapping towards A's address
still holds): once B sees A's heartbeat again, the callback through B reaches the
phone from the restarted A, which loaded the window from PostgreSQL.

Figures (printed, not asserted: timings belong to the machine) are collected by
running the module several times.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import pytest

from gateway.registrar.routing import OWNER_RESPONSE_TIMEOUT
from tests.cluster.rig import NatPhone, provision, register, start_instance
from tests.interop.sipp import SippResult, SippUas, free_port, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    REALM,
    GatewayProcess,
    GatewaySetup,
    remove_state,
    wait_until,
)
from tests.ops.harness import state_directory as new_state

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres, pytest.mark.asyncio]

PASSWORD = "cluster-alice-cb-16"
ALICE = "+358401000001"
"""Alice's callback number in the demo data (Setera, Espoo office)."""
HEARTBEAT = 0.5
DEAD_AFTER = 3.0


def fast_heartbeats(text: str) -> str:
    # [cluster] is the last table of the rig's configuration.
    return text + f"heartbeat_interval = {HEARTBEAT}\ndead_after = {DEAD_AFTER}\n"


@dataclass
class Cluster:
    a: GatewayProcess
    b: GatewayProcess
    pbx: SippUas
    kerava_port: int
    phone_port: int

    @property
    def a_address(self) -> tuple[str, int]:
        return (HOST, self.a.setup.sip_port)

    @property
    def b_address(self) -> tuple[str, int]:
        return (HOST, self.b.setup.sip_port)


@asynccontextmanager
async def cluster_with_emergency_call(dsn: str) -> AsyncIterator[Cluster]:
    """A and B up, Alice registered through A from the office, her 112 call through
    A answered by Kerava and its window in PostgreSQL; everything stopped after."""
    states = [new_state(), new_state()]
    gateways: list[GatewayProcess] = []
    try:
        async with SippUas("uas-answer", host=HOST, timeout=300) as pbx:
            kerava = SippUas("uas-psap-answer", host=HOST, timeout=300)
            for name, state in zip("ab", states, strict=True):
                gateways.append(
                    await start_instance(
                        name,
                        state,
                        upstream=pbx.uri,
                        dsn=dsn,
                        edit=fast_heartbeats,
                        centre_ports={"kerava": kerava.port},
                    )
                )
            a, b = gateways
            await provision(a, "alice", PASSWORD)
            phone_port = free_port(OFFICE_IP)
            await register(a.setup, "alice", PASSWORD, phone_port, host=OFFICE_IP)
            async with kerava:
                await emergency_call(a.setup, phone_port)
            await wait_until(
                "the window of the ended call in PostgreSQL",
                lambda: window_centre(dsn),
                lambda centre: centre == "kerava",
                limit=20,
            )
            yield Cluster(a=a, b=b, pbx=pbx, kerava_port=kerava.port, phone_port=phone_port)
        # The PBX's stand-in has exited: every callback bypassed it.
        assert pbx.result is not None
        assert pbx.result.incoming_calls == 0, pbx.result.describe()
    finally:
        for gateway in gateways:
            await gateway.stop()
        for state in states:
            remove_state(state)


async def emergency_call(setup: GatewaySetup, phone_port: int) -> None:
    """Alice dials 112 from her phone's address (the office network, behind NAT)."""
    result = await run_uac(
        "uac-emergency",
        setup.target,
        local_ip=OFFICE_IP,
        call_duration=0.3,
        timeout=20,
        extra_args=[
            *("-key", "caller", "alice", "-key", "ruri", f"sip:112@{setup.target}"),
            *("-p", str(phone_port)),
        ],
    )
    assert result.ok, result.describe()


async def centre_calls_back(
    setup: GatewaySetup, kerava_port: int, scenario: str = "uac-emergency"
) -> tuple[SippResult, float]:
    """Kerava calls Alice's number through ``setup``'s instance from its own address;
    returns SIPp's result and the seconds it took."""
    started = time.monotonic()
    result = await run_uac(
        scenario,
        setup.target,
        local_ip=HOST,
        call_duration=0.2,
        timeout=40,
        extra_args=[
            *("-key", "caller", "psap", "-key", "ruri", f"sip:{ALICE}@{setup.target}"),
            *("-p", str(kerava_port)),
        ],
    )
    return result, time.monotonic() - started


async def pbx_calls_alice(setup: GatewaySetup, scenario: str) -> tuple[SippResult, float]:
    """An ordinary call from the PBX's (trusted) address to Alice's AoR."""
    started = time.monotonic()
    result = await run_uac(
        scenario,
        setup.target,
        local_ip=HOST,
        call_duration=0.2,
        timeout=40,
        extra_args=["-key", "caller", "+358401000099", "-key", "ruri", f"sip:alice@{REALM}"],
    )
    return result, time.monotonic() - started


async def window_centre(dsn: str) -> str | None:
    con = await asyncpg.connect(dsn)
    try:
        centre: str | None = await con.fetchval(
            "SELECT centre FROM emergency_callbacks WHERE callback_number = $1",
            ALICE.lstrip("+"),
        )
        return centre
    finally:
        await con.close()


async def live_instances_seen_by(gateway: GatewayProcess, count: int) -> None:
    """Waits until ``gateway``'s heartbeat view counts ``count`` live instances
    (``voipgw_cluster_instances`` is set on the tick that reads the view)."""
    await wait_until(
        f"{count} live instance(s) seen",
        lambda: gateway.metric("voipgw_cluster_instances"),
        lambda live: live == count,
        limit=DEAD_AFTER + 10 * HEARTBEAT + 10,
    )


async def invited(phone: NatPhone, count: int) -> None:
    for _ in range(100):
        if len(phone.invite_sources) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(phone.invite_sources)} INVITE(s) reached the phone")


@pytest.mark.timeout(300)
async def test_callback_follows_the_flow_and_the_heartbeats(pg_dsn: str) -> None:
    async with cluster_with_emergency_call(pg_dsn) as c:
        phone = NatPhone("alice", c.phone_port, allowed=c.a_address, host=OFFICE_IP)
        await phone.start()
        try:
            # 1. Through B while A holds the flow: relayed, delivered from A.
            relayed, relayed_in = await centre_calls_back(c.b.setup, c.kerava_port)
            assert relayed.ok, relayed.describe() + c.b.tail() + c.a.tail()
            assert phone.invite_sources == [c.a_address]
            assert phone.dropped == [], phone.dropped  # nothing from B's address
            # A treated it as a callback: to the device of its window, not the PBX.
            assert "relayed here as its flow owner" in c.a.tail(400_000)
            invite = phone.invites[0]
            assert invite.get("x-voipgw-class") == "emergency-callback"

            # 2. A is gone, and B's view of the heartbeats says so.
            await c.a.kill()
            killed = time.monotonic()
            await live_instances_seen_by(c.b, 1)
            noticed_in = time.monotonic() - killed
            ordinary, ordinary_in = await pbx_calls_alice(c.b.setup, "uac-expect-480-retry-after")
            assert ordinary.ok, ordinary.describe() + c.b.tail()
            last_resort, last_resort_in = await centre_calls_back(
                c.b.setup, c.kerava_port, "uac-expect-480-retry-after"
            )
            assert last_resort.ok, last_resort.describe() + c.b.tail()
            # The attempt (and its retransmissions) from B's own address, which the
            # NAT dropped; A was not asked.
            assert phone.dropped, "no last-resort INVITE from B"
            assert {source for source, _ in phone.dropped} <= c.b.setup.addresses, phone.dropped
            assert all(line.startswith("INVITE ") for _, line in phone.dropped), phone.dropped
            assert last_resort_in >= OWNER_RESPONSE_TIMEOUT
            assert "as a last resort" in c.b.tail(400_000)

            # 3. Re-registered through B: B's callback reaches the phone from B.
            await phone.aclose()
            await register(c.b.setup, "alice", PASSWORD, c.phone_port, host=OFFICE_IP)
            phone = NatPhone("alice", c.phone_port, allowed=c.b_address, host=OFFICE_IP)
            await phone.start()
            direct, direct_in = await centre_calls_back(c.b.setup, c.kerava_port)
            assert direct.ok, direct.describe() + c.b.tail()
            await invited(phone, 1)
            assert phone.invite_sources == [c.b_address]
            assert phone.dropped == [], phone.dropped
        finally:
            phone.close()
        print(
            f"\ncallback through B relayed to A: {relayed_in:.3f} s;"
            f" A killed, B's heartbeat view noticed after {noticed_in:.2f} s;"
            f" then ordinary call 480 after {ordinary_in:.3f} s,"
            f" callback last resort 480 after {last_resort_in:.3f} s;"
            f" re-registered through B, callback from B: {direct_in:.3f} s"
        )


@pytest.mark.timeout(300)
async def test_callback_reaches_the_phone_through_a_restarted_owner(pg_dsn: str) -> None:
    async with cluster_with_emergency_call(pg_dsn) as c:
        await c.a.kill()
        await live_instances_seen_by(c.b, 1)  # declared dead, as in a real outage
        restarted = time.monotonic()
        await c.a.start()  # same configuration: same sip_uri, state and name
        started_in = time.monotonic() - restarted
        await live_instances_seen_by(c.b, 2)
        seen_in = time.monotonic() - restarted
        phone = NatPhone("alice", c.phone_port, allowed=c.a_address, host=OFFICE_IP)
        await phone.start()
        try:
            result, took = await centre_calls_back(c.b.setup, c.kerava_port)
            assert result.ok, result.describe() + c.b.tail() + c.a.tail()
            await invited(phone, 1)
            assert phone.invite_sources == [c.a_address]
            assert phone.dropped == [], phone.dropped
            assert "relayed here as its flow owner" in c.a.tail(400_000)
        finally:
            phone.close()
        print(
            f"\nA restarted in {started_in:.2f} s, alive in B's view after {seen_in:.2f} s;"
            f" callback through B reached the phone via A in {took:.3f} s"
        )


@pytest.mark.timeout(300)
async def test_a_hung_owner_is_answered_for_from_the_heartbeats(pg_dsn: str) -> None:
    """A hung (SIGSTOP: its port still bound, no ICMP error), as a host that vanished:
    before its heartbeats age, B waits OWNER_RESPONSE_TIMEOUT for it; once B's view
    says it is gone, the 480 comes without sending it anything."""
    async with cluster_with_emergency_call(pg_dsn) as c:
        try:
            c.a.signal(signal.SIGSTOP)
            waited, waited_in = await pbx_calls_alice(c.b.setup, "uac-expect-480-retry-after")
            assert waited.ok, waited.describe() + c.b.tail()
            assert waited_in >= OWNER_RESPONSE_TIMEOUT
            await live_instances_seen_by(c.b, 1)
            at_once, at_once_in = await pbx_calls_alice(c.b.setup, "uac-expect-480-retry-after")
            assert at_once.ok, at_once.describe() + c.b.tail()
            assert "is gone (heartbeats), 480" in c.b.tail(400_000)
        finally:
            await c.a.kill()  # SIGKILL ends a stopped process too
        print(
            f"\nowner hung: 480 after {waited_in:.3f} s before its heartbeats aged,"
            f" {at_once_in:.3f} s after"
        )
