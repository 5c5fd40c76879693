"""What counts as a call: a digest challenge is part of the call that follows it (RFC
3261 22.2), a 403 for wrong credentials is a refused call; an inbound call's CDR names
the subscriber it reached (the ``callee`` of the routing decision's facts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from cdr.call_record import record_of
from gateway.b2bua.events import CallEnded, EndedBy
from gateway.ops.metrics import Metrics
from gateway.service.server import is_auth_challenge, observe_call
from routing.decision import CallFacts, Direction, FlowRelay
from routing.model import CallClass
from tests.call_events import call_ended, replaced


def ended(status: int, facts: CallFacts) -> CallEnded:
    return call_ended(
        caller="sip:+358501234567@pbx.example",
        callee_dialled="sip:alice@voipgw.demo",
        callee_routed="",
        ringing_at=None,
        answered_at=None,
        ended_at=100.01,
        final_status=status,
        final_reason="",
        disposition="failed" if status != 200 else "answered",
        hangup_side="gateway",
        ended_by=EndedBy.GATEWAY,
        facts=facts,
        attempt=None,
    )


def calls_total(metrics: Metrics) -> float:
    return sum(
        s.value for f in metrics.calls.collect() for s in f.samples if s.name.endswith("_total")
    )


def test_a_407_challenge_is_not_a_call() -> None:
    metrics = Metrics(CollectorRegistry())
    event = ended(407, CallFacts(auth_challenged=True))
    assert is_auth_challenge(event)
    observe_call(metrics, event)
    assert calls_total(metrics) == 0
    assert metrics.registry.get_sample_value("voipgw_call_auth_challenges_total") == 1
    assert metrics.registry.get_sample_value("voipgw_active_calls") == 0


def test_a_403_for_wrong_credentials_is_a_refused_call() -> None:
    metrics = Metrics(CollectorRegistry())
    event = ended(403, CallFacts(auth_challenged=True))
    assert not is_auth_challenge(event)
    observe_call(metrics, event)
    assert calls_total(metrics) == 1
    assert metrics.registry.get_sample_value("voipgw_call_auth_challenges_total") == 0


def test_inbound_cdr_names_the_subscriber_reached() -> None:
    event = ended(
        200,
        CallFacts(direction=Direction.INBOUND, customer_id="setera", callee="+358401000001"),
    )
    record = record_of(event, wall_offset=0.0, instance="gw1")
    assert record.customer == "setera"
    assert record.callee_dialled == "+358401000001"
    assert record.caller == "+358501234567"  # the outside party's number, not its URI


def test_a_call_without_a_callee_keeps_the_dialled_uri() -> None:
    record = record_of(
        ended(404, CallFacts(direction=Direction.INBOUND)), wall_offset=0.0, instance="gw1"
    )
    assert record.customer == ""
    assert record.callee_dialled == "sip:alice@voipgw.demo"


def test_an_answered_emergency_call_is_counted_with_its_centre() -> None:
    # The metric read the centre from an annotation nobody wrote: every emergency
    # call was counted with centre="none". The facts say which centre each B-leg
    # target is; the core says which attempt answered.
    metrics = Metrics(CollectorRegistry())
    facts = CallFacts(
        call_class=CallClass.OFFICE,
        emergency_policy="office",
        centres=("kerava", "kerava", "turku"),
    )
    event = ended(200, facts)
    event = replaced(event, emergency=True, attempt=2)
    observe_call(metrics, event)
    sample = metrics.registry.get_sample_value(
        "voipgw_emergency_calls_total",
        {"call_class": "office", "policy": "office", "centre": "turku", "outcome": "answered"},
    )
    assert sample == 1


def setups_observed(metrics: Metrics) -> float:
    return sum(
        s.value
        for f in metrics.call_setup.collect()
        for s in f.samples
        if s.name.endswith("_count")
    )


def test_a_relayed_call_counts_once_summed_over_both_processes() -> None:
    # Both processes of a relayed call run a B2BUA leg of it, and each counted it:
    # summed over workers or instances (the supervisor's /metrics, the dashboards'
    # sum()), voipgw_calls_total held it twice. The relaying process counts the call,
    # as its CDR is the one that bills it; the owner counts only its delivery.
    relaying, owner = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    for metrics, relay in ((relaying, FlowRelay.TO_OWNER), (owner, FlowRelay.FROM_SIBLING)):
        event = replaced(
            ended(200, CallFacts(call_class=CallClass.OFFICE, flow_relay=relay)),
            ringing_at=100.005,
        )
        observe_call(metrics, event)
    assert calls_total(relaying) == 1
    assert calls_total(owner) == 0
    assert setups_observed(relaying) == 1
    assert setups_observed(owner) == 0
    for metrics, side in ((relaying, "to_owner"), (owner, "from_sibling")):
        for counted in ("to_owner", "from_sibling"):
            value = metrics.registry.get_sample_value(
                "voipgw_relayed_calls_total", {"side": counted}
            )
            assert value == (1 if counted == side else 0), (side, counted)


def test_a_call_through_one_process_is_not_counted_as_relayed() -> None:
    metrics = Metrics(CollectorRegistry())
    observe_call(metrics, ended(200, CallFacts(call_class=CallClass.OFFICE)))
    assert calls_total(metrics) == 1
    for side in ("to_owner", "from_sibling"):
        assert metrics.registry.get_sample_value("voipgw_relayed_calls_total", {"side": side}) == 0
