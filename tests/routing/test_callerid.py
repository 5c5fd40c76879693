"""Caller-ID integrity (issue 15, Traficom regulation 28) through ``decide``: one
table of what a call presents, from where, and what the B leg asserts."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from routing.config import (
    CallerIdConfig,
    InternationalFinnish,
    OutboundCallerId,
    RoutingConfig,
)
from routing.decision import Action, CallerId, CallerIdReason
from routing.model import CallContext, PresentedIdentity
from routing.numbers import NumberRange, parse_range, to_e164
from routing.policy import decide
from tests.routing.data import ctx, demo_directory

DIRECTORY = demo_directory()
CONFIG = RoutingConfig()
PBX = ipaddress.ip_network("127.0.0.1/32")
TRUNK = ipaddress.ip_network("127.0.0.77/32")
OFFICE = "127.0.10.5"  # alice's office LAN


def from_device(
    user: str,
    *,
    from_user: str | None = None,
    display: str = "",
    preferred: str | None = None,
    dialled: str = "sip:+358501234567@gw",
) -> CallContext:
    call = ctx(DIRECTORY, OFFICE, user, dialled=dialled)
    presented = PresentedIdentity(
        from_user=from_user or user, from_host="gw.example", display_name=display,
        preferred=preferred,
    )  # fmt: skip
    return dataclasses.replace(call, presented=presented)


def from_peer(source: str, asserted: str | None, from_user: str = "x") -> CallContext:
    call = ctx(DIRECTORY, source, None, dialled="sip:alice@gw")
    return dataclasses.replace(
        call, presented=PresentedIdentity(from_user=from_user, asserted=asserted)
    )


def policy(**kw: object) -> RoutingConfig:
    return dataclasses.replace(CONFIG, caller_id=dataclasses.replace(CallerIdConfig(), **kw))


def pai(decision_identity: object) -> str:
    headers = dict(getattr(decision_identity, "headers", ()))
    return headers["P-Asserted-Identity"]


@pytest.mark.parametrize(
    ("call", "decision", "reason", "asserted"),
    [
        # a device presenting its own number (From user as SIP user, or E.164)
        (from_device("alice"), CallerId.KEPT, CallerIdReason.OWN_NUMBER, "+358401000001"),
        (from_device("alice", from_user="+358401000001"), CallerId.KEPT,
         CallerIdReason.OWN_NUMBER, "+358401000001"),
        # the switchboard number of its customer's DDI block via P-Preferred-Identity
        (from_device("alice", preferred="+358942430000"), CallerId.KEPT,
         CallerIdReason.CUSTOMER_RANGE, "+358942430000"),
        # ... written nationally, as a PBX might
        (from_device("alice", preferred="09 4243 0000"), CallerId.KEPT,
         CallerIdReason.CUSTOMER_RANGE, "+358942430000"),
        # another customer's number: replaced by the subscriber's own
        (from_device("alice", preferred="+358402000001"), CallerId.REPLACED,
         CallerIdReason.NOT_HELD, "+358401000001"),
        (from_device("alice", from_user="+358402000001"), CallerId.REPLACED,
         CallerIdReason.NOT_HELD, "+358401000001"),
        # display-name digits never become the asserted number
        (from_device("alice", display="+358 40 200 0001"), CallerId.KEPT,
         CallerIdReason.OWN_NUMBER, "+358401000001"),
    ],
)  # fmt: skip
def test_outbound(
    call: CallContext, decision: CallerId, reason: CallerIdReason, asserted: str
) -> None:
    result = decide(call, DIRECTORY, CONFIG)
    assert result.action is Action.ROUTE
    facts = result.facts
    assert (facts.caller_id, facts.caller_id_reason, facts.asserted_number) == (
        decision, reason, asserted,
    )  # fmt: skip
    assert f"<tel:{asserted}>" in pai(result.identity)
    changed = ("X-Voipgw-Caller-Id", f"replaced; reason={reason}")
    assert (changed in result.headers) is (decision is CallerId.REPLACED)


def test_display_name_digits_rewrite_the_from() -> None:
    result = decide(from_device("alice", display="+358 40 200 0001"), DIRECTORY, CONFIG)
    assert result.identity is not None
    assert (
        result.identity.from_value
        == '"Alice (desk phone)" <sip:+358401000001@gw.example;user=phone>'
    )
    clean = decide(from_device("alice", display="Alice"), DIRECTORY, CONFIG)
    assert clean.identity is not None and clean.identity.from_value is None


def test_reject_policy_refuses_a_number_not_held() -> None:
    result = decide(
        from_device("alice", preferred="+358402000001"),
        DIRECTORY,
        policy(outbound=OutboundCallerId.REJECT, outbound_reject_status=403),
    )
    assert (result.action, result.reject_status) == (Action.REJECT, 403)
    assert result.facts.caller_id is CallerId.REJECTED
    assert result.facts.presented_number == "+358402000001"


def test_emergency_call_carries_the_callback_number_whatever_it_presented() -> None:
    call = from_device("alice", preferred="+4420794600000", dialled="sip:112@gw;user=phone")
    result = decide(call, DIRECTORY, policy(outbound=OutboundCallerId.REJECT))
    assert result.facts.is_emergency and result.action is not Action.REJECT
    assert pai(result.identity) == "<tel:+358401000001>"
    assert result.facts.caller_id is CallerId.REPLACED
    assert result.facts.caller_id_reason is CallerIdReason.EMERGENCY_CALLBACK
    assert result.facts.presented_number == "+4420794600000"


@pytest.mark.parametrize(
    ("asserted", "decision", "reason"),
    [
        ("+358501234567", CallerId.REMOVED, CallerIdReason.INTERNATIONAL_FINNISH),
        ("00358501234567", CallerId.REMOVED, CallerIdReason.INTERNATIONAL_FINNISH),
        ("0501234567", CallerId.REMOVED, CallerIdReason.INTERNATIONAL_FINNISH),
        ("+4420794600000", CallerId.KEPT, CallerIdReason.INTERNATIONAL_FOREIGN),
        ("+358401000003", CallerId.KEPT, CallerIdReason.ROAMING_RANGE),  # setera mobiles
        (None, CallerId.KEPT, CallerIdReason.NO_NUMBER),
    ],
)
def test_inbound_from_an_international_peer(
    asserted: str | None, decision: CallerId, reason: CallerIdReason
) -> None:
    result = decide(
        from_peer("127.0.0.77", asserted), DIRECTORY, CONFIG,
        trusted_peers=(PBX, TRUNK), international_peers=(TRUNK,),
    )  # fmt: skip
    assert result.action is Action.ROUTE_INBOUND
    assert (result.facts.caller_id, result.facts.caller_id_reason) == (decision, reason)
    removed = decision is CallerId.REMOVED
    assert (result.identity is not None) is removed
    if removed:
        assert result.identity is not None
        assert result.identity.from_value is not None
        assert "anonymous" in result.identity.from_value
        assert result.facts.asserted_number is None


def test_inbound_block_policy_and_domestic_peers() -> None:
    blocked = decide(
        from_peer("127.0.0.77", "+358501234567"),
        DIRECTORY,
        policy(international_finnish=InternationalFinnish.BLOCK, international_block_status=603),
        trusted_peers=(PBX, TRUNK),
        international_peers=(TRUNK,),
    )
    assert (blocked.action, blocked.reject_status) == (Action.REJECT, 603)
    assert blocked.facts.caller_id is CallerId.REJECTED
    domestic = decide(
        from_peer("127.0.0.1", "+358501234567"), DIRECTORY, CONFIG,
        trusted_peers=(PBX, TRUNK), international_peers=(TRUNK,),
    )  # fmt: skip
    assert domestic.action is Action.ROUTE_INBOUND
    assert domestic.facts.caller_id_reason is CallerIdReason.DOMESTIC_PEER


def test_unknown_peer_never_reaches_a_device() -> None:
    """A source that is no trusted peer is a device: an unknown caller's ordinary call
    is refused, never routed inbound to a registration."""
    result = decide(
        from_peer("127.0.0.99", "+358501234567", from_user="mallory"), DIRECTORY, CONFIG,
        trusted_peers=(PBX, TRUNK), international_peers=(TRUNK,),
    )  # fmt: skip
    assert result.action is Action.REJECT and result.reject_status == 403


@pytest.mark.parametrize(
    ("text", "e164"),
    [
        ("+358 9 1234 5678", "+358912345678"),
        ("00358912345678", "+358912345678"),
        ("09-1234 5678", "+358912345678"),
        ("0044 20 7946 0000", "+442079460000"),
        ("112", None),
        ("alice", None),
        ("0", None),
        (None, None),
    ],
)
def test_to_e164(text: str | None, e164: str | None) -> None:
    assert to_e164(text) == e164


def test_ranges() -> None:
    block = NumberRange(customer_id="a", prefix="+35891234", wildcards=4)
    assert "+358912340000" in block and "+358912349999" in block
    assert "+35891234000" not in block and "+358912350000" not in block
    assert parse_range("+358 9 1234 xxxx") == ("+35891234", 4)
    assert block.overlaps(NumberRange(customer_id="b", prefix="+358912345678"))
    assert not block.overlaps(NumberRange(customer_id="b", prefix="+3589123456789"))
    with pytest.raises(ValueError, match=r"E\.164"):
        parse_range("+358 9 12x4")
