"""RTP/RTCP relay between the caller (A leg) and staff (B leg) after the prompt.

Theory of operation
-------------------
Each leg has an RTP socket (even port) and an RTCP socket (port + 1), both latching
(:mod:`gateway.rtp.endpoint`). The relay installs a handler on the four sockets; a
datagram accepted on one leg is sent from the matching socket of the other leg. No
tasks: everything happens in ``datagram_received``.

Towards the caller (B to A) the relay is an RTP translator that rewrites SSRC,
sequence number and timestamp (RFC 3550 section 7.2) so the caller sees one
continuous stream from the announcement into staff audio:

* the SSRC stays the prompt's SSRC (a new SSRC makes some phones reset or ignore the
  stream, and RFC 3550 section 8.2 treats it as a new source);
* the first relayed packet gets sequence number prompt-last + 1, and later ones keep
  their spacing from the source (gaps stay visible as loss);
* its timestamp is the prompt's next timestamp plus the wall-clock time elapsed since
  that frame was due, in 8 kHz units (RFC 3550 section 5.1: the timestamp reflects
  the sampling instant); later packets keep the source's timestamp spacing;
* the marker bit is set on that first packet, so the jitter buffer resynchronises.

The same mapping is recomputed whenever the source SSRC changes (staff phone
transferred, re-INVITE to another device). RFC 4733 telephone-event packets get
the same rewriting, which keeps their shared event timestamp intact. RTCP from B has
its sender SSRC mapped and its SR RTP timestamp shifted by the same offset; RTCP
from A has report blocks about our SSRC mapped back to the staff SSRC. Towards staff
(A to B) the caller's stream is forwarded unchanged: staff never saw the prompt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.rtp.endpoint import Addr, RtpEndpoint
from gateway.rtp.packet import (
    peek_rtp_header,
    rewrite_rtcp_ssrcs,
    rewrite_rtp_header,
    uint16_add,
    uint16_gt,
    uint32_add,
)
from gateway.rtp.player import RtpStreamState

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RelayCounters:
    """Counters of one direction; mutable because the hot path bumps them.

    Attributes:
        packets: RTP packets forwarded.
        bytes: RTP bytes forwarded (UDP payload).
        rtcp_packets: RTCP datagrams forwarded.
        drops: datagrams dropped (malformed, or no destination on the other leg).
    """

    packets: int = 0
    bytes: int = 0
    rtcp_packets: int = 0
    drops: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class LegSockets:
    """The RTP and RTCP endpoints of one leg."""

    rtp: RtpEndpoint
    rtcp: RtpEndpoint


class StreamRewriter:
    """Maps any number of incoming SSRCs onto one continuing outgoing stream.

    Args:
        state: the outgoing stream to continue (from the announcement player).
    """

    def __init__(self, state: RtpStreamState) -> None:
        self.ssrc = state.ssrc
        self.clock_rate = state.clock_rate
        self.next_sequence = state.next_sequence
        #: The outgoing timestamp due at ``_base_time`` (extrapolated on a switch).
        self._base_timestamp = state.next_timestamp
        self._base_time = state.next_time
        self.source_ssrc: int | None = None
        self.sequence_offset = 0
        self.timestamp_offset = 0
        self._fresh = False

    def rewrite(self, data: bytes, now: float) -> bytes:
        """Rewrites one RTP packet from the source side.

        Raises:
            ValueError: not an RTP packet.
        """
        header = peek_rtp_header(data)
        if header.ssrc != self.source_ssrc:
            elapsed = max(0.0, now - self._base_time)
            out_ts = uint32_add(self._base_timestamp, round(elapsed * self.clock_rate))
            self.source_ssrc = header.ssrc
            self.sequence_offset = (self.next_sequence - header.sequence_number) & 0xFFFF
            self.timestamp_offset = (out_ts - header.timestamp) & 0xFFFFFFFF
            self._fresh = True
        out_seq = uint16_add(header.sequence_number, self.sequence_offset)
        out_ts = uint32_add(header.timestamp, self.timestamp_offset)
        if out_seq == self.next_sequence or uint16_gt(out_seq, self.next_sequence):
            self.next_sequence = uint16_add(out_seq, 1)
            self._base_timestamp = out_ts
            self._base_time = now
        marker: bool | None = True if self._fresh else None
        self._fresh = False
        return rewrite_rtp_header(
            data, ssrc=self.ssrc, sequence_number=out_seq, timestamp=out_ts, marker=marker
        )


class RtpRelay:
    """Relays RTP and RTCP between two legs.

    Args:
        a: the caller's sockets.
        b: staff's sockets.
        continue_to_a: the prompt's stream state; B to A media continues it. None
            forwards B to A unchanged (no prompt was played).
    """

    def __init__(
        self, a: LegSockets, b: LegSockets, *, continue_to_a: RtpStreamState | None = None
    ) -> None:
        self.a = a
        self.b = b
        self.to_a = StreamRewriter(continue_to_a) if continue_to_a is not None else None
        #: Counters of caller-to-staff and staff-to-caller traffic.
        self.a_to_b = RelayCounters()
        self.b_to_a = RelayCounters()
        self.running = False
        #: when the last RTP packet came from each leg ("a", "b"), on the loop's
        #: clock: the media stage's dead-media check reads it (RTCP does not count)
        self.last_rtp: dict[str, float] = {}

    def start(self, now: float = 0.0) -> None:
        """Starts relaying: installs the handlers on the four sockets (``now``: the
        start counts as the last packet of each leg, for the dead-media check)."""
        self.last_rtp = {"a": now, "b": now}
        self.a.rtp.on_datagram = self._rtp_from_a
        self.b.rtp.on_datagram = self._rtp_from_b
        self.a.rtcp.on_datagram = self._rtcp_from_a
        self.b.rtcp.on_datagram = self._rtcp_from_b
        self.running = True

    def stop(self) -> None:
        """Stops relaying (idempotent); the sockets stay open and keep latching."""
        for endpoint in (self.a.rtp, self.b.rtp, self.a.rtcp, self.b.rtcp):
            endpoint.on_datagram = None
        self.running = False

    def _rtp_from_a(self, data: bytes, source: Addr, now: float) -> None:
        self.last_rtp["a"] = now
        if len(data) < 12 or data[0] >> 6 != 2:
            self.a_to_b.drops += 1
        elif self.b.rtp.send(data):
            self.a_to_b.packets += 1
            self.a_to_b.bytes += len(data)
        else:
            self.a_to_b.drops += 1

    def _rtp_from_b(self, data: bytes, source: Addr, now: float) -> None:
        self.last_rtp["b"] = now
        counters = self.b_to_a
        if self.to_a is not None:
            try:
                data = self.to_a.rewrite(data, now)
            except ValueError:
                counters.drops += 1
                return
        elif len(data) < 12 or data[0] >> 6 != 2:
            counters.drops += 1
            return
        if self.a.rtp.send(data):
            counters.packets += 1
            counters.bytes += len(data)
        else:
            counters.drops += 1

    def _rtcp_from_a(self, data: bytes, source: Addr, now: float) -> None:
        rewriter = self.to_a
        if rewriter is not None and rewriter.source_ssrc is not None:
            # Reports about our (prompt) SSRC describe staff's stream: map them back.
            try:
                data = rewrite_rtcp_ssrcs(
                    data,
                    {rewriter.ssrc: rewriter.source_ssrc},
                    report_sequence_offset=-rewriter.sequence_offset & 0xFFFFFFFF,
                )
            except ValueError:
                self.a_to_b.drops += 1
                return
        self._forward_rtcp(data, self.b.rtcp, self.a_to_b)

    def _rtcp_from_b(self, data: bytes, source: Addr, now: float) -> None:
        rewriter = self.to_a
        if rewriter is not None and rewriter.source_ssrc is not None:
            try:
                data = rewrite_rtcp_ssrcs(
                    data,
                    {rewriter.source_ssrc: rewriter.ssrc},
                    sender_timestamp_offset=rewriter.timestamp_offset,
                )
            except ValueError:
                self.b_to_a.drops += 1
                return
        self._forward_rtcp(data, self.a.rtcp, self.b_to_a)

    @staticmethod
    def _forward_rtcp(data: bytes, out: RtpEndpoint, counters: RelayCounters) -> None:
        if out.send(data):
            counters.rtcp_packets += 1
        else:
            counters.drops += 1
