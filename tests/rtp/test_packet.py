"""Packet helpers: header rewrite keeps what it does not understand; RTCP mapping."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtp import (
    RtcpByePacket,
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

from gateway.rtp.packet import (
    RtpPacket,
    TelephoneEvent,
    peek_rtp_header,
    rewrite_rtcp_ssrcs,
    rewrite_rtp_header,
)


def test_rewrite_keeps_csrc_extension_and_padding() -> None:
    # V=2, P=1, X=1, CC=1; one CSRC; a one-word extension; 4 bytes payload; padding 4.
    header = struct.pack("!BBHLL", 0xB1, 0x80 | 8, 10, 1000, 0x11111111)
    body = struct.pack("!L", 0x22222222) + struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    data = header + body + b"abcd" + b"\x00\x00\x00\x04"
    out = rewrite_rtp_header(data, ssrc=5, sequence_number=65535, timestamp=2**32 - 1, marker=False)
    assert out[12:] == data[12:]
    h = peek_rtp_header(out)
    assert (h.marker, h.payload_type, h.sequence_number, h.timestamp, h.ssrc) == (
        0, 8, 65535, 2**32 - 1, 5,
    )  # fmt: skip
    assert out[0] == data[0]
    parsed = RtpPacket.parse(out)
    assert parsed.csrc == [0x22222222]
    assert parsed.payload == b"abcd"
    assert (
        peek_rtp_header(rewrite_rtp_header(out, ssrc=5, sequence_number=0, timestamp=0)).marker == 0
    )
    assert (
        peek_rtp_header(
            rewrite_rtp_header(out, ssrc=5, sequence_number=0, timestamp=0, marker=True)
        ).marker
        == 1
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"\x80" * 11, "less than 12 bytes"), (b"\x40" + b"\x00" * 11, "invalid version")],
)
def test_peek_rejects(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        peek_rtp_header(data)


def test_rtcp_compound_mapping() -> None:
    sr = RtcpSrPacket(
        ssrc=1,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=9, rtp_timestamp=100, packet_count=3, octet_count=480
        ),
        reports=[
            RtcpReceiverInfo(
                ssrc=7,
                fraction_lost=0,
                packets_lost=0,
                highest_sequence=0x10005,
                jitter=0,
                lsr=0,
                dlsr=0,
            )
        ],
    )
    sdes = RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=1, items=[(1, b"staff@example")])])
    bye = RtcpByePacket(sources=[1])
    data = bytes(sr) + bytes(sdes) + bytes(bye)
    out = rewrite_rtcp_ssrcs(
        data, {1: 2, 7: 8}, sender_timestamp_offset=2**32 - 50, report_sequence_offset=10
    )
    sr_out, sdes_out, bye_out = RtcpPacket.parse(out)
    assert isinstance(sr_out, RtcpSrPacket)
    assert sr_out.ssrc == 2
    assert sr_out.sender_info.rtp_timestamp == 50
    assert sr_out.sender_info.packet_count == 3
    assert sr_out.reports[0].ssrc == 8
    assert sr_out.reports[0].highest_sequence == 0x1000F
    assert isinstance(sdes_out, RtcpSdesPacket)
    assert sdes_out.chunks[0].ssrc == 2
    assert sdes_out.chunks[0].items == [(1, b"staff@example")]
    assert isinstance(bye_out, RtcpByePacket)
    assert bye_out.sources == [2]
    assert rewrite_rtcp_ssrcs(data, {}) == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\xc8\x00", "less than 4"),
        (b"\x40\xc8\x00\x00", "invalid version"),
        (b"\x80\xc9\x00\x05", "truncated"),
    ],
)
def test_rtcp_rejects(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rewrite_rtcp_ssrcs(data, {1: 2})


def test_telephone_event_round_trip() -> None:
    event = TelephoneEvent(event=11, end=True, volume=10, duration=1280)
    assert bytes(event) == b"\x0b\x8a\x05\x00"
    assert TelephoneEvent.parse(bytes(event)) == event
    with pytest.raises(ValueError, match="shorter than 4"):
        TelephoneEvent.parse(b"\x01")
