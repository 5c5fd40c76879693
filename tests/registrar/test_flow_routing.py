"""Flow ownership among several instances (gateway/registrar/routing.py): which
instance a call for a registered AoR goes through, and the answers when none can."""

from __future__ import annotations

import datetime as dt

from gateway.registrar.bindings import Binding
from gateway.registrar.routing import (
    MAX_RETRY_AFTER,
    OWNER_RESPONSE_TIMEOUT,
    FlowChoice,
    choose_flow,
    flow_not_held,
    holds_flow,
    owner_unreachable,
    route_via_owner,
    routed_to_owner,
    same_instance,
)
from gateway.sip.events import Endpoint

A = "sip:127.0.0.1:5070"
B = "sip:127.0.0.1:5071"
NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def binding(
    ident: int, owner: str | None, *, q: float | None = None, age: int = 0, expires: int = 600
) -> Binding:
    return Binding(
        id=ident,
        aor="sip:alice@voipgw.demo",
        contact=f"sip:alice@192.0.2.{ident}:5062",
        q=q,
        call_id=f"c{ident}",
        cseq=1,
        received=Endpoint("UDP", "198.51.100.7", 40000 + ident),
        registered_at=NOW - dt.timedelta(seconds=age),
        expires_at=NOW + dt.timedelta(seconds=expires),
        expires=expires,
        flow_owner=owner,
    )


def test_same_instance_compares_transport_addresses() -> None:
    assert same_instance("sip:127.0.0.1:5070", "sip:127.0.0.1:5070;transport=udp")
    assert same_instance("sip:[0:0::1]:5060", "sip:[::1]")
    assert not same_instance(A, B)
    assert not same_instance(A, "tel:+358401")


def test_a_binding_without_an_owner_is_held_by_whoever_reads_it() -> None:
    assert holds_flow(binding(1, None), A)
    assert holds_flow(binding(1, A), A)
    assert not holds_flow(binding(1, B), A)


def test_without_cluster_every_flow_is_held_here() -> None:
    there = binding(2, B)
    assert holds_flow(there, None)
    assert choose_flow([there], local=None, as_owner=False) == FlowChoice(binding=there)
    assert not routed_to_owner([f"<{B};lr>"], None)


def test_no_binding_is_not_registered() -> None:
    assert choose_flow([], local=A, as_owner=False) is None
    assert choose_flow([], local=A, as_owner=True) is None


def test_held_here_is_delivered_held_elsewhere_goes_through_the_owner() -> None:
    here, there = binding(1, A), binding(2, B)
    assert choose_flow([here], local=A, as_owner=False) == FlowChoice(binding=here)
    assert choose_flow([there], local=A, as_owner=False) == FlowChoice(binding=there, owner=B)
    # The best binding (q, then newest) decides, wherever its flow is.
    newer_there = binding(3, B, age=0)
    older_here = binding(4, A, age=60)
    assert choose_flow([older_here, newer_there], local=A, as_owner=False) == FlowChoice(
        binding=newer_there, owner=B
    )
    assert choose_flow([binding(5, A, q=1.0), binding(6, B, q=0.5)], local=A, as_owner=False) == (
        FlowChoice(binding=binding(5, A, q=1.0))
    )


def test_a_relayed_request_is_never_relayed_on() -> None:
    # B sent it here as the owner; the table now says B holds the flow (the phone
    # re-registered): no second hop back to B, the relaying instance gets 480.
    assert choose_flow([binding(2, B)], local=A, as_owner=True) == FlowChoice(binding=None)
    # Of several bindings only those whose flow is held here are candidates.
    here = binding(1, A, q=0.1)
    assert choose_flow([binding(2, B, q=1.0), here], local=A, as_owner=True) == FlowChoice(
        binding=here
    )


def test_routed_to_owner_reads_every_route_value() -> None:
    assert routed_to_owner([f"<{A};lr>"], A)
    assert routed_to_owner([f"<sip:10.0.0.9;lr>, <{A};lr>"], A)
    assert routed_to_owner(["<sip:10.0.0.9;lr>", f"<{A};lr>"], A)
    assert not routed_to_owner([f"<{B};lr>"], A)
    assert not routed_to_owner([], A)
    assert not routed_to_owner(["<<garbage"], A)


def test_route_via_owner_keeps_the_request_uri_and_names_the_owner() -> None:
    there = binding(2, B, expires=120)
    owner = (Endpoint("UDP", "127.0.0.1", 5071),)
    route = route_via_owner(there, owner, "sip:alice@voipgw.demo")
    assert route.targets == owner
    assert route.request_uri == "sip:alice@voipgw.demo"
    assert route.headers == (("Route", f"<{B};lr>"),)
    assert route.failover_timeout == OWNER_RESPONSE_TIMEOUT
    assert route.unreachable == owner_unreachable(there)
    assert route.facts.registered_contact == there.contact


def test_owner_gone_is_480_with_retry_after_bounded() -> None:
    soon = owner_unreachable(binding(1, B, expires=120))
    assert (soon.status, soon.headers) == (480, (("Retry-After", "120"),))
    late = owner_unreachable(binding(1, B, expires=7200))
    assert late.headers == (("Retry-After", str(MAX_RETRY_AFTER)),)
    assert owner_unreachable(binding(1, B, expires=0)).headers == (("Retry-After", "1"),)
    assert flow_not_held().status == 480
