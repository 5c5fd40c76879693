"""PIDF-LO location objects (RFC 4119, RFC 5139, RFC 5491) and their SIP conveyance (RFC 6442).

Document shape, one ``<tuple>`` (RFC 5491 section 3 discusses the tuple, device and
person forms; the tuple form is the one RFC 4119 defines and the RFC 6442 examples use)::

    <presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:...">
      <tuple id="...">
        <status>
          <gp:geopriv>                                   RFC 4119 section 2.2
            <gp:location-info>
              <ca:civicAddress xml:lang="fi">...</ca:civicAddress>   RFC 5139
            </gp:location-info>
            <gp:usage-rules>                             RFC 4119 2.2.2 / RFC 4745
              <gbp:retransmission-allowed>true</gbp:retransmission-allowed>
            </gp:usage-rules>
            <gp:method>Manual</gp:method>                RFC 4119 2.2.3, IANA token
            <gp:provided-by>                             RFC 4119 2.2.4
              <ad:EmergencyCallDataValue>                RFC 7852 section 7
                <pi:EmergencyCallData.ProviderInfo>...   RFC 7852 section 4.1
              </ad:EmergencyCallDataValue>
            </gp:provided-by>
          </gp:geopriv>
        </status>
        <note>...</note>
        <timestamp>2026-01-01T12:00:00Z</timestamp>   RFC 3863 section 4.1.7
      </tuple>
    </presence>

``method`` and ``provided-by`` are children of ``geopriv`` after ``usage-rules``,
in that order (RFC 4119 section 2.2 schema sequence). "Manual" is the IANA method
token for a location entered by hand, which is what a provisioned site address is.
``retransmission-allowed`` is true: the emergency centre must be able to pass the
location on to the responders it dispatches. The basic-policy schema types it
``xs:boolean``: examples in RFC 4119 and RFC 6442 write "yes", which the schema
refuses (draft-ietf-sipcore-retransmission-allowed-fixes corrects them to "true").

``provided-by`` holds elements of a namespace registered for it (the IANA
"provided-by" registry lists ``urn:ietf:params:xml:ns:EmergencyCallData``, RFC 7852):
RFC 7852 section 7 wraps blocks sent by value in ``EmergencyCallDataValue`` of that
namespace, each block in its own (``...:EmergencyCallData:ProviderInfo``).

Nomadic calls (decision): the gateway does not know where a nomadic caller is, and
the site address would send help to the wrong place. RFC 5491 offers no "unverified"
flag, and RFC 6881 expects a conveyed location to describe where the caller is.
So a nomadic PIDF-LO carries an **empty** ``<gp:location-info/>`` (allowed: the RFC
4119 schema's location-info content is ``any ##other minOccurs=0``), **no**
``<gp:method>`` (nothing was determined), the operator as ``provided-by`` and a
PIDF ``<note>`` saying "Location not verified" and why. A location the device
itself sent (its own Geolocation header) is forwarded untouched by the gateway as a
separate entry; it is the device's claim, not the operator's.

Text is escaped with :func:`xml.sax.saxutils.escape`; the XML is written directly so
the namespace prefixes are stable (no global ``ElementTree.register_namespace``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from routing.additional_data import PROVIDER_ID_SERIES, TYPE_OF_PROVIDER
from routing.config import ProviderInfo
from routing.geolocation import GeolocationRouting
from routing.model import Location
from routing.multipart import BodyPart, build_mixed

NS_PIDF = "urn:ietf:params:xml:ns:pidf"
NS_GP = "urn:ietf:params:xml:ns:pidf:geopriv10"
NS_GBP = "urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy"
NS_CA = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
NS_PI = "urn:ietf:params:xml:ns:EmergencyCallData:ProviderInfo"
#: RFC 7852 section 7: the provided-by namespace (EmergencyCallDataValue/Reference).
NS_ECD = "urn:ietf:params:xml:ns:EmergencyCallData"

PIDF_CONTENT_TYPE = "application/pidf+xml"

#: RFC 2392 content-id = addr-spec; a conservative subset ("local@domain").
_CONTENT_ID_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
#: XML 1.0 section 2.2 Char excludes most C0 controls; strip them from text values.
_XML_INVALID_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def build_pidf(
    location: Location,
    *,
    entity: str,
    tuple_id: str,
    timestamp: datetime,
    provider: ProviderInfo | None = None,
) -> bytes:
    """Builds a PIDF-LO document for an emergency call.

    Args:
        location: the address (None for an unknown location) and whether it is
            verified.
        entity: the presentity URI (``pres:`` or ``sip:``), e.g. the caller's AOR.
        tuple_id: the tuple id (an XML ``ID``: a letter or "_" first).
        timestamp: when the location was current (aware datetime; written in UTC).
        provider: the operator as data provider (RFC 7852), or None to omit.

    Returns:
        The UTF-8 XML document.

    Raises:
        ValueError: for a naive timestamp or an invalid tuple id.
    """
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", tuple_id):
        raise ValueError(f"tuple id must be an XML ID, got {tuple_id!r}")
    stamp = timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<presence xmlns="{NS_PIDF}" xmlns:gp="{NS_GP}" xmlns:gbp="{NS_GBP}"'
        f' xmlns:ca="{NS_CA}" entity={_attr(entity)}>\n',
        f" <tuple id={_attr(tuple_id)}>\n",
        "  <status>\n",
        "   <gp:geopriv>\n",
    ]
    address = location.address
    if address is None:
        out.append("    <gp:location-info/>\n")
    else:
        out.append("    <gp:location-info>\n")
        out.append(f"     <ca:civicAddress xml:lang={_attr(address.lang)}>\n")
        for name, value in address.elements():
            out.append(f"      <ca:{name}>{_text(value)}</ca:{name}>\n")
        out.append("     </ca:civicAddress>\n")
        out.append("    </gp:location-info>\n")
    out.append("    <gp:usage-rules>\n")
    out.append("     <gbp:retransmission-allowed>true</gbp:retransmission-allowed>\n")
    out.append("    </gp:usage-rules>\n")
    if address is not None and location.method:
        out.append(f"    <gp:method>{_text(location.method)}</gp:method>\n")
    if provider is not None:
        out.append("    <gp:provided-by>\n")
        out.append(f'     <ad:EmergencyCallDataValue xmlns:ad="{NS_ECD}">\n')
        out.append(f'      <pi:EmergencyCallData.ProviderInfo xmlns:pi="{NS_PI}">\n')
        out.append(
            f"       <pi:DataProviderReference>{_text(tuple_id)}</pi:DataProviderReference>\n"
        )
        out.append(
            f"       <pi:DataProviderString>{_text(provider.name)}</pi:DataProviderString>\n"
        )
        out.append(f"       <pi:ProviderID>{_text(provider.id)}</pi:ProviderID>\n")
        out.append(f"       <pi:ProviderIDSeries>{PROVIDER_ID_SERIES}</pi:ProviderIDSeries>\n")
        out.append(f"       <pi:TypeOfProvider>{TYPE_OF_PROVIDER}</pi:TypeOfProvider>\n")
        out.append(f"       <pi:ContactURI>{_text(provider.contact)}</pi:ContactURI>\n")
        out.append("      </pi:EmergencyCallData.ProviderInfo>\n")
        out.append("     </ad:EmergencyCallDataValue>\n")
        out.append("    </gp:provided-by>\n")
    out.append("   </gp:geopriv>\n")
    out.append("  </status>\n")
    note = location.note
    if not location.verified:
        note = f"Location not verified. {note}".strip()
    if note:
        out.append(f'  <note xml:lang="en">{_text(note)}</note>\n')
    out.append(f"  <timestamp>{stamp}</timestamp>\n")
    out.append(" </tuple>\n")
    out.append("</presence>\n")
    return "".join(out).encode("utf-8")


def build_multipart(sdp: bytes, pidf: bytes, boundary: str, content_id: str) -> tuple[str, bytes]:
    """Packs the SDP offer and one PIDF-LO into one multipart/mixed body (RFC 6442
    section 3.1) with :func:`routing.multipart.build_mixed`.

    The PIDF-LO part carries ``Content-ID: <content_id>`` so the Geolocation header
    can point at it with a ``cid:`` URI (RFC 6442 section 4.1, RFC 2392).

    Args:
        sdp: the SDP body.
        pidf: the PIDF-LO document.
        boundary: the MIME boundary; must not occur in any part.
        content_id: without angle brackets, e.g. "loc1@gw.example".

    Returns:
        (Content-Type header value, body bytes).

    Raises:
        ValueError: for an invalid boundary or content id, or a boundary that occurs
            in a part.
    """
    return build_mixed(
        (
            BodyPart(content_type="application/sdp", body=sdp),
            BodyPart(content_type=PIDF_CONTENT_TYPE, body=pidf, content_id=content_id),
        ),
        boundary,
    )


def geolocation_headers(
    content_id: str, *more: str, routing: GeolocationRouting = GeolocationRouting.YES
) -> tuple[tuple[str, str], ...]:
    """Returns the RFC 6442 headers that go with :func:`build_multipart` (one
    locationValue per PIDF-LO part, in the parts' order).

    ``Geolocation-Routing: yes`` lets the emergency network route on the location
    (RFC 6442 section 4.2); one value covers every location of the request, so a
    device location forwarded without its "yes" makes it ``no``.

    Args:
        content_id: the same Content-ID as the PIDF-LO part.
        more: the Content-IDs of further PIDF-LO parts, in order.
        routing: the Geolocation-Routing value.

    Returns:
        (name, value) pairs: Geolocation and Geolocation-Routing.
    """
    for cid in (content_id, *more):
        if not _CONTENT_ID_RE.fullmatch(cid):
            raise ValueError(f"invalid Content-ID {cid!r}")
    # RFC 6442 section 4.1: Geolocation = "Geolocation" HCOLON locationValue
    # *( COMMA locationValue )
    value = ", ".join(f"<cid:{cid}>" for cid in (content_id, *more))
    return (("Geolocation", value), ("Geolocation-Routing", routing.value))


def _text(value: str) -> str:
    return escape(_XML_INVALID_RE.sub("", value))


def _attr(value: str) -> str:
    return quoteattr(_XML_INVALID_RE.sub("", value))
