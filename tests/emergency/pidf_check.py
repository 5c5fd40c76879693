"""A structural check of an emergency INVITE's PIDF-LO body, independent of the builder.

Checks the RFC 4119 / RFC 5139 / RFC 5491 / RFC 6442 shape a centre relies on, with
xml.etree only: presence (PIDF namespace, entity) / tuple (id) / status / geopriv /
location-info [/ civicAddress] / usage-rules / method, in the schema's order, and the multipart part's Content-ID matching the Geolocation cid: URI.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import xml.etree.ElementTree as ET

NS = {
    "pidf": "urn:ietf:params:xml:ns:pidf",
    "gp": "urn:ietf:params:xml:ns:pidf:geopriv10",
    "ca": "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr",
    "gbp": "urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy",
}
GEOPRIV_ORDER = ["location-info", "usage-rules", "method", "provided-by"]
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def split_multipart(content_type: str, body: bytes) -> dict[str, tuple[dict[str, str], bytes]]:
    """Splits a multipart/mixed body (RFC 2046 5.1) into content type -> (headers, bytes)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert message.is_multipart(), f"not multipart: {content_type}"
    parts: dict[str, tuple[dict[str, str], bytes]] = {}
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts[part.get_content_type()] = ({k.lower(): str(v) for k, v in part.items()}, payload)
    return parts


def check_pidf(document: bytes, *, civic: bool) -> dict[str, str]:
    """Validates the PIDF-LO structure and returns the civic address elements.

    Args:
        document: the application/pidf+xml part.
        civic: a civic address is expected (office call) or not (nomadic call).

    Returns:
        civicAddress element name -> text ({} when none).
    """
    root = ET.fromstring(document)
    assert root.tag == f"{{{NS['pidf']}}}presence", root.tag
    # RFC 3863 4.1.1: entity is the presentity URI.
    assert re.match(r"(pres|sip|sips):", root.get("entity", "")), root.attrib
    tuples = root.findall("pidf:tuple", NS)
    assert len(tuples) == 1
    tup = tuples[0]
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", tup.get("id", "")), tup.attrib
    status = tup.find("pidf:status", NS)
    assert status is not None
    geopriv = status.find("gp:geopriv", NS)
    assert geopriv is not None, "RFC 4119 2.2: geopriv goes inside status"
    children = [child.tag.split("}", 1)[1] for child in geopriv]
    # RFC 4119 schema sequence: location-info, usage-rules, method?, provided-by?
    # (provided-by is checked on its own by test_pidf_lo_names_the_provider).
    assert children[:2] == ["location-info", "usage-rules"], children
    assert children == sorted(children, key=GEOPRIV_ORDER.index), children
    usage = geopriv.find("gp:usage-rules/gbp:retransmission-allowed", NS)
    assert usage is not None and usage.text == "true"  # xs:boolean, not "yes"
    location_info = geopriv.find("gp:location-info", NS)
    assert location_info is not None
    address = location_info.find("ca:civicAddress", NS)
    note = tup.find("pidf:note", NS)
    timestamp = tup.find("pidf:timestamp", NS)
    assert timestamp is not None and timestamp.text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", timestamp.text)
    if not civic:
        assert address is None, "a nomadic call must not carry the site address"
        assert "method" not in children
        assert note is not None and "not verified" in (note.text or "")
        return {}
    assert address is not None
    assert address.get(XML_LANG), "RFC 5139 3.3: xml:lang on civicAddress"
    method = geopriv.find("gp:method", NS)
    assert method is not None and method.text == "Manual"
    return {child.tag.split("}", 1)[1]: child.text or "" for child in address}
