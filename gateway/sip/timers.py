"""SIP timer values (RFC 3261 section 17 and table 4 of appendix A; RFC 6026).

Timers are inputs to the transaction state machines: the core only reports the next
deadline (``get_timer``) and the adapter calls ``handle_timer(now)`` when it passes.
All values are in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class SipTimers:
    """The three base timers from which RFC 3261 derives the others.

    Attributes:
        t1: RTT estimate, in seconds (RFC 3261 default 0.5).
        t2: maximum retransmit interval for non-INVITE requests and INVITE responses,
            in seconds (default 4).
        t4: maximum duration a message will remain in the network, in seconds
            (default 5).
        timer_c: proxy/B2BUA INVITE transaction timeout after a provisional response
            (RFC 3261 16.6 step 11: "MUST be greater than 3 minutes"), in seconds.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_c: float = 180.0

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError("SIP timers need 0 < T1 <= T2")
        if self.t4 <= 0:
            raise ValueError("SIP timer T4 must be positive")

    @property
    def timer_a(self) -> float:
        """INVITE request retransmit interval, initially T1 (doubles each time)."""
        return self.t1

    @property
    def timer_b(self) -> float:
        """INVITE client transaction timeout: 64*T1."""
        return 64 * self.t1

    def timer_d(self, reliable: bool) -> float:
        """Wait time for response retransmits: > 32 s for UDP, 0 for reliable."""
        return 0.0 if reliable else max(32.0, 64 * self.t1)

    @property
    def timer_e(self) -> float:
        """Non-INVITE request retransmit interval, initially T1."""
        return self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE client transaction timeout: 64*T1."""
        return 64 * self.t1

    @property
    def timer_g(self) -> float:
        """INVITE response retransmit interval, initially T1."""
        return self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for ACK receipt: 64*T1."""
        return 64 * self.t1

    def timer_i(self, reliable: bool) -> float:
        """Wait time for ACK retransmits: T4 for UDP, 0 for reliable."""
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        """Wait time for non-INVITE request retransmits: 64*T1 for UDP, 0 reliable."""
        return 0.0 if reliable else 64 * self.t1

    def timer_k(self, reliable: bool) -> float:
        """Wait time for non-INVITE response retransmits: T4 for UDP, 0 reliable."""
        return 0.0 if reliable else self.t4

    @property
    def timer_l(self) -> float:
        """RFC 6026: wait time for retransmitted INVITEs after a 2xx: 64*T1."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """RFC 6026: wait time for retransmitted 2xx responses: 64*T1."""
        return 64 * self.t1
