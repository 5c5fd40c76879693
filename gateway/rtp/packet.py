"""RTP/RTCP packet helpers for the announcement player and the relay.

Parsing and building whole packets is aiortc's job (:class:`aiortc.rtp.RtpPacket`,
``parse`` / ``serialize`` raising ``ValueError("RTP packet has ...")``), and so is the
modular arithmetic (``uint16_add``, ``uint32_add``, ``random16``, ``random32``); they are
re-exported here so the rest of the gateway has one import site.

Two things are written by hand, and why:

* :func:`rewrite_rtp_header` patches SSRC, sequence number, timestamp and marker in
  place. ``RtpPacket.serialize()`` rebuilds the header from the parsed fields and
  only writes the header extensions its map knows, so a parse/serialize round trip
  would silently drop extensions and padding a phone sent; a relay must forward what
  it does not understand untouched (RFC 3550 section 7.2 translators). It is also
  several times cheaper per packet, which matters at 50 packets/s per direction per call.
* :func:`rewrite_rtcp_ssrcs` walks a compound RTCP packet (RFC 3550 section 6.1) and
  maps SSRCs in SR/RR/SDES/BYE, because aiortc's ``RtcpPacket.parse`` drops packet
  types it does not know (XR, APP) and has no in-place rewrite.
* :class:`TelephoneEvent` decodes RFC 4733 payloads, which aiortc does not implement.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from aiortc.rtp import RTP_HEADER_LENGTH, RtpPacket, is_rtcp
from aiortc.utils import random16, random32, uint16_add, uint16_gt, uint32_add

__all__ = [
    "RTP_HEADER_LENGTH",
    "RtpHeader",
    "RtpPacket",
    "TelephoneEvent",
    "is_rtcp",
    "peek_rtp_header",
    "random16",
    "random32",
    "rewrite_rtcp_ssrcs",
    "rewrite_rtp_header",
    "uint16_add",
    "uint16_gt",
    "uint32_add",
]

_HEADER = struct.Struct("!BBHLL")
_RTCP_SR = 200
_RTCP_RR = 201
_RTCP_SDES = 202
_RTCP_BYE = 203


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """The fixed RTP header fields the relay needs (RFC 3550 section 5.1)."""

    marker: int
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int


def peek_rtp_header(data: bytes) -> RtpHeader:
    """Reads the fixed header of an RTP packet without copying the payload.

    Args:
        data: one UDP datagram.

    Returns:
        The header fields.

    Raises:
        ValueError: shorter than 12 bytes or not RTP version 2 (same texts as aiortc).
    """
    if len(data) < RTP_HEADER_LENGTH:
        raise ValueError(f"RTP packet length is less than {RTP_HEADER_LENGTH} bytes")
    v_p_x_cc, m_pt, seq, ts, ssrc = _HEADER.unpack_from(data)
    if v_p_x_cc >> 6 != 2:
        raise ValueError("RTP packet has invalid version")
    return RtpHeader(m_pt >> 7, m_pt & 0x7F, seq, ts, ssrc)


def rewrite_rtp_header(
    data: bytes, *, ssrc: int, sequence_number: int, timestamp: int, marker: bool | None = None
) -> bytes:
    """Returns ``data`` with new SSRC, sequence number and timestamp (and marker).

    CSRC list, header extension, payload and padding are copied unchanged.

    Args:
        data: an RTP packet already checked by :func:`peek_rtp_header`.
        ssrc: new SSRC (uint32).
        sequence_number: new sequence number (uint16).
        timestamp: new timestamp (uint32).
        marker: new marker bit, None to keep the original.

    Returns:
        The rewritten packet.
    """
    out = bytearray(data)
    m_pt = out[1]
    if marker is not None:
        m_pt = (m_pt & 0x7F) | (0x80 if marker else 0)
    _HEADER.pack_into(out, 0, out[0], m_pt, sequence_number, timestamp, ssrc)
    return bytes(out)


def rewrite_rtcp_ssrcs(
    data: bytes,
    ssrc_map: dict[int, int],
    *,
    sender_timestamp_offset: int = 0,
    report_sequence_offset: int = 0,
) -> bytes:
    """Maps SSRCs inside a compound RTCP packet so it matches rewritten RTP.

    In SR/RR the sender SSRC and each report block's source SSRC are mapped; an SR
    sender whose SSRC is mapped gets ``sender_timestamp_offset`` added to its RTP
    timestamp (RFC 3550 section 6.4.1: it must match the RTP timestamps the receiver
    sees); a report block whose source is mapped gets ``report_sequence_offset``
    added to its extended highest sequence number. SDES chunks and BYE SSRC lists are
    mapped. Other packet types (XR, APP, feedback) pass unchanged.

    Args:
        data: one UDP datagram holding a compound RTCP packet.
        ssrc_map: SSRC to replacement.
        sender_timestamp_offset: added (mod 2**32) to SR RTP timestamps of mapped senders.
        report_sequence_offset: added (mod 2**32) to extended highest sequence numbers
            of mapped report blocks.

    Returns:
        The rewritten datagram.

    Raises:
        ValueError: the datagram is not a well-formed compound RTCP packet.
    """
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if len(out) < pos + 4:
            raise ValueError("RTCP packet length is less than 4 bytes")
        v_p_count, packet_type, length = struct.unpack_from("!BBH", out, pos)
        if v_p_count >> 6 != 2:
            raise ValueError("RTCP packet has invalid version")
        end = pos + 4 + length * 4
        if end > len(out):
            raise ValueError("RTCP packet is truncated")
        count = v_p_count & 0x1F
        if packet_type in (_RTCP_SR, _RTCP_RR) and end >= pos + 8:
            sender = _map_u32(out, pos + 4, ssrc_map)
            blocks = pos + 8
            if packet_type == _RTCP_SR:
                blocks = pos + 28
                if sender and blocks <= end:
                    _add_u32(out, pos + 16, sender_timestamp_offset)
            for i in range(count):
                block = blocks + 24 * i
                if block + 24 > end:
                    break
                if _map_u32(out, block, ssrc_map):
                    _add_u32(out, block + 8, report_sequence_offset)
        elif packet_type == _RTCP_SDES:
            _rewrite_sdes(out, pos + 4, end, count, ssrc_map)
        elif packet_type == _RTCP_BYE:
            for i in range(count):
                if pos + 8 + 4 * i <= end:
                    _map_u32(out, pos + 4 + 4 * i, ssrc_map)
        pos = end
    return bytes(out)


def _rewrite_sdes(out: bytearray, pos: int, end: int, count: int, ssrc_map: dict[int, int]) -> None:
    # Each chunk: SSRC, items (type, length, text), terminated by a zero type and
    # padded to 32 bits (RFC 3550 section 6.5).
    for _ in range(count):
        if pos + 4 > end:
            return
        _map_u32(out, pos, ssrc_map)
        pos += 4
        while pos < end and out[pos] != 0:
            if pos + 1 >= end:
                return
            pos += 2 + out[pos + 1]
        pos = (pos + 4) & ~3


def _map_u32(out: bytearray, pos: int, ssrc_map: dict[int, int]) -> bool:
    (value,) = struct.unpack_from("!L", out, pos)
    if value in ssrc_map:
        struct.pack_into("!L", out, pos, ssrc_map[value])
        return True
    return False


def _add_u32(out: bytearray, pos: int, delta: int) -> None:
    (value,) = struct.unpack_from("!L", out, pos)
    struct.pack_into("!L", out, pos, uint32_add(value, delta))


@dataclass(frozen=True, slots=True, kw_only=True)
class TelephoneEvent:
    """An RFC 4733 section 2.3 named-event payload (DTMF digit, flash ...).

    Attributes:
        event: event code (0-9, 10 = "*", 11 = "#", 12-15 = A-D, 16 = flash).
        end: the E bit: last packet(s) of the event.
        volume: power level in -dBm0 (0-63).
        duration: duration so far, in RTP timestamp units (1/8000 s for 8 kHz).
    """

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Decodes the first 4 bytes of a telephone-event payload.

        Raises:
            ValueError: payload shorter than 4 bytes.
        """
        if len(payload) < 4:
            raise ValueError("RTP telephone-event payload is shorter than 4 bytes")
        event, e_r_volume, duration = struct.unpack_from("!BBH", payload)
        return cls(
            event=event, end=bool(e_r_volume & 0x80), volume=e_r_volume & 0x3F, duration=duration
        )

    def __bytes__(self) -> bytes:
        return struct.pack(
            "!BBH", self.event, (0x80 if self.end else 0) | self.volume, self.duration
        )
