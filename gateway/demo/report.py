"""What a demo peer prints for each call: one readable line (pure functions).

The emergency centre's line shows what a real centre relies on, read from the INVITE
as received, not from what the gateway meant to send:

* the callback identity, ``P-Asserted-Identity`` (RFC 3325);
* ``Resource-Priority`` (RFC 4412/7135, ``esnet.1``);
* ``Geolocation`` (RFC 6442: a ``cid:`` URI naming a body part);
* the location in the PIDF-LO part (RFC 4119, civic address RFC 5139) of the
  multipart body, or its note when the location is not verified, or "none".
"""

from __future__ import annotations

import email.parser
import email.policy
import xml.etree.ElementTree as ET

from gateway.sip.errors import ParseError
from gateway.sip.headers import parse_name_address
from gateway.sip.message import Request
from routing.pidf import NS_CA, NS_PIDF

#: Longest header value shown (a line stays readable whatever a caller sends).
MAX_VALUE = 120


def body_parts(content_type: str, body: bytes) -> dict[str, bytes]:
    """Splits a body into content type -> bytes (one entry when not multipart).

    RFC 2046 5.1 multipart/mixed as RFC 6442 uses it: the SDP and the PIDF-LO, each
    with its own Content-Type (and the PIDF-LO with the Content-ID that the
    Geolocation header names).
    """
    if not content_type:
        return {}
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("utf-8", "replace") + body
    )
    parts = message.iter_parts() if message.is_multipart() else [message]
    out: dict[str, bytes] = {}
    for part in parts:
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            out.setdefault(part.get_content_type(), payload)
    return out


def describe_location(pidf: bytes | None, content_type: str = "") -> str:
    """The PIDF-LO's location in words: the civic address, the note, or why none.

    Returns:
        "Metsänneidonkuja 12, 02130 Espoo, Uusimaa, FI (Setera Communications Oy)",
        "not verified (<the document's note>)", or "none (...)".
    """
    if pidf is None:
        kind = content_type.split(";", 1)[0].strip() or "no body"
        return f"none (no PIDF-LO in the body: {_clip(kind)})"
    try:
        root = ET.fromstring(pidf)
    except ET.ParseError as exc:
        return f"none (PIDF-LO is not XML: {exc})"
    civic = root.find(f".//{{{NS_CA}}}civicAddress")
    if civic is not None and len(civic):
        fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in civic}
        return _civic_text(fields)
    note = root.find(f".//{{{NS_PIDF}}}note")
    text = " ".join((note.text or "").split()) if note is not None else ""
    if "not verified" in text.lower():
        return f"not verified ({_clip(text)})"
    return f"none ({_clip(text) or 'no civic address'})"


def _civic_text(fields: dict[str, str]) -> str:
    street = " ".join(v for v in (fields.get("RD", ""), fields.get("HNO", "")) if v)
    town = fields.get("PCN") or fields.get("A3", "")
    place = " ".join(v for v in (fields.get("PC", ""), town) if v)
    words = [v for v in (street, place, fields.get("A1", ""), fields.get("country", "")) if v]
    text = ", ".join(words) or "civic address without street or town"
    name = fields.get("NAM")
    return f"{text} ({name})" if name else text


def emergency_line(centre: str, request: Request) -> str:
    """The centre's line for one emergency INVITE.

    Args:
        centre: who answered, e.g. "kerava (Hätäkeskus Kerava)".
        request: the INVITE as received.
    """
    content_type = request.headers.get("Content-Type") or ""
    parts = body_parts(content_type, request.body)
    fields = [
        f"callback {_header(request, 'P-Asserted-Identity')}",
        f"Resource-Priority {_header(request, 'Resource-Priority')}",
        f"Geolocation {_header(request, 'Geolocation')}",
        f"class {_header(request, 'X-Voipgw-Class')}",
        f"location: {describe_location(parts.get('application/pidf+xml'), content_type)}",
    ]
    return f"centre {centre}: 112 call from {_from_uri(request)} | " + " | ".join(fields)


def pbx_line(name: str, request: Request) -> str:
    """The PBX stand-in's line for one INVITE: who calls whom, and the notice."""
    return (
        f"{name}: call to {_clip(request.uri)} from {_header(request, 'P-Asserted-Identity')}"
        f" | class {_header(request, 'X-Voipgw-Class')}"
        f" | recording notice {_header(request, 'X-Voipgw-Recording-Notice')}"
    )


def _from_uri(request: Request) -> str:
    try:
        return _clip(parse_name_address(request.headers.get("From") or "").uri)
    except ParseError:
        return "(unparsable From)"


def _header(request: Request, name: str) -> str:
    value = request.headers.get(name)
    return _clip(value) if value else "(none)"


def _clip(text: str) -> str:
    # Printable text only: a peer must not let a caller write to the terminal.
    shown = "".join(c if c.isprintable() else "?" for c in text)
    return shown if len(shown) <= MAX_VALUE else shown[: MAX_VALUE - 3] + "..."
