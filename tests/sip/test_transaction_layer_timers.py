"""The transaction layer's timer bookkeeping (gateway.sip.transaction_layer).

Timers are kept in one FIFO queue per timer name, with a heap for entries armed out of
their queue's order. Whatever the mix, the layer must report the earliest armed
deadline, fire due timers earliest first, and never fire a disarmed one.
"""

from __future__ import annotations

import itertools

from gateway.sip.events import Endpoint
from gateway.sip.message import Headers, Request
from gateway.sip.transaction import TransactionState
from gateway.sip.transaction_layer import TransactionLayer

LOCAL = [Endpoint("UDP", "192.0.2.1", 5060), Endpoint("TCP", "192.0.2.1", 5060)]
PEER = Endpoint("UDP", "192.0.2.20", 5060)
T1 = 0.5


def _layer() -> TransactionLayer:
    counter = itertools.count()
    return TransactionLayer(local=LOCAL, new_token=lambda: f"t{next(counter)}")


def _invite(call: int) -> Request:
    headers = Headers()
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:alice@example.com>;tag=a1")
    headers.add("To", "<sip:bob@example.net>")
    headers.add("Call-ID", f"timers-{call}@192.0.2.1")
    headers.add("CSeq", "1 INVITE")
    headers.add("Contact", "<sip:alice@192.0.2.1>")
    return Request(method="INVITE", uri="sip:bob@example.net", headers=headers)


def _sent_call_ids(layer: TransactionLayer) -> list[str]:
    """Call-IDs of the messages the layer wants sent, in order (the A retransmits)."""
    return [
        data.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
        for data, _ in layer.datagrams_to_send()
    ]


def test_timer_armed_out_of_order_fires_first():
    """A Timer A armed at T1 after another INVITE's A doubled to 2*T1 is due before
    it: the layer reports and fires it first."""
    layer = _layer()
    layer.send_request(_invite(1), PEER, 0.0)
    layer.datagrams_to_send()
    layer.handle_timer(T1)  # first A of call 1: retransmit, next A at 3*T1 = 1.5
    assert _sent_call_ids(layer) == ["timers-1@192.0.2.1"]
    layer.send_request(_invite(2), PEER, 0.6)  # its A at 1.1, before call 1's 1.5
    layer.datagrams_to_send()
    assert layer.get_timer() == 0.6 + T1
    layer.handle_timer(1.2)
    assert _sent_call_ids(layer) == ["timers-2@192.0.2.1"]
    assert layer.get_timer() == 1.5
    layer.handle_timer(2.0)
    assert _sent_call_ids(layer) == ["timers-1@192.0.2.1"]


def test_late_wakeup_fires_due_timers_earliest_first():
    """One late handle_timer fires each due retransmit in deadline order, across the
    queues and the out-of-order heap."""
    layer = _layer()
    layer.send_request(_invite(1), PEER, 0.0)
    layer.handle_timer(T1)  # call 1: next A at 1.5
    layer.send_request(_invite(2), PEER, 0.7)  # A at 1.2 (heap)
    layer.send_request(_invite(3), PEER, 0.9)  # A at 1.4 (heap)
    layer.datagrams_to_send()
    layer.handle_timer(1.6)
    assert _sent_call_ids(layer) == [
        "timers-2@192.0.2.1",
        "timers-3@192.0.2.1",
        "timers-1@192.0.2.1",
    ]


def test_disarmed_timer_neither_fires_nor_is_reported():
    """Entries of a terminated transaction stay queued until due; they are skipped."""
    layer = _layer()
    key = layer.send_request(_invite(1), PEER, 0.0)
    layer.transport_failed(PEER, 0.1)
    tx = layer.transactions.get(key)
    assert tx is None or tx.state is TransactionState.TERMINATED
    layer.datagrams_to_send()
    assert layer.get_timer() is None
    layer.handle_timer(100.0)
    assert layer.datagrams_to_send() == []


def test_timer_b_times_out_after_64_t1():
    """Fixed-duration timers (B) fire at their deadline through the FIFO queue."""
    layer = _layer()
    key = layer.send_request(_invite(1), PEER, 0.0)
    for now in (0.5, 1.5, 3.5, 7.5, 15.5, 31.5):
        layer.handle_timer(now)
    assert layer.transaction(key) is not None
    layer.handle_timer(64 * T1)
    assert layer.transaction(key) is None
    events = []
    while (event := layer.next_event()) is not None:
        events.append(type(event).__name__)
    assert events == ["TransactionTimedOut"]
