"""The last-resort route of an emergency call whose routing hook failed
(gateway.service.app._emergency_fallback) names its centres, so that the metrics and
the CDR say which centre answered (issue 19: centre="none")."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.ops.metrics import Metrics
from gateway.service.app import DirectoryHolder, _emergency_fallback
from gateway.service.server import observe_call
from gateway.sip.events import Endpoint
from gateway.sip.message import Headers, Request
from routing.config import EmergencyConfig
from routing.emergency import DialPlan
from tests.call_events import call_ended
from tests.routing.data import demo_directory


async def _never() -> object:
    raise AssertionError("not reloaded")


def test_the_fallback_route_names_the_centre_of_each_target() -> None:
    directory = demo_directory()
    holder = DirectoryHolder(directory=directory, load=_never)  # type: ignore[arg-type]
    fallback = _emergency_fallback(DialPlan(EmergencyConfig()), holder)
    invite = Request(method="INVITE", uri="sip:112@gw", headers=Headers([]))
    route = fallback(invite)
    assert route is not None
    assert route.facts.centres, route
    assert len(route.facts.centres) == len(route.targets)
    national = directory.psap.national_default_id
    assert national == "national"
    assert route.facts.centre_of(0) == national

    metrics = Metrics(CollectorRegistry())
    ended = call_ended(
        caller="sip:alice@gw",
        callee_dialled="sip:112@gw",
        callee_routed=route.request_uris[0],
        source=Endpoint("UDP", "127.0.10.5", 5060),
        setup_at=0.0,
        ringing_at=0.5,
        answered_at=1.0,
        ended_at=5.0,
        emergency=True,
        facts=route.facts,
    )
    observe_call(metrics, ended)
    labels = {"call_class": "unknown", "policy": "fallback", "outcome": "answered"}
    registry = metrics.registry
    assert (
        registry.get_sample_value("voipgw_emergency_calls_total", {**labels, "centre": national})
        == 1
    )
    assert (
        registry.get_sample_value("voipgw_emergency_calls_total", {**labels, "centre": "none"})
        is None
    )
