"""routing.geolocation: RFC 6442's Geolocation-Routing permission and the
Geolocation-Error the caller is answered with, and what the policy makes of them."""

from __future__ import annotations

import dataclasses

import pytest

from routing.config import RoutingConfig
from routing.decision import LocationPrecedence
from routing.device_location import DeviceLocationProblem, read_device_location
from routing.geolocation import (
    GeolocationErrorCode,
    GeolocationRouting,
    geolocation_error_for,
    geolocation_error_header,
    read_geolocation_routing,
    routing_allowed,
)
from routing.pidf import geolocation_headers
from routing.policy import decide
from tests.routing.data import ctx, demo_directory
from tests.routing.test_device_location import CIRCLE, body

DIRECTORY = demo_directory()
CONFIG = RoutingConfig(default_next_hop="sip:carrier@127.0.0.1:5080")
OFFICE = "127.0.10.20"
VPN = "127.0.30.7"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((), None),
        (("yes",), GeolocationRouting.YES),
        ((" YES ",), GeolocationRouting.YES),
        (("no",), GeolocationRouting.NO),
        (("yes", "no"), GeolocationRouting.NO),  # disagreeing: no permission assumed
        (("yes, no",), GeolocationRouting.NO),
        (("maybe",), GeolocationRouting.NO),  # a generic-value grants nothing
    ],
)
def test_reading_geolocation_routing(
    values: tuple[str, ...], expected: GeolocationRouting | None
) -> None:
    assert read_geolocation_routing(values) is expected


def test_only_an_explicit_yes_allows_routing() -> None:
    assert routing_allowed(GeolocationRouting.YES)
    assert not routing_allowed(GeolocationRouting.NO)
    assert not routing_allowed(None)


def test_every_refusal_is_cannot_process_location() -> None:
    assert geolocation_error_for(None) is None
    for problem in DeviceLocationProblem:
        assert geolocation_error_for(problem) is GeolocationErrorCode.CANNOT_PROCESS_LOCATION


def test_header_has_the_rfc_example_form_and_the_registered_texts() -> None:
    assert geolocation_error_header(GeolocationErrorCode.CANNOT_PROCESS_LOCATION) == (
        "Geolocation-Error",
        '100 ;code="Cannot Process Location"',
    )
    # RFC 6442 4.3 / IANA Geolocation-Error Codes.
    assert {c.value: c.text for c in GeolocationErrorCode} == {
        100: "Cannot Process Location",
        200: "Permission To Use Location Information",
        201: "Permission To Retransmit Location Information to a Third Party",
        202: "Permission to Route based on Location Information",
        300: "Dereference Failure",
    }


def test_geolocation_headers_carry_the_routing_value() -> None:
    assert geolocation_headers("a@b", routing=GeolocationRouting.NO)[1] == (
        "Geolocation-Routing",
        "no",
    )


def device_call(
    source: str,
    routing: GeolocationRouting | None,
    *,
    pidf: str = CIRCLE,
    geolocation: str = "<cid:d1@x>",
):  # type: ignore[no-untyped-def]
    reading = read_device_location((geolocation,), "multipart/mixed;boundary=b", body(pidf))
    call = ctx(DIRECTORY, source, "bob", ua="Zoiper rv2.10.19.6", geolocation=(geolocation,))
    return dataclasses.replace(call, device_location=reading, geolocation_routing=routing)


@pytest.mark.parametrize(
    ("routing", "precedence"),
    [
        (GeolocationRouting.YES, LocationPrecedence.DEVICE_FIRST),  # nomadic default
        (GeolocationRouting.NO, LocationPrecedence.NETWORK_FIRST),
        (None, LocationPrecedence.NETWORK_FIRST),  # absent is RFC 6442's "no"
    ],
)
def test_device_location_leads_only_with_the_devices_yes(
    routing: GeolocationRouting | None, precedence: LocationPrecedence
) -> None:
    decision = decide(device_call(VPN, routing), DIRECTORY, CONFIG)
    facts = decision.facts
    assert facts.device_location is not None  # still forwarded to the centre
    assert facts.location_precedence is precedence
    assert facts.geolocation_routing is routing
    assert facts.geolocation_error is None
    # The route is the network's whatever the device said.
    assert [t.centre_id for t in decision.targets] == ["national", "kerava"]


def test_refused_device_location_decides_a_geolocation_error_and_the_call_routes() -> None:
    decision = decide(
        device_call(OFFICE, GeolocationRouting.YES, pidf="<presence"), DIRECTORY, CONFIG
    )
    assert decision.targets and decision.targets[0].centre_id == "kerava"
    assert decision.facts.device_location_ignored is DeviceLocationProblem.NOT_XML
    assert decision.facts.geolocation_error is GeolocationErrorCode.CANNOT_PROCESS_LOCATION
    assert decision.facts.location_precedence is None


def test_by_reference_is_cannot_process_location_not_dereference_failure() -> None:
    call = device_call(OFFICE, None, geolocation="<https://lis.example/loc/1>")
    facts = decide(call, DIRECTORY, CONFIG).facts
    assert facts.device_location_ignored is DeviceLocationProblem.BY_REFERENCE
    assert facts.geolocation_error is GeolocationErrorCode.CANNOT_PROCESS_LOCATION
