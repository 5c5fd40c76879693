"""A location the calling device sends itself (RFC 6442 conveyance of a PIDF-LO by value).

An emergency INVITE may carry ``Geolocation: <cid:ID>`` and a multipart/mixed body
with an ``application/pidf+xml`` part whose ``Content-ID`` is ``<ID>`` (RFC 6442
sections 3.1 and 4.1, RFC 2392). :func:`read_device_location` finds that part,
checks it, and returns either a :class:`DeviceLocation` (forwarded to the centre
beside the network-derived location) or the :class:`DeviceLocationProblem` it was
ignored for. It never raises on input: a device's location is a claim, and a bad
claim must never cost the call (the product rule: never drop a call over location).

Rules, in order:

1. Size first: a body over ``MAX_BODY_BYTES`` or a PIDF-LO part over the configured
   limit is refused before any parsing (bounded work per call on the emergency path).
2. Only the first ``cid:`` locationValue is read. Any other scheme (``sip:``,
   ``https:``, ``pres:``) is a location **by reference**: the gateway does not
   dereference it (no outbound fetch on the emergency path, and the reference's
   server would learn of the call); it is counted as ``by-reference``.
3. XML with standard-library care (what defusedxml guards against): a document with
   a ``<!DOCTYPE`` is refused before expat sees it, since only a DTD can declare the
   entities whose expansion blows up; without one, expat rejects every entity but
   the five predefined ones.
4. The document is a PIDF (``presence``) with at least one ``geopriv`` whose
   ``location-info`` holds a civic address (RFC 5139, at least one element) or a GML
   shape of RFC 5491 section 5: ``gml:Point`` or ``gs:Circle`` in EPSG 4326/4979,
   latitude in [-90, 90], longitude in [-180, 180], a circle's radius positive and
   in metres (EPSG 9001), at most ``MAX_RADIUS_METRES``. Other shapes are refused
   (``unsupported-shape``): the issue asks for points and circles, and a centre is
   better served by none than by a shape the gateway did not check.

This module imports nothing from the project: :mod:`routing.model` builds on it.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import StrEnum

NS_PIDF = "urn:ietf:params:xml:ns:pidf"
NS_GP = "urn:ietf:params:xml:ns:pidf:geopriv10"
NS_CA = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
NS_GML = "http://www.opengis.net/gml"
NS_GS = "http://www.opengis.net/pidflo/1.0"

#: Largest INVITE body looked into for a device location, in bytes.
MAX_BODY_BYTES = 65536
#: Default largest device PIDF-LO part, in bytes (``[routing.location] max_device_pidf_bytes``).
DEFAULT_MAX_PIDF_BYTES = 8192
#: Largest circle radius accepted, in metres: a wider "location" helps no responder.
MAX_RADIUS_METRES = 100_000.0

#: RFC 5491 section 5.1: the two CRSs a PIDF-LO shape may use.
_CRS = frozenset({"urn:ogc:def:crs:EPSG::4326", "urn:ogc:def:crs:EPSG::4979"})
#: RFC 5491 section 5.2.3: a circle's radius in metres.
_METRE = "urn:ogc:def:uom:EPSG::9001"
#: RFC 6442 section 4.1: locationValue = LAQUOT locationURI RAQUOT *(SEMI geoloc-param)
_LOCATION_VALUE_RE = re.compile(r"<([^<>\s]{1,512})>")


class DeviceLocationProblem(StrEnum):
    """Why a device-provided location was ignored (label of
    ``voipgw_device_location_ignored_total``)."""

    BY_REFERENCE = "by-reference"
    """Only a location by reference (not dereferenced, see the module docstring)."""
    MISSING_PART = "missing-part"
    """The ``cid:`` names no application/pidf+xml part of the body."""
    TOO_LARGE = "too-large"
    NOT_XML = "not-xml"
    DTD = "dtd"
    """A ``<!DOCTYPE``: refused unparsed (entity expansion)."""
    NOT_PIDF = "not-pidf"
    NO_LOCATION = "no-location"
    """A PIDF without a geopriv location-info holding a civic address or a shape."""
    UNSUPPORTED_SHAPE = "unsupported-shape"
    BAD_COORDINATES = "bad-coordinates"
    """Coordinates or radius malformed or out of range, or a CRS RFC 5491 does not allow."""


class DeviceShape(StrEnum):
    """What kind of location the device sent."""

    CIVIC = "civic"
    POINT = "point"
    CIRCLE = "circle"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceLocation:
    """A checked device-provided PIDF-LO, forwarded to the centre as received.

    Attributes:
        pidf: the application/pidf+xml part, byte for byte.
        shape: civic, point or circle (the first location-info found).
        summary: one short line for logs and the notification ("circle 60.17000
            24.93800 r=15 m", "civic Mannerheimintie 1, 00100 Helsinki, FI").
        method: the geopriv method the device names ("GPS", "Wifi", ""), as text.
    """

    pidf: bytes
    shape: DeviceShape
    summary: str
    method: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceLocationReading:
    """What :func:`read_device_location` made of a call's own location: exactly one
    of ``location`` and ``problem`` is set."""

    location: DeviceLocation | None = None
    problem: DeviceLocationProblem | None = None


def read_device_location(
    geolocation: tuple[str, ...],
    content_type: str | None,
    body: bytes,
    *,
    max_pidf_bytes: int = DEFAULT_MAX_PIDF_BYTES,
) -> DeviceLocationReading | None:
    """Reads the location a device conveys by value in its INVITE (RFC 6442).

    Args:
        geolocation: the Geolocation header values, in order.
        content_type: the INVITE's Content-Type, or None.
        body: the INVITE's body.
        max_pidf_bytes: largest PIDF-LO part accepted, in bytes.

    Returns:
        None when the INVITE names no location at all; else the location or the
        reason it was ignored.
    """
    uris = [u for value in geolocation for u in _LOCATION_VALUE_RE.findall(value)]
    if not uris:
        return None
    cid = next((u[4:] for u in uris if u[:4].lower() == "cid:"), None)
    if cid is None:
        return DeviceLocationReading(problem=DeviceLocationProblem.BY_REFERENCE)
    if len(body) > MAX_BODY_BYTES:
        return DeviceLocationReading(problem=DeviceLocationProblem.TOO_LARGE)
    part = _body_part(content_type or "", body, cid)
    if part is None:
        return DeviceLocationReading(problem=DeviceLocationProblem.MISSING_PART)
    if len(part) > max_pidf_bytes:
        return DeviceLocationReading(problem=DeviceLocationProblem.TOO_LARGE)
    checked = check_pidf_lo(part)
    if isinstance(checked, DeviceLocationProblem):
        return DeviceLocationReading(problem=checked)
    return DeviceLocationReading(location=checked)


def _body_part(content_type: str, body: bytes, cid: str) -> bytes | None:
    """The application/pidf+xml part whose Content-ID is ``<cid>`` (RFC 2392), if any.

    The standard library's MIME parser splits the multipart (RFC 2046 5.1): a
    hand-written splitter would have to get boundaries, preambles and part headers
    right where this one already does.
    """
    message = _multipart(content_type, body)
    if message is None:
        return None
    for part in message.iter_parts():
        if part.get_content_type() != "application/pidf+xml":
            continue
        if str(part.get("Content-ID", "")).strip().strip("<>") != cid:
            continue
        payload = part.get_payload(decode=True)
        return payload if isinstance(payload, bytes) else None
    return None


def sdp_part(content_type: str, body: bytes) -> bytes | None:
    """The application/sdp part of a multipart body (a caller's SDP + PIDF-LO), or
    None when the body is not multipart or holds no SDP part.

    Args:
        content_type: the message's Content-Type.
        body: its body.

    Returns:
        The SDP bytes, or None.
    """
    message = _multipart(content_type, body)
    if message is None:
        return None
    for part in message.iter_parts():
        if part.get_content_type() == "application/sdp":
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else None
    return None


def _multipart(content_type: str, body: bytes) -> email.message.EmailMessage | None:
    if not content_type.lower().lstrip().startswith("multipart/") or len(body) > MAX_BODY_BYTES:
        return None
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    try:
        message = parser.parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    except (UnicodeError, ValueError):
        return None
    if not isinstance(message, email.message.EmailMessage) or not message.is_multipart():
        return None
    return message


def check_pidf_lo(document: bytes) -> DeviceLocation | DeviceLocationProblem:
    """Checks a PIDF-LO document (rules 3 and 4 of the module docstring).

    Args:
        document: the XML bytes.

    Returns:
        The location, or why it is refused.
    """
    if b"<!DOCTYPE" in document:
        return DeviceLocationProblem.DTD
    try:
        root = ET.fromstring(document)
    except ET.ParseError:
        return DeviceLocationProblem.NOT_XML
    if root.tag != f"{{{NS_PIDF}}}presence":
        return DeviceLocationProblem.NOT_PIDF
    for geopriv in root.iter(f"{{{NS_GP}}}geopriv"):
        info = geopriv.find(f"{{{NS_GP}}}location-info")
        if info is None:
            continue
        method = (geopriv.findtext(f"{{{NS_GP}}}method") or "").strip()[:40]
        for child in info:
            found = _check_location(child)
            if found is None:
                continue
            if isinstance(found, DeviceLocationProblem):
                return found
            shape, summary = found
            return DeviceLocation(pidf=document, shape=shape, summary=summary, method=method)
    return DeviceLocationProblem.NO_LOCATION


def _check_location(
    element: ET.Element,
) -> tuple[DeviceShape, str] | DeviceLocationProblem | None:
    """One child of location-info: a civic address, a point, a circle, or None when
    it is none of those (an extension a centre may still read; the next child is tried)."""
    tag = element.tag
    if tag == f"{{{NS_CA}}}civicAddress":
        values = {c.tag.rsplit("}", 1)[-1]: (c.text or "").strip() for c in element}
        values = {k: v for k, v in values.items() if v}
        if not values:
            return DeviceLocationProblem.NO_LOCATION
        street = " ".join(values.get(k, "") for k in ("RD", "HNO") if values.get(k))
        town = " ".join(values.get(k, "") for k in ("PC", "A3") if values.get(k))
        line = ", ".join(p for p in (street, town, values.get("country", "")) if p)
        return DeviceShape.CIVIC, "civic " + _bounded(line or ",".join(sorted(values)))
    if tag == f"{{{NS_GML}}}Point":
        pos = _position(element)
        if pos is None:
            return DeviceLocationProblem.BAD_COORDINATES
        return DeviceShape.POINT, f"point {pos[0]:.5f} {pos[1]:.5f}"
    if tag == f"{{{NS_GS}}}Circle":
        pos = _position(element)
        radius = element.find(f"{{{NS_GS}}}radius")
        if pos is None or radius is None or radius.get("uom") != _METRE:
            return DeviceLocationProblem.BAD_COORDINATES
        metres = _number(radius.text)
        if metres is None or not 0 < metres <= MAX_RADIUS_METRES:
            return DeviceLocationProblem.BAD_COORDINATES
        return DeviceShape.CIRCLE, f"circle {pos[0]:.5f} {pos[1]:.5f} r={metres:g} m"
    if tag.startswith((f"{{{NS_GML}}}", f"{{{NS_GS}}}")):
        return DeviceLocationProblem.UNSUPPORTED_SHAPE
    return None


def _position(shape: ET.Element) -> tuple[float, float] | None:
    """The (latitude, longitude) of a shape's ``gml:pos`` in an RFC 5491 CRS, in range."""
    if shape.get("srsName") not in _CRS:
        return None
    pos = shape.find(f"{{{NS_GML}}}pos")
    if pos is None or pos.text is None:
        return None
    # RFC 5491 5.2.1: "latitude longitude [altitude]", space separated (EPSG 4326 order).
    numbers = [n for v in pos.text.split() if (n := _number(v)) is not None]
    if len(numbers) not in (2, 3) or len(numbers) != len(pos.text.split()):
        return None
    lat, lon = numbers[0], numbers[1]
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return lat, lon


def _number(text: str | None) -> float | None:
    try:
        value = float((text or "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _bounded(text: str, limit: int = 80) -> str:
    """Printable ASCII, bounded: a device's text reaches logs and headers."""
    return re.sub(r"[^ -~]", "?", text)[:limit]
