"""Tests for gateway.sip.sdp: parse/serialize round trip, offer/answer, anchoring."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip.errors import ParseError
from gateway.sip.sdp import (
    PCMA,
    PCMU,
    Codec,
    Connection,
    Direction,
    Origin,
    anchor_media,
    answer_for_announcement,
    is_on_hold,
    parse_sdp,
)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


# A typical desk phone offer (Yealink/Snom shape): PCMU, PCMA, G.722, DTMF events.
PHONE_OFFER = sdp(
    "v=0",
    "o=- 20518 0 IN IP4 192.168.1.20",
    "s=SDP data",
    "c=IN IP4 192.168.1.20",
    "t=0 0",
    "m=audio 11780 RTP/AVP 0 8 9 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=rtcp:11781",
    "a=sendrecv",
)

# Every line type the model knows, media-level c=, a second (video) stream.
FULL_OFFER = sdp(
    "v=0",
    "o=jdoe 2890844526 2890842807 IN IP6 2001:db8::1",
    "s=Call",
    "i=A call",
    "u=http://www.example.com/seminars/sdp.pdf",
    "e=j.doe@example.com (Jane Doe)",
    "p=+1 617 555-6011",
    "b=AS:128",
    "t=2873397496 2873404696",
    "r=7d 1h 0 25h",
    "z=2882844526 -1h 2898848070 0",
    "a=tool:voipgw-test",
    "a=recvonly",
    "m=audio 49170 RTP/AVP 8",
    "i=voice",
    "c=IN IP6 2001:db8::2",
    "b=AS:64",
    "a=rtpmap:8 PCMA/8000",
    "m=video 51372/2 RTP/AVP 99",
    "c=IN IP6 2001:db8::3",
    "a=rtpmap:99 h263-1998/90000",
)


@pytest.mark.parametrize("body", [PHONE_OFFER, FULL_OFFER], ids=["phone", "full"])
def test_round_trip(body: bytes) -> None:
    parsed = parse_sdp(body)
    assert parsed.serialize() == body
    assert parse_sdp(parsed.serialize()) == parsed


def test_fields_of_phone_offer() -> None:
    parsed = parse_sdp(PHONE_OFFER)
    assert parsed.origin.session_id == "20518"
    assert parsed.connection == Connection(address="192.168.1.20")
    (audio,) = parsed.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 11780, "RTP/AVP")
    assert audio.payload_types == (0, 8, 9, 101)
    assert audio.rtpmaps[9].encoding_name == "G722"
    assert audio.fmtp(101) == "0-16"
    assert audio.fmtp(0) is None
    assert audio.ptime == 20
    assert audio.direction is Direction.SENDRECV
    assert audio.telephone_event_payload_type() == 101


def test_fields_of_full_offer() -> None:
    parsed = parse_sdp(FULL_OFFER)
    audio, video = parsed.media
    assert parsed.connection is None
    assert parsed.connection_for(audio) == Connection(addrtype="IP6", address="2001:db8::2")
    assert video.port_count == 2
    assert audio.direction is Direction.SENDRECV  # session-level a=recvonly not applied
    assert audio.ptime is None


def test_lf_line_endings_accepted() -> None:
    parsed = parse_sdp(PHONE_OFFER.replace(b"\r\n", b"\n"))
    assert parsed.serialize() == PHONE_OFFER


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "does not start with v=0"),
        (sdp("v=1", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "t=0 0"), "does not start with v=0"),
        (sdp("v=0", "s=-", "t=0 0"), "no o= line"),
        (sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "t=0 0"), "no s= line"),
        (sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-"), "no t= line"),
        (sdp("v=0", "o=- x 1 IN IP4 1.2.3.4", "s=-", "t=0 0"), "o= line is malformed"),
        (sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "t=0 0", "x=1"), "unknown line type"),
        (sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "t=0 0", "junk"), "not <type>=<value>"),
        (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "c=IN IP4 ::1", "t=0 0"), "does not match"),
        (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "c=IN IP4", "t=0 0"), "c= line is malformed"),
        (
            sdp(
                "v=0",
                "o=- 1 1 IN IP4 h",
                "s=-",
                "c=IN IP4 1.2.3.4",
                "t=0 0",
                "m=audio 70000 RTP/AVP 0",
            ),
            "m= port",
        ),
        (
            sdp(
                "v=0",
                "o=- 1 1 IN IP4 h",
                "s=-",
                "c=IN IP4 1.2.3.4",
                "t=0 0",
                "m=audio 1 RTP/AVP 200",
            ),
            "payload type",
        ),
        (
            sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "c=IN IP4 1.2.3.4", "t=0 0", "m=audio 1 RTP/AVP"),
            "m= line is malformed",
        ),
        (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "t=0 0", "m=audio 1 RTP/AVP 0"), "without a c="),
        (
            sdp(
                "v=0",
                "o=- 1 1 IN IP4 h",
                "s=-",
                "c=IN IP4 1.2.3.4",
                "t=0 0",
                "m=audio 1 RTP/AVP 0",
                "t=0 0",
            ),
            "not allowed in a media section",
        ),
        (b"v=0\r\n\xff\xfe\r\n", "not UTF-8"),
        (b"v=0\r\n" + b"a=x\r\n" * 70000, "longer than"),
    ],
)
def test_invalid(body: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_sdp(body)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_only_parse_error(data: bytes) -> None:
    try:
        parsed = parse_sdp(data)
    except ParseError:
        return
    assert parse_sdp(parsed.serialize()) == parsed


@settings(max_examples=300)
@given(st.data())
def test_fuzz_mutated_offer_only_parse_error(data: st.DataObject) -> None:
    body = bytearray(PHONE_OFFER)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    try:
        parsed = parse_sdp(bytes(body))
    except ParseError:
        return
    assert parse_sdp(parsed.serialize()) == parsed


# --- offer/answer -------------------------------------------------------------------


def offer(m_line: str, *attrs: str, c: str = "c=IN IP4 198.51.100.7") -> bytes:
    return sdp("v=0", "o=- 1 1 IN IP4 198.51.100.7", "s=-", c, "t=0 0", m_line, *attrs)


def test_answer_picks_pcmu_and_keeps_telephone_event() -> None:
    result = answer_for_announcement(parse_sdp(PHONE_OFFER), "203.0.113.5", 20000, 77, 1)
    assert result is not None
    answer, codec = result
    assert codec == PCMU
    assert answer.serialize() == sdp(
        "v=0",
        "o=voipgw 77 1 IN IP4 203.0.113.5",
        "s=voipgw",
        "c=IN IP4 203.0.113.5",
        "t=0 0",
        "m=audio 20000 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    )


def test_answer_follows_caller_preference_pcma_first() -> None:
    result = answer_for_announcement(
        parse_sdp(offer("m=audio 4000 RTP/AVP 9 8 0")), "203.0.113.5", 20000, 1, 1
    )
    assert result is not None
    answer, codec = result
    assert codec == PCMA
    assert answer.media[0].formats == ("8",)
    assert answer.media[0].telephone_event_payload_type() is None


def test_answer_dynamic_payload_type_for_pcma() -> None:
    body = offer("m=audio 4000 RTP/AVP 96", "a=rtpmap:96 pcma/8000")
    result = answer_for_announcement(parse_sdp(body), "203.0.113.5", 20000, 1, 1)
    assert result is not None
    assert result[1] == Codec(encoding_name="PCMA", payload_type=96)


@pytest.mark.parametrize(
    "body",
    [
        offer("m=audio 4000 RTP/AVP 9 18", "a=rtpmap:9 G722/8000"),
        offer("m=audio 4000 RTP/AVP 0", "a=rtpmap:0 PCMU/16000"),
        offer("m=audio 4000 RTP/SAVP 0 8"),
        offer("m=audio 0 RTP/AVP 0 8"),
        offer("m=video 4000 RTP/AVP 0"),
        offer("m=audio 4000 RTP/AVP 0", "a=sendonly"),
        offer("m=audio 4000 RTP/AVP 0", "a=inactive"),
    ],
    ids=["no-g711", "wrong-clock", "srtp", "port-0", "video", "sendonly", "inactive"],
)
def test_no_answer_when_announcement_cannot_be_heard(body: bytes) -> None:
    assert answer_for_announcement(parse_sdp(body), "203.0.113.5", 20000, 1, 1) is None


def test_recvonly_offer_gets_sendonly_answer() -> None:
    body = offer("m=audio 4000 RTP/AVP 8", "a=recvonly")
    result = answer_for_announcement(parse_sdp(body), "203.0.113.5", 20000, 1, 1)
    assert result is not None
    assert result[0].media[0].direction is Direction.SENDONLY


def test_answer_ipv6_and_rejects_other_streams_in_order() -> None:
    body = sdp(
        "v=0",
        "o=- 1 1 IN IP6 2001:db8::7",
        "s=-",
        "c=IN IP6 2001:db8::7",
        "t=0 0",
        "m=video 5000 RTP/AVP 99",
        "a=rtpmap:99 H264/90000",
        "m=audio 4000 RTP/AVP 0",
        "m=audio 4002 RTP/AVP 8",
    )
    result = answer_for_announcement(parse_sdp(body), "2001:db8::53", 30000, 9, 2)
    assert result is not None
    answer, codec = result
    assert codec == PCMU
    assert answer.connection == Connection(addrtype="IP6", address="2001:db8::53")
    assert answer.origin.addrtype == "IP6"
    assert [(m.media, m.port, m.formats) for m in answer.media] == [
        ("video", 0, ("99",)),
        ("audio", 30000, ("0",)),
        ("audio", 0, ("8",)),
    ]
    assert parse_sdp(answer.serialize()) == answer


def test_answer_rejects_bad_local_ip() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
        answer_for_announcement(parse_sdp(PHONE_OFFER), "gw.example", 20000, 1, 1)


# --- anchoring ----------------------------------------------------------------------


def test_anchor_media_rewrites_address_ports_and_transport_attributes() -> None:
    parsed = parse_sdp(FULL_OFFER.replace(b"a=tool:voipgw-test", b"a=ice-lite"))
    parsed = replace(
        parsed, media=(*parsed.media, parse_sdp(offer("m=audio 0 RTP/AVP 0")).media[0])
    )
    origin = Origin(session_id="5", session_version="6", address="10.0.0.1")
    anchored = anchor_media(parsed, "10.0.0.1", [40000, 40002, 40004], origin=origin)
    assert anchored.origin == origin
    assert anchored.connection == Connection(address="10.0.0.1")
    assert [m.port for m in anchored.media] == [40000, 40002, 0]
    assert all(m.connection is None for m in anchored.media)
    assert all(a.name != "ice-lite" for a in anchored.attributes)
    assert anchored.media[0].rtpmaps == parsed.media[0].rtpmaps
    assert parse_sdp(anchored.serialize()) == anchored


def test_anchor_media_drops_rtcp_attribute_and_checks_port_count() -> None:
    parsed = parse_sdp(PHONE_OFFER)
    anchored = anchor_media(parsed, "::1", [20002])
    assert anchored.origin == parsed.origin
    assert anchored.media[0].attribute_values("rtcp") == []
    assert anchored.connection == Connection(addrtype="IP6", address="::1")
    with pytest.raises(ValueError, match="needs 1 ports"):
        anchor_media(parsed, "::1", [])


@pytest.mark.parametrize(
    ("session_lines", "media_lines", "held"),
    [
        ("c=IN IP4 192.0.2.1\r\n", "m=audio 4000 RTP/AVP 0\r\n", False),
        ("c=IN IP4 192.0.2.1\r\n", "m=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n", False),
        ("c=IN IP4 192.0.2.1\r\n", "m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n", True),
        ("c=IN IP4 192.0.2.1\r\n", "m=audio 4000 RTP/AVP 0\r\na=recvonly\r\n", True),
        ("c=IN IP4 192.0.2.1\r\n", "m=audio 4000 RTP/AVP 0\r\na=inactive\r\n", True),
        ("c=IN IP4 192.0.2.1\r\n", "a=sendonly\r\nm=audio 4000 RTP/AVP 0\r\n", True),
        ("c=IN IP4 0.0.0.0\r\n", "m=audio 4000 RTP/AVP 0\r\n", True),  # RFC 2543 hold
        ("", "m=audio 4000 RTP/AVP 0\r\nc=IN IP6 ::\r\n", True),
        # A disabled audio stream or a held video stream is not the call on hold.
        ("c=IN IP4 192.0.2.1\r\n", "m=audio 0 RTP/AVP 0\r\na=inactive\r\n", False),
        ("c=IN IP4 192.0.2.1\r\n", "m=video 5000 RTP/AVP 96\r\na=inactive\r\n", False),
    ],
)
def test_is_on_hold(session_lines: str, media_lines: str, held: bool) -> None:
    text = f"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n{session_lines}t=0 0\r\n{media_lines}"
    assert is_on_hold(parse_sdp(text.encode())) is held
