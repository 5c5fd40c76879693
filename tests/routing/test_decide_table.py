"""Decision tables for routing.policy.decide: one row per kind of call, the whole answer.

Each row is a call (source, caller, dial string) and the gateway's situation (trusted
peers, load, nomadic policy, test route), and what ``decide`` must answer: the action,
the class, the status of a refusal, and the facts the CDR will carry. The rows are the
contract the routing adapter (gateway.service.router) carries out without deciding again.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from typing import NamedTuple

import pytest

from routing.config import NomadicPolicy, RoutingConfig
from routing.decision import Action, Admission, Direction, LocationSource, RoutedBy, Shed
from routing.emergency import DialPlan
from routing.model import CallClass, EmergencyKind
from routing.policy import Load, admission, decide, is_inbound, needs_authentication
from tests.routing.data import ctx, demo_directory

DIRECTORY = demo_directory()
CONFIG = RoutingConfig(
    default_next_hop="sip:carrier@127.0.0.1:5080", test_route="sip:echo@127.0.0.1:5099"
)
PBX = (ipaddress.ip_network("127.0.0.0/30"),)  # 127.0.0.1 is the PBX
IDLE = Load(active_calls=0, max_calls=10, retry_after=5)
FULL = Load(active_calls=11, max_calls=10, retry_after=7)

OFFICE = "127.0.10.20"  # alice's office LAN (site setera-espoo)
OUTSIDE = "127.0.30.7"  # no registered network
BARRED = "127.0.50.3"  # gina's site; her customer is barred


class Row(NamedTuple):
    source: str
    user: str | None
    dialled: str
    load: Load
    action: Action
    call_class: CallClass
    status: int | None = None
    policy: str | None = None
    shed: Shed | None = None
    location: LocationSource = LocationSource.NONE
    emergency: EmergencyKind | None = None
    test_route: bool = True
    nomadic: NomadicPolicy = NomadicPolicy.ANNOUNCE_THEN_ROUTE


ROWS = {
    "office 112": Row(OFFICE, "alice", "112", IDLE, Action.ROUTE, CallClass.OFFICE,
                      policy="office", location=LocationSource.SITE_ADDRESS,
                      emergency=EmergencyKind.EMERGENCY),
    "office 112 at capacity is never shed": Row(
        OFFICE, "alice", "sip:112@gw", FULL, Action.ROUTE, CallClass.OFFICE, policy="office",
        location=LocationSource.SITE_ADDRESS, emergency=EmergencyKind.EMERGENCY),
    "nomadic 112, warn then route": Row(
        OUTSIDE, "bob", "tel:112", IDLE, Action.ANNOUNCE_THEN_ROUTE, CallClass.NOMADIC,
        policy="announce-then-route", emergency=EmergencyKind.EMERGENCY),
    "nomadic 112, warn and end": Row(
        OUTSIDE, "bob", "tel:112", IDLE, Action.ANNOUNCE_AND_END, CallClass.NOMADIC,
        policy="announce-and-end", emergency=EmergencyKind.EMERGENCY,
        nomadic=NomadicPolicy.ANNOUNCE_AND_END),
    "nomadic 112, route only": Row(
        OUTSIDE, "bob", "tel:112", IDLE, Action.ROUTE, CallClass.NOMADIC, policy="route",
        emergency=EmergencyKind.EMERGENCY, nomadic=NomadicPolicy.ROUTE),
    "unknown caller 112": Row(
        OUTSIDE, None, "urn:service:sos", IDLE, Action.ANNOUNCE_THEN_ROUTE, CallClass.NOMADIC,
        policy="announce-then-route", emergency=EmergencyKind.EMERGENCY),
    "barred customer 112": Row(
        BARRED, "gina", "112", IDLE, Action.ROUTE, CallClass.OFFICE, policy="office",
        location=LocationSource.SITE_ADDRESS, emergency=EmergencyKind.EMERGENCY),
    "112 from the PBX is an emergency call, not inbound": Row(
        "127.0.0.1", None, "sip:112@gw", IDLE, Action.ANNOUNCE_THEN_ROUTE, CallClass.NOMADIC,
        policy="announce-then-route", emergency=EmergencyKind.EMERGENCY),
    "test call to the test route": Row(
        OFFICE, "alice", "urn:service:test.sos", IDLE, Action.ROUTE, CallClass.OFFICE,
        location=LocationSource.SITE_ADDRESS, emergency=EmergencyKind.TEST),
    "test call answered by the gateway": Row(
        OFFICE, "alice", "urn:service:test.sos", IDLE, Action.ANSWER_TEST, CallClass.OFFICE,
        location=LocationSource.SITE_ADDRESS, emergency=EmergencyKind.TEST, test_route=False),
    "ordinary call": Row(OFFICE, "alice", "sip:0501234567@gw", IDLE, Action.ROUTE,
                         CallClass.OFFICE),
    "ordinary call at capacity": Row(
        OFFICE, "alice", "sip:0501234567@gw", FULL, Action.REJECT, CallClass.OFFICE,
        status=503, shed=Shed.CAPACITY),
    "ordinary call, unknown caller": Row(
        OUTSIDE, None, "sip:0501234567@gw", IDLE, Action.REJECT, CallClass.NOMADIC, status=403),
    "ordinary call, barred customer": Row(
        BARRED, "gina", "sip:0501234567@gw", IDLE, Action.REJECT, CallClass.OFFICE, status=403),
    "refused call at capacity is shed first": Row(
        OUTSIDE, None, "sip:0501234567@gw", FULL, Action.REJECT, CallClass.NOMADIC,
        status=503, shed=Shed.CAPACITY),
    "inbound from the PBX": Row(
        "127.0.0.1", None, "sip:alice@gw", IDLE, Action.ROUTE_INBOUND, CallClass.UNKNOWN,
        status=404),
    # Issue 19: calls from the PBX skipped the limit, and took the gateway past it.
    "inbound from the PBX at capacity": Row(
        "127.0.0.1", None, "sip:alice@gw", FULL, Action.REJECT, CallClass.UNKNOWN,
        status=503, shed=Shed.CAPACITY),
}  # fmt: skip


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_decide(row: Row) -> None:
    config = dataclasses.replace(
        CONFIG,
        nomadic_policy=row.nomadic,
        test_route=CONFIG.test_route if row.test_route else None,
    )
    call = ctx(DIRECTORY, row.source, row.user, dialled=row.dialled)
    decision = decide(call, DIRECTORY, config, trusted_peers=PBX, load=row.load)
    facts = decision.facts
    assert decision.action is row.action
    assert facts.call_class is row.call_class
    assert decision.reject_status == row.status
    assert facts.shed is row.shed
    assert facts.emergency_policy == row.policy
    assert facts.location_source is row.location
    assert (facts.emergency.kind if facts.emergency else None) is row.emergency
    assert facts.is_emergency is (row.emergency is EmergencyKind.EMERGENCY)
    if row.shed is not None:
        assert decision.retry_after == row.load.retry_after
    if is_inbound(call, PBX):
        assert facts.direction is Direction.INBOUND
        assert facts.callee == "+358401000001"  # alice, by her SIP user
        assert facts.customer_id == "setera"
        assert facts.subscriber is None  # the caller is outside
    else:
        assert facts.direction is Direction.OUTBOUND
        assert facts.routed_by is RoutedBy.POLICY
    if row.user is not None and row.action is not Action.ROUTE_INBOUND:
        subscriber = DIRECTORY.subscribers[row.user]
        assert facts.subscriber == subscriber.e164
        assert facts.customer_id == subscriber.customer_id
    if facts.is_emergency:
        # The centre gets the callback identity whenever the caller is known.
        assert facts.callback == (f"tel:{facts.subscriber}" if facts.subscriber else None)
        assert decision.targets or row.action is Action.ANNOUNCE_AND_END


AUTH_ROWS = {
    "emergency from anywhere is never challenged": (OUTSIDE, "112", False),
    "ordinary call from a device is challenged": (OUTSIDE, "sip:0501234567@gw", True),
    "test call from a device is challenged": (OUTSIDE, "urn:service:test.sos", True),
    "inbound from the PBX is not": ("127.0.0.1", "sip:alice@gw", False),
    "112 from the PBX is not": ("127.0.0.1", "sip:112@gw", False),
    "test call from the PBX is": ("127.0.0.1", "urn:service:test.sos", True),
}


@pytest.mark.parametrize(("source", "dialled", "challenged"), AUTH_ROWS.values(), ids=AUTH_ROWS)
def test_who_must_authenticate(source: str, dialled: str, challenged: bool) -> None:
    call = ctx(DIRECTORY, source, None, dialled=dialled)
    assert needs_authentication(call, PBX) is challenged
    assert is_inbound(call, PBX) is (dialled == "sip:alice@gw")


def test_the_dial_plan_remembers_a_bounded_number_of_dial_strings() -> None:
    plan = DialPlan(CONFIG.emergency)
    first = plan.match("sip:112@gw")
    assert first is not None and first.kind is EmergencyKind.EMERGENCY
    assert plan.match("sip:112@gw") is first  # recognised once, kept
    for n in range(DialPlan.MEMORY + 10):
        assert plan.match(f"sip:05{n}@gw") is None
    assert len(plan._known) <= DialPlan.MEMORY
    assert plan.match("sip:112@gw") == first  # forgotten, recognised again alike


IDENTITY_ROWS = {
    # dialled, user, source -> PAI sent, Privacy sent, From replaced
    "ordinary call asserts the subscriber": ("sip:0501234567@gw", "alice", OFFICE,
                                             '"Alice (desk phone)" <tel:+358401000001>', False, False),
    "restricted presentation hides her": ("sip:0501234567@gw", "erin", "127.0.10.9",
                                          '"Erin (withheld number)" <tel:+358401000005>', True, True),
    "emergency asserts the callback, even restricted": ("112", "erin", "127.0.10.9",
                                                        "<tel:+358401000005>", False, False),
    "emergency from an unknown caller asserts nothing": ("112", None, OUTSIDE, None, False, False),
}  # fmt: skip


@pytest.mark.parametrize(
    ("dialled", "user", "source", "asserted", "privacy", "anonymous"),
    IDENTITY_ROWS.values(),
    ids=IDENTITY_ROWS,
)
def test_identity_on_the_b_leg(
    dialled: str, user: str | None, source: str, asserted: str | None, privacy: bool,
    anonymous: bool,
) -> None:  # fmt: skip
    decision = decide(ctx(DIRECTORY, source, user, dialled=dialled), DIRECTORY, CONFIG)
    identity = decision.identity
    assert identity is not None  # the caller's own PAI never passes on from a device
    headers = dict(identity.headers)
    assert headers.get("P-Asserted-Identity") == asserted
    assert ("Privacy" in headers) is privacy
    assert (identity.from_value is not None) is anonymous


# The call limit's arithmetic: max_calls 10, emergency_reserve 2. ``active`` is the
# count the call arrived to, itself included.
ADMISSION_ROWS = {
    "ordinary, idle": (1, False, Admission.WITHIN_CAPACITY),
    "ordinary, the 10th call": (10, False, Admission.WITHIN_CAPACITY),
    "ordinary, the 11th call": (11, False, Admission.SHED),
    "ordinary, far beyond": (500, False, Admission.SHED),
    "emergency, the 10th call": (10, True, Admission.WITHIN_CAPACITY),
    "emergency, the 11th call draws on the reserve": (11, True, Admission.EMERGENCY_RESERVE),
    "emergency, the 12th call, the reserve's last": (12, True, Admission.EMERGENCY_RESERVE),
    "emergency, the 13th call, beyond the reserve": (13, True, Admission.BEYOND_RESERVE),
}


@pytest.mark.parametrize(
    ("active", "emergency", "expected"), ADMISSION_ROWS.values(), ids=ADMISSION_ROWS
)
def test_admission(active: int, emergency: bool, expected: Admission) -> None:
    load = Load(active_calls=active, max_calls=10, retry_after=5, emergency_reserve=2)
    assert admission(load, emergency=emergency) is expected


def test_no_reserve_means_every_emergency_call_above_the_limit_is_beyond_it() -> None:
    load = Load(active_calls=11, max_calls=10, retry_after=5)
    assert admission(load, emergency=True) is Admission.BEYOND_RESERVE
    assert admission(load, emergency=False) is Admission.SHED


def test_never_more_ordinary_calls_admitted_than_max_calls() -> None:
    # Calls arrive and end in a fixed pseudo-random order; each arrives to the count
    # of calls held (admitted or still being routed), as RouteNeeded.active_calls is.
    # However long the routing of each takes, the admitted ones never exceed 10.
    rng = random.Random(19)
    held: list[tuple[int, bool]] = []  # (call, admitted) in the B2BUA's table
    routing: list[int] = []  # arrived, not yet decided
    arrival_count: dict[int, int] = {}
    most = 0
    for call in range(5000):
        if held and rng.random() < 0.45:
            held.pop(rng.randrange(len(held)))  # a call ends (or a refusal completes)
        held.append((call, False))
        routing.append(call)
        arrival_count[call] = len(held)
        while routing and rng.random() < 0.5:  # routings finish in any order
            decided = routing.pop(rng.randrange(len(routing)))
            load = Load(active_calls=arrival_count[decided], max_calls=10, retry_after=5)
            admitted = admission(load, emergency=False) is Admission.WITHIN_CAPACITY
            for i, (other, _) in enumerate(held):
                if other == decided:
                    held[i] = (decided, admitted)
                    if not admitted:
                        held.pop(i)
                    break
            most = max(most, sum(1 for _, yes in held if yes))
    assert most == 10
