"""Property tests: the parser and framer only ever raise ParseError.

Inputs are arbitrary bytes and mutated fixture messages (byte flips, truncation,
insertion, splicing), as in h11's AFL harness and sipgo's FuzzParseSipMessage.
Generated well-formed messages must round-trip.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.errors import ParseError
from gateway.sip.framing import StreamFramer
from gateway.sip.message import Headers, Request, Response
from gateway.sip.parser import parse_message

ROOT = Path(__file__).parents[2]
CORPUS = [p.read_bytes() for p in sorted((ROOT / "sip-fixtures" / "messages").glob("*/*.sip"))] + [
    p.read_bytes()
    for p in sorted((ROOT / ".." / "shared" / "conformance" / "rfc4475").glob("*.dat"))
]

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_parse(data: bytes) -> None:
    for stream in (False, True):
        error: ParseError | None = None
        try:
            message = parse_message(data, stream=stream)
        except ParseError as exc:
            error = exc
        if error is not None:
            # The boundary catch-all sets __cause__: that would be a parser bug.
            assert error.__cause__ is None, repr(error.__cause__)
            assert 400 <= error.status_hint <= 599
        else:
            assert isinstance(message, Request | Response)
            parse_message(message.serialize())


def _check_framer(data: bytes, step: int) -> None:
    framer = StreamFramer()
    error: ParseError | None = None
    try:
        for i in range(0, len(data), step):
            framer.feed(data[i : i + step])
            while framer.next_message() is not None:
                pass
            framer.pop_pings()
    except ParseError as exc:
        error = exc
    assert error is None or error.__cause__ is None


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [b"\r\n", b" ", b";", b",", b"<", b">", b'"', b":", b"\r\n ", b"\x00", b"%"]
                )
                | st.binary(max_size=8)
            )
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "splice":
            other = draw(st.sampled_from(CORPUS))
            cut = draw(st.integers(0, len(other)))
            data[pos:] = other[cut:]
        else:
            end = min(len(data), pos + draw(st.integers(1, 80)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


@SETTINGS
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data: bytes) -> None:
    _check_parse(data)
    _check_framer(data, 3)


@SETTINGS
@given(mutated(), st.integers(1, 64))
def test_mutated_fixtures(data: bytes, step: int) -> None:
    _check_parse(data)
    _check_framer(data, step)


TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
USER = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._!~*'()&=+$",
    min_size=1,
    max_size=12,
)
HOST = st.from_regex(r"[a-z]{1,8}(\.[a-z][a-z0-9]{0,6}){0,3}", fullmatch=True)
VALUE = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x7f"
    ),
    max_size=40,
).map(str.strip)


@st.composite
def valid_messages(draw: st.DrawFn) -> Request | Response:
    method = draw(st.sampled_from(["INVITE", "BYE", "OPTIONS", "REGISTER", "MESSAGE"]) | TOKEN)
    host = draw(HOST)
    user = draw(USER)
    headers = Headers(
        [
            (
                "Via",
                f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {host}:{draw(st.integers(1, 65535))};branch=z9hG4bK{draw(TOKEN)}",
            ),
            (
                "From",
                f'"{draw(VALUE).replace(chr(92), "").replace(chr(34), "")}" <sip:{user}@{host}>;tag={draw(TOKEN)}',
            ),
            ("To", f"<sip:{draw(USER)}@{draw(HOST)}>"),
            ("Call-ID", f"{draw(TOKEN)}@{host}"),
            ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
            ("Max-Forwards", str(draw(st.integers(0, 255)))),
        ]
    )
    for name in draw(st.lists(TOKEN, max_size=4)):
        if name.lower() not in {
            "via",
            "from",
            "to",
            "call-id",
            "cseq",
            "max-forwards",
            "content-length",
            "l",
            "f",
            "t",
            "i",
            "v",
            "m",
            "contact",
            "expires",
            "content-type",
            "c",
            "retry-after",
        }:
            headers.add(f"X-{name}", draw(VALUE))
    body = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        return Request(method=method, uri=f"sip:{user}@{draw(HOST)}", headers=headers, body=body)
    return Response(
        status=draw(st.integers(100, 699)), reason=draw(VALUE), headers=headers, body=body
    )


@SETTINGS
@given(valid_messages())
def test_generated_messages_round_trip(message: Request | Response) -> None:
    wire = message.serialize()
    parsed = parse_message(wire)
    assert type(parsed) is type(message)
    assert parsed.body == message.body
    assert [f for f in parsed.headers if f[0] != "Content-Length"] == list(message.headers)
    if isinstance(message, Request):
        assert isinstance(parsed, Request)
        assert (parsed.method, parsed.uri) == (message.method, message.uri)
    else:
        assert isinstance(parsed, Response)
        assert (parsed.status, parsed.reason) == (message.status, message.reason)
    assert parse_message(wire, stream=True).serialize() == wire
    framer = StreamFramer()
    framer.feed(wire + wire)
    assert framer.next_message() == wire
    assert framer.next_message() == wire
