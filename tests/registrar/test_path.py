"""RFC 3327 Path (gateway/registrar/path.py, and where bindings.py, store.py,
location.py and routing.py carry it): read from a REGISTER, stored with the binding
(PostgreSQL and memory), echoed to a UA that supports it, and used as the preloaded
Route set of the binding's calls, ahead of flow ownership."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from gateway.registrar import BindingStore, Registrar
from gateway.registrar.bindings import (
    Binding,
    ExpiresPolicy,
    RegisterError,
    parse_register,
)
from gateway.registrar.path import first_hop, path_echo, route_via_path
from gateway.registrar.routing import (
    OWNER_RESPONSE_TIMEOUT,
    FlowChoice,
    choose_flow,
    holds_flow,
    route_to_binding,
)
from gateway.sip.events import Endpoint
from gateway.sip.message import Response
from tests.registrar.helpers import REALM, authorize, config, event, register
from tests.registrar.test_location import Switchable, service

EDGE = "<sip:198.51.100.1;lr;received=sip:203.0.113.9:40000>"
INNER = "<sip:edge-2.example.net;lr>"
EDGE_ADDRESS = Endpoint("UDP", "198.51.100.1", 5060)
A = "sip:127.0.0.1:5070"
B = "sip:127.0.0.1:5071"


def with_path(*lines: str, supported: str | None = "path") -> tuple[tuple[str, str], ...]:
    extra = tuple(("Path", line) for line in lines)
    return extra if supported is None else (*extra, ("Supported", supported))


def test_the_path_vector_is_read_in_order_across_lines_and_commas() -> None:
    update = parse_register(
        register(extra=with_path(f"{EDGE}, {INNER}", "<sip:third.example.net;lr>")),
        policy=ExpiresPolicy(),
    )
    assert update.path == (EDGE, INNER, "<sip:third.example.net;lr>")
    assert update.path_supported


@pytest.mark.parametrize(
    ("supported", "expected"),
    [(None, False), ("100rel, timer", False), ("timer, PATH", True), ("path", True)],
)
def test_support_is_the_path_option_tag(supported: str | None, expected: bool) -> None:
    update = parse_register(
        register(extra=with_path(EDGE, supported=supported)), policy=ExpiresPolicy()
    )
    assert update.path == (EDGE,)
    assert update.path_supported is expected


def test_no_path_is_an_empty_vector() -> None:
    update = parse_register(register(), policy=ExpiresPolicy())
    assert (update.path, update.path_supported) == ((), False)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("*", "Bad Path"),
        ("<sip:edge;lr", "Bad Path"),
        ("<tel:+358401234567>", "Path Is Not A SIP URI"),
    ],
)
def test_a_bad_path_is_400(value: str, reason: str) -> None:
    with pytest.raises(RegisterError) as raised:
        parse_register(register(extra=(("Path", value),)), policy=ExpiresPolicy())
    assert (raised.value.status, raised.value.reason) == (400, reason)


def test_the_200_echoes_the_path_only_to_a_ua_that_supports_it() -> None:
    supported = parse_register(register(extra=with_path(EDGE, INNER)), policy=ExpiresPolicy())
    assert path_echo(supported) == [("Path", f"{EDGE}, {INNER}")]
    unsupported = parse_register(
        register(extra=with_path(EDGE, supported=None)), policy=ExpiresPolicy()
    )
    assert path_echo(unsupported) == []
    assert (
        path_echo(parse_register(register(extra=(("Supported", "path"),)), policy=ExpiresPolicy()))
        == []
    )


NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def binding(ident: int, owner: str | None, path: tuple[str, ...] = ()) -> Binding:
    return Binding(
        id=ident,
        aor=f"sip:alice@{REALM}",
        contact=f"sip:alice@192.0.2.{ident}:5062",
        call_id=f"c{ident}",
        cseq=1,
        received=Endpoint("UDP", "198.51.100.1", 5060),
        registered_at=NOW,
        expires_at=NOW + dt.timedelta(seconds=600),
        expires=600,
        flow_owner=owner,
        path=path,
    )


def test_a_binding_with_a_path_is_reached_from_any_instance() -> None:
    through_edge = binding(1, B, (EDGE,))
    # Taken by B, but the edge proxy holds the flow: A delivers it itself ...
    assert holds_flow(through_edge, A)
    assert choose_flow([through_edge], local=A, as_owner=False) == FlowChoice(binding=through_edge)
    # ... and so does an instance a sibling relayed the call to.
    assert choose_flow([through_edge], local=A, as_owner=True) == FlowChoice(binding=through_edge)
    # Without a Path the owner still decides.
    assert not holds_flow(binding(2, B), A)


def test_a_call_goes_to_the_first_path_uri_with_the_path_as_route_set() -> None:
    through_edge = binding(1, B, (EDGE, INNER))
    assert first_hop(through_edge) == "sip:198.51.100.1;lr;received=sip:203.0.113.9:40000"
    route = route_via_path(through_edge, (EDGE_ADDRESS,))
    assert route.targets == (EDGE_ADDRESS,)
    assert route.headers == (("Route", EDGE), ("Route", INNER))
    # The phone sees the contact it registered (RFC 3261 10.3, 16.5).
    assert route.request_uri == "sip:alice@192.0.2.1:5062"
    assert route.facts == route_to_binding(through_edge).facts
    assert route.failover_timeout == OWNER_RESPONSE_TIMEOUT
    assert route.unreachable is not None
    assert route.unreachable.status == 480
    with pytest.raises(ValueError, match="has no Path"):
        first_hop(binding(2, None))


# ---------------------------------------------------------------- stored, echoed


@pytest_asyncio.fixture
async def store(pg_pool: asyncpg.Pool) -> AsyncIterator[BindingStore]:
    store = BindingStore(pg_pool, flow_owner=A)
    await store.set_password("alice", REALM, "s3cret")
    yield store


async def register_through_edge(
    registrar: Registrar, *extra: tuple[str, str], cseq: int
) -> Response:
    request = register(call_id="edge", cseq=cseq, extra=extra)
    challenge = await registrar.handle(event(request, EDGE_ADDRESS))
    ok = await registrar.handle(event(authorize(request, challenge), EDGE_ADDRESS))
    assert ok.status == 200, ok
    return ok


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_the_registrar_stores_and_echoes_the_path(
    store: BindingStore, pg_pool: asyncpg.Pool
) -> None:
    registrar = Registrar(config(), store, flow_owner=A)
    ok = await register_through_edge(registrar, *with_path(EDGE, INNER), cseq=1)
    assert ok.headers.get_lines("Path") == [f"{EDGE}, {INNER}"]
    (stored,) = await store.lookup(f"sip:alice@{REALM}")
    assert stored.path == (EDGE, INNER)
    assert await pg_pool.fetchval("SELECT path FROM registrar_bindings") == [EDGE, INNER]

    # A UA that does not say it supports Path: stored and used, not echoed.
    ok = await register_through_edge(registrar, *with_path(EDGE, supported=None), cseq=2)
    assert ok.headers.get_lines("Path") == []
    (stored,) = await store.lookup(f"sip:alice@{REALM}")
    assert stored.path == (EDGE,)

    # Refreshed without a Path (the phone now reaches the instance directly): gone,
    # stored as NULL, and the flow owner decides again.
    await register_through_edge(registrar, cseq=3)
    (stored,) = await store.lookup(f"sip:alice@{REALM}")
    assert stored.path == ()
    assert await pg_pool.fetchval("SELECT path FROM registrar_bindings") is None
    assert not holds_flow(stored, B)


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_a_register_taken_into_memory_keeps_its_path(store: BindingStore) -> None:
    switch = Switchable(store)
    location = service(switch, flow_owner=A)
    switch.up = False
    update = parse_register(register(extra=with_path(EDGE)), policy=ExpiresPolicy())
    (remembered,) = await location.apply(update, EDGE_ADDRESS)
    assert (remembered.path, remembered.flow_owner) == ((EDGE,), A)
    # Written through once the database is back: the row has the Path too.
    switch.up = True
    assert await location.write_through() == 1
    (row,) = await store.lookup(f"sip:alice@{REALM}")
    assert row.path == (EDGE,)
