"""Routing decisions: office and nomadic emergency calls, test calls, ordinary calls."""

from __future__ import annotations

import dataclasses

import pytest

from routing.classify import classify_call
from routing.config import NomadicPolicy, RoutingConfig
from routing.decision import Action, RoutingDecision
from routing.directory import Directory
from routing.model import (
    CallClass,
    CallContext,
    CentreUriStyle,
    CustomerState,
    EmergencyKind,
)
from routing.policy import NOMADIC_WARNING, decide, header_safe, route_emergency
from routing.sites_file import SitesData
from tests.routing.data import ALICE_DESK, ctx, demo_data, demo_directory

DIRECTORY = demo_directory()
CONFIG = RoutingConfig(
    default_next_hop="sip:carrier@127.0.0.1:5080",
    test_route="sip:echo@127.0.0.1:5099",
    notification_webhook="http://127.0.0.1:8081/emergency",
)
ZOIPER = "Zoiper rv2.10.19.6"


def _header(decision: RoutingDecision, name: str) -> str:
    return dict(decision.headers)[name]


def test_office_emergency_goes_to_kerava_with_verified_location() -> None:
    call = ctx(DIRECTORY, "127.0.10.20", "alice", dialled="sip:0112@gw;user=phone",
               instance=ALICE_DESK)  # fmt: skip
    decision = decide(call, DIRECTORY, CONFIG)
    assert decision.action is Action.ROUTE
    assert decision.call_class is CallClass.OFFICE
    assert [t.centre_id for t in decision.targets] == ["kerava", "turku", "national"]
    assert decision.targets[0].request_uri == "sip:112@127.0.112.1:5091"
    assert decision.targets[0].next_hop == "sip:112@127.0.112.1:5091"
    assert decision.location is not None and decision.location.verified
    assert decision.location.address == DIRECTORY.sites["setera-espoo"].address
    assert decision.resource_priority == "esnet.1"
    assert decision.callback == "tel:+358401000001"
    assert decision.announcement is None
    assert decision.emergency is not None and decision.emergency.number == "112"
    assert decision.notify_url == CONFIG.notification_webhook
    assert _header(decision, "X-Voipgw-Class") == "office"
    assert "kerava" in _header(decision, "X-Voipgw-Reason")


@pytest.mark.parametrize(
    ("policy", "action", "announcement", "routed"),
    [
        (NomadicPolicy.ANNOUNCE_THEN_ROUTE, Action.ANNOUNCE_THEN_ROUTE, NOMADIC_WARNING, True),
        (NomadicPolicy.ROUTE, Action.ROUTE, None, True),
        (NomadicPolicy.ANNOUNCE_AND_END, Action.ANNOUNCE_AND_END, NOMADIC_WARNING, False),
    ],
)
def test_nomadic_softphone_emergency_follows_policy(
    policy: NomadicPolicy, action: Action, announcement: str | None, routed: bool
) -> None:
    config = dataclasses.replace(CONFIG, nomadic_policy=policy)
    call = ctx(DIRECTORY, "fd00:5060:99::8", "bob", ua=ZOIPER, dialled="tel:112")
    decision = decide(call, DIRECTORY, config)
    assert decision.call_class is CallClass.NOMADIC
    assert decision.action is action
    assert decision.announcement == announcement
    assert decision.language.value == "fi"
    assert decision.callback == "tel:+358401000002"
    if routed:
        # NOT the nearest centre (Kerava serves Espoo): the national default route.
        assert [t.centre_id for t in decision.targets] == ["national", "kerava"]
        assert decision.location is not None
        assert decision.location.address is None
        assert not decision.location.verified
    else:
        assert decision.targets == ()
    assert f"policy {policy.value}" in decision.reason


def test_misplaced_desk_phone_is_nomadic_and_flagged() -> None:
    call = ctx(DIRECTORY, "127.0.0.1", "alice", instance=ALICE_DESK)
    decision = decide(call, DIRECTORY, CONFIG)
    assert decision.call_class is CallClass.NOMADIC
    assert decision.action is Action.ANNOUNCE_THEN_ROUTE
    assert _header(decision, "X-Voipgw-Class") == "nomadic;misplaced"


def test_emergency_is_connected_for_barred_customer_and_unknown_caller() -> None:
    barred = ctx(DIRECTORY, "127.0.50.3", "gina", dialled="112")
    decision = decide(barred, DIRECTORY, CONFIG)
    assert decision.action is Action.ROUTE
    assert decision.targets[0].centre_id == "vaasa"
    assert "connected although customer is barred" in decision.reason
    assert decision.language.value == "en"
    unknown = ctx(DIRECTORY, "127.0.0.1", None, dialled="urn:service:sos.fire")
    decision = decide(unknown, DIRECTORY, CONFIG)
    assert decision.action is Action.ANNOUNCE_THEN_ROUTE
    assert decision.callback is None
    assert "no callback identity" in decision.reason
    assert decision.emergency is not None
    assert decision.emergency.service_urn == "urn:service:sos.fire"


def test_restricted_presentation_still_gives_callback_to_the_centre() -> None:
    decision = decide(ctx(DIRECTORY, "127.0.10.9", "erin", dialled="112"), DIRECTORY, CONFIG)
    assert decision.callback == "tel:+358401000005"
    assert ("Privacy", "id") not in decision.headers


def test_urn_style_centre_gets_service_urn_request_uri() -> None:
    data = demo_data()
    centres = tuple(
        dataclasses.replace(c, uri_style=CentreUriStyle.URN) if c.id == "kerava" else c
        for c in data.centres
    )
    directory = dataclasses.replace(data, centres=centres).directory()
    call = ctx(directory, "127.0.10.20", "alice", dialled="urn:service:sos.police")
    decision = decide(call, directory, CONFIG)
    assert decision.targets[0].request_uri == "urn:service:sos.police"
    assert decision.targets[0].next_hop == "sip:112@127.0.112.1:5091"
    assert decision.targets[1].request_uri == "sip:112@127.0.112.1:5092"


def test_no_centres_hands_emergency_to_default_next_hop() -> None:
    data = dataclasses.replace(demo_data(), centres=())
    directory = data.directory()
    decision = decide(ctx(directory, "127.0.10.20", "alice", dialled="112"), directory, CONFIG)
    assert decision.action is Action.ROUTE
    assert decision.targets[0].next_hop == CONFIG.default_next_hop
    assert decision.targets[0].request_uri == "urn:service:sos"


def test_test_calls_go_to_test_route_or_are_answered_by_the_gateway() -> None:
    call = ctx(DIRECTORY, "127.0.10.20", "alice", dialled="urn:service:test.sos")
    decision = decide(call, DIRECTORY, CONFIG)
    assert decision.action is Action.ROUTE
    assert decision.emergency is not None and decision.emergency.kind is EmergencyKind.TEST
    assert decision.targets[0].next_hop == "sip:echo@127.0.0.1:5099"
    assert decision.resource_priority is None
    assert decision.location is not None and decision.location.verified
    # Without a test route the gateway answers the test call itself (RFC 6881 SP-44)
    # with a report of what a real call would carry; decide() once answered 404 here,
    # which production (the router's own shortcut) never did.
    answered = decide(call, DIRECTORY, dataclasses.replace(CONFIG, test_route=None))
    assert answered.action is Action.ANSWER_TEST
    assert "class: office" in answered.test_report
    assert "centres: " in answered.test_report


def test_ordinary_calls() -> None:
    ok = decide(ctx(DIRECTORY, "127.0.0.1", "bob", dialled="sip:+358501234567@gw"),
                DIRECTORY, CONFIG)  # fmt: skip
    assert ok.action is Action.ROUTE
    assert ok.targets[0].request_uri == "sip:+358501234567@gw"
    assert ok.targets[0].next_hop == CONFIG.default_next_hop
    assert ok.emergency is None and ok.location is None
    restricted = decide(ctx(DIRECTORY, "127.0.10.9", "erin", dialled="sip:0501234567@gw"),
                        DIRECTORY, CONFIG)  # fmt: skip
    assert ("Privacy", "id") in restricted.headers
    barred = decide(ctx(DIRECTORY, "127.0.50.3", "gina", dialled="sip:0501234567@gw"),
                    DIRECTORY, CONFIG)  # fmt: skip
    assert (barred.action, barred.reject_status) == (Action.REJECT, 403)
    assert "barred" in barred.reason
    unknown = decide(ctx(DIRECTORY, "127.0.0.1", None, dialled="sip:0501234567@gw"),
                     DIRECTORY, CONFIG)  # fmt: skip
    assert (unknown.action, unknown.reject_status) == (Action.REJECT, 403)


@pytest.mark.parametrize("state", [s for s in CustomerState if s is not CustomerState.ACTIVE])
def test_every_inactive_customer_state_blocks_ordinary_but_not_emergency(
    state: CustomerState,
) -> None:
    data = demo_data()
    customers = tuple(
        dataclasses.replace(c, state=state) if c.id == "setera" else c for c in data.customers
    )
    directory = SitesData(
        customers=customers, sites=data.sites, subscribers=data.subscribers,
        devices=data.devices, centres=data.centres,
    ).directory()  # fmt: skip
    ordinary = decide(ctx(directory, "127.0.10.20", "alice", dialled="0501234567"),
                      directory, CONFIG)  # fmt: skip
    assert ordinary.action is Action.REJECT
    emergency = decide(ctx(directory, "127.0.10.20", "alice", dialled="112"), directory, CONFIG)
    assert emergency.action is Action.ROUTE


def test_route_emergency_without_match_forces_sos() -> None:
    call = ctx(DIRECTORY, "127.0.10.20", "alice", dialled="sip:helpdesk@gw")
    decision = route_emergency(call, classify_call(call, DIRECTORY), DIRECTORY, CONFIG)
    assert decision.emergency is not None
    assert decision.emergency.service_urn == "urn:service:sos"
    assert decision.targets[0].centre_id == "kerava"


def test_reason_header_is_safe_and_bounded() -> None:
    call = CallContext(
        dialled="112",
        source=ctx(DIRECTORY, "127.0.0.1", None).source,
        user_agent="Zoiper\r\nX-Injected: yes" + "x" * 500,
    )
    decision = decide(call, DIRECTORY, CONFIG)
    value = _header(decision, "X-Voipgw-Reason")
    assert "\r" not in value and "\n" not in value
    assert len(value) <= 300
    assert header_safe("ä\x00b") == "??b"


def test_empty_directory_classifies_everyone_nomadic() -> None:
    directory = Directory.build()
    call = ctx(DIRECTORY, "127.0.10.20", "alice", dialled="112")
    decision = decide(call, directory, CONFIG)
    assert decision.call_class is CallClass.NOMADIC


def test_max_call_duration_per_customer_never_for_emergency_calls() -> None:
    bob = ctx(DIRECTORY, "127.0.0.1", "bob", dialled="sip:+358501234567@gw")
    assert decide(bob, DIRECTORY, CONFIG).max_duration is None  # default: no limit
    customer = decide(bob, DIRECTORY, CONFIG).facts.customer_id
    limited = dataclasses.replace(CONFIG, max_call_duration=14400.0)
    assert decide(bob, DIRECTORY, limited).max_duration == 14400.0
    override = dataclasses.replace(limited, max_call_duration_by_customer={customer: 600.0})
    assert decide(bob, DIRECTORY, override).max_duration == 600.0
    unlimited = dataclasses.replace(limited, max_call_duration_by_customer={customer: 0.0})
    assert decide(bob, DIRECTORY, unlimited).max_duration is None
    emergency = ctx(DIRECTORY, "127.0.10.20", "alice", dialled="112", instance=ALICE_DESK)
    assert decide(emergency, DIRECTORY, limited).max_duration is None
