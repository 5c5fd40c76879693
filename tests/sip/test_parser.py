"""Tests for gateway.sip.parser: fixture files, start lines, bodies, limits, partials."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.sip import limits
from gateway.sip.errors import ParseError
from gateway.sip.headers import parse_cseq, parse_name_address, parse_via
from gateway.sip.message import Request, Response
from gateway.sip.parser import PartialMessage, parse_message

FIXTURES = Path(__file__).parents[2] / "sip-fixtures" / "messages"
VALID = sorted((FIXTURES / "valid").glob("*.sip"))
INVALID_EXPECT = tomllib.loads((FIXTURES / "invalid" / "expect.toml").read_text())


def _parse_error(data: bytes, *, stream: bool = False) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_message(data, stream=stream)
    # A deliberate ParseError never wraps another exception (the boundary
    # catch-all sets __cause__; that would be a parser bug).
    assert info.value.__cause__ is None
    return info.value


def _build(start: str, headers: list[str], body: bytes = b"", *, length: bool = True) -> bytes:
    lines = [start, *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


BASIC = [
    "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKt1",
    "From: <sip:a@example.com>;tag=1",
    "To: <sip:b@example.com>",
    "Call-ID: t1@example.com",
    "CSeq: 5 OPTIONS",
]


def test_fixture_lists_are_not_empty() -> None:
    assert len(VALID) >= 10
    assert len(INVALID_EXPECT) >= 30
    listed = {p.name for p in (FIXTURES / "invalid").glob("*.sip")}
    assert listed == set(INVALID_EXPECT)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_fixture_round_trips(path: Path) -> None:
    data = path.read_bytes()
    message = parse_message(data)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        assert message.headers.get(name), name
    parse_via(message.headers.get("Via") or "")
    parse_name_address(message.headers.get("From") or "")
    cseq = parse_cseq(message.headers.get("CSeq") or "")
    if isinstance(message, Request):
        assert cseq.method == message.method
    declared = message.headers.get("Content-Length")
    assert declared is not None
    assert int(declared) == len(message.body)
    wire = message.serialize()
    again = parse_message(wire)
    assert type(again) is type(message)
    assert again.headers == message.headers
    assert again.body == message.body
    assert again.serialize() == wire
    # The same bytes parse the same way as one framed stream message.
    assert parse_message(wire, stream=True).headers == message.headers


@pytest.mark.parametrize("name", sorted(INVALID_EXPECT))
def test_invalid_fixture_is_rejected(name: str) -> None:
    expect = INVALID_EXPECT[name]
    error = _parse_error((FIXTURES / "invalid" / name).read_bytes())
    assert error.status_hint == expect["status"]
    assert expect["match"] in str(error)


def test_typical_invite_fields() -> None:
    message = parse_message((FIXTURES / "valid" / "invite-typical.sip").read_bytes())
    assert isinstance(message, Request)
    assert message.method == "INVITE"
    assert message.uri == "sip:+4930123456@gw.example.net;user=phone"
    assert message.version == "SIP/2.0"
    assert message.headers.get("Max-Forwards") == "70"
    assert message.headers.values("Allow")[:2] == ["INVITE", "ACK"]
    assert message.body.startswith(b"v=0\r\n")
    assert parse_via(message.headers.get("Via") or "")[0].branch == "z9hG4bK74bf9a1c"


def test_compact_forms_folding_and_leading_crlf() -> None:
    message = parse_message((FIXTURES / "valid" / "register-compact-folded.sip").read_bytes())
    assert isinstance(message, Request)
    assert message.method == "REGISTER"
    via = message.headers.get("Via")
    assert via == "SIP/2.0/TLS client.example.com:5061 ;branch=z9hG4bKcompact7"
    assert parse_via(via)[0].branch == "z9hG4bKcompact7"
    assert message.headers.get("Call-ID") == "1j9FpLxk3uxtm8tn@client.example.com"
    assert len(message.headers.values("Contact")) == 2
    assert message.headers.values("Supported") == ["path", "gruu"]


def test_response_fields_and_utf8_reason() -> None:
    message = parse_message((FIXTURES / "valid" / "response-utf8-reason.sip").read_bytes())
    assert isinstance(message, Response)
    assert message.status == 486
    assert message.reason == "Besetzt \u2013 bitte sp\u00e4ter"


def test_status_line_without_reason_is_accepted() -> None:
    message = parse_message(_build("SIP/2.0 180", BASIC))
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (180, "")


def test_version_is_case_insensitive() -> None:
    message = parse_message(_build("OPTIONS sip:b@example.com sip/2.0", BASIC))
    assert isinstance(message, Request)


@pytest.mark.parametrize("code", [100, 199, 200, 487, 699])
def test_status_codes_in_range(code: int) -> None:
    message = parse_message(_build(f"SIP/2.0 {code} Something", BASIC))
    assert isinstance(message, Response)
    assert message.status == code


def test_datagram_body_without_content_length_runs_to_end() -> None:
    message = parse_message(
        _build("OPTIONS sip:b@example.com SIP/2.0", BASIC, length=False) + b"xyz"
    )
    assert message.body == b"xyz"


def test_datagram_octets_after_content_length_are_discarded() -> None:
    data = _build("OPTIONS sip:b@example.com SIP/2.0", BASIC, b"abc") + b"garbage"
    assert parse_message(data).body == b"abc"


def test_stream_requires_content_length() -> None:
    data = _build("OPTIONS sip:b@example.com SIP/2.0", BASIC, length=False)
    error = _parse_error(data, stream=True)
    assert "missing Content-Length" in str(error)
    assert parse_message(data).body == b""


def test_stream_rejects_trailing_bytes() -> None:
    data = _build("OPTIONS sip:b@example.com SIP/2.0", BASIC, b"abc") + b"x"
    assert "after the body" in str(_parse_error(data, stream=True))


def test_partial_message_has_headers_for_a_stateless_400() -> None:
    data = _build("OPTIONS sip:b@example.com SIP/2.0", [*BASIC, "Broken line"])
    partial = _parse_error(data).partial
    assert isinstance(partial, PartialMessage)
    assert partial.is_request
    assert partial.method == "OPTIONS"
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        assert partial.headers.get(name), name


def test_partial_message_on_bad_version() -> None:
    error = _parse_error(_build("OPTIONS sip:b@example.com SIP/2.1", BASIC))
    assert error.status_hint == 505
    assert isinstance(error.partial, PartialMessage)
    assert error.partial.headers.get("Call-ID") == "t1@example.com"


def test_partial_message_for_response() -> None:
    error = _parse_error(_build("SIP/2.0 2000 OK", BASIC))
    assert isinstance(error.partial, PartialMessage)
    assert not error.partial.is_request
    assert error.partial.method is None


def test_no_partial_before_the_header_section() -> None:
    assert _parse_error(b"\r\n\r\n").partial is None
    assert _parse_error(b"").partial is None


def test_message_size_limit_is_513() -> None:
    body = b"x" * (limits.MAX_MESSAGE_SIZE + 1)
    error = _parse_error(_build("OPTIONS sip:b@example.com SIP/2.0", BASIC, body))
    assert error.status_hint == 513


def test_request_uri_length_limit_is_414() -> None:
    uri = "sip:" + "a" * limits.MAX_REQUEST_URI_LENGTH + "@example.com"
    error = _parse_error(_build(f"OPTIONS {uri} SIP/2.0", BASIC))
    assert error.status_hint == 414


def test_header_line_limits() -> None:
    many = BASIC + [f"X-H{i}: v" for i in range(limits.MAX_HEADER_LINES)]
    assert "header lines" in str(_parse_error(_build("OPTIONS sip:b@example.com SIP/2.0", many)))
    long_line = [*BASIC, "X-Long: " + "v" * limits.MAX_LINE_LENGTH]
    assert "exceeds" in str(_parse_error(_build("OPTIONS sip:b@example.com SIP/2.0", long_line)))


def test_line_limits_hold_at_the_boundary_and_after_unfolding() -> None:
    start = "OPTIONS sip:b@example.com SIP/2.0"
    # A header section longer than the limits whose lines all fit parses; the longest
    # line allowed parses; one character more does not.
    fitting = [*BASIC, *(f"X-H{i}: " + "v" * 1000 for i in range(12))]
    assert isinstance(parse_message(_build(start, fitting)), Request)
    widest = "X-Long: " + "v" * (limits.MAX_LINE_LENGTH - len("X-Long: "))
    assert isinstance(parse_message(_build(start, [*BASIC, widest])), Request)
    assert "exceeds" in str(_parse_error(_build(start, [*BASIC, widest + "v"])))
    # Folded lines are measured once unfolded: two halves that fit make one that does not.
    half = "v" * (limits.MAX_LINE_LENGTH // 2)
    folded = [*BASIC, f"X-Folded: {half}\r\n {half}"]
    assert "exceeds" in str(_parse_error(_build(start, folded)))
    long_start = "OPTIONS sip:" + "b" * limits.MAX_START_LINE_LENGTH + "@example.com SIP/2.0"
    assert _parse_error(_build(long_start, BASIC)).status_hint == 414
    long_status = "SIP/2.0 200 " + "O" * limits.MAX_START_LINE_LENGTH
    assert _parse_error(_build(long_status, BASIC)).status_hint == 400


def test_a_value_valid_for_one_header_is_checked_again_for_another() -> None:
    """The parser remembers values that passed their validator, per header name."""
    start = "OPTIONS sip:b@example.com SIP/2.0"
    call_id = [h for h in BASIC if not h.startswith("Call-ID")] + ["Call-ID: not-a-uri@x"]
    assert isinstance(parse_message(_build(start, call_id)), Request)
    as_from = [h for h in BASIC if not h.startswith("From")] + ["From: not-a-uri@x"]
    assert "name-addr" in str(_parse_error(_build(start, as_from)))


def test_too_many_via_values() -> None:
    vias = ", ".join(f"SIP/2.0/UDP h{i}.example.com" for i in range(limits.MAX_HEADER_VALUES + 1))
    headers = [f"Via: {vias}", *BASIC[1:]]
    assert "Via values" in str(_parse_error(_build("OPTIONS sip:b@example.com SIP/2.0", headers)))


def test_huge_digit_strings_do_not_escape_as_value_error() -> None:
    digits = "9" * 5000
    for header in (f"Expires: {digits}", f"Max-Forwards: {digits}", f"Content-Length: {digits}"):
        error = _parse_error(_build("OPTIONS sip:b@example.com SIP/2.0", [*BASIC, header]))
        assert error.status_hint == 400
    cseq = [*BASIC[:4], f"CSeq: {digits} OPTIONS"]
    assert "CSeq" in str(_parse_error(_build("OPTIONS sip:b@example.com SIP/2.0", cseq)))


def test_unknown_scheme_request_uri_parses() -> None:
    message = parse_message(_build("OPTIONS urn:service:sos SIP/2.0", BASIC))
    assert isinstance(message, Request)
    assert message.uri == "urn:service:sos"


def test_unknown_method_with_matching_cseq_parses() -> None:
    headers = [*BASIC[:4], "CSeq: 5 FOO"]
    message = parse_message(_build("FOO sip:b@example.com SIP/2.0", headers))
    assert isinstance(message, Request)
    assert message.method == "FOO"


def test_max_forwards_may_be_absent() -> None:
    assert isinstance(parse_message(_build("OPTIONS sip:b@example.com SIP/2.0", BASIC)), Request)


def test_header_name_with_space_before_colon() -> None:
    message = parse_message(
        _build("OPTIONS sip:b@example.com SIP/2.0", [*BASIC, "Subject  :  hi  "])
    )
    assert message.headers.get("Subject") == "hi"


def test_empty_header_value_is_kept() -> None:
    message = parse_message(_build("OPTIONS sip:b@example.com SIP/2.0", [*BASIC, "Subject:"]))
    assert message.headers.get("Subject") == ""


def test_non_utf8_octets_survive_a_round_trip() -> None:
    data = _build("OPTIONS sip:b@example.com SIP/2.0", [*BASIC, "X-Raw: a\xff"])
    data = data.replace("a\xff".encode(), b"a\xff\xfe")
    message = parse_message(data)
    assert parse_message(message.serialize()).headers == message.headers
    assert b"a\xff\xfe" in message.serialize()
