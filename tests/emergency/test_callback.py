"""The callback window recognises a centre by its transport address (issue 13, defect 6).

RFC 6881 SP-35/40: for 30 minutes after an emergency call, a call from the centre to
the caller's number goes straight to the device, bypassing the PBX's forwarding and
do-not-disturb. The PBX's own calls to that number must not: where the PBX and a
centre share a host (the demo before issue 13 had both on 127.0.0.1), only the port
tells them apart.
"""

from __future__ import annotations

import ipaddress

import pytest

from gateway.b2bua import Reject, Route
from gateway.config import OverloadConfig
from gateway.service.router import CallRouter
from gateway.sip.events import Endpoint
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
