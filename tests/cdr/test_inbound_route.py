"""An inbound call (from the PBX, a trusted peer) to a subscriber carries her customer
and number for the CDR, and the router logs its decision at info as for outgoing
calls (``call <call-id>: ...``)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest

from gateway.b2bua import Reject, Route, RouteNeeded
from gateway.config import OverloadConfig
from gateway.service.router import CallRouter, LocationUnknown
from gateway.sip.events import Endpoint
from gateway.sip.message import Headers, Request
from routing.config import RoutingConfig
from routing.sites_file import parse_sites

pytestmark = pytest.mark.asyncio

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "sites.toml"
PBX = Endpoint("UDP", "127.0.0.1", 5080)
PHONE = Endpoint("UDP", "127.0.10.5", 5062)


def invite(uri: str) -> RouteNeeded:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP {PBX.host_port};branch=z9hG4bK1"),
            ("From", "<sip:+358501234567@pbx.example>;tag=1"),
            ("To", f"<{uri}>"),
            ("Call-ID", "inbound-1@pbx.example"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:pbx@{PBX.host_port}>"),
        ]
    )
    request = Request(method="INVITE", uri=uri, headers=headers, body=b"v=0\r\n")
    return RouteNeeded(call_uuid="u1", request=request, source=PBX)


def router(registered: dict[str, Route | LocationUnknown]) -> CallRouter:
    directory = parse_sites(DEMO.read_text(), "toml").directory()

    async def resolve(uri: str) -> tuple[Endpoint, ...]:
        return (PBX,)

    async def lookup(request: Request) -> Route | LocationUnknown | None:
        return registered.get(request.uri)

    return CallRouter(
        config=RoutingConfig(default_next_hop="sip:127.0.0.1:5080"),
        directory=lambda: directory,
        overload=OverloadConfig(),
        resolve=resolve,
        lookup_binding=lookup,
        trusted_peers=(ipaddress.ip_network("127.0.0.1/32"),),
    )


@pytest.mark.parametrize(
    "uri",
    [
        "sip:alice@voipgw.demo",  # the AoR she registered
        "sip:+358401000001@voipgw.demo;user=phone",  # her number
    ],
)
async def test_inbound_call_to_a_registered_subscriber(
    uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    phone = Route(targets=(PHONE,), request_uri="sip:alice@127.0.10.5:5062")
    with caplog.at_level(logging.INFO, logger="voipgw.router"):
        result = await router({uri: phone}).route(invite(uri))
    assert isinstance(result, Route)
    assert result.targets == (PHONE,)
    assert result.facts.customer_id == "setera"
    assert result.facts.callee == "+358401000001"
    assert result.facts.subscriber is None  # that names the caller
    (line,) = [r.getMessage() for r in caplog.records if r.name == "voipgw.router"]
    assert line.startswith("call inbound-1@pbx.example: inbound route")
    assert "+358401000001" not in line  # no numbers in logs


async def test_inbound_call_nobody_registered_is_logged_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="voipgw.router"):
        result = await router({}).route(invite("sip:bob@voipgw.demo"))
    (line,) = [r.getMessage() for r in caplog.records if r.name == "voipgw.router"]
    assert line.startswith("call inbound-1@pbx.example: inbound reject 404")
    assert isinstance(result, Reject)
    assert result.status == 404
    assert result.facts.customer_id == "setera"
    assert result.facts.callee == "+358401000002"


async def test_inbound_call_to_a_stranger_names_no_customer() -> None:
    result = await router({}).route(invite("sip:+358409999999@voipgw.demo"))
    assert isinstance(result, Reject)
    assert result.facts.customer_id == ""
    assert result.facts.callee is None


async def test_inbound_call_while_the_registration_cannot_be_told_is_503_not_404() -> None:
    # PostgreSQL away and no memory of bob: 404 would tell the PBX, permanently, that
    # a phone which may well be registered does not exist (RFC 3261 21.4.5).
    uri = "sip:bob@voipgw.demo"
    result = await router({uri: LocationUnknown(retry_after=5)}).route(invite(uri))
    assert isinstance(result, Reject)
    assert result.status == 503
    assert dict(result.headers)["Retry-After"] == "5"
    assert result.facts.callee == "+358401000002"
