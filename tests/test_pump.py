"""CorePump (gateway/service/pump.py): when the core's timers fire.

The loop's timer is rounded up to TIMER_GRANULARITY (50 ms) so that it wakes the loop
rarely; under traffic every received batch fires the timers already due, so a timer
is late by at most the gap to the next message, not by the rounding.
"""

from __future__ import annotations

import itertools

import pytest

from gateway.b2bua import B2bua
from gateway.service.pump import TIMER_GRANULARITY, CorePump
from gateway.sip.events import Endpoint
from gateway.sip.message import Headers, Request
from gateway.sip.transaction_layer import TransactionLayer

LOCAL = [Endpoint("UDP", "127.0.0.1", 5060)]
PEER = Endpoint("UDP", "127.0.0.20", 5060)
OTHER = Endpoint("UDP", "127.0.0.21", 5060)
T1 = 0.5


def _pump() -> tuple[CorePump, list[tuple[bytes, Endpoint]]]:
    tokens = itertools.count()
    layer = TransactionLayer(local=LOCAL, new_token=lambda: f"t{next(tokens)}")
    b2bua = B2bua(layer, new_token=lambda: f"k{next(tokens)}")
    sent: list[tuple[bytes, Endpoint]] = []
    pump = CorePump(
        layer, b2bua, send=lambda data, to: sent.append((data, to)), on_call_event=_unexpected
    )
    return pump, sent


def _unexpected(event: object, now: float) -> None:
    raise AssertionError(f"unexpected call event {event!r}")


def _options() -> Request:
    headers = Headers()
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:gw@127.0.0.1>;tag=g1")
    headers.add("To", "<sip:peer@127.0.0.20>")
    headers.add("Call-ID", "pump-1@127.0.0.1")
    headers.add("CSeq", "1 OPTIONS")
    return Request(method="OPTIONS", uri="sip:peer@127.0.0.20", headers=headers)


def _retransmissions(sent: list[tuple[bytes, Endpoint]]) -> int:
    return sum(1 for data, to in sent if to == PEER and data.startswith(b"OPTIONS "))


def test_a_received_batch_fires_the_timers_due_before_the_rounded_wake_up() -> None:
    pump, sent = _pump()
    pump.layer.send_request(_options(), PEER, 0.0)
    deadline = pump.pump(0.0)
    assert _retransmissions(sent) == 1
    # Timer E at T1, the loop's wake-up rounded up from it.
    assert pump.layer.get_timer() == pytest.approx(T1)
    assert deadline is not None and T1 <= deadline < T1 + TIMER_GRANULARITY + 1e-9

    # A message from someone else arrives 1 ms after Timer E was due, before the
    # loop's timer: the batch fires Timer E (the retransmission goes out now).
    keep_alive = b"\r\n\r\n"
    pump.receive([(keep_alive, OTHER)], T1 + 0.001, None)
    assert _retransmissions(sent) == 2
    # The next Timer E (2*T1 after the first, RFC 3261 17.1.2.2) is the next deadline.
    assert pump.layer.get_timer() == pytest.approx(T1 + 0.001 + 2 * T1)


def test_a_batch_before_the_deadline_fires_nothing() -> None:
    pump, sent = _pump()
    pump.layer.send_request(_options(), PEER, 0.0)
    pump.pump(0.0)
    pump.receive([(b"\r\n\r\n", OTHER)], T1 - 0.001, None)
    assert _retransmissions(sent) == 1


def test_the_loop_wake_up_is_rounded_to_the_granularity() -> None:
    pump, sent = _pump()
    pump.layer.send_request(_options(), PEER, 0.013)
    deadline = pump.pump(0.013)
    assert deadline is not None
    ticks = deadline / TIMER_GRANULARITY
    assert ticks == pytest.approx(round(ticks))
    assert 0.013 + T1 <= deadline < 0.013 + T1 + TIMER_GRANULARITY
    # The loop's timer (Gateway._on_timer) fires the due timer at that wake-up.
    pump.handle_due(deadline)
    pump.pump(deadline)
    assert _retransmissions(sent) == 2
