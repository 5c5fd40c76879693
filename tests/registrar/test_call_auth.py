"""Calls must authenticate (issue "Hold under attack": everything that is not a trusted
peer authenticates): an INVITE without credentials gets 407 with Proxy-Authenticate
(RFC 3261 22.3); with the right credentials the authenticated user is the caller
(not the From header); a wrong password gets 403 like an unknown user; emergency
calls are never challenged (RFC 6881 SP-39)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from gateway.b2bua import Reject, Route, RouteNeeded
from gateway.config import OverloadConfig
from gateway.registrar import BindingStore, Registrar
from gateway.registrar.digest import Algorithm, compute_ha1, digest_response
from gateway.service.router import CallRouter
from gateway.sip.events import Endpoint
from gateway.sip.headers import format_auth, parse_auth
from gateway.sip.message import Headers, Request
from routing.config import RoutingConfig
from routing.sites_file import parse_sites
from tests.registrar.helpers import config

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "sites.toml"
OFFICE = Endpoint("UDP", "127.0.10.5", 5062)


@pytest_asyncio.fixture
async def router(pg_pool: asyncpg.Pool) -> AsyncIterator[CallRouter]:
    store = BindingStore(pg_pool)
    registrar = Registrar(config(), store)
    await store.set_password("alice", registrar.config.realm, "s3cret")
    directory = parse_sites(DEMO.read_text(), "toml").directory()

    async def resolve(uri: str) -> tuple[Endpoint, ...]:
        return (Endpoint("UDP", "127.0.0.1", 5080),)

    yield CallRouter(
        config=RoutingConfig(),
        directory=lambda: directory,
        overload=OverloadConfig(),
        resolve=resolve,
        authenticate=registrar.authenticate_call,
    )


def invite(uri: str, from_user: str, authorization: str | None = None) -> RouteNeeded:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 127.0.10.5:5062;branch=z9hG4bKauth"),
            ("From", f"<sip:{from_user}@voipgw.demo>;tag=1"),
            ("To", f"<{uri}>"),
            ("Call-ID", "auth-call"),
            ("CSeq", "1 INVITE"),
            ("Contact", "<sip:x@127.0.10.5:5062>"),
        ]
    )
    if authorization:
        headers.add("Proxy-Authorization", authorization)
    return RouteNeeded(
        call_uuid="u", request=Request(method="INVITE", uri=uri, headers=headers), source=OFFICE
    )


def answer(challenge: Reject, uri: str, password: str) -> str:
    value = next(v for n, v in challenge.headers if n == "Proxy-Authenticate" and "SHA-256" in v)
    _, params = parse_auth(value)
    ha1 = compute_ha1("alice", params["realm"], password, Algorithm.SHA_256)
    response = digest_response(
        ha1=ha1,
        algorithm=Algorithm.SHA_256,
        method="INVITE",
        uri=uri,
        nonce=params["nonce"],
        qop="auth",
        nc="00000001",
        cnonce="abc",
    )
    return format_auth(
        "Digest",
        {
            "username": "alice",
            "realm": params["realm"],
            "nonce": params["nonce"],
            "uri": uri,
            "response": response,
            "algorithm": "SHA-256",
            "qop": "auth",
            "nc": "00000001",
            "cnonce": "abc",
            "opaque": params["opaque"],
        },
    )


async def test_unauthenticated_call_is_challenged_with_407(router: CallRouter) -> None:
    result = await router.route(invite("sip:+358201234567@voipgw", "alice"))
    assert isinstance(result, Reject)
    assert result.status == 407
    assert any(n == "Proxy-Authenticate" for n, _ in result.headers)


async def test_authenticated_user_is_the_caller_not_the_from_header(router: CallRouter) -> None:
    uri = "sip:+358201234567@voipgw"
    challenge = await router.route(invite(uri, "bob"))
    assert isinstance(challenge, Reject)
    routed = await router.route(invite(uri, "bob", answer(challenge, uri, "s3cret")))
    assert isinstance(routed, Route)
    # Alice authenticated; From claimed bob: the asserted identity is alice's.
    assert any(n == "P-Asserted-Identity" and "+358401000001" in v for n, v in routed.headers)


async def test_wrong_password_gets_403(router: CallRouter) -> None:
    uri = "sip:+358201234567@voipgw"
    challenge = await router.route(invite(uri, "alice"))
    assert isinstance(challenge, Reject)
    refused = await router.route(invite(uri, "alice", answer(challenge, uri, "guess")))
    assert isinstance(refused, Reject)
    assert refused.status == 403


async def test_emergency_calls_are_never_challenged(router: CallRouter) -> None:
    result = await router.route(invite("sip:112@voipgw", "nobody-at-all"))
    assert isinstance(result, Route)
    assert result.emergency
