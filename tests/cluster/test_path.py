"""Issue 16: a phone behind NAT registers through Kamailio with Path (RFC 3327) and
is reached through Kamailio from either instance, also after the instance that took
its REGISTER is gone.

Two ``voipgw run`` instances, A and B, share one PostgreSQL behind
deploy/cluster/kamailio.cfg. alice's phone (SIPp, ``Supported: path``) registers
through Kamailio, which adds ``Path: <sip:kamailio;received=sip:phone;lr>`` and
dispatches the REGISTER to one instance; SIPp checks that the 200 OK carries the Path
back. The binding row has the Path. The phone's NAT lets in only Kamailio's address
(:class:`~tests.cluster.rig.NatPhone`). The PBX calls alice at A, then at B: each
INVITE reaches the phone from Kamailio (the preloaded Route set, loose-routed to the
received address), and nothing comes from an instance. Then the instance that took
the REGISTER is killed, and calls at the other one still reach the phone, through
Kamailio: the flow is Kamailio's, not the dead instance's. Each call's BYE (the
caller hangs up) reaches the phone too, through Kamailio's Record-Route.

Twice: the phone's Contact names the address it sends from, then (as behind a real
NAT) a private address nothing reaches; Kamailio aliases the Contact of the phone's
200 OK with the address the answer came from, and the BYE follows the alias.
"""

from __future__ import annotations

import asyncpg
import pytest

from gateway.sip.headers import parse_contacts
from gateway.sip.uri import SipUri, parse_uri
from tests.cluster.rig import Kamailio, NatPhone, provision, start_instance
from tests.cluster.test_flow_owner import pbx_call, wait_for_byes
from tests.interop.sipp import SippUas, free_port, run_uac
from tests.ops.harness import HOST, REALM, GatewayProcess, remove_state
from tests.ops.harness import state_directory as new_state

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres, pytest.mark.asyncio]

PASSWORD = "cluster-alice-path-16"


async def register_through(
    kamailio: Kamailio, port: int, contact: str, *, host: str = HOST
) -> None:
    """alice registers through Kamailio from ``host``:``port`` with ``contact``
    (host:port) saying ``Supported: path``; SIPp fails unless the 200 OK echoes a Path."""
    result = await run_uac(
        "uac-register-path-echoed",
        kamailio.target,
        service="alice",
        local_ip=host,
        timeout=10,
        extra_args=[
            *("-au", "alice", "-ap", PASSWORD, "-auth_uri", REALM),
            *("-set", "domain", REALM, "-set", "expires", "600", "-p", str(port)),
            *("-set", "contact", contact),
        ],
    )
    assert result.ok, result.describe() + kamailio.tail()


async def binding_rows(dsn: str) -> list[asyncpg.Record]:
    con = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await con.fetch(
            "SELECT path, flow_owner, host(received_host) AS host, received_port"
            " FROM registrar_bindings WHERE aor = $1 AND expires_at > now()",
            f"sip:alice@{REALM}",
        )
    finally:
        await con.close()
    return rows


def path_uri(entry: str) -> SipUri:
    (address,) = parse_contacts(entry)
    assert not isinstance(address, str)
    uri = parse_uri(address.uri)
    assert isinstance(uri, SipUri)
    return uri


#: A phone behind NAT names its private address in Contact (10/8: in the loopback-only
#: namespace nothing reaches it, so only Kamailio's alias of it can work).
PRIVATE_CONTACT = "10.0.0.9:5060"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("private", [False, True], ids=["own-contact", "private-contact"])
async def test_phone_registered_through_kamailio_is_reached_from_both_and_after_owner_dies(
    pg_dsn: str, private: bool
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
            instances = [f"{HOST}:{g.setup.sip_port}" for g in gateways]
            async with Kamailio(instances) as kamailio:
                kamailio_address = (kamailio.host, kamailio.port)
                port = free_port(HOST)
                contact = PRIVATE_CONTACT if private else f"{HOST}:{port}"
                await register_through(kamailio, port, contact)

                # The binding holds Kamailio's Path with the phone's address as
                # Kamailio saw it; the REGISTER itself came from Kamailio.
                (row,) = await binding_rows(pg_dsn)
                (entry,) = row["path"]
                hop = path_uri(entry)
                assert (hop.host, hop.port) == kamailio_address, entry
                assert hop.param("lr") is not None, entry
                assert f"{HOST}:{port}" in (hop.param("received") or ""), entry
                assert (row["host"], row["received_port"]) == kamailio_address
                owner = next(g for g in gateways if row["flow_owner"] in g.setup.flow_uris)
                other = b if owner is a else a

                phone = NatPhone(
                    "alice",
                    port,
                    allowed=kamailio_address,
                    private_contact=PRIVATE_CONTACT if private else None,
                )
                await phone.start()
                elapsed: list[float] = []
                for index, gateway in enumerate((a, b), start=1):
                    call = await pbx_call(gateway.setup)
                    assert call.ok, call.describe() + gateway.tail() + kamailio.tail()
                    assert phone.invite_sources == [kamailio_address] * index
                    await wait_for_byes(phone, index)
                    elapsed.append(call.elapsed)

                # The instance that took the REGISTER dies: the flow is Kamailio's.
                await owner.kill()
                after = await pbx_call(other.setup)
                assert after.ok, after.describe() + other.tail() + kamailio.tail()
                assert phone.invite_sources == [kamailio_address] * 3
                await wait_for_byes(phone, 3)
                assert phone.dropped == [], phone.dropped
                elapsed.append(after.elapsed)
                # Each SIPp run: INVITE, answer, 0.2 s of call, BYE (timings are
                # printed, not asserted: tests/bench holds timings).
                print(
                    f"\n{'private' if private else 'own'} contact {contact}:"
                    f" registered through {'A' if owner is a else 'B'} with Path {entry};"
                    " SIPp call at A, at B, at the survivor after the REGISTER's instance"
                    f" was killed: {', '.join(f'{t:.2f}' for t in elapsed)} s, each INVITE"
                    " from Kamailio, none dropped by the NAT"
                )
    finally:
        if phone is not None:
            phone.close()
        for gateway in gateways:
            await gateway.stop()
        for state in states:
            remove_state(state)
