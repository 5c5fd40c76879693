"""Issue 16 must-show 2: a phone behind NAT is reached through the instance holding
its flow, and the caller is told 480 with Retry-After when that instance is gone.

Two ``voipgw run`` instances, A and B, share one PostgreSQL. alice's phone registers
through A from a port only A has seen, and its NAT lets in only A's address
(:class:`~tests.cluster.rig.NatPhone` drops anything else). The PBX (SIPp from the
trusted address) calls alice at B: B finds the binding in PostgreSQL, sees that A
holds the flow and relays the call to A, which delivers it over its flow: the INVITE
reaches the phone from A's address and port, and nothing from B's. Then A is
stopped (SIGSTOP, a hung host), then SIGKILLed: each time the next call at B gets 480
with a Retry-After (SIPp checks the header), after the owner's response bound or at
once.
The phone re-registers through B, and B's calls reach it directly from B.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import asyncpg
import pytest

from gateway.registrar.routing import OWNER_RESPONSE_TIMEOUT
from routing.decision import FlowRelay
from tests.cluster.rig import NatPhone, provision, register, start_instance
from tests.interop.sipp import SippResult, SippUas, free_port, run_uac
from tests.ops.harness import (
    HOST,
    REALM,
    TEST_WORKERS,
    GatewayProcess,
    GatewaySetup,
    remove_state,
)
from tests.ops.harness import state_directory as new_state

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres, pytest.mark.asyncio]

PASSWORD = "cluster-alice-pw-16"
CALLER = "+358401000099"
TO_OWNER, FROM_SIBLING = FlowRelay.TO_OWNER.value, FlowRelay.FROM_SIBLING.value


async def pbx_call(setup: GatewaySetup, scenario: str = "uac-emergency") -> SippResult:
    """One call from the PBX (the trusted address) to alice's AoR at ``setup``."""
    return await run_uac(
        scenario,
        setup.target,
        local_ip=HOST,
        call_duration=0.2,
        timeout=20,
        extra_args=["-key", "caller", CALLER, "-key", "ruri", f"sip:alice@{REALM}"],
    )


async def flow_owners(dsn: str) -> list[str | None]:
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch(
            "SELECT flow_owner FROM registrar_bindings WHERE aor = $1 AND expires_at > now()",
            f"sip:alice@{REALM}",
        )
    finally:
        await con.close()
    return [r["flow_owner"] for r in rows]


#: A record as these tests read it: its final status and its ``flow_relay`` mark.
Leg = tuple[int, str | None]


async def cdrs_by_instance(
    dsn: str, count: int, done: Callable[[dict[str, list[Leg]]], bool] | None = None
) -> dict[str, list[Leg]]:
    """Records by instance ("a", "b"), oldest first, once ``count`` are in (and
    ``done`` says so, when given)."""
    found: dict[str, list[Leg]] = {}
    con = await asyncpg.connect(dsn)
    try:
        for _ in range(80):
            rows = await con.fetch(
                "SELECT gateway_instance, final_status, flow_relay::text AS flow_relay"
                " FROM cdr ORDER BY started_at"
            )
            found = {}
            for row in rows:
                name = row["gateway_instance"].split("-ops-")[0]
                found.setdefault(name, []).append((row["final_status"], row["flow_relay"]))
            if len(rows) >= count and (done is None or done(found)):
                break
            await asyncio.sleep(0.25)
    finally:
        await con.close()
    return found


async def wait_for_byes(phone: NatPhone, count: int) -> None:
    for _ in range(100):
        if len(phone.byes) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(phone.byes)} BYE(s) reached the phone, expected {count}")


def legs(found: list[Leg] | None, expected: list[int]) -> bool:
    """Whether an instance's calls are ``expected`` (final statuses), counted as
    ``voipgw cdr itemize`` counts them: without the flow owner's leg of a relayed
    call (``from-sibling``, routing.decision.FlowRelay). Such a leg comes from a relay
    from the other instance, or, with workers, from a hop inside this one: from the
    worker the kernel gave the call to, to the worker holding the flow
    (gateway/workers/plan.py). Each one delivered the call here, answered."""
    rows = found or []
    billed = [status for status, relay in rows if relay != FROM_SIBLING]
    return billed == expected and all(
        status == 200 for status, relay in rows if relay == FROM_SIBLING
    )


def relays_paired(found: dict[str, list[Leg]]) -> bool:
    """Whether exactly the delivered relays left a flow owner's leg: as many
    ``from-sibling`` records as answered ``to-owner`` ones, across the instances."""
    rows = [leg for records in found.values() for leg in records]
    return rows.count((200, FROM_SIBLING)) == rows.count((200, TO_OWNER))


def held_by(owners: list[str | None], gateway: GatewayProcess) -> bool:
    """Whether ``owners`` is one flow, held by ``gateway`` (or one of its workers)."""
    return len(owners) == 1 and owners[0] in gateway.setup.flow_uris


@pytest.mark.timeout(300)
async def test_call_at_b_reaches_natted_phone_through_a_and_480_once_a_is_gone(
    pg_dsn: str,
) -> None:
    states = [new_state(), new_state()]
    gateways: list[GatewayProcess] = []
    phone: NatPhone | None = None
    try:
        async with SippUas("uas-answer", host=HOST, timeout=200) as pbx:
            a = await start_instance("a", states[0], upstream=pbx.uri, dsn=pg_dsn)
            gateways.append(a)
            b = await start_instance("b", states[1], upstream=pbx.uri, dsn=pg_dsn)
            gateways.append(b)
            await provision(a, "alice", PASSWORD)
            a_address = (HOST, a.setup.sip_port)
            b_address = (HOST, b.setup.sip_port)

            # alice registers through A: the NAT mapping is towards A alone.
            port = free_port(HOST)
            await register(a.setup, "alice", PASSWORD, port)
            owners = await flow_owners(pg_dsn)
            assert held_by(owners, a), owners
            phone = NatPhone("alice", port, allowed=a_address)
            await phone.start()

            # The PBX's call arrives at B and reaches the phone through A.
            relayed = await pbx_call(b.setup)
            assert relayed.ok, relayed.describe() + b.tail() + a.tail()
            assert phone.invite_sources == [a_address]
            assert phone.dropped == [], phone.dropped  # B never sent to the phone itself
            # The B2BUAs answer the caller's BYE and pass it on: it arrives shortly.
            await wait_for_byes(phone, 1)

            # A call arriving at A goes straight over its flow.
            direct = await pbx_call(a.setup)
            assert direct.ok, direct.describe()
            assert phone.invite_sources == [a_address, a_address]
            # Every record of A is in PostgreSQL before it dies (B has one so far):
            # B's of the relayed call bills it, A's of it is the owner's leg.
            found = await cdrs_by_instance(
                pg_dsn, 3, lambda f: legs(f.get("a"), [200]) and relays_paired(f)
            )
            assert legs(found.get("a"), [200]), found
            assert legs(found.get("b"), [200]), found
            assert found["b"][0] == (200, TO_OWNER), found
            assert (200, FROM_SIBLING) in found["a"], found
            assert relays_paired(found), found
            # The metrics count each call once too: summed over the instances (and
            # their workers), voipgw_calls_total holds the two calls placed, not the
            # owner's leg of the relayed one; the relay shows on both of its sides.
            calls = [await gateway.metric("voipgw_calls_total") for gateway in (a, b)]
            assert sum(calls) == 2, calls
            sides = {
                side: [
                    await gateway.metric("voipgw_relayed_calls_total", side=side)
                    for gateway in (a, b)
                ]
                for side in ("to_owner", "from_sibling")
            }
            assert sides["to_owner"][1] == 1, sides
            assert sum(sides["to_owner"]) == sum(sides["from_sibling"]), sides

            # A hangs (SIGSTOP: its port still bound, so no ICMP error, as with a
            # host that vanished): after OWNER_RESPONSE_TIMEOUT without a response,
            # B's caller gets 480 with Retry-After.
            a.signal(signal.SIGSTOP)
            started = time.monotonic()
            hung = await pbx_call(b.setup, "uac-expect-480-retry-after")
            hung_in = time.monotonic() - started
            assert hung.ok, hung.describe() + b.tail()
            assert hung_in >= OWNER_RESPONSE_TIMEOUT

            # A is gone (SIGKILL): the same answer, at once here (the port is closed).
            await a.kill()
            started = time.monotonic()
            gone = await pbx_call(b.setup, "uac-expect-480-retry-after")
            gone_in = time.monotonic() - started
            assert gone.ok, gone.describe() + b.tail()
            assert len(phone.invite_sources) == 2
            assert phone.dropped == [], phone.dropped
            print(
                f"\nowner hung: 480 after {hung_in:.2f} s; owner killed: 480 after {gone_in:.2f} s"
            )

            # The phone re-registers through B (its NAT mapping is now towards B).
            await phone.aclose()
            await register(b.setup, "alice", PASSWORD, port)
            owners = await flow_owners(pg_dsn)
            assert held_by(owners, b), owners
            phone = NatPhone("alice", port, allowed=b_address)
            await phone.start()
            again = await pbx_call(b.setup)
            assert again.ok, again.describe() + b.tail()
            assert phone.invite_sources == [b_address]
            assert phone.dropped == [], phone.dropped

            # Each instance wrote its own leg's CDR, and each call is counted once:
            # B the relayed call (to-owner), the two 480s (relays to A that did not
            # get through, or refused at once) and the call after the
            # re-registration; A the direct call, and the owner's leg of the relayed
            # call (from-sibling) besides.
            found = await cdrs_by_instance(
                pg_dsn,
                6,
                lambda f: (
                    legs(f.get("b"), [200, 480, 480, 200])
                    and legs(f.get("a"), [200])
                    and relays_paired(f)
                ),
            )
            assert legs(found.get("b"), [200, 480, 480, 200]), found
            assert legs(found.get("a"), [200]), found
            assert relays_paired(found), found
            if TEST_WORKERS == 1:
                assert found["a"] == [(200, FROM_SIBLING), (200, None)], found
                assert found["b"][0] == (200, TO_OWNER) and found["b"][-1] == (200, None), found
    finally:
        if phone is not None:
            phone.close()
        for gateway in gateways:
            await gateway.stop()
        for state in states:
            remove_state(state)
