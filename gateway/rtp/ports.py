"""RTP port allocation: even RTP ports with RTCP on port + 1 (RFC 3550 section 11).

The allocator hands out ports round-robin through the configured range instead of
reusing the lowest free port: a port freed at the end of one call then stays idle
for a whole cycle, so late packets of the old call do not latch the new call's
socket (rtpengine does the same). Each allocation binds both sockets at once; a port
another process holds (EADDRINUSE) is skipped.
"""

from __future__ import annotations

import errno
import ipaddress
import socket


class PortsExhaustedError(RuntimeError):
    """No even/odd port pair in the range could be bound."""


class PortAllocator:
    """Hands out RTP/RTCP port pairs from ``[range_start, range_end]``.

    Args:
        range_start: lowest port (rounded up to even).
        range_end: highest port; the last pair must fit (RTCP = RTP + 1 <= range_end).

    Raises:
        ValueError: the range holds no pair or lies outside 1024-65535.
    """

    def __init__(self, range_start: int, range_end: int) -> None:
        first = range_start + (range_start % 2)
        if not 1024 <= range_start <= range_end <= 65535 or first + 1 > range_end:
            raise ValueError(f"RTP port range {range_start}-{range_end} holds no even/odd pair")
        self.range_start = first
        self.range_end = range_end
        self._pairs = (range_end - first + 1) // 2
        self._next = 0
        self._owners: dict[int, str] = {}

    @property
    def capacity(self) -> int:
        """Number of RTP/RTCP pairs in the range."""
        return self._pairs

    @property
    def in_use(self) -> frozenset[int]:
        """RTP ports currently allocated."""
        return frozenset(self._owners)

    def leaked(self) -> dict[int, str]:
        """Allocated RTP ports and their owner labels (empty when every call is closed)."""
        return dict(self._owners)

    def bind_pair(self, host: str, owner: str = "") -> tuple[socket.socket, socket.socket]:
        """Binds a free RTP port and port + 1 on ``host``.

        Args:
            host: local IPv4 or IPv6 address ("0.0.0.0" / "::" for any).
            owner: label kept for :meth:`leaked` (e.g. Call-ID and leg).

        Returns:
            (rtp socket, rtcp socket), non-blocking UDP sockets.

        Raises:
            PortsExhaustedError: every pair is allocated or held by another process.
            OSError: binding failed for another reason (bad address).
        """
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        for _ in range(self._pairs):
            port = self.range_start + 2 * self._next
            self._next = (self._next + 1) % self._pairs
            if port in self._owners:
                continue
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtcp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtp.bind((host, port))
                rtcp.bind((host, port + 1))
            except OSError as exc:
                rtp.close()
                rtcp.close()
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            rtp.setblocking(False)
            rtcp.setblocking(False)
            self._owners[port] = owner
            return rtp, rtcp
        raise PortsExhaustedError(
            f"no free RTP port pair in {self.range_start}-{self.range_end} on {host}"
        )

    def release(self, port: int) -> None:
        """Frees a pair after its sockets are closed (idempotent)."""
        self._owners.pop(port, None)
