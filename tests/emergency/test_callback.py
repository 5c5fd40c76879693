"""The callback window recognises a centre by its transport address (issue 13, defect 6).

RFC 6881 SP-35/40: for 30 minutes after an emergency call, a call from the centre to
the caller's number goes straight to the device, bypassing the PBX's forwarding and
do-not-disturb. The PBX's own calls to that number must not: where the PBX and a
centre share a host (the demo before issue 13 had both on 127.0.0.1), only the port
tells them apart.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from gateway.b2bua import Reject, Route, RouteNeeded
from gateway.config import OverloadConfig
from gateway.registrar.routing import CALLBACK_MARKER
from gateway.service.router import CallRouter
from gateway.sip.events import Endpoint
from gateway.sip.message import Headers
from routing.config import RoutingConfig
from routing.decision import RoutedBy
from routing.sites_file import parse_sites
from tests.emergency.rig import CENTRE_HOST, DEMO_CENTRE_PORTS, DEMO_SITES
from tests.test_callrouter import invite, resolve

OFFICE_PHONE = Endpoint("UDP", "127.0.10.5", 5062)
PBX = Endpoint("UDP", "127.0.0.1", 5080)


def router_for(sites_text: str) -> CallRouter:
    directory = parse_sites(sites_text, "toml").directory()
    return CallRouter(
        config=RoutingConfig(default_next_hop=f"sip:{PBX.host_port}"),
        directory=lambda: directory,
        overload=OverloadConfig(max_calls=100),
        resolve=resolve,
        trusted_peers=(ipaddress.ip_network("127.0.0.1/32"),),
    )


def shared_host_sites() -> str:
    """The demo data as it was: every centre on the PBX's host 127.0.0.1."""
    return DEMO_SITES.read_text(encoding="utf-8").replace(
        f"sip:112@{CENTRE_HOST}:", "sip:112@127.0.0.1:"
    )


def is_callback(result: object) -> bool:
    return isinstance(result, Route) and result.facts.routed_by is RoutedBy.EMERGENCY_CALLBACK


@pytest.mark.asyncio
async def test_pbx_call_to_the_caller_is_not_a_callback_when_it_shares_the_centres_host() -> None:
    router = router_for(shared_host_sites())
    assert isinstance(await router.route(invite("sip:112@voipgw", "alice", OFFICE_PHONE)), Route)
    # The PBX forwards an ordinary call to Alice's number: forwarding and DND apply.
    from_pbx = await router.route(invite("sip:+358401000001@voipgw", "pbx", PBX))
    assert not is_callback(from_pbx), from_pbx
    assert isinstance(from_pbx, Reject)  # inbound from the PBX; no registration here
    # The centre on the same host, from its own port, still reaches the device.
    centre = Endpoint("UDP", "127.0.0.1", DEMO_CENTRE_PORTS["kerava"])
    from_centre = await router.route(invite("sip:+358401000001@voipgw", "psap", centre))
    assert is_callback(from_centre), from_centre
    assert isinstance(from_centre, Route)
    assert from_centre.targets == (OFFICE_PHONE,)


@pytest.mark.asyncio
async def test_demo_centres_have_an_address_of_their_own() -> None:
    router = router_for(DEMO_SITES.read_text(encoding="utf-8"))
    await router.route(invite("sip:112@voipgw", "alice", OFFICE_PHONE))
    for centre, port in DEMO_CENTRE_PORTS.items():
        source = Endpoint("UDP", CENTRE_HOST, port)
        result = await router.route(invite("sip:+358401000001@voipgw", "psap", source))
        assert is_callback(result), (centre, result)
    assert not is_callback(await router.route(invite("sip:+358401000001@voipgw", "pbx", PBX)))
    # Another port of the centres' host is not a centre.
    stranger = Endpoint("UDP", CENTRE_HOST, 6000)
    assert not is_callback(await router.route(invite("sip:+358401000001@x", "s", stranger)))


SIBLING = Endpoint("UDP", "127.0.0.1", 5071)
HERE = "sip:127.0.0.1:5070"


def relayed(
    source: Endpoint, *, route: str | None = f"<{HERE};lr>", marker: bool = True
) -> RouteNeeded:
    """The centre's call back to Alice as a sibling relays it to this instance."""
    event = invite("sip:+358401000001@voipgw", "psap", source)
    extra = [("Route", route)] if route is not None else []
    if marker:
        extra.append(CALLBACK_MARKER)
    headers = Headers([*event.request.headers, *extra])
    return replace(event, request=replace(event.request, headers=headers))


@pytest.mark.asyncio
async def test_a_callback_relayed_by_a_trusted_sibling_to_the_flow_owner_is_a_callback() -> None:
    router = router_for(DEMO_SITES.read_text(encoding="utf-8"))
    router.cluster_uri = HERE
    await router.route(invite("sip:112@voipgw", "alice", OFFICE_PHONE))
    # A trusted sibling (on [upstream] trusted_peers) relayed it here as the owner:
    # this instance's own window decides the device; the PBX is not asked.
    result = await router.route(relayed(SIBLING))
    assert is_callback(result), result
    assert isinstance(result, Route)
    assert result.targets == (OFFICE_PHONE,)
    assert result.headers == (CALLBACK_MARKER,)


@pytest.mark.asyncio
async def test_nobody_else_can_claim_callback_treatment_with_the_marker() -> None:
    router = router_for(DEMO_SITES.read_text(encoding="utf-8"))
    router.cluster_uri = HERE
    await router.route(invite("sip:112@voipgw", "alice", OFFICE_PHONE))
    stranger = Endpoint("UDP", "127.0.20.9", 5071)
    # An untrusted source, even naming this instance in its Route.
    assert not is_callback(await router.route(relayed(stranger)))
    # A trusted peer's request not relayed to this instance as the flow owner.
    assert not is_callback(await router.route(relayed(SIBLING, route=None)))
    assert not is_callback(await router.route(relayed(SIBLING, route="<sip:127.0.0.1:5099;lr>")))
    # Without the marker a sibling's relay is an ordinary call (the PBX's, say).
    assert not is_callback(await router.route(relayed(SIBLING, marker=False)))
    # No window open for the number: the marker opens none.
    other = relayed(SIBLING)
    other = replace(other, request=replace(other.request, uri="sip:+358401000002@voipgw"))
    assert not is_callback(await router.route(other))


@pytest.mark.asyncio
async def test_load_shedding_takes_a_possible_callback_from_memory() -> None:
    """What the load shedder asks before it sheds an INVITE (CallRouter.may_be_callback):
    a number with an open window here, or anything from a centre's address."""
    router = router_for(DEMO_SITES.read_text(encoding="utf-8"))
    other_number = "sip:+358401000002@voipgw"
    kerava = Endpoint("UDP", CENTRE_HOST, DEMO_CENTRE_PORTS["kerava"])
    assert not router.may_be_callback("sip:+358401000001@voipgw", PBX)  # no window yet
    await router.route(invite("sip:112@voipgw", "alice", OFFICE_PHONE))
    assert router.may_be_callback("sip:+358401000001@voipgw", PBX)
    assert not router.may_be_callback(other_number, PBX)
    # The centres' addresses are known once resolved (the first call from one).
    assert not router.may_be_callback(other_number, kerava)
    assert is_callback(await router.route(invite("sip:+358401000001@voipgw", "psap", kerava)))
    assert router.may_be_callback(other_number, kerava)
    assert not router.may_be_callback(other_number, Endpoint("UDP", CENTRE_HOST, 6000))
