"""One UDP socket of a media leg, with symmetric-RTP latching.

Symmetric RTP (RFC 4961) means a phone sends from the port it receives on. Behind
NAT, the address in its SDP (often 192.168.x.y) is not where its packets come from,
so the gateway sends to where the packets actually come from: it *latches* onto the
source of the first valid packet (the "comedia" behaviour of rtpengine/Asterisk).

Latching policy (what we tolerate):

* Before latching, packets go to the SDP address (``expected``). The first datagram
  that looks like RTP/RTCP version 2 latches its source. When ``allowed_ips`` is
  given (e.g. the SIP signalling source and the SDP c= address), only those IPs may
  latch; otherwise any source may, as NAT makes the IP unpredictable.
* After latching, packets from the latched IP are accepted from any port and the
  port follows them (a NAT rebinding keeps the IP but may change the port). Packets
  from any other IP are dropped and counted: that stops a third party injecting
  audio into the call (RTP bleed) once the real peer has spoken.

The adapter is thin: it counts, applies the policy and hands accepted datagrams to
``on_datagram`` (installed by the relay); it never creates tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

logger = logging.getLogger(__name__)

Addr = tuple[str, int]
#: Called with (datagram, source address, loop time in seconds).
DatagramHandler = Callable[[bytes, Addr, float], None]


class RtpEndpoint(asyncio.DatagramProtocol):
    """An RTP or RTCP socket with latching (see the module docstring).

    Args:
        expected: where to send before latching (from SDP); None when unknown.
        allowed_ips: IPs allowed to latch; None means any.
        min_length: shortest datagram that may latch (12 for RTP, 8 for RTCP).
    """

    def __init__(
        self,
        *,
        expected: Addr | None = None,
        allowed_ips: frozenset[str] | None = None,
        min_length: int = 12,
    ) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.expected = expected
        self.allowed_ips = allowed_ips
        self.min_length = min_length
        #: The latched source, None until the first valid packet.
        self.latched: Addr | None = None
        self.on_datagram: DatagramHandler | None = None
        #: Called once with the latched address (the leg uses it to aim RTCP).
        self.on_latch: Callable[[Addr], None] | None = None
        self.packets_received = 0
        self.packets_sent = 0
        self.dropped_foreign = 0
        self.send_errors = 0
        self._loop = asyncio.get_running_loop()

    @property
    def remote(self) -> Addr | None:
        """Where packets go now: the latched source, else the SDP address."""
        return self.latched if self.latched is not None else self.expected

    @property
    def local_address(self) -> Addr:
        """The bound (host, port)."""
        assert self.transport is not None
        sockname = self.transport.get_extra_info("sockname")
        return (sockname[0], sockname[1])

    def send(self, data: bytes) -> bool:
        """Sends one datagram to :attr:`remote`.

        Returns:
            False when there is no destination yet or the socket is closed.
        """
        remote = self.latched if self.latched is not None else self.expected
        if remote is None or self.transport is None or self.transport.is_closing():
            return False
        self.transport.sendto(data, remote)
        self.packets_sent += 1
        return True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.on_datagram = None

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable while the peer's port is not open yet is normal at
        # call set-up; keep the socket and count it.
        self.send_errors += 1
        logger.debug("RTP socket error: %s", exc)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        source: Addr = (addr[0], addr[1])
        latched = self.latched
        if latched is None:
            if len(data) < self.min_length or data[0] >> 6 != 2:
                self.dropped_foreign += 1
                return
            if self.allowed_ips is not None and source[0] not in self.allowed_ips:
                self.dropped_foreign += 1
                return
            self.latched = source
            if self.on_latch is not None:
                self.on_latch(source)
        elif source != latched:
            if source[0] != latched[0]:
                self.dropped_foreign += 1
                return
            # Same IP, new port: NAT rebinding; follow it.
            self.latched = source
        self.packets_received += 1
        handler = self.on_datagram
        if handler is not None:
            handler(data, source, self._loop.time())
