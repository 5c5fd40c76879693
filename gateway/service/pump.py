"""The per-message part of the gateway's asyncio adapter, compiled with the core.

Every received message, timer and routing decision ends in the same few steps: feed
the transaction layer, move its events to the B2BUA, hand the B2BUA's events to the
gateway, transmit what the core wants sent and find the next deadline (aioquic's
``QuicConnectionProtocol`` does the same after each input). :class:`CorePump` does
these steps; :class:`gateway.service.server.Gateway` keeps what happens once per
call (routing, services, media, call sinks) and the asyncio plumbing.

Why a module of its own: it runs per message, 14 times per basic call, and mypyc
compiles it together with ``gateway/sip`` and ``gateway/b2bua`` (setup.py), so its
calls into the core are C calls. It therefore imports nothing but the core and the
standard library: the compiled build type-checks only what it imports, and the
build may run before the gateway's other dependencies are installed (Makefile).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from gateway.b2bua.core import B2bua
from gateway.b2bua.events import B2buaEvent
from gateway.sip.events import Endpoint
from gateway.sip.transaction_layer import TransactionLayer

#: Seconds to which timer wake-ups are rounded up (see CorePump.next_deadline).
TIMER_GRANULARITY = 0.05

#: Transmits one message (``TransportManager.send``).
Send = Callable[[bytes, Endpoint], None]
#: Receives each event of the B2BUA, with ``now`` (``Gateway._on_call_event``).
OnCallEvent = Callable[[B2buaEvent, float], None]


class IngressGuard(Protocol):
    """Decides, before parsing, whether a received message may enter the core
    (rate limits, bans, scanner filtering: gateway.edge.guard). It must admit emergency
    calls and in-dialog traffic of calls in progress."""

    def admit(self, data: bytes, source: Endpoint, now: float) -> bool: ...


class CorePump:
    """Feeds the sans-IO core and moves its outputs.

    Args:
        layer: the transaction layer.
        b2bua: the B2BUA on top of it.
        send: transmits a message the core wants sent.
        on_call_event: receives each B2BUA event (route needed, call ended, ...).
    """

    def __init__(
        self, layer: TransactionLayer, b2bua: B2bua, *, send: Send, on_call_event: OnCallEvent
    ) -> None:
        self.layer = layer
        self.b2bua = b2bua
        self.send = send
        self.on_call_event = on_call_event

    def receive(
        self, batch: list[tuple[bytes, Endpoint]], now: float, guard: IngressGuard | None
    ) -> float | None:
        """Fires the timers due, feeds received messages to the core (those the guard
        admits), then pumps.

        Args:
            batch: (raw message, source) in the order received.
            now: current time in seconds.
            guard: admission control in front of the parser, or None.

        Returns:
            The next wake-up, as :meth:`next_deadline`.
        """
        layer = self.layer
        self.handle_due(now)
        for data, source in batch:
            if guard is not None and not guard.admit(data, source, now):
                continue
            layer.receive_message(data, source, now)
        return self.pump(now)

    def handle_due(self, now: float) -> None:
        """Fires the core's timers due by ``now``: the loop's timer calls it, and so
        does every received batch (see :meth:`next_deadline`)."""
        layer, b2bua = self.layer, self.b2bua
        deadline = layer.get_timer()
        if deadline is not None and deadline <= now:
            layer.handle_timer(now)
        deadline = b2bua.get_timer()
        if deadline is not None and deadline <= now:
            b2bua.handle_timer(now)

    def pump(self, now: float) -> float | None:
        """Moves the core's events to their consumers and transmits its messages.

        Returns:
            The next wake-up, as :meth:`next_deadline`.
        """
        layer, b2bua = self.layer, self.b2bua
        while True:
            event = layer.next_event()
            if event is not None:
                b2bua.handle_sip_event(event, now)
                continue
            call_event = b2bua.next_event()
            if call_event is None:
                break
            self.on_call_event(call_event, now)
        send = self.send
        for data, destination in layer.datagrams_to_send():
            send(data, destination)
        return self.next_deadline()

    def next_deadline(self) -> float | None:
        """The core's next deadline rounded up to TIMER_GRANULARITY, or None.

        Rounded so that timers due close together are handled in one wake-up; SIP
        timers are multiples of T1 (500 ms), so 50 ms of lateness is immaterial (a
        tenth of T1; Kamailio's tm ticks every 62.5 ms). Under traffic a timer is
        not even that late: every received batch first fires the timers due
        (:meth:`receive`), so the loop's own timer mostly finds nothing left to do.
        Why not finer: each wake-up of the loop costs CPU of its own (a context switch
        and cold caches, more than the timers it fires); at 500 calls/s the 100
        wake-ups a second of a 10 ms rounding took about 5 % of the gateway's CPU
        (issue 17, ``tests/bench/interleave.py``: 0.955 with 50 ms).
        """
        layer_deadline, b2bua_deadline = self.layer.get_timer(), self.b2bua.get_timer()
        if layer_deadline is None:
            deadline = b2bua_deadline
        elif b2bua_deadline is None:
            deadline = layer_deadline
        else:
            deadline = min(layer_deadline, b2bua_deadline)
        if deadline is None:
            return None
        return math.ceil(deadline / TIMER_GRANULARITY) * TIMER_GRANULARITY
