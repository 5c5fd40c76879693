"""Tests for gateway.sip.framing.StreamFramer: chunking, keep-alives, limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sip.errors import ParseError
from gateway.sip.framing import PING, PONG, StreamFramer
from gateway.sip.limits import MAX_HEAD_SIZE
from gateway.sip.parser import parse_message

VALID = sorted((Path(__file__).parents[2] / "sip-fixtures" / "messages" / "valid").glob("*.sip"))
MESSAGES = [parse_message(p.read_bytes()).serialize() for p in VALID]


def _drain(framer: StreamFramer) -> list[bytes]:
    out = []
    while (message := framer.next_message()) is not None:
        out.append(message)
    return out


def _run(chunks: list[bytes], *, initiator: bool = False) -> tuple[list[bytes], int, int]:
    framer = StreamFramer(initiator=initiator)
    out: list[bytes] = []
    pings = pongs = 0
    for chunk in chunks:
        framer.feed(chunk)
        out += _drain(framer)
        pings += framer.pop_pings()
        pongs += framer.pop_pongs()
    return out, pings, pongs


def _byte_chunks(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("split", ["all", "bytes", "sevens"])
def test_every_message_framed(split: str) -> None:
    stream = b"".join(MESSAGES)
    if split == "all":
        chunks = [stream]
    elif split == "bytes":
        chunks = _byte_chunks(stream)
    else:
        chunks = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    out, pings, _ = _run(chunks)
    assert out == MESSAGES
    assert pings == 0
    for message in out:
        parse_message(message, stream=True)


def test_trailing_partial_message_stays_buffered() -> None:
    framer = StreamFramer()
    framer.feed(MESSAGES[0] + MESSAGES[1][:-1])
    assert _drain(framer) == [MESSAGES[0]]
    assert framer.buffered == len(MESSAGES[1]) - 1
    framer.feed(MESSAGES[1][-1:])
    assert _drain(framer) == [MESSAGES[1]]
    assert framer.buffered == 0


@pytest.mark.parametrize("bytewise", [False, True])
def test_pings_between_messages(bytewise: bool) -> None:
    stream = PING + MESSAGES[0] + PING + PING + b"\r\n" + MESSAGES[1] + PING
    out, pings, pongs = _run(_byte_chunks(stream) if bytewise else [stream])
    assert out == MESSAGES[:2]
    assert pings == 4
    assert pongs == 0


def test_lone_trailing_crlf_waits_for_the_next_byte() -> None:
    framer = StreamFramer()
    framer.feed(b"\r\n")
    assert framer.next_message() is None
    assert framer.pop_pings() == 0
    framer.feed(b"\r\n")
    assert framer.pop_pings() == 1
    framer.feed(b"\r\n" + MESSAGES[0])
    assert _drain(framer) == [MESSAGES[0]]
    assert framer.pop_pings() == 0


def test_initiator_counts_pongs() -> None:
    out, pings, pongs = _run([PONG, MESSAGES[0], PONG + PONG], initiator=True)
    assert out == [MESSAGES[0]]
    assert (pings, pongs) == (0, 3)


def test_missing_content_length_is_fatal() -> None:
    framer = StreamFramer()
    framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")
    with pytest.raises(ParseError, match="missing Content-Length"):
        framer.next_message()
    framer.feed(MESSAGES[0])
    with pytest.raises(ParseError, match="missing Content-Length"):
        framer.next_message()


@pytest.mark.parametrize(
    ("header", "text"),
    [
        (b"Content-Length: -1", "invalid Content-Length"),
        (b"Content-Length: 1\r\nl: 1", "2 Content-Length"),
        (b"Content-Length: 99999999999", "invalid Content-Length"),
        (b"Content-Length: 70000", "exceeds"),
    ],
)
def test_bad_content_length_is_fatal(header: bytes, text: str) -> None:
    framer = StreamFramer()
    framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + header + b"\r\n\r\n")
    with pytest.raises(ParseError, match=text):
        framer.next_message()


def test_compact_and_folded_content_length() -> None:
    framer = StreamFramer()
    framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nl:\r\n 3\r\n\r\nabcNEXT")
    assert framer.next_message() == b"OPTIONS sip:a@b SIP/2.0\r\nl:\r\n 3\r\n\r\nabc"
    assert framer.buffered == 4


def test_oversized_head_is_fatal_with_513() -> None:
    framer = StreamFramer()
    framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * MAX_HEAD_SIZE)
    with pytest.raises(ParseError) as info:
        framer.next_message()
    assert info.value.status_hint == 513


def test_byte_at_a_time_is_linear_enough() -> None:
    # 20,000 single bytes of a growing header must not rescan the buffer each time.
    framer = StreamFramer()
    framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: ")
    for _ in range(20_000):
        framer.feed(b"a")
        assert framer.next_message() is None
