"""Builders for the messages RFC 3261 derives from others: responses, ACK, CANCEL."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.sip.headers import parse_cseq, parse_name_address
from gateway.sip.message import Headers, Request, Response, reason_phrase

#: Headers a response copies from its request (RFC 3261 8.2.6.2).
_COPIED_TO_RESPONSE = ("Via", "From", "To", "Call-ID", "CSeq")


def build_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """Builds a response to a request (RFC 3261 8.2.6).

    Args:
        request: the request being answered.
        status: status code.
        reason: reason phrase; the RFC 3261 default when None.
        to_tag: tag to add to To when it has none (8.2.6.2: a UAS MUST add one to
            responses other than 100 when the request's To has no tag).
        headers: extra header fields to append.
        body: response body.
        content_type: Content-Type of the body.

    Returns:
        The response, its Via, From, To, Call-ID and CSeq copied from the request.
    """
    out = Headers()
    for name, value in request.headers:
        if name in _COPIED_TO_RESPONSE:
            if name == "To" and to_tag and status != 100:
                to = parse_name_address(value)
                if to.tag is None:
                    value = str(to.with_tag(to_tag))
            out.add(name, value)
    if status == 100:
        # 8.2.6.1: a 100 Trying copies Timestamp.
        timestamp = request.headers.get("Timestamp")
        if timestamp is not None:
            out.add("Timestamp", timestamp)
    for name, value in headers:
        out.add(name, value)
    if content_type is not None:
        out.set("Content-Type", content_type)
    return Response(
        status=status,
        reason=reason if reason is not None else reason_phrase(status),
        headers=out,
        body=body,
    )


def build_non2xx_ack(invite: Request, response: Response) -> Request:
    """Builds the ACK a client INVITE transaction sends for a 300-699 (RFC 3261 17.1.1.3).

    The ACK has the INVITE's Request-URI, Call-ID, From, CSeq number and top Via (so it
    matches the server transaction), the response's To (with its tag), and the
    INVITE's Route headers.
    """
    headers = Headers()
    vias = invite.headers.values("Via")
    if vias:
        headers.add("Via", vias[0])
    for name in ("Max-Forwards", "From"):
        value = invite.headers.get(name)
        if value is not None:
            headers.add(name, value)
    to = response.headers.get("To") or invite.headers.get("To") or ""
    headers.add("To", to)
    headers.add("Call-ID", invite.headers.get("Call-ID") or "")
    cseq = parse_cseq(invite.headers.get("CSeq") or "")
    headers.add("CSeq", f"{cseq.seq} ACK")
    for route in invite.headers.get_lines("Route"):
        headers.add("Route", route)
    return Request(method="ACK", uri=invite.uri, headers=headers)


def build_cancel(invite: Request) -> Request:
    """Builds a CANCEL for an INVITE we sent (RFC 3261 9.1).

    "The Request-URI, Call-ID, To, the numeric part of CSeq, and From header fields in
    the CANCEL request MUST be identical to those in the request being cancelled,
    including tags. [...] A CANCEL constructed by a client MUST have only a single Via
    header field value matching the top Via value in the request being cancelled."
    The transaction layer gives it the INVITE's branch.
    """
    headers = Headers()
    vias = invite.headers.values("Via")
    if vias:
        headers.add("Via", vias[0])
    headers.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        headers.add(name, invite.headers.get(name) or "")
    cseq = parse_cseq(invite.headers.get("CSeq") or "")
    headers.add("CSeq", f"{cseq.seq} CANCEL")
    for route in invite.headers.get_lines("Route"):
        headers.add("Route", route)
    return Request(method="CANCEL", uri=invite.uri, headers=headers)


def build_message(
    request_uri: str,
    *,
    from_value: str,
    call_id: str,
    body: bytes,
    content_type: str,
) -> Request:
    """Builds an out-of-dialog MESSAGE (RFC 3428 section 4), without its Via (the
    transaction layer adds it).

    RFC 3261 8.1.1: To, From, CSeq, Call-ID, Max-Forwards and Via are the minimum of
    every request; the To is the Request-URI without a tag (8.1.1.2). RFC 3428 section
    4: "A MESSAGE request MAY be sent outside of a dialog", and a MESSAGE establishes
    no dialog, so it has no Contact (RFC 3428 section 10, Contact is not applicable).

    Args:
        request_uri: the recipient's SIP URI.
        from_value: the From name-addr, with its tag.
        call_id: a new Call-ID (each MESSAGE outside a dialog is its own, 8.1.1.4).
        body: the message (a MESSAGE carries its content in the body, RFC 3428 5).
        content_type: its media type, e.g. ``text/plain;charset=UTF-8``.

    Returns:
        The request.
    """
    headers = Headers()
    headers.add("Max-Forwards", "70")
    headers.add("From", from_value)
    headers.add("To", f"<{request_uri}>")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", "1 MESSAGE")
    headers.add("Content-Type", content_type)
    return Request(method="MESSAGE", uri=request_uri, headers=headers, body=body)
