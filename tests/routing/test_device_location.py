"""routing.device_location: a device's own PIDF-LO read, checked, or refused with a reason;
routing.address_check; declared locations through the sites file."""

from __future__ import annotations

import pytest

from routing.address_check import AddressProblem, address_problems
from routing.device_location import DeviceLocationProblem, DeviceShape, read_device_location
from routing.model import CivicAddress
from routing.sites_export import dump_sites
from routing.sites_file import SitesFileError, parse_sites
from tests.emergency.rig import DEMO_SITES
from tests.emergency.test_location_sources_e2e import CIRCLE

POINT = CIRCLE.replace(
    '<gs:Circle srsName="urn:ogc:def:crs:EPSG::4326">',
    '<gml:Point srsName="urn:ogc:def:crs:EPSG::4326">',
).replace('<gs:radius uom="urn:ogc:def:uom:EPSG::9001">15</gs:radius></gs:Circle>', "</gml:Point>")
CIVIC = CIRCLE.replace(
    CIRCLE[CIRCLE.index("<gs:Circle") : CIRCLE.index("</gs:Circle>") + len("</gs:Circle>")],
    '<ca:civicAddress xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr">'
    "<ca:country>FI</ca:country><ca:A3>Helsinki</ca:A3><ca:RD>Mannerheimintie</ca:RD>"
    "</ca:civicAddress>",
)


def body(pidf: str, cid: str = "d1@x") -> bytes:
    return (
        b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n--b\r\n"
        b"Content-Type: application/pidf+xml\r\nContent-ID: <" + cid.encode() + b">\r\n\r\n"
        + pidf.encode() + b"\r\n--b--\r\n"
    )  # fmt: skip


def read(pidf: str, geolocation: str = "<cid:d1@x>") -> object:
    reading = read_device_location((geolocation,), "multipart/mixed;boundary=b", body(pidf))
    assert reading is not None
    return reading.location.shape if reading.location is not None else reading.problem


@pytest.mark.parametrize(
    ("pidf", "geolocation", "expected"),
    [
        (CIRCLE, "<cid:d1@x>", DeviceShape.CIRCLE),
        (POINT, "<cid:d1@x>", DeviceShape.POINT),
        (CIVIC, "<cid:d1@x>", DeviceShape.CIVIC),
        (CIRCLE, "<https://lis.example/loc/1>", DeviceLocationProblem.BY_REFERENCE),
        (CIRCLE, "<cid:other@x>", DeviceLocationProblem.MISSING_PART),
        ("<presence", "<cid:d1@x>", DeviceLocationProblem.NOT_XML),
        ('<!DOCTYPE x [<!ENTITY a "aaaa">]><presence/>', "<cid:d1@x>", DeviceLocationProblem.DTD),
        ("<foo/>", "<cid:d1@x>", DeviceLocationProblem.NOT_PIDF),
        (CIRCLE.replace("24.93545", "190.0"), "<cid:d1@x>", DeviceLocationProblem.BAD_COORDINATES),
        (CIRCLE.replace(">15<", ">-1<"), "<cid:d1@x>", DeviceLocationProblem.BAD_COORDINATES),
        (CIRCLE.replace("EPSG::4326", "EPSG::3067"), "<cid:d1@x>",
         DeviceLocationProblem.BAD_COORDINATES),
        (CIRCLE.replace("gs:Circle", "gs:Ellipse"), "<cid:d1@x>",
         DeviceLocationProblem.UNSUPPORTED_SHAPE),
        (CIRCLE.replace("gp:location-info", "gp:other"), "<cid:d1@x>",
         DeviceLocationProblem.NO_LOCATION),
        (CIRCLE.replace("</tuple>", "<note>" + "x" * 9000 + "</note></tuple>"), "<cid:d1@x>",
         DeviceLocationProblem.TOO_LARGE),
    ],
)  # fmt: skip
def test_reading_table(pidf: str, geolocation: str, expected: object) -> None:
    assert read(pidf, geolocation) == expected


def test_no_geolocation_is_no_reading() -> None:
    assert read_device_location((), "application/sdp", b"v=0\r\n") is None


def test_address_problems() -> None:
    munis = {"espoo": "kerava"}
    full = CivicAddress(country="FI", a3="Espoo", rd="Tie", hno="1", pc="02130")
    assert address_problems(full, munis) == ()
    bare = CivicAddress(country="FI", a3="Nowhere")
    assert address_problems(bare, munis) == (
        AddressProblem.MISSING_STREET,
        AddressProblem.MISSING_HOUSE_NUMBER,
        AddressProblem.MISSING_POSTAL_CODE,
        AddressProblem.UNKNOWN_MUNICIPALITY,
    )


@pytest.mark.parametrize("fmt", ["toml", "csv"])
def test_declared_locations_round_trip(fmt: str) -> None:
    data = parse_sites(DEMO_SITES.read_text(encoding="utf-8"), "toml")
    [home] = data.declared
    assert home.sip_user == "alice" and home.address.a3 == "Tampere"
    assert parse_sites(dump_sites(data, fmt), fmt) == data.sorted()


def test_declared_location_errors_name_field_and_line() -> None:
    text = DEMO_SITES.read_text(encoding="utf-8").replace(
        'sip_user = "alice"\nname = "Alice, home office"', 'sip_user = "nobody"\nname = "x"'
    )
    with pytest.raises(SitesFileError) as info:
        parse_sites(text, "toml")
    [error] = info.value.errors
    assert error.field == "declared_locations[0].sip_user" and error.line is not None
    assert "unknown sip_user 'nobody'" in error.problem
