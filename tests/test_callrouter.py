"""The call router's own rules: callback bypass (RFC 6881 SP-35/40), recorded-line
notice before any shortcut, overload shedding that never sheds emergency calls."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from cdr.call_record import record_of
from cdr.record import CallDetailRecord
from gateway.b2bua import Announcement, CallEnded, LocalAnswer, Reject, Route, RouteNeeded
from gateway.cluster.callbacks import CALLBACK_WINDOW
from gateway.config import OverloadConfig
from gateway.registrar.routing import (
    CALLBACK_MARKER,
    callback_to_binding,
    route_to_binding,
    route_via_owner,
)
from gateway.service.router import CallRouter, call_context
from gateway.sip.events import Endpoint
from gateway.sip.message import Headers, Request
from routing.config import EmergencyConfig, RoutingConfig
from routing.decision import Direction, FlowRelay, RoutedBy
from routing.emergency import DialPlan
from routing.sites_file import parse_sites
from tests.call_events import call_ended
from tests.registrar.test_flow_routing import A as SIBLING_A
from tests.registrar.test_flow_routing import B as SIBLING_B
from tests.registrar.test_flow_routing import binding

DEMO = Path(__file__).resolve().parents[1] / "deploy" / "demo" / "sites.toml"
OFFICE_PHONE = Endpoint("UDP", "127.0.10.5", 5062)
CENTRE = Endpoint("UDP", "127.0.112.1", 5091)  # Kerava in deploy/demo/sites.toml
PBX = Endpoint("UDP", "127.0.0.1", 5080)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def invite(uri: str, from_user: str, source: Endpoint, *, active_calls: int = 1) -> RouteNeeded:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP {source.host_port};branch=z9hG4bK1"),
            ("From", f"<sip:{from_user}@voipgw.example>;tag=1"),
            ("To", f"<{uri}>"),
            ("Call-ID", f"{from_user}-{uri}-{source.host_port}"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:{from_user}@{source.host_port}>"),
        ]
    )
    request = Request(method="INVITE", uri=uri, headers=headers, body=b"v=0\r\n")
    return RouteNeeded(call_uuid="u1", request=request, source=source, active_calls=active_calls)


async def resolve(uri: str) -> tuple[Endpoint, ...]:
    from gateway.service.server import ip_literal_endpoint

    endpoint = ip_literal_endpoint(uri)
    assert endpoint is not None
    return (endpoint,)


def make_router(
    *, max_calls: int = 100, recorded=None, edge_proxies=()
) -> tuple[CallRouter, Clock]:
    directory = parse_sites(DEMO.read_text(), "toml").directory()
    clock = Clock()
    router = CallRouter(
        config=RoutingConfig(default_next_hop="sip:127.0.0.1:5080"),
        directory=lambda: directory,
        overload=OverloadConfig(max_calls=max_calls),
        resolve=resolve,
        recorded_line=recorded,
        clock=clock,
        edge_proxies=edge_proxies,
        trusted_peers=(ipaddress.ip_network("127.0.0.1/32"),),
    )
    return router, clock


def ended(route_event: RouteNeeded, router_route: Route) -> CallEnded:
    return call_ended(
        caller="sip:alice@voipgw.example",
        callee_dialled="sip:112@voipgw",
        callee_routed="",
        source=route_event.source,
        setup_at=0,
        ringing_at=None,
        answered_at=1,
        ended_at=2,
        emergency=True,
        facts=router_route.facts,
    )


@pytest.mark.asyncio
async def test_centre_calls_back_the_device_for_30_minutes_after_the_call() -> None:
    router, clock = make_router()
    emergency = invite("sip:112@voipgw", "alice", OFFICE_PHONE)
    route = await router.route(emergency)
    assert isinstance(route, Route)
    assert route.emergency
    callback = invite("sip:+358401000001@voipgw", "psap", CENTRE)
    during = await router.route(callback)
    assert isinstance(during, Route)
    assert during.targets == (OFFICE_PHONE,)  # the device, not the PBX
    assert during.request_uri == "sip:alice@127.0.10.5:5062"
    router.call_ended(ended(emergency, route))
    clock.now += CALLBACK_WINDOW - 1
    assert (await router.route(callback)).targets == (OFFICE_PHONE,)
    clock.now += 2  # the window is over: back to normal routing
    after = await router.route(callback)
    assert not isinstance(after, Route) or after.targets != (OFFICE_PHONE,)


@pytest.mark.asyncio
async def test_callback_bypass_only_for_calls_from_a_centre() -> None:
    router, _ = make_router()
    await router.route(invite("sip:112@voipgw", "alice", OFFICE_PHONE))
    other = await router.route(
        invite("sip:+358401000001@voipgw", "mallory", Endpoint("UDP", "127.0.99.9", 5060))
    )
    assert not isinstance(other, Route) or other.targets != (OFFICE_PHONE,)


@pytest.mark.asyncio
async def test_overload_sheds_ordinary_calls_never_emergency() -> None:
    router, _ = make_router(max_calls=10)
    ordinary = await router.route(
        invite("sip:+358401000002@voipgw", "alice", OFFICE_PHONE, active_calls=500)
    )
    assert isinstance(ordinary, Reject)
    assert ordinary.status == 503
    assert ("Retry-After", "5") in ordinary.headers
    emergency = await router.route(
        invite("sip:112@voipgw", "alice", OFFICE_PHONE, active_calls=500)
    )
    assert isinstance(emergency, Route)
    assert emergency.emergency


@pytest.mark.asyncio
async def test_recorded_line_notice_never_on_emergency() -> None:
    notice = Announcement(prompt="recording-notice", language="fi")
    router, _ = make_router(recorded=lambda uri, lang: notice)
    staff = await router.route(invite("sip:+358401000002@voipgw", "alice", OFFICE_PHONE))
    assert staff.announcement == notice
    assert staff.targets == (PBX,)
    emergency = await router.route(invite("sip:112@voipgw", "alice", OFFICE_PHONE))
    assert emergency.announcement is None


@pytest.mark.asyncio
async def test_calls_from_the_pbx_go_to_registered_devices_not_classified() -> None:
    router, _ = make_router()
    router.trusted_peers = (ipaddress.ip_network("127.0.0.1/32"),)
    device = Route(targets=(OFFICE_PHONE,), request_uri="sip:alice@127.0.10.5:5062")

    async def lookup(request: Request) -> Route | None:
        return device if "alice" in request.uri else None

    router.lookup_binding = lookup
    inbound = await router.route(invite("sip:alice@voipgw", "pstn-caller", PBX))
    assert isinstance(inbound, Route)
    assert inbound.targets == (OFFICE_PHONE,)
    nobody = await router.route(invite("sip:nobody@voipgw", "pstn-caller", PBX))
    assert isinstance(nobody, Reject)
    assert nobody.status == 404


@pytest.mark.asyncio
async def test_caller_identity_asserted_and_privacy_honoured() -> None:
    router, _ = make_router()
    directory = router.directory()
    shown = await router.route(invite("sip:+358201234567@voipgw", "alice", OFFICE_PHONE))
    assert isinstance(shown, Route)
    assert ("P-Asserted-Identity", '"Alice (desk phone)" <tel:+358401000001>') in shown.headers
    assert shown.from_value is None
    restricted = next(
        s for s in directory.subscribers.values() if s.presentation.value == "restricted"
    )
    hidden = await router.route(
        invite("sip:+358201234567@voipgw", restricted.sip_user, OFFICE_PHONE)
    )
    assert isinstance(hidden, Route)
    assert [h for h in hidden.headers if h[0] == "Privacy"] == [("Privacy", "id")]
    assert hidden.from_value is not None and "anonymous.invalid" in hidden.from_value
    assert any(
        name == "P-Asserted-Identity" and restricted.e164 in value for name, value in hidden.headers
    )


@pytest.mark.asyncio
async def test_emergency_test_call_answered_by_the_gateway_with_a_report() -> None:
    router, _ = make_router()
    event = invite("urn:service:test.sos", "alice", OFFICE_PHONE)
    event.request.headers.add("Content-Type", "application/sdp")
    event.request.body = (
        b"v=0\r\no=a 1 1 IN IP4 127.0.10.5\r\ns=-\r\nc=IN IP4 127.0.10.5\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0\r\n"
    )
    answer = await router.route(event)
    assert isinstance(answer, LocalAnswer)
    text = answer.body.decode()
    assert "m=audio 0 RTP/AVP 0" in text  # media declined, RFC 3264 6
    assert "class: office" in text
    assert "site: setera-espoo" in text
    assert "callback: tel:+358401000001" in text
    assert "centres: kerava" in text
    assert "Espoo" in text
    away = invite("urn:service:test.sos", "bob", Endpoint("UDP", "127.0.0.1", 5099))
    away.request.headers.add("Content-Type", "application/sdp")
    away.request.body = event.request.body
    nomadic = await router.route(away)
    assert isinstance(nomadic, LocalAnswer)
    assert "class: nomadic" in nomadic.body.decode()
    assert "address: not sent" in nomadic.body.decode()


def test_call_context_reads_every_via_sent_by_with_the_sip_parser() -> None:
    # The device's Via hosts are claims the classifier reports; they were split by
    # hand (an IPv6 sent-by kept its brackets and port, a second via-parm on the same
    # line was lost).
    event = invite("sip:112@voipgw", "alice", OFFICE_PHONE)
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP [2001:db8::5]:5062;branch=z9hG4bK1, SIP/2.0/TCP 10.1.2.3"),
            ("Via", "SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK2;rport"),
            *((n, v) for n, v in event.request.headers if n != "Via"),
        ]
    )
    request = Request(method="INVITE", uri="sip:112@voipgw", headers=headers, body=b"")
    directory = parse_sites(DEMO.read_text(), "toml").directory()
    ctx = call_context(request, OFFICE_PHONE, directory, DialPlan(EmergencyConfig()))
    assert ctx.via_sent_by == ("2001:db8::5", "10.1.2.3", "192.168.1.20")
    assert ctx.emergency is not None and ctx.emergency.number == "112"
    assert ctx.dialled_user == "112"
    assert ctx.subscriber is not None and ctx.subscriber.sip_user == "alice"


KAMAILIO = Endpoint("UDP", "127.0.0.2", 5060)
EDGE_PROXIES = (ipaddress.ip_network("127.0.0.2/32"),)


def through_proxy(event: RouteNeeded, phone_via: str, proxy: Endpoint) -> RouteNeeded:
    """``event`` as an edge proxy at ``proxy`` forwards it: its Via on top."""
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP {proxy.host_port};branch=z9hG4bK-proxy"),
            ("Via", phone_via),
            *((n, v) for n, v in event.request.headers if n != "Via"),
        ]
    )
    request = Request(method="INVITE", uri=event.request.uri, headers=headers, body=b"v=0\r\n")
    return RouteNeeded(call_uuid="u2", request=request, source=proxy, active_calls=1)


@pytest.mark.asyncio
async def test_emergency_call_through_a_trusted_edge_proxy_is_classified_where_the_phone_is() -> (
    None
):
    router, _ = make_router(edge_proxies=EDGE_PROXIES)
    via = "SIP/2.0/UDP 192.168.1.20:5062;received=127.0.10.5;rport=40000;branch=z9hG4bK1"
    route = await router.route(
        through_proxy(invite("sip:112@voipgw", "alice", OFFICE_PHONE), via, KAMAILIO)
    )
    assert isinstance(route, Route)
    assert route.facts.call_class.value == "office"
    assert route.facts.centres[0] == "kerava"
    assert route.facts.device_source == ipaddress.ip_address("127.0.10.5")
    assert "through edge proxy 127.0.0.2" in route.facts.reason
    # The CDR's source is the phone's, not the proxy's (the call's transport source).
    event = through_proxy(invite("sip:112@voipgw", "alice", OFFICE_PHONE), via, KAMAILIO)
    record = record_of(ended(event, route), wall_offset=0.0, instance="gw-1")
    assert record.source_address == ipaddress.ip_address("127.0.10.5")
    direct = invite("sip:112@voipgw", "alice", OFFICE_PHONE)
    direct_route = await router.route(direct)
    assert isinstance(direct_route, Route)
    record = record_of(ended(direct, direct_route), wall_offset=0.0, instance="gw-1")
    assert record.source_address == ipaddress.ip_address(OFFICE_PHONE.host)


@pytest.mark.asyncio
async def test_an_edge_proxy_not_configured_vouches_for_nothing() -> None:
    # Without [sip] edge_proxies (or from any other source) a Via received= is the
    # sender's claim: the call is where the packet came from, off every office.
    router, _ = make_router()
    via = "SIP/2.0/UDP 192.168.1.20:5062;received=127.0.10.5;rport=40000;branch=z9hG4bK1"
    event = through_proxy(invite("sip:112@voipgw", "alice", OFFICE_PHONE), via, KAMAILIO)
    route = await router.route(event)
    assert route.facts.call_class.value == "nomadic"
    assert route.facts.device_source is None
    forged = through_proxy(
        invite("sip:112@voipgw", "alice", OFFICE_PHONE), via, Endpoint("UDP", "127.0.99.9", 5060)
    )
    router, _ = make_router(edge_proxies=EDGE_PROXIES)
    assert (await router.route(forged)).facts.call_class.value == "nomadic"


@pytest.mark.asyncio
async def test_an_address_an_edge_proxy_vouches_for_is_never_a_trusted_peer() -> None:
    # A call through the proxy "from" the PBX's address is still a device's call:
    # trust goes to the packet's sender only.
    router, _ = make_router(edge_proxies=EDGE_PROXIES)
    via = f"SIP/2.0/UDP {PBX.host_port};branch=z9hG4bK1"
    route = await router.route(
        through_proxy(invite("sip:+358401000001@voipgw", "alice", PBX), via, KAMAILIO)
    )
    assert route.facts.direction.value == "outbound"
    direct = await router.route(invite("sip:+358401000001@voipgw", "pbx", PBX))
    assert direct.facts.direction.value == "inbound"


def relayed_record(route: Route | Reject, event: RouteNeeded, instance: str) -> CallDetailRecord:
    return record_of(
        call_ended(source=event.source, emergency=False, facts=route.facts),
        wall_offset=0.0,
        instance=instance,
    )


@pytest.mark.asyncio
async def test_a_call_relayed_to_the_flow_owner_is_billed_by_the_relaying_record() -> None:
    # alice (customer setera) calls frank (esimerkki), whose phone's flow B holds.
    # A relays the call to B; both run a B2BUA leg and write a record. A's is the
    # call as alice placed it; B sees an inbound call from a trusted sibling, billed
    # to frank's customer: only the mark tells the itemization to skip it.
    phone = binding(7, SIBLING_B)  # frank's phone (the AoR is not looked at here)
    origin, _ = make_router()
    origin.cluster_uri = SIBLING_A

    async def lookup_at_a(request: Request) -> Route | None:
        return route_via_owner(phone, (Endpoint("UDP", "127.0.0.1", 5071),), request.uri)

    origin.lookup_binding = lookup_at_a
    placed = invite("sip:frank@voipgw", "alice", OFFICE_PHONE)
    relaying = await origin.route(placed)
    assert isinstance(relaying, Route)
    assert relaying.headers[0] == ("Route", f"<{SIBLING_B};lr>")
    assert relaying.facts.flow_relay is FlowRelay.TO_OWNER
    assert relaying.facts.customer_id == "setera"

    owner, _ = make_router()
    owner.cluster_uri = SIBLING_B

    async def lookup_at_b(request: Request) -> Route | Reject | None:
        if "frank" not in request.uri:
            return None
        return route_to_binding(phone)

    owner.lookup_binding = lookup_at_b
    sibling = Endpoint("UDP", "127.0.0.1", 5070)
    relay = invite("sip:frank@voipgw", "alice", sibling)
    relay.request.headers.add("Route", f"<{SIBLING_B};lr>")
    delivered = await owner.route(relay)
    assert isinstance(delivered, Route)
    assert delivered.targets == (phone.received,)
    assert delivered.facts.flow_relay is FlowRelay.FROM_SIBLING
    assert delivered.facts.direction is Direction.INBOUND
    assert delivered.facts.customer_id == "esimerkki"

    billed = relayed_record(relaying, placed, "gw-a")
    leg = relayed_record(delivered, relay, "gw-b")
    assert billed.flow_relay is FlowRelay.TO_OWNER
    assert (billed.customer, billed.caller) == ("setera", "+358401000001")
    assert billed.source_address == ipaddress.ip_address(OFFICE_PHONE.host)
    assert leg.flow_relay is FlowRelay.FROM_SIBLING
    assert leg.customer == "esimerkki"

    # Whatever becomes of a relay at the owner, its record is the owner's leg: no
    # registration left there is a 404 the relaying record already has.
    gone = invite("sip:nobody@voipgw", "alice", sibling)
    gone.request.headers.add("Route", f"<{SIBLING_B};lr>")
    refused = await owner.route(gone)
    assert isinstance(refused, Reject)
    assert refused.status == 404
    assert refused.facts.flow_relay is FlowRelay.FROM_SIBLING

    # The PBX's own call to frank, and a device that names B in a Route of its own
    # (it would take its calls out of the itemization), are nobody's relay.
    direct = await owner.route(invite("sip:frank@voipgw", "pstn-caller", PBX))
    assert direct.facts.flow_relay is None
    for callee in ("sip:frank@voipgw", "sip:+358201234567@voipgw"):  # registered, the PBX's
        forged = invite(callee, "alice", OFFICE_PHONE)
        forged.request.headers.add("Route", f"<{SIBLING_B};lr>")
        assert (await owner.route(forged)).facts.flow_relay is None


@pytest.mark.asyncio
async def test_a_callback_relayed_to_the_flow_owner_is_the_owner_s_leg() -> None:
    # A centre's callback reached A, which relayed it to B, the holder of the
    # device's flow (the window is B's own here): B's record is the relay's leg.
    router, _ = make_router()
    router.cluster_uri = SIBLING_B
    await router.route(invite("sip:112@voipgw", "alice", OFFICE_PHONE))
    phone = binding(5, SIBLING_B)

    async def callback_flow(window: object, request: Request, as_owner: bool) -> Route:
        return callback_to_binding(phone)

    router.callback_flow = callback_flow
    relay = invite("sip:+358401000001@voipgw", "psap", Endpoint("UDP", "127.0.0.1", 5070))
    relay.request.headers.add("Route", f"<{SIBLING_B};lr>")
    relay.request.headers.add(*CALLBACK_MARKER)
    delivered = await router.route(relay)
    assert isinstance(delivered, Route)
    assert delivered.facts.routed_by is RoutedBy.EMERGENCY_CALLBACK
    assert delivered.facts.flow_relay is FlowRelay.FROM_SIBLING
    # The centre's own call, to the same window, is nobody's relay.
    direct = await router.route(invite("sip:+358401000001@voipgw", "psap", CENTRE))
    assert direct.facts.flow_relay is None
