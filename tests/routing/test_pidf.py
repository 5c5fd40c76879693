"""PIDF-LO structure (RFC 4119/5139/5491) and the RFC 6442 multipart body.

The RFC XML schemas are not available offline here, so the structure is checked by
hand: namespaces, element paths, and the child order the schemas' xs:sequence fixes.
"""

from __future__ import annotations

import email.parser
import email.policy
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import pytest

from routing.config import ProviderInfo
from routing.model import CIVIC_ELEMENTS, CivicAddress, Location
from routing.pidf import (
    NS_CA,
    NS_ECD,
    NS_GBP,
    NS_GP,
    NS_PI,
    NS_PIDF,
    build_multipart,
    build_pidf,
    geolocation_headers,
)

P, GP, CA = f"{{{NS_PIDF}}}", f"{{{NS_GP}}}", f"{{{NS_CA}}}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
ADDRESS = CivicAddress(
    country="FI",
    a1="Uusimaa",
    a3="Espoo",
    rd="Metsänneidonkuja",
    hno="12",
    hns="B",
    flr="3",
    room="301",
    pc="02130",
    pcn="Espoo",
    nam='Setera <R&D> "HQ"',
)
STAMP = datetime(2026, 3, 1, 14, 0, 5, tzinfo=timezone(timedelta(hours=2)))


def _office() -> ET.Element:
    location = Location(address=ADDRESS, verified=True, note="site HQ")
    xml = build_pidf(
        location, entity="pres:+358401000001@gw.example", tuple_id="loc1", timestamp=STAMP,
        provider=ProviderInfo(),
    )  # fmt: skip
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(xml)


def test_office_pidf_structure() -> None:
    root = _office()
    assert root.tag == f"{P}presence"
    assert root.get("entity") == "pres:+358401000001@gw.example"
    (tup,) = root.findall(f"{P}tuple")
    assert tup.get("id") == "loc1"
    # RFC 3863 tuple content: status, (other), note*, timestamp
    assert [c.tag for c in tup] == [f"{P}status", f"{P}note", f"{P}timestamp"]
    assert tup.findtext(f"{P}timestamp") == "2026-03-01T12:00:05Z"
    geopriv = tup.find(f"{P}status/{GP}geopriv")
    assert geopriv is not None
    # RFC 4119 geopriv sequence: location-info, usage-rules, method?, provided-by?
    assert [c.tag for c in geopriv] == [
        f"{GP}location-info",
        f"{GP}usage-rules",
        f"{GP}method",
        f"{GP}provided-by",
    ]
    assert geopriv.findtext(f"{GP}method") == "Manual"
    rules = geopriv.find(f"{GP}usage-rules")
    assert rules is not None
    assert rules.findtext(f"{{{NS_GBP}}}retransmission-allowed") == "true"  # xs:boolean
    # RFC 7852 section 7: the block by value inside EmergencyCallDataValue.
    provided_by = geopriv.find(f"{GP}provided-by")
    assert provided_by is not None
    assert [c.tag for c in provided_by] == [f"{{{NS_ECD}}}EmergencyCallDataValue"]
    provider = provided_by.find(
        f"{{{NS_ECD}}}EmergencyCallDataValue/{{{NS_PI}}}EmergencyCallData.ProviderInfo"
    )
    assert provider is not None
    assert [c.tag.split("}")[1] for c in provider] == [
        "DataProviderReference", "DataProviderString", "ProviderID", "ProviderIDSeries",
        "TypeOfProvider", "ContactURI",
    ]  # fmt: skip
    assert provider.findtext(f"{{{NS_PI}}}DataProviderString") == "Setera Communications Oy"
    assert provider.findtext(f"{{{NS_PI}}}ProviderIDSeries") == "domain"
    assert provider.findtext(f"{{{NS_PI}}}TypeOfProvider") == "Service Provider"
    civic = geopriv.find(f"{GP}location-info/{CA}civicAddress")
    assert civic is not None
    assert civic.get(XML_LANG) == "fi"
    names = [c.tag.removeprefix(CA) for c in civic]
    order = [name for _, name in CIVIC_ELEMENTS]
    assert names == sorted(names, key=order.index), "RFC 5139 sequence order"
    assert civic.findtext(f"{CA}A3") == "Espoo"
    assert civic.findtext(f"{CA}RD") == "Metsänneidonkuja"
    assert civic.findtext(f"{CA}NAM") == 'Setera <R&D> "HQ"'
    assert civic.find(f"{CA}A2") is None, "empty elements are omitted"


def test_nomadic_pidf_has_no_location_and_says_not_verified() -> None:
    location = Location(address=None, verified=False, note="Nomadic call.")
    root = ET.fromstring(
        build_pidf(location, entity="pres:bob@gw.example", tuple_id="t", timestamp=STAMP)
    )
    geopriv = root.find(f"{P}tuple/{P}status/{GP}geopriv")
    assert geopriv is not None
    info = geopriv.find(f"{GP}location-info")
    assert info is not None and len(info) == 0
    assert geopriv.find(f"{GP}method") is None
    assert geopriv.find(f"{GP}provided-by") is None
    note = root.findtext(f"{P}tuple/{P}note")
    assert note is not None and note.startswith("Location not verified.")


def test_control_characters_are_dropped_and_text_escaped() -> None:
    odd = CivicAddress(country="FI", rd="Katu\x01\x0b</ca:RD>")
    xml = build_pidf(
        Location(address=odd, verified=True),
        entity='pres:"x"@gw',
        tuple_id="t",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    )
    root = ET.fromstring(xml)
    assert root.get("entity") == 'pres:"x"@gw'
    assert root.findtext(f".//{CA}RD") == "Katu</ca:RD>"


def test_bad_inputs_are_refused() -> None:
    location = Location(address=None, verified=False)
    with pytest.raises(ValueError, match="timezone"):
        build_pidf(location, entity="pres:x", tuple_id="t", timestamp=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="tuple id"):
        build_pidf(location, entity="pres:x", tuple_id="1bad", timestamp=STAMP)
    with pytest.raises(ValueError, match="country"):
        CivicAddress(country="fin")


SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def test_multipart_body_per_rfc_6442() -> None:
    pidf = build_pidf(
        Location(address=ADDRESS, verified=True), entity="pres:x@gw", tuple_id="t",
        timestamp=STAMP,
    )  # fmt: skip
    content_type, body = build_multipart(SDP, pidf, "boundary1", "loc1@gw.example")
    assert content_type == "multipart/mixed;boundary=boundary1"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["application/sdp", "application/pidf+xml"]
    assert parts[1]["Content-ID"] == "<loc1@gw.example>"
    assert parts[0].get_payload(decode=True) == SDP
    assert parts[1].get_payload(decode=True) == pidf
    assert body.endswith(b"--boundary1--\r\n")
    assert geolocation_headers("loc1@gw.example") == (
        ("Geolocation", "<cid:loc1@gw.example>"),
        ("Geolocation-Routing", "yes"),
    )


def test_multipart_refuses_bad_boundary_and_content_id() -> None:
    with pytest.raises(ValueError, match="occurs"):
        build_multipart(b"x\r\n--b1\r\n", b"<p/>", "b1", "a@b")
    with pytest.raises(ValueError, match="boundary"):
        build_multipart(SDP, b"<p/>", "bad boundary\r\n", "a@b")
    with pytest.raises(ValueError, match="Content-ID"):
        build_multipart(SDP, b"<p/>", "b1", "<a@b>")
    with pytest.raises(ValueError, match="Content-ID"):
        geolocation_headers("a@b>\r\nX: y")
