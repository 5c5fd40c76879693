"""Flow ownership among several instances (gateway/registrar/routing.py): which
instance a call for a registered AoR goes through, and the answers when none can."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from gateway.registrar.bindings import Binding
from gateway.registrar.routing import (
    CALLBACK_MARKER,
    MAX_RETRY_AFTER,
    OWNER_RESPONSE_TIMEOUT,
    FlowChoice,
    callback_aors,
    callback_last_resort,
    callback_to_binding,
    callback_via_owner,
    choose_callback_flow,
    choose_flow,
    device_bindings,
    flow_not_held,
    holds_flow,
    is_relayed_callback,
    owner_unreachable,
    relayed_here,
    route_to_binding,
    route_via_owner,
    routed_to_owner,
    same_instance,
)
from gateway.sip.events import Endpoint
from routing.decision import FlowRelay, RoutedBy

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
    # Both processes write a record of the call: this one's is marked as the relay's.
    assert route.facts.flow_relay is FlowRelay.TO_OWNER
    assert route_to_binding(there).facts.flow_relay is None
    assert relayed_here(route.facts).flow_relay is FlowRelay.FROM_SIBLING


def test_owner_gone_is_480_with_retry_after_bounded() -> None:
    soon = owner_unreachable(binding(1, B, expires=120))
    assert (soon.status, soon.headers) == (480, (("Retry-After", "120"),))
    late = owner_unreachable(binding(1, B, expires=7200))
    assert late.headers == (("Retry-After", str(MAX_RETRY_AFTER)),)
    assert owner_unreachable(binding(1, B, expires=0)).headers == (("Retry-After", "1"),)
    assert flow_not_held().status == 480


# -- owner gone, from the heartbeats ----------------------------------------------


def gone(*owners: str) -> Callable[[str], bool]:
    return lambda owner: owner in owners


def test_a_gone_owner_is_answered_for_at_once() -> None:
    there = binding(2, B)
    assert choose_flow([there], local=A, as_owner=False, owner_gone=gone(B)) == FlowChoice(
        binding=there, owner=B, owner_gone=True
    )
    # Alive (or not known gone): relayed as before.
    assert choose_flow([there], local=A, as_owner=False, owner_gone=gone()) == FlowChoice(
        binding=there, owner=B
    )


def test_a_binding_of_a_live_instance_wins_over_a_better_one_of_a_gone_one() -> None:
    C = "sip:127.0.0.1:5072"
    best_but_gone = binding(2, B, q=1.0)
    live_there = binding(3, C, q=0.5)
    here = binding(4, A, q=0.1)
    assert choose_flow(
        [best_but_gone, live_there], local=A, as_owner=False, owner_gone=gone(B)
    ) == FlowChoice(binding=live_there, owner=C)
    assert choose_flow(
        [best_but_gone, here], local=A, as_owner=False, owner_gone=gone(B)
    ) == FlowChoice(binding=here)
    # A binding without an owner (before migration 0700) is held by whoever reads it.
    unowned = binding(5, None, q=0.2)
    assert choose_flow(
        [best_but_gone, unowned], local=A, as_owner=False, owner_gone=gone(B)
    ) == FlowChoice(binding=unowned)


def test_a_relayed_request_ignores_the_heartbeats() -> None:
    # Relayed here as the owner: its own flows only, whatever the others' state.
    assert choose_flow([binding(2, B)], local=A, as_owner=True, owner_gone=gone(B)) == (
        FlowChoice(binding=None)
    )


# -- emergency callbacks ------------------------------------------------------------


def test_the_device_is_the_emergency_calls_contact_else_its_address() -> None:
    phone, softphone = binding(1, A), binding(2, B)
    by_contact = device_bindings(
        [phone, softphone],
        contact="sip:alice@192.0.2.1:5062;transport=udp",
        endpoint=Endpoint("UDP", "203.0.113.9", 1),
    )
    assert by_contact == [phone]
    by_address = device_bindings(
        [phone, softphone], contact="sip:alice@10.0.0.7:5062", endpoint=softphone.received
    )
    assert by_address == [softphone]
    assert (
        device_bindings(
            [phone], contact="sip:alice@10.0.0.7:5062", endpoint=Endpoint("UDP", "10.0.0.7", 1)
        )
        == []
    )
    assert device_bindings([phone], contact="<<not a uri", endpoint=phone.received) == [phone]


def test_a_callback_follows_the_flow_of_the_device_that_called() -> None:
    phone, softphone = binding(1, B, q=0.1), binding(2, A, q=1.0)
    # The softphone is the AoR's best binding, but the phone made the emergency call.
    choice = choose_callback_flow(
        [phone, softphone],
        contact=phone.contact,
        endpoint=phone.received,
        local=A,
        as_owner=False,
    )
    assert choice == FlowChoice(binding=phone, owner=B)
    held_here = choose_callback_flow(
        [softphone], contact=softphone.contact, endpoint=softphone.received, local=A, as_owner=False
    )
    assert held_here == FlowChoice(binding=softphone)


def test_a_callback_to_an_unregistered_device_uses_the_window_unless_relayed() -> None:
    elsewhere = binding(1, B)
    window = {"contact": "sip:alice@10.0.0.7:5062", "endpoint": Endpoint("UDP", "10.0.0.7", 9)}
    assert choose_callback_flow([elsewhere], **window, local=A, as_owner=False) is None
    assert choose_callback_flow([], **window, local=A, as_owner=False) is None
    # Relayed here as the owner: never the window's address from here, never on.
    assert choose_callback_flow([], **window, local=A, as_owner=True) == FlowChoice(binding=None)
    assert choose_callback_flow(
        [elsewhere], contact=elsewhere.contact, endpoint=elsewhere.received, local=A, as_owner=True
    ) == FlowChoice(binding=None)


def test_a_callback_whose_owner_is_gone_is_the_last_resort() -> None:
    phone = binding(1, B, expires=90)
    choice = choose_callback_flow(
        [phone],
        contact=phone.contact,
        endpoint=phone.received,
        local=A,
        as_owner=False,
        owner_gone=gone(B),
    )
    assert choice == FlowChoice(binding=phone, owner=B, owner_gone=True)
    route = callback_last_resort(phone)
    assert route.targets == (phone.received,)
    assert route.request_uri == phone.contact
    assert route.failover_timeout == OWNER_RESPONSE_TIMEOUT
    assert route.unreachable == owner_unreachable(phone)
    assert route.unreachable is not None
    assert route.unreachable.headers == (("Retry-After", "90"),)
    assert route.headers == (CALLBACK_MARKER,)
    assert route.facts.routed_by is RoutedBy.EMERGENCY_CALLBACK


def test_callback_routes_carry_the_marker_and_callback_facts() -> None:
    phone = binding(1, B)
    direct = callback_to_binding(phone)
    assert direct.targets == (phone.received,)
    assert direct.headers == (CALLBACK_MARKER,)
    assert direct.failover_timeout is None
    assert direct.facts.routed_by is RoutedBy.EMERGENCY_CALLBACK
    assert direct.facts.registered_contact == phone.contact
    owner = (Endpoint("UDP", "127.0.0.1", 5071),)
    relayed = callback_via_owner(phone, owner, "sip:+358401000001@gw")
    assert relayed.targets == owner
    assert relayed.request_uri == "sip:+358401000001@gw"
    assert relayed.headers == (("Route", f"<{B};lr>"), CALLBACK_MARKER)
    assert relayed.failover_timeout == OWNER_RESPONSE_TIMEOUT
    assert relayed.unreachable == owner_unreachable(phone)
    assert relayed.facts.routed_by is RoutedBy.EMERGENCY_CALLBACK
    assert relayed.facts.flow_relay is FlowRelay.TO_OWNER
    assert direct.facts.flow_relay is None


def test_only_a_trusted_sibling_relaying_to_the_owner_can_claim_a_callback() -> None:
    marker = [CALLBACK_MARKER[1]]
    assert is_relayed_callback(marker, from_trusted_peer=True, as_owner=True)
    assert is_relayed_callback([" emergency-callback "], from_trusted_peer=True, as_owner=True)
    # An untrusted source (a phone, a stranger) never gets the treatment.
    assert not is_relayed_callback(marker, from_trusted_peer=False, as_owner=True)
    # A trusted peer's call not relayed here as the flow owner (the PBX) does not either.
    assert not is_relayed_callback(marker, from_trusted_peer=True, as_owner=False)
    assert not is_relayed_callback([], from_trusted_peer=True, as_owner=True)
    assert not is_relayed_callback(["emergency"], from_trusted_peer=True, as_owner=True)


def test_callback_aors_from_the_caller_and_the_served_domains() -> None:
    assert callback_aors("sip:alice@voipgw.demo", domains=(), realm="voipgw.demo") == (
        "sip:alice@voipgw.demo",
    )
    # SIPp and some phones put their own address in From: the realm's AoR too.
    assert callback_aors("sip:alice@127.0.10.5:5062", domains=(), realm="voipgw.demo") == (
        "sip:alice@127.0.10.5:5062",
        "sip:alice@voipgw.demo",
    )
    assert callback_aors("sips:alice@10.0.0.1", domains=("a.example", "b.example"), realm="r") == (
        "sip:alice@10.0.0.1",
        "sip:alice@a.example",
        "sip:alice@b.example",
    )
    assert callback_aors(None, domains=(), realm="r") == ()
    assert callback_aors("tel:+358401000001", domains=(), realm="r") == ()
    assert callback_aors("sip:10.0.0.1", domains=(), realm="r") == ()
    assert callback_aors("<<bad", domains=(), realm="r") == ()
