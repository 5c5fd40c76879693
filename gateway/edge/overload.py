"""Load shedding: new ordinary calls refused by how far the event loop is behind.

Theory of operation
-------------------

``[overload] max_calls`` counts calls. A count cannot tell that the calls arriving
this second cost the one event loop more than it has: past that point every
message waits longer in the kernel's UDP receive queue, the queue overflows, the
kernel drops datagrams (INVITEs, but also the ACKs, BYEs and 200s of calls already
up), clients retransmit and the gateway collapses instead of refusing the excess.
This module watches the load itself and refuses the excess early and cheaply.

Rule 1 (signals). Every ``sample_interval`` the adapter
(:class:`gateway.service.server.Gateway`) gives :meth:`LoadMonitor.sample` two
figures: the loop lag (how late the heartbeat timer ran: the time a callback or a
batch of messages held the loop) and the bytes waiting in the kernel receive
queues of the UDP sockets (``SO_MEMINFO``: messages the loop has not even read). The
second is the one that sees saturation: libuv reads at most 32 datagrams per socket
per loop iteration, so a saturated loop keeps a short lag while the kernel queue
grows.

The heartbeat runs every ``sample_interval`` (10 ms) only while the load is near
a threshold: while both signals are below a quarter of theirs (:meth:`LoadMonitor.calm`)
it runs every ``calm_sample_interval`` (50 ms). Each heartbeat wakes the loop on its
own: at 100 a second an idle gateway spent 1.3-1.7 % of a core, at 20 a second
0.8-0.95 % (issue 17; under load the difference is below what ``tests/bench/ab.py``
can see). A load that rises from calm is seen at most one calm interval later: the first
heartbeat past a quarter of a threshold brings the fast sampling back, well before
Rule 2's onset delay has run.

Rule 2 (onset and hysteresis). Shedding starts when either signal has been past its
threshold for ``shed_after`` seconds, and stops when both are below half of theirs.
The onset delay keeps a transient stall from shedding: on a shared machine the
process is descheduled for tens of milliseconds now and then, and at half capacity
that alone leaves a backlog past the threshold, which the loop then drains in a few
samples. Overload keeps it there. Once shedding has stopped, it starts again at the
first sample past a threshold for ``RECENT`` seconds: the overload is still on, and
waiting out the onset each time would let the queue swing far past its threshold.
Between start and stop the state holds, and the standing queue between the two keeps
the loop busy (throughput stays at capacity) while bounding the queueing delay.

Rule 3 (what is shed). While shedding, a new ordinary INVITE (no To tag, not to an
emergency number or URN of :class:`routing.emergency.DialPlan`) is answered 503
with Retry-After (RFC 3261 21.5.4) statelessly: parsed, answered and forgotten, with
no transaction, routing or call state. Each shed call still gets its CDR row (the
adapter hands the parsed INVITE to the CDR writer: a refused call is a call, as a
403 or a 404 is), once per INVITE transaction. Everything else flows: responses,
in-dialog requests, ACK, BYE, CANCEL, OPTIONS, REGISTER and emergency calls.
Emergency INVITEs of a batch go first (:meth:`LoadShedder.classify` marks them).
While shedding, a batch is more than the event loop read: the adapter reads up to
``[overload] read_ahead`` more datagrams from the kernel queue
(``TransportManager.read_ahead``), so that an emergency INVITE, and an INVITE to
shed, queued behind other work is taken in this loop turn rather than after it.

Rule 4 (the 503's ACK). The 503 carries the To tag :attr:`LoadShedder.tag`, the same
for every shed request (RFC 3261 8.2.6.2 asks a stateless UAS to generate the same
tag for a retransmission; no dialog ever exists with it). The client's ACK for it
(RFC 3261 17.1.1.3) carries that tag and is dropped before parsing
(:meth:`LoadShedder.absorbs`); a retransmitted INVITE is shed again or, once the
load has passed, taken as a new call.

Rule 5 (RFC 7339). An upstream that advertises ``oc`` in its Via is told the loss
to apply (:meth:`LoadMonitor.feedback`): per window, the share of new calls it
should hold back so that what reaches the gateway is what it admitted,
``p' = 1 - (1 - p) * admitted / arrived``; a window without shedding lowers the loss
by ``LOSS_DECREASE`` (additive decrease, so the clients probe their way back up).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum

from gateway.edge.guard import OverloadFeedback, peek, published_feedback
from gateway.sip.builders import build_response
from gateway.sip.errors import ParseError
from gateway.sip.events import Endpoint, TransactionKey
from gateway.sip.message import Request, Response
from gateway.sip.parser import parse_message
from gateway.sip.transaction_layer import (
    response_destination,
    server_transaction_key,
    stamp_received,
)
from routing.emergency import DialPlan

__all__ = [
    "CALM_RATIO",
    "CLEAR_RATIO",
    "LOSS_DECREASE",
    "RECENT",
    "LoadMonitor",
    "LoadShedder",
    "OverloadState",
]

#: Shedding stops when every signal is below this share of its threshold (Rule 2).
CLEAR_RATIO = 0.5
#: Below this share of every threshold the load is calm and the heartbeat slows down
#: (Rule 1): far enough below that the load must grow fourfold before shedding.
CALM_RATIO = 0.25
#: Seconds after shedding stopped during which it restarts without the onset delay.
RECENT = 1.0
#: Seconds after the last shed 503 during which ACKs are still absorbed (Rule 4): a
#: client ACKs a 503 when it arrives, and a stateless 503 is never retransmitted, so
#: 64*T1 is ample. An ACK later than that reaches the core, which drops it (no
#: transaction, no dialog).
ACK_WINDOW = 32.0
#: Loss fraction taken off the RFC 7339 feedback per window without shedding.
LOSS_DECREASE = 0.1
#: Prefix of the shed 503's To tag; ``new_token`` tags are hex, so none starts so.
SHED_TAG_PREFIX = "shed."


class OverloadState(StrEnum):
    """Whether new ordinary INVITEs are being shed (``voipgw_overload_state``)."""

    NORMAL = "normal"
    SHEDDING = "shedding"


class LoadMonitor:
    """Rules 1, 2 and 5: the shedding state from lag and queue samples, and the
    RFC 7339 loss to report (pure: every input carries its ``now``).

    Args:
        shed_lag: loop lag that starts shedding, in seconds.
        shed_receive_queue: kernel receive-queue bytes that start shedding.
        shed_after: seconds a signal must stay past its threshold before shedding
            starts (Rule 2).
        feedback_interval: seconds per RFC 7339 measurement window.
        validity: seconds a client may apply one feedback (``oc-validity``).
        seq_offset: added to ``now`` to form ``oc-seq`` (``time.time() -
            loop.time()``, so that it keeps increasing across restarts).
    """

    def __init__(
        self,
        *,
        shed_lag: float,
        shed_receive_queue: int,
        shed_after: float = 0.0,
        feedback_interval: float = 1.0,
        validity: float = 2.0,
        seq_offset: float = 0.0,
    ) -> None:
        self.shed_lag = shed_lag
        self.shed_receive_queue = shed_receive_queue
        self.shed_after = shed_after
        self.feedback_interval = feedback_interval
        self.validity = validity
        self.seq_offset = seq_offset
        self.state = OverloadState.NORMAL
        #: the latest samples, for the log line and the metrics
        self.lag = 0.0
        self.receive_queue = 0
        self.loss = 0.0
        #: since when a signal has been past its threshold (None: neither is)
        self._over_since: float | None = None
        self._stopped_at = -math.inf
        self._window_start: float | None = None
        self._admitted = 0
        self._shed = 0
        self._feedback = OverloadFeedback(loss=0, validity=validity, seq=seq_offset)

    @property
    def shedding(self) -> bool:
        return self.state is OverloadState.SHEDDING

    def sample(self, now: float, *, lag: float, receive_queue: int) -> bool:
        """Takes one sample of the signals (Rule 1) and applies Rule 2.

        Args:
            now: current time in seconds.
            lag: how late the heartbeat ran, in seconds.
            receive_queue: bytes waiting in the kernel's UDP receive queues.

        Returns:
            True if the state changed.
        """
        self.lag, self.receive_queue = lag, receive_queue
        self._roll(now)
        if self.state is OverloadState.NORMAL:
            if lag <= self.shed_lag and receive_queue <= self.shed_receive_queue:
                self._over_since = None
                return False
            if self._over_since is None:
                # From this sample, not from when a late heartbeat was due: one long
                # stall is still one sample.
                self._over_since = now
            if now - self._over_since < self.shed_after and now - self._stopped_at > RECENT:
                return False
            self.state = OverloadState.SHEDDING
            return True
        if (
            lag < self.shed_lag * CLEAR_RATIO
            and receive_queue < self.shed_receive_queue * CLEAR_RATIO
        ):
            self.state = OverloadState.NORMAL
            self._over_since = None
            self._stopped_at = now
            return True
        return False

    def calm(self) -> bool:
        """Whether the latest samples are far below both thresholds (Rule 1): not
        shedding, no signal past its threshold waiting out the onset, lag and queue
        below ``CALM_RATIO`` of theirs. The adapter then samples less often."""
        return (
            self.state is OverloadState.NORMAL
            and self._over_since is None
            and self.lag <= self.shed_lag * CALM_RATIO
            and self.receive_queue <= self.shed_receive_queue * CALM_RATIO
        )

    def new_call(self, now: float, *, shed: bool) -> None:
        """Counts a new call: admitted (routed) or shed, for Rule 5."""
        self._roll(now)
        if shed:
            self._shed += 1
        else:
            self._admitted += 1

    def feedback(self, now: float) -> OverloadFeedback:
        """The RFC 7339 feedback to send at ``now`` (closing finished windows first)."""
        self._roll(now)
        return self._feedback

    def _roll(self, now: float) -> None:
        start = self._window_start
        if start is None:
            self._window_start = now
            return
        if now - start < self.feedback_interval:
            return
        arrived = self._admitted + self._shed
        if self._shed and arrived:
            self.loss = 1.0 - (1.0 - self.loss) * self._admitted / arrived
        else:
            self.loss = max(0.0, self.loss - LOSS_DECREASE)
        self._admitted = self._shed = 0
        self._window_start = now
        self._feedback = published_feedback(
            self._feedback, self.loss, validity=self.validity, seq=now + self.seq_offset
        )


class LoadShedder:
    """Rules 3 and 4: which received messages are shed, and their 503.

    Args:
        monitor: the shedding state.
        dial_plan: what counts as an emergency Request-URI (the guard's and the
            router's own, so that the three agree).
        retry_after: Retry-After of the 503, in seconds.
        tag: the To tag of every shed 503 (from the adapter's token source).
    """

    def __init__(
        self, monitor: LoadMonitor, dial_plan: DialPlan, *, retry_after: int, tag: str
    ) -> None:
        self.monitor = monitor
        self.dial_plan = dial_plan
        self.retry_after = str(retry_after)
        self.tag = SHED_TAG_PREFIX + tag
        #: (Request-URI, source) -> whether a new INVITE may be an emergency callback
        #: (gateway.service.router.CallRouter.may_be_callback), taken like an
        #: emergency INVITE; set by the app once its router exists.
        self.may_be_callback: Callable[[str, Endpoint], bool] = _no_callback
        self._ack_tag = f"tag={self.tag}".encode()
        #: shed 503s and absorbed ACKs, for tests and the log
        self.shed = 0
        self.absorbed = 0
        #: when the last 503 was sent (loop seconds)
        self._last_shed_at = -math.inf

    def engaged(self, now: float) -> bool:
        """Whether received messages must go through Rules 3 and 4 at ``now``: while
        shedding, and for :data:`ACK_WINDOW` seconds after the last shed 503 (its ACK
        is still to be absorbed). Otherwise nothing is shed nor absorbed, and the
        adapter hands its batches to the compiled core as they are (its per-message
        look here was ~1 us of interpreted code per datagram in normal operation)."""
        return self.monitor.shedding or now - self._last_shed_at < ACK_WINDOW

    def absorbs(self, data: bytes) -> bool:
        """Rule 4: True for the ACK of a shed 503 (drop it unparsed)."""
        if data.startswith(b"ACK ") and self._ack_tag in data:
            self.absorbed += 1
            return True
        return False

    def classify(self, data: bytes, source: Endpoint) -> bool | None:
        """Rule 3 for one received message while shedding.

        Returns:
            True: a new ordinary INVITE, to shed; False: a new emergency INVITE (or
            one that may be an emergency callback), to take first; None: anything
            else, to take in order.
        """
        if not data.startswith(b"INVITE "):
            return None
        request = peek(data)
        if request is None or request.to_tagged:
            return None
        uri = request.uri.decode("latin-1")
        if self.dial_plan.match(uri) is not None:
            return False
        return not self.may_be_callback(uri, source)

    def reject(
        self,
        data: bytes,
        source: Endpoint,
        now: float,
        known: Callable[[TransactionKey], object | None],
    ) -> tuple[Response, Endpoint, Request] | None:
        """The stateless 503 of a shed INVITE, where it goes (RFC 3261 8.2.6,
        18.2.2) and the INVITE as parsed (for its CDR); or None for the core to
        handle it: an INVITE that does not parse (the core answers its 400) or a
        retransmission of one the core already holds a transaction for (RFC 3261
        17.2.1: the transaction absorbs it; a 503 would refuse a call being set up).

        Args:
            data: the INVITE as received.
            source: where it came from.
            now: current time in seconds.
            known: the core's server transaction for a key, or None
                (``TransactionLayer.transaction``).
        """
        try:
            request = parse_message(data, stream=source.reliable)
            if not isinstance(request, Request):
                return None
            # RFC 3261 18.2.1 / RFC 3581 4: received and rport as for any request,
            # so the response's Via tells the client where it was seen.
            via = stamp_received(request, source)
            if known(server_transaction_key(request, via)) is not None:
                return None
        except ParseError:
            return None
        response = build_response(
            request, 503, to_tag=self.tag, headers=(("Retry-After", self.retry_after),)
        )
        self.shed += 1
        self._last_shed_at = now
        self.monitor.new_call(now, shed=True)
        return response, response_destination(via, source), request


def _no_callback(request_uri: str, source: Endpoint) -> bool:
    """No router (no routing data): no INVITE is a callback."""
    return False
