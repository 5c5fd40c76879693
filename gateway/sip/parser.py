"""Bytes to :class:`Request` / :class:`Response` (RFC 3261 sections 7 and 25, RFC 4475).

:func:`parse_message` is the one entry point. Its contract (h11's, checked by the
fuzz harness): any bytes give a message or a :class:`ParseError`, never another
exception. Errors carry ``status_hint`` (400, 414, 501, 505, 513) for the UAS, and
``partial`` (a :class:`PartialMessage`) whenever the start line and header section
could be read, so a 400 can still be answered statelessly (RFC 3261 8.2.6 needs
Via, From, To, Call-ID and CSeq).

Decisions where the RFCs leave room:

* Lines must end in CRLF (RFC 3261 7). A bare CR or LF in the header section is a
  400: the stream framer cuts messages at CRLFCRLF, and a parser that accepted LF
  where the framer does not would let the two disagree about message boundaries.
* CRLFs before the start line are skipped, over datagrams too (RFC 3261 7.5).
* Folded header lines (LWS continuation) are unfolded to a single SP (RFC 3261 7.3.1).
* The request line is strict: single SPs, so trailing or doubled spaces are a 400
  (RFC 4475 3.1.2.9 and 3.1.2.10 allow either choice). A status line may omit the
  SP and reason phrase after the code: dropping a final response for that would
  only cause retransmissions.
* Over datagrams a body runs to the end when Content-Length is absent, and octets
  past Content-Length are discarded (RFC 3261 18.3, RFC 4475 3.1.1.8). Over streams
  Content-Length is mandatory and must cover exactly what the framer cut.
* Responses get the same header checks as requests (a response without a usable
  Via/CSeq/Call-ID cannot be matched to a transaction and is dropped).
* The Date header is not checked: RFC 4475 3.1.2.12 allows ignoring a bad one.

Speed: the header section is found with one ``find``, decoded once, split once; header
names go through a bounded cache; each checked header costs one precompiled
``fullmatch`` of its RFC 3261 grammar; typed objects are only built on demand
(:mod:`gateway.sip.headers`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.sip.errors import ParseError, d
from gateway.sip.headers import (
    CALL_ID_RE,
    CONTACT_RE,
    CSEQ_RE,
    HEADER_PARAMS,
    SWS,
    TOKEN,
    parse_contacts,
    parse_int_header,
    parse_name_address,
    parse_via,
)
from gateway.sip.limits import (
    MAX_BODY_SIZE,
    MAX_CSEQ,
    MAX_HEAD_SIZE,
    MAX_HEADER_LINES,
    MAX_HEADER_VALUES,
    MAX_LINE_LENGTH,
    MAX_MAX_FORWARDS,
    MAX_MESSAGE_SIZE,
    MAX_REQUEST_URI_LENGTH,
    MAX_START_LINE_LENGTH,
    STATUS_TOO_LARGE,
    STATUS_URI_TOO_LONG,
)
from gateway.sip.message import SIP_VERSION, Headers, Request, Response, canonical_name
from gateway.sip.uri import validate_uri

#: Methods of RFC 3261 and its extensions that the gateway knows. A request whose
#: CSeq method differs from an unknown request method gets 501, not 400
#: (RFC 4475 3.1.2.18).
KNOWN_METHODS: Final = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)

#: Headers a request needs to be answered at all (RFC 3261 8.1.1: "A valid SIP
#: request ... MUST, at a minimum, contain ... To, From, CSeq, Call-ID, Max-Forwards,
#: and Via"). Max-Forwards is left out: RFC 2543 peers omit it and RFC 3261 16.6
#: step 3 has proxies add it.
MANDATORY_HEADERS: Final = ("Via", "From", "To", "Call-ID", "CSeq")

#: Headers whose grammar allows one value only; a second line is a 400
#: (RFC 4475 3.3.8, 3.3.9).
SINGLE_VALUED_HEADERS: Final = frozenset(
    {"From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type", "Expires"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PartialMessage:
    """What was read of a message that failed to parse (``ParseError.partial``).

    Attributes:
        is_request: True for a request line, False for a status line.
        method: the request method when it is a token, else None (None for responses).
        headers: every well-formed header line of the message, in order.
    """

    is_request: bool
    method: str | None
    headers: Headers


#   SIP-Version  =  "SIP" "/" 1*DIGIT "." 1*DIGIT
_VERSION_RE = re.compile(r"(?i:SIP)/[0-9]++\.[0-9]++")
_TOKEN_RE = re.compile(TOKEN)
# RFC 3261 7.3.1: folding is "[*WSP CRLF] 1*WSP" and equals a single SP.
_FOLD_RE = re.compile(r"[ \t]*+\r\n[ \t]++")
#   Reason-Phrase  =  *(reserved / unreserved / escaped / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
_REASON_BAD_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#   media-type  =  m-type SLASH m-subtype *(SEMI m-parameter)
_CONTENT_TYPE_RE = re.compile(rf"{TOKEN}{SWS}/{SWS}{TOKEN}{HEADER_PARAMS}")
#   Retry-After  =  delta-seconds [ comment ] *( SEMI retry-param )
_RETRY_AFTER_RE = re.compile(r"([0-9]++)(.*)", re.DOTALL)

# Header names as they appear on the wire (including spaces before the colon) mapped
# to canonical names, and whether the name has a validator (one lookup per line, not
# two); bounded because names come from the network.
_NAME_CACHE: dict[str, tuple[str, bool]] = {}
_NAME_CACHE_SIZE: Final = 2048
# A header section no longer than this holds no line over either line limit.
_SHORTEST_LINE_LIMIT: Final = min(MAX_START_LINE_LENGTH, MAX_LINE_LENGTH)


def _show(text: str) -> str:
    return d(text.encode("utf-8", "surrogateescape"))


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parses one SIP message.

    Args:
        data: the whole message: one UDP datagram, or what :class:`StreamFramer`
            cut from a stream.
        stream: True for bytes from TCP/TLS, where Content-Length is mandatory and
            must match the body exactly (RFC 3261 18.3).

    Returns:
        A :class:`Request` or :class:`Response`. ``Request.uri`` is the raw
        Request-URI text; it has been validated by :func:`gateway.sip.uri.parse_uri`.

    Raises:
        ParseError: the bytes are not an acceptable SIP message. ``status_hint`` is
            the status to answer a request with; ``partial`` is a
            :class:`PartialMessage` when the header section could be read.
    """
    try:
        return _parse(data, stream)
    except ParseError:
        raise
    except Exception as exc:
        # Last resort for the parser invariant: a bug must not let a datagram kill
        # the receive loop. __cause__ keeps the original so the fuzz harness and the
        # tests can tell this apart from a deliberate ParseError and fail on it.
        raise ParseError(f"internal parser error: {exc!r}") from exc


def _parse(data: bytes, stream: bool) -> Request | Response:
    if len(data) > MAX_MESSAGE_SIZE:
        raise ParseError(
            f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}",
            status_hint=STATUS_TOO_LARGE,
        )
    # RFC 3261 7.5: "Implementations processing SIP messages over stream-oriented
    # transports MUST ignore any CRLF appearing before the start-line".
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    if start == len(data):
        raise ParseError("empty message")
    error: tuple[str, int] | None = None
    head_end = data.find(b"\r\n\r\n", start)
    if head_end < 0:
        # Still read the header section, so the error can carry a partial message.
        error = ("header section does not end with an empty line", 400)
        head_end = len(data) - 2 if data.endswith(b"\r\n") else len(data)
        body_start = len(data)
    else:
        body_start = head_end + 4
    if head_end - start > MAX_HEAD_SIZE:
        raise ParseError(
            f"header section exceeds {MAX_HEAD_SIZE} bytes", status_hint=STATUS_TOO_LARGE
        )
    head = data[start:head_end].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    # Every CR and every LF must belong to a CRLF: as many of each as the split found.
    crlf = len(lines) - 1
    if head.count("\r") != crlf or head.count("\n") != crlf:
        raise ParseError(f"bare CR or LF in header section: {d(data[start:head_end])}")
    if "\r\n " in head or "\r\n\t" in head:
        lines = _FOLD_RE.sub(" ", head).split("\r\n")
    if len(lines) > MAX_HEADER_LINES + 1:
        raise ParseError(f"more than {MAX_HEADER_LINES} header lines")
    first = lines[0]
    # No line is longer than the whole header section: most messages skip both.
    if len(head) > _SHORTEST_LINE_LIMIT:
        if len(first) > MAX_START_LINE_LENGTH:
            raise ParseError(
                f"start line exceeds {MAX_START_LINE_LENGTH} characters",
                status_hint=400 if first.startswith("SIP/") else STATUS_URI_TOO_LONG,
            )
        if len(lines) > 1 and max(map(len, lines)) > MAX_LINE_LENGTH:
            raise ParseError(f"header line exceeds {MAX_LINE_LENGTH} characters")

    # Start line. A method is a token and cannot hold "/", so "SIP/" starts a
    # status line.
    method: str | None = None
    uri = ""
    status = 0
    reason = ""
    is_request = not first.startswith("SIP/")
    if is_request:
        parts = first.split(" ")
        if len(parts) != 3:
            error = error or (f"malformed request line: {_show(first)}", 400)
            if parts[0] and _TOKEN_RE.fullmatch(parts[0]):
                method = parts[0]
            version = ""
        else:
            method, uri, version = parts
            if method not in KNOWN_METHODS and _TOKEN_RE.fullmatch(method) is None:
                error = error or (f"method is not a token: {_show(method)}", 400)
                method = None
            if not error:
                error = _check_version(version) or _check_request_uri(uri)
    else:
        parts = first.split(" ", 2)
        version = parts[0]
        code = parts[1] if len(parts) > 1 else ""
        reason = parts[2] if len(parts) > 2 else ""
        if len(code) != 3 or not (code.isascii() and code.isdigit()) or code[0] in "0789":
            # RFC 3261 25.1: Status-Code is 3DIGIT; RFC 3261 21 defines 1xx to 6xx.
            error = error or (f"invalid status code: {_show(first)}", 400)
        else:
            status = int(code)
        if _REASON_BAD_RE.search(reason):
            error = error or (f"control character in reason phrase: {_show(reason)}", 400)
        error = error or _check_version(version)

    # Header lines. Bad lines are skipped (and reported) so that the partial
    # message still holds every good header.
    fields: list[tuple[str, str]] = []
    checked: dict[str, list[str]] = {}
    for line in lines[1:]:
        raw_name, colon, value = line.partition(":")
        known = _NAME_CACHE.get(raw_name)
        if known is None:
            stripped = raw_name.rstrip(" \t")
            if not colon or _TOKEN_RE.fullmatch(stripped) is None:
                error = error or (f"malformed header line: {_show(line)}", 400)
                continue
            canonical = canonical_name(stripped)
            known = (canonical, canonical in _VALIDATORS)
            if len(_NAME_CACHE) < _NAME_CACHE_SIZE:
                _NAME_CACHE[raw_name] = known
        name, validated = known
        value = value.strip(" \t")
        fields.append((name, value))
        if validated:
            values = checked.get(name)
            if values is None:
                checked[name] = [value]
            else:
                values.append(value)

    headers = Headers.from_canonical(fields)  # names canonicalised above
    try:
        if error is not None:
            raise ParseError(error[0], status_hint=error[1])
        body = _check_headers(checked, method, data, body_start, stream)
    except ParseError as exc:
        partial = PartialMessage(is_request=is_request, method=method, headers=headers)
        raise ParseError(exc.msg, status_hint=exc.status_hint, partial=partial) from None
    if method is not None:
        return Request(method=method, uri=uri, headers=headers, body=body, version=version)
    return Response(status=status, reason=reason, headers=headers, body=body, version=version)


#: Header values that passed their validator, by header name, and Request-URIs (under
#: the name ""). The validators are pure functions of the value, and within a call the
#: same From, To, Call-ID and Contact come back in every message, so each is checked
#: once. One set per name rather than (name, value) pairs: no tuple to build and hash
#: per header line. Bounded: a set is cleared when full.
_VALID_VALUES: dict[str, set[str]] = {}
_VALID_VALUES_SIZE: Final = 2048


def _valid_values(name: str) -> set[str]:
    valid = _VALID_VALUES.get(name)
    if valid is None:
        valid = _VALID_VALUES[name] = set()
    return valid


def _remember_valid(valid: set[str], value: str) -> None:
    if len(valid) >= _VALID_VALUES_SIZE:
        valid.clear()
    valid.add(value)


def _check_version(version: str) -> tuple[str, int] | None:
    if version == SIP_VERSION or version.upper() == SIP_VERSION:
        return None
    # RFC 3261 8.2.6 / 21.5.6: a well-formed but unsupported version gets 505.
    if _VERSION_RE.fullmatch(version):
        return (f"unsupported SIP version {_show(version)}", 505)
    return (f"malformed SIP version {_show(version)}", 400)


def _check_request_uri(uri: str) -> tuple[str, int] | None:
    # Among the valid values as a pseudo-header "": the gateway's own Contact comes
    # back as the Request-URI of every ACK and BYE, and callers repeat a few targets.
    valid = _valid_values("")
    if uri in valid:
        return None
    if len(uri) > MAX_REQUEST_URI_LENGTH:
        return (f"Request-URI exceeds {MAX_REQUEST_URI_LENGTH} characters", STATUS_URI_TOO_LONG)
    try:
        # RFC 3261 19.1.1 table: the "headers" component is not allowed in a
        # Request-URI (RFC 4475 3.1.2.11). An unknown scheme is fine here: the UAS
        # answers 416 (RFC 3261 8.2.2.1).
        validate_uri(uri, allow_headers=False)
    except ParseError as exc:
        return (f"invalid Request-URI: {exc.msg}", 400)
    _remember_valid(valid, uri)
    return None


def _check_headers(
    checked: dict[str, list[str]],
    method: str | None,
    data: bytes,
    body_start: int,
    stream: bool,
) -> bytes:
    for name in MANDATORY_HEADERS:
        if name not in checked:
            raise ParseError(f"missing {name} header")
    for name, values in checked.items():
        if len(values) > 1 and name in SINGLE_VALUED_HEADERS:
            raise ParseError(f"{len(values)} {name} headers where one is allowed")
        valid = _valid_values(name)
        for value in values:
            if value not in valid:
                _VALIDATORS[name](value)
                _remember_valid(valid, value)
    vias = checked["Via"]
    if (
        len(vias) + sum(v.count(",") for v in vias) > MAX_HEADER_VALUES
        and sum(len(parse_via(v)) for v in vias) > MAX_HEADER_VALUES
    ):
        raise ParseError(f"more than {MAX_HEADER_VALUES} Via values")
    if method is not None:
        cseq_method = checked["CSeq"][0].split()[-1]
        if cseq_method != method:
            # RFC 4475 3.1.2.18: for an unknown method, 501 is the better answer.
            raise ParseError(
                f"CSeq method {_show(cseq_method)} does not match {_show(method)}",
                status_hint=400 if method in KNOWN_METHODS else 501,
            )

    available = len(data) - body_start
    lengths = checked.get("Content-Length")
    if lengths is None:
        if stream:
            # RFC 3261 18.3: "In the case of stream-oriented transports such as TCP,
            # the Content-Length header field indicates the size of the body ...
            # the header field MUST be used with stream oriented transports."
            raise ParseError("missing Content-Length on a stream transport")
        length = available
    else:
        length = parse_int_header(lengths[0], "Content-Length")
        if length > available:
            raise ParseError(f"Content-Length {length} exceeds the {available} body bytes")
        if stream and length < available:
            raise ParseError(f"{available - length} bytes after the body on a stream")
    if length > MAX_BODY_SIZE:
        raise ParseError(f"body exceeds {MAX_BODY_SIZE} bytes", status_hint=STATUS_TOO_LARGE)
    return data[body_start : body_start + length]


def _check_from_to(value: str) -> None:
    # Parsing is the check, as for Via: parse_name_address matches the from-spec
    # grammar (RFC 3261 25.1), and its cache then answers the dialog and B2BUA
    # layers for this call's From and To without a second regex pass.
    parse_name_address(value)


def _check_contact(value: str) -> None:
    if CONTACT_RE.fullmatch(value) is None:
        raise ParseError(f"invalid Contact: {_show(value)}")
    if "expires" in value.lower():
        parse_contacts(value)


def _check_via(value: str) -> None:
    # Parsing is the check: parse_via accepts exactly the via-parm grammar (and
    # rejects a port above 65535), and its cache then answers the transaction layer's
    # top_via() for this message without a second regex pass.
    parse_via(value)


def _check_call_id(value: str) -> None:
    if CALL_ID_RE.fullmatch(value) is None:
        raise ParseError(f"invalid Call-ID: {_show(value)}")


def _check_cseq(value: str) -> None:
    m = CSEQ_RE.fullmatch(value)
    if m is None:
        raise ParseError(f"invalid CSeq: {_show(value)}")
    digits = m[1]
    # RFC 3261 8.1.1.5: "The sequence number value MUST be expressible as a 32-bit
    # unsigned integer and MUST be less than 2**31."
    if len(digits) > 10 or int(digits) > MAX_CSEQ:
        raise ParseError(f"CSeq number out of range: {_show(value)}")


def _check_max_forwards(value: str) -> None:
    parse_int_header(value, "Max-Forwards", maximum=MAX_MAX_FORWARDS)


def _check_delta_seconds(value: str) -> None:
    parse_int_header(value, "Expires")


def _check_retry_after(value: str) -> None:
    m = _RETRY_AFTER_RE.fullmatch(value)
    if m is None:
        raise ParseError(f"invalid Retry-After: {_show(value)}")
    parse_int_header(m[1], "Retry-After")


def _check_content_type(value: str) -> None:
    if _CONTENT_TYPE_RE.fullmatch(value) is None:
        raise ParseError(f"invalid Content-Type: {_show(value)}")


def _check_nothing(value: str) -> None:
    """Content-Length is checked with the body."""


_VALIDATORS: dict[str, Callable[[str], None]] = {
    "Via": _check_via,
    "From": _check_from_to,
    "To": _check_from_to,
    "Call-ID": _check_call_id,
    "CSeq": _check_cseq,
    "Contact": _check_contact,
    "Max-Forwards": _check_max_forwards,
    "Expires": _check_delta_seconds,
    "Retry-After": _check_retry_after,
    "Content-Type": _check_content_type,
    "Content-Length": _check_nothing,
}
