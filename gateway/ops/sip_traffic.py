"""The per-message SIP counters, compiled with the core.

The transaction layer reports every message it receives and sends to a
:class:`~gateway.sip.transaction_layer.SipObserver`, four or five times per message
pair. :class:`SipTraffic` is that observer: it counts in plain dicts of label values,
and ``gateway.ops.metrics.SipTrafficCollector`` exports the dicts at scrape time as
``voipgw_sip_requests``, ``voipgw_sip_responses``, ``voipgw_sip_retransmissions`` and
``voipgw_transaction_duration_seconds``.

Why a module of its own: mypyc compiles it with the core (setup.py), so the layer's
calls are C calls and counting one message is a few dict operations; interpreted, the
chain of helper calls it replaces cost about 1 us per message. It imports only the
standard library: the compiled build type-checks what it imports and may run before
prometheus-client is installed.

Counting is done by the event loop only; the collector may read the dicts from
another thread, copying each in one C call before iterating it.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable

from gateway.sip.parser import KNOWN_METHODS

__all__ = ["SIP_METHODS", "TRANSACTION_BUCKETS", "SipTraffic", "normalize_method", "status_label"]

#: The methods counted by name: the SIP core's known methods (RFC 3261 and the
#: extensions a business gateway sees). Methods are case-sensitive (RFC 3261 section
#: 7.1), so "invite" is "other".
SIP_METHODS = KNOWN_METHODS

#: Bucket bounds in seconds. Non-INVITE transactions end by Timer F (64*T1 = 32 s);
#: INVITE transactions can last as long as the callee rings.
TRANSACTION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    4.0,
    8.0,
    16.0,
    32.0,
    64.0,
    128.0,
)

#: Label values of one series -> its count.
Counts = dict[tuple[str, ...], float]


def normalize_method(method: str | bytes) -> str:
    """Maps a SIP method to its label value: the method if known, else "other"."""
    if isinstance(method, bytes):
        method = method.decode("ascii", "replace")
    return method if method in SIP_METHODS else "other"


def status_label(status: int) -> str:
    """Maps a SIP status code to its label value.

    Status codes are a bounded set (RFC 3261 section 21: 100-699), so the exact code is
    kept: operators need to tell 486 from 503. Anything outside 100-699 is "other".
    """
    return str(status) if 100 <= status <= 699 else "other"


class SipTraffic:
    """Counts SIP messages by label values (a ``SipObserver``).

    Args:
        on_parse_error: counts a message that did not parse, by its ``status_hint``
            (rare: passed on to the labelled Prometheus counter).
    """

    def __init__(self, on_parse_error: Callable[[int], None]) -> None:
        self.on_parse_error = on_parse_error
        #: (method, direction) -> requests
        self.requests: Counts = {}
        #: (code, method, direction) -> responses
        self.responses: Counts = {}
        #: (method,) -> retransmissions
        self.retransmissions: Counts = {}
        #: (id of the counts dict, label values) -> when the series was first counted
        self.created: dict[tuple[int, tuple[str, ...]], float] = {}
        #: method -> per-bucket counts (not cumulative; the last is +Inf) + sum
        self.durations: dict[str, list[float]] = {}

    def _increment(self, counts: Counts, key: tuple[str, ...]) -> None:
        count = counts.get(key)
        if count is None:
            self.created[(id(counts), key)] = time.time()
            count = 0.0
        counts[key] = count + 1.0

    def sip_request_in(self, method: str | bytes) -> None:
        self._increment(self.requests, (normalize_method(method), "in"))

    def sip_request_out(self, method: str | bytes) -> None:
        self._increment(self.requests, (normalize_method(method), "out"))

    def sip_response_in(self, status: int, method: str | bytes) -> None:
        """Counts a received response; ``method`` is the CSeq method."""
        self._increment(self.responses, (status_label(status), normalize_method(method), "in"))

    def sip_response_out(self, status: int, method: str | bytes) -> None:
        """Counts a sent response; ``method`` is the CSeq method."""
        self._increment(self.responses, (status_label(status), normalize_method(method), "out"))

    def sip_retransmission(self, method: str | bytes) -> None:
        self._increment(self.retransmissions, (normalize_method(method),))

    def parse_error_from(self, status_hint: int) -> None:
        self.on_parse_error(status_hint)

    def transaction_finished(self, method: str | bytes, seconds: float) -> None:
        label = normalize_method(method)
        buckets = self.durations.get(label)
        if buckets is None:
            buckets = self.durations[label] = [0.0] * (len(TRANSACTION_BUCKETS) + 2)
        # Prometheus buckets are "less than or equal": bisect_left finds the first
        # bound >= seconds; index len(bounds) is +Inf, and the last slot is the sum.
        buckets[bisect.bisect_left(TRANSACTION_BUCKETS, seconds)] += 1.0
        buckets[-1] += seconds
