"""UAS-core checks on a new request, before any routing (RFC 3261 8.2, 16.3).

Each check is a pure function of the request; the first failing one gives the
response the RFC asks for. The order follows RFC 3261 8.2: method, Request-URI
scheme, Require (extensions), content (Content-Type, Accept), then Max-Forwards,
which only matters because the gateway forwards the call.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.sip.headers import parse_option_tags
from gateway.sip.message import Request
from gateway.sip.uri import AbsoluteUri, parse_uri

#: Methods this element implements at all (anything else: 501, RFC 3261 8.2.1).
KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "UPDATE",
        "INFO",
        "MESSAGE",
        "NOTIFY",
        "SUBSCRIBE",
        "REFER",
        "PUBLISH",
    }
)

#: Option tags we implement (RFC 3261 8.2.2.3 Require; 16.3 Proxy-Require).
#: "100rel": the gateway sends its own provisionals reliably to a caller that
#: requires it (RFC 3262); the B leg never asks for reliability.
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset({"100rel"})

#: Body types the gateway understands in a request that it must process.
ACCEPTED_CONTENT_TYPES = ("application/sdp", "multipart/mixed")


@dataclass(frozen=True, slots=True)
class Rejection:
    """A failed check: the status to answer and extra headers the RFC requires."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def check_new_request(
    request: Request,
    *,
    supported: frozenset[str] = SUPPORTED_EXTENSIONS,
    forwards: bool = True,
) -> Rejection | None:
    """Checks a request that starts a transaction at the gateway.

    Args:
        request: the parsed request.
        supported: option tags we implement.
        forwards: True when the request will be forwarded on a B leg (Max-Forwards
            then matters; RFC 4475 3.3.11).

    Returns:
        The rejection to answer with, or None when the request may proceed.
    """
    method = request.method
    if method not in KNOWN_METHODS:
        # 8.2.1: "the UAS SHOULD generate a 501 (Not Implemented)"
        return Rejection(501, "Not Implemented", (("Allow", ALLOW),))
    uri = parse_uri(request.uri)
    if isinstance(uri, AbsoluteUri) and uri.scheme.lower() != "urn":
        # 8.2.2.1: "If the Request-URI uses a scheme not supported by the UAS, it
        # SHOULD reject the request with a 416 (Unsupported URI Scheme) response."
        return Rejection(416, "Unsupported URI Scheme")
    if method not in ("ACK", "CANCEL"):
        # 8.2.2.3: 420 with an Unsupported header listing the unknown tags. A B2BUA
        # is also the proxy of the request, so Proxy-Require counts too (16.3).
        required = [
            *parse_option_tags(",".join(request.headers.get_lines("Require"))),
            *parse_option_tags(",".join(request.headers.get_lines("Proxy-Require"))),
        ]
        unknown = [tag for tag in required if tag.lower() not in supported]
        if unknown:
            return Rejection(420, "Bad Extension", (("Unsupported", ", ".join(unknown)),))
    if method in ("INVITE", "UPDATE", "PRACK", "ACK") and request.body:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type not in ACCEPTED_CONTENT_TYPES:
            # 8.2.3: "the UAS MUST reject the request with a 415 [...] The response
            # MUST contain an Accept header field listing the types it accepts"
            return Rejection(
                415, "Unsupported Media Type", (("Accept", ", ".join(ACCEPTED_CONTENT_TYPES)),)
            )
    if method == "INVITE" and not _accepts_sdp(request):
        # RFC 3261 21.4.7 / RFC 4475 3.3.15: we can only answer with SDP.
        return Rejection(406, "Not Acceptable", (("Accept", "application/sdp"),))
    if forwards and (request.headers.get("Max-Forwards") or "70").strip() == "0":
        # 16.3 step 3 / RFC 4475 3.3.11: zero Max-Forwards cannot be forwarded.
        return Rejection(483, "Too Many Hops")
    return None


def _accepts_sdp(request: Request) -> bool:
    accept = request.headers.values("Accept")
    if not accept:
        return True
    for value in accept:
        media = value.split(";")[0].strip().lower()
        if media in ("application/sdp", "application/*", "*/*"):
            return True
    return False


ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, PRACK, REGISTER, MESSAGE, NOTIFY, REFER"
