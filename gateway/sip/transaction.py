"""The four RFC 3261 transaction state machines (section 17), plus RFC 6026 Accepted.

Theory of operation
-------------------
Rule 1: a transaction is a state machine whose transitions are written as a table,
``{(state, input): (action, next_state)}``. An input that is not in the table is an
error: a :class:`LocalProtocolError` when the TU asked for it (sending a provisional
after a final, say), and in every case the machine goes to TERMINATED. Inputs the
network can produce in any state (retransmissions, late provisionals) are all in the
tables, mostly as "absorb", so a peer can never terminate our transactions by
misbehaving.

Rule 2: timers are inputs. A transaction keeps its deadlines in ``timers`` (name ->
absolute time in seconds); the transaction layer reports the earliest one to the
adapter and feeds ``TIMER_x`` back when it passes. Arming a timer replaces its
deadline and leaving a state disarms the timers of that state, so a stale deadline can
never fire.

Rule 3: side effects go through the owning layer (``_transmit``, ``_emit``), which
collects them as outputs; nothing here does I/O or reads a clock.

The figures of RFC 3261 17.1.1.2 (INVITE client), 17.1.2.2 (non-INVITE client),
17.2.1 (INVITE server) and 17.2.2 (non-INVITE server) are the tables below, with the
RFC 6026 section 7.1/7.2 corrections: a 2xx moves an INVITE transaction to ACCEPTED
(Timer M client side, Timer L server side) instead of TERMINATED, so 2xx
retransmissions and the ACK are passed to the TU rather than treated as new requests.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Final

from gateway.sip.errors import LocalProtocolError
from gateway.sip.events import (
    Endpoint,
    ResponseReceived,
    SipEvent,
    TransactionKey,
    TransactionTimedOut,
    TransportFailed,
)
from gateway.sip.message import Headers, Request, Response

if TYPE_CHECKING:
    from gateway.sip.timers import SipTimers


class TransactionState(enum.Enum):
    # Members are singletons, so identity is their equality: the C hash of object
    # instead of Enum's interpreted hash(self._name_), paid on every transition lookup.
    __hash__ = object.__hash__

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class TransactionInput(enum.Enum):
    # As TransactionState: the C identity hash.
    __hash__ = object.__hash__

    # From the network
    REQUEST = "request retransmission"
    ACK = "ACK"
    RESPONSE_1XX = "1xx"
    RESPONSE_2XX = "2xx"
    RESPONSE_3XX_6XX = "300-699"
    # From the TU
    SEND_1XX = "TU 1xx"
    SEND_2XX = "TU 2xx"
    SEND_3XX_6XX = "TU 300-699"
    # Timers
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    # From the transport
    TRANSPORT_ERROR = "transport error"


S = TransactionState
I = TransactionInput  # noqa: E741 - short alias keeps the tables readable

#: The method a state's entry runs, if the machine has one: ``_on_<state>``. Spelled
#: once here: ``state.name`` is Enum's interpreted property, and building the name on
#: every transition cost more than the entry actions themselves.
_ENTRY_ACTIONS: dict[TransactionState, str] = {
    state: f"_on_{state.name.lower()}" for state in TransactionState
}

#: Inputs that come from the TU; a missing table entry for these is the TU's bug.
_TU_INPUTS = frozenset({I.SEND_1XX, I.SEND_2XX, I.SEND_3XX_6XX})

Transition = tuple[str | None, TransactionState]


def response_input(status: int) -> TransactionInput:
    """Maps a status code to the FSM input its response is."""
    if status < 200:
        return I.RESPONSE_1XX
    if status < 300:
        return I.RESPONSE_2XX
    return I.RESPONSE_3XX_6XX


def send_input(status: int) -> TransactionInput:
    """Maps a status code the TU sends to the FSM input."""
    if status < 200:
        return I.SEND_1XX
    if status < 300:
        return I.SEND_2XX
    return I.SEND_3XX_6XX


class TransactionOwner:
    """What a transaction needs from the layer that owns it (its output sinks)."""

    timers: SipTimers

    def _transmit(self, data: bytes, destination: Endpoint) -> None:
        raise NotImplementedError

    def _emit(self, event: SipEvent) -> None:
        raise NotImplementedError

    def _arm(self, tx: Transaction, name: str, deadline: float) -> None:
        raise NotImplementedError


class Transaction:
    """State shared by the four machines.

    Attributes:
        key: the transaction's identity.
        request: the request that created it.
        destination: where requests (client) or responses (server) are sent.
        state: current state.
        timers: armed timers, name -> absolute deadline in seconds.
        interval: current retransmit interval (Timers A, E, G), in seconds.
        created_at: when the transaction started, in seconds (loop clock).
    """

    TRANSITIONS: ClassVar[dict[tuple[TransactionState, TransactionInput], Transition]] = {}
    INITIAL: ClassVar[TransactionState]

    __slots__ = (
        "created_at",
        "destination",
        "interval",
        "key",
        "owner",
        "request",
        "state",
        "timers",
        "wire",
    )

    def __init__(
        self,
        owner: TransactionOwner,
        key: TransactionKey,
        request: Request,
        destination: Endpoint,
        now: float,
    ) -> None:
        self.owner = owner
        self.key = key
        self.request = request
        self.destination = destination
        self.state = self.INITIAL
        self.timers: dict[str, float] = {}
        self.interval = owner.timers.t1
        self.created_at = now
        #: bytes last sent (request for clients, last response for servers)
        self.wire = b""

    @property
    def reliable(self) -> bool:
        return self.destination.reliable

    @property
    def terminated(self) -> bool:
        return self.state is S.TERMINATED

    def handle(
        self, event: TransactionInput, now: float, message: Request | Response | None = None
    ) -> None:
        """Feeds one input to the machine.

        Args:
            event: the input.
            now: current time in seconds.
            message: the message that is the input, if any.

        Raises:
            LocalProtocolError: the TU sent something the state does not allow (the
                transaction is terminated before raising).
        """
        transition = self.TRANSITIONS.get((self.state, event))
        if transition is None:
            previous = self.state
            self._enter(S.TERMINATED, now)
            if event in _TU_INPUTS:
                raise LocalProtocolError(
                    f"{type(self).__name__}: {event.value} not allowed in {previous.value}",
                    status_hint=500,
                )
            return
        action, next_state = transition
        if action is not None:
            getattr(self, action)(now, message)
        if next_state is not self.state:
            self._enter(next_state, now)

    def _enter(self, state: TransactionState, now: float) -> None:
        self.state = state
        self.timers.clear()
        entry = getattr(self, _ENTRY_ACTIONS[state], None)
        if entry is not None:
            entry(now)

    def _arm(self, name: str, delay: float, now: float) -> None:
        deadline = now + delay
        self.timers[name] = deadline
        self.owner._arm(self, name, deadline)

    def _send_wire(self, now: float, message: object = None) -> None:
        self.owner._transmit(self.wire, self.destination)

    def _absorb(self, now: float, message: object = None) -> None:
        """Retransmissions and late messages that the RFC says to discard."""


# --------------------------------------------------------------------------- clients


class ClientTransaction(Transaction):
    __slots__ = ()

    def start(self, now: float) -> None:
        """Sends the request and arms the state's timers."""
        self.wire = self.request.serialize()
        self.owner._transmit(self.wire, self.destination)
        self._enter(self.INITIAL, now)

    def _pass_response(self, now: float, message: object = None) -> None:
        assert isinstance(message, Response)
        self.owner._emit(
            ResponseReceived(response=message, source=self.destination, transaction=self.key)
        )

    def _report_timeout(self, now: float, message: object = None) -> None:
        timer = "B" if self.key.method == "INVITE" else "F"
        self.owner._emit(
            TransactionTimedOut(transaction=self.key, request=self.request, timer=timer)
        )

    def _report_transport_error(self, now: float, message: object = None) -> None:
        self.owner._emit(TransportFailed(transaction=self.key, request=self.request))


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 17.1.1 with the RFC 6026 Accepted state."""

    INITIAL = S.CALLING

    TRANSITIONS = {
        (S.CALLING, I.TIMER_A): ("_retransmit", S.CALLING),
        (S.CALLING, I.TIMER_B): ("_report_timeout", S.TERMINATED),
        (S.CALLING, I.RESPONSE_1XX): ("_pass_response", S.PROCEEDING),
        (S.CALLING, I.RESPONSE_2XX): ("_pass_response", S.ACCEPTED),
        (S.CALLING, I.RESPONSE_3XX_6XX): ("_ack_and_pass", S.COMPLETED),
        (S.CALLING, I.TRANSPORT_ERROR): ("_report_transport_error", S.TERMINATED),
        (S.PROCEEDING, I.RESPONSE_1XX): ("_pass_response", S.PROCEEDING),
        (S.PROCEEDING, I.RESPONSE_2XX): ("_pass_response", S.ACCEPTED),
        (S.PROCEEDING, I.RESPONSE_3XX_6XX): ("_ack_and_pass", S.COMPLETED),
        (S.PROCEEDING, I.TRANSPORT_ERROR): ("_report_transport_error", S.TERMINATED),
        # 17.1.1.2: "Any retransmissions of the final response that are received
        # while in the Completed state MUST cause the ACK to be re-passed".
        (S.COMPLETED, I.RESPONSE_3XX_6XX): ("_resend_ack", S.COMPLETED),
        (S.COMPLETED, I.RESPONSE_1XX): ("_absorb", S.COMPLETED),
        (S.COMPLETED, I.RESPONSE_2XX): ("_absorb", S.COMPLETED),
        (S.COMPLETED, I.TRANSPORT_ERROR): (None, S.TERMINATED),
        (S.COMPLETED, I.TIMER_D): (None, S.TERMINATED),
        # RFC 6026 7.2: 2xx retransmissions in Accepted go to the TU.
        (S.ACCEPTED, I.RESPONSE_2XX): ("_pass_response", S.ACCEPTED),
        (S.ACCEPTED, I.RESPONSE_1XX): ("_absorb", S.ACCEPTED),
        (S.ACCEPTED, I.RESPONSE_3XX_6XX): ("_absorb", S.ACCEPTED),
        (S.ACCEPTED, I.TRANSPORT_ERROR): ("_absorb", S.ACCEPTED),
        (S.ACCEPTED, I.TIMER_M): (None, S.TERMINATED),
    }

    def __init__(
        self,
        owner: TransactionOwner,
        key: TransactionKey,
        request: Request,
        destination: Endpoint,
        now: float,
        build_ack: Callable[[Request, Response], Request],
    ) -> None:
        super().__init__(owner, key, request, destination, now)
        self._build_ack = build_ack
        self.ack: bytes | None = None

    __slots__ = ("_build_ack", "ack")

    def _on_calling(self, now: float) -> None:
        # 17.1.1.2: Timer A only for unreliable transports; Timer B always.
        if not self.reliable:
            self._arm("A", self.interval, now)
        self._arm("B", self.owner.timers.timer_b, now)

    def _on_completed(self, now: float) -> None:
        self._arm("D", self.owner.timers.timer_d(self.reliable), now)

    def _on_accepted(self, now: float) -> None:
        # RFC 6026 7.2: in Accepted the transaction only hands 2xx retransmissions to
        # the TU; the request is never sent again, so its bytes and body go now
        # rather than after Timer M (64*T1): memory per call set-up stays small.
        self.wire = b""
        self.request = slim_request(self.request)
        self._arm("M", self.owner.timers.timer_m, now)

    def _retransmit(self, now: float, message: object = None) -> None:
        self.owner._transmit(self.wire, self.destination)
        # 17.1.1.2: "the client transaction MUST reset the timer with a value of 2*T1"
        self.interval *= 2
        self._arm("A", self.interval, now)

    def _ack_and_pass(self, now: float, message: object = None) -> None:
        assert isinstance(message, Response)
        # 17.1.1.3: the ACK for a non-2xx is built by the transaction itself.
        self.ack = self._build_ack(self.request, message).serialize()
        self.owner._transmit(self.ack, self.destination)
        self._pass_response(now, message)

    def _resend_ack(self, now: float, message: object = None) -> None:
        if self.ack is not None:
            self.owner._transmit(self.ack, self.destination)


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 17.1.2."""

    INITIAL = S.TRYING
    __slots__ = ()

    TRANSITIONS = {
        (S.TRYING, I.TIMER_E): ("_retransmit", S.TRYING),
        (S.TRYING, I.TIMER_F): ("_report_timeout", S.TERMINATED),
        (S.TRYING, I.RESPONSE_1XX): ("_pass_response", S.PROCEEDING),
        (S.TRYING, I.RESPONSE_2XX): ("_pass_response", S.COMPLETED),
        (S.TRYING, I.RESPONSE_3XX_6XX): ("_pass_response", S.COMPLETED),
        (S.TRYING, I.TRANSPORT_ERROR): ("_report_transport_error", S.TERMINATED),
        (S.PROCEEDING, I.TIMER_E): ("_retransmit", S.PROCEEDING),
        (S.PROCEEDING, I.TIMER_F): ("_report_timeout", S.TERMINATED),
        (S.PROCEEDING, I.RESPONSE_1XX): ("_pass_response", S.PROCEEDING),
        (S.PROCEEDING, I.RESPONSE_2XX): ("_pass_response", S.COMPLETED),
        (S.PROCEEDING, I.RESPONSE_3XX_6XX): ("_pass_response", S.COMPLETED),
        (S.PROCEEDING, I.TRANSPORT_ERROR): ("_report_transport_error", S.TERMINATED),
        (S.COMPLETED, I.RESPONSE_1XX): ("_absorb", S.COMPLETED),
        (S.COMPLETED, I.RESPONSE_2XX): ("_absorb", S.COMPLETED),
        (S.COMPLETED, I.RESPONSE_3XX_6XX): ("_absorb", S.COMPLETED),
        (S.COMPLETED, I.TRANSPORT_ERROR): (None, S.TERMINATED),
        (S.COMPLETED, I.TIMER_K): (None, S.TERMINATED),
    }

    def _on_trying(self, now: float) -> None:
        if not self.reliable:
            self._arm("E", self.interval, now)
        self._arm("F", self.owner.timers.timer_f, now)

    def _on_proceeding(self, now: float) -> None:
        # Timer F keeps running from Trying; E continues at T2 (17.1.2.2).
        if not self.reliable:
            self._arm("E", self.owner.timers.t2, now)
        self._arm("F", self.created_at + self.owner.timers.timer_f - now, now)

    def _on_completed(self, now: float) -> None:
        self._arm("K", self.owner.timers.timer_k(self.reliable), now)

    def _retransmit(self, now: float, message: object = None) -> None:
        self.owner._transmit(self.wire, self.destination)
        if self.state is S.TRYING:
            # 17.1.2.2: "reset with a value of MIN(2*T1, T2)" doubling each time.
            self.interval = min(self.interval * 2, self.owner.timers.t2)
        else:
            self.interval = self.owner.timers.t2
        self._arm("E", self.interval, now)


# --------------------------------------------------------------------------- servers


class ServerTransaction(Transaction):
    """State of both server machines.

    Attributes:
        last_status: the status of the last response sent, 0 before one.
        ack_key: of an INVITE transaction that sent a 2xx, (Call-ID, CSeq number):
            the layer's key for the ACK of that 2xx (set by the layer); else None.
    """

    __slots__ = ("ack_key", "last_status")

    def __init__(
        self,
        owner: TransactionOwner,
        key: TransactionKey,
        request: Request,
        destination: Endpoint,
        now: float,
    ) -> None:
        super().__init__(owner, key, request, destination, now)
        self.last_status = 0
        self.ack_key: tuple[str, int] | None = None

    def start(self, now: float) -> None:
        self._enter(self.INITIAL, now)

    def send(self, response: Response, now: float) -> None:
        """Sends a response from the TU through the machine.

        Raises:
            LocalProtocolError: the state does not allow this response.
        """
        data = response.serialize()
        previous = self.wire
        self.wire = data
        try:
            self.handle(send_input(response.status), now, response)
        except LocalProtocolError:
            self.wire = previous
            raise
        self.last_status = response.status

    def _resend_last(self, now: float, message: object = None) -> None:
        if self.wire:
            self.owner._transmit(self.wire, self.destination)

    def _report_timeout(self, now: float, message: object = None) -> None:
        self.owner._emit(TransactionTimedOut(transaction=self.key, request=self.request, timer="H"))


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 17.2.1 with the RFC 6026 Accepted state."""

    INITIAL = S.PROCEEDING
    __slots__ = ("acknowledged",)

    TRANSITIONS = {
        (S.PROCEEDING, I.REQUEST): ("_resend_last", S.PROCEEDING),
        (S.PROCEEDING, I.SEND_1XX): ("_send_wire", S.PROCEEDING),
        (S.PROCEEDING, I.SEND_2XX): ("_send_wire", S.ACCEPTED),
        (S.PROCEEDING, I.SEND_3XX_6XX): ("_send_wire", S.COMPLETED),
        (S.PROCEEDING, I.TRANSPORT_ERROR): (None, S.TERMINATED),
        # A stray ACK while Proceeding matches nothing the RFC defines; absorb it.
        (S.PROCEEDING, I.ACK): ("_absorb", S.PROCEEDING),
        (S.COMPLETED, I.REQUEST): ("_resend_last", S.COMPLETED),
        (S.COMPLETED, I.TIMER_G): ("_retransmit", S.COMPLETED),
        (S.COMPLETED, I.TIMER_H): ("_report_timeout", S.TERMINATED),
        (S.COMPLETED, I.ACK): (None, S.CONFIRMED),
        (S.COMPLETED, I.TRANSPORT_ERROR): (None, S.TERMINATED),
        (S.CONFIRMED, I.REQUEST): ("_absorb", S.CONFIRMED),
        (S.CONFIRMED, I.ACK): ("_absorb", S.CONFIRMED),
        (S.CONFIRMED, I.TIMER_I): (None, S.TERMINATED),
        # 17.2.4: on a transport failure the server transaction "SHOULD transition to
        # the "Terminated" state"; in Confirmed it has nothing left to send anyway.
        (S.CONFIRMED, I.TRANSPORT_ERROR): (None, S.TERMINATED),
        # RFC 6026 7.1: in Accepted, retransmitted INVITEs are absorbed, the TU may
        # send its 2xx again, and ACKs are handed to the TU by the layer. The 2xx
        # retransmissions that RFC 3261 13.3.1.4 asks of the UAS core run here on
        # Timer G (same schedule as a final response) until the layer reports the
        # ACK, so every TU gets them without keeping timers of its own.
        (S.ACCEPTED, I.REQUEST): ("_absorb", S.ACCEPTED),
        (S.ACCEPTED, I.SEND_2XX): ("_send_wire", S.ACCEPTED),
        (S.ACCEPTED, I.TIMER_G): ("_retransmit", S.ACCEPTED),
        (S.ACCEPTED, I.ACK): ("_acknowledged", S.ACCEPTED),
        (S.ACCEPTED, I.TRANSPORT_ERROR): ("_absorb", S.ACCEPTED),
        (S.ACCEPTED, I.TIMER_L): ("_report_if_unacknowledged", S.TERMINATED),
    }

    def _on_completed(self, now: float) -> None:
        if not self.reliable:
            self.interval = self.owner.timers.t1
            self._arm("G", self.interval, now)
        self._arm("H", self.owner.timers.timer_h, now)

    def _on_confirmed(self, now: float) -> None:
        # The non-2xx was acknowledged: only ACK retransmissions are left to absorb.
        self.request = SPENT_REQUEST
        self._arm("I", self.owner.timers.timer_i(self.reliable), now)

    def _on_accepted(self, now: float) -> None:
        self.acknowledged = False
        if not self.reliable:
            self.interval = self.owner.timers.t1
            self._arm("G", self.interval, now)
        self._arm("L", self.owner.timers.timer_l, now)

    def _acknowledged(self, now: float, message: object = None) -> None:
        self.acknowledged = True
        self.timers.pop("G", None)
        # The 2xx will not be retransmitted any more (the TU may still send it
        # again, which sets wire anew): its bytes go, and the request (the layer
        # forgets the transaction at Timer L by its ack_key). Held 64*T1 past the
        # ACK, they were ~0.5 KiB per call set up in the last 32 s.
        self.wire = b""
        self.request = SPENT_REQUEST

    def _report_if_unacknowledged(self, now: float, message: object = None) -> None:
        # RFC 3261 13.3.1.4: no ACK for the 2xx within 64*T1 means the dialog must end.
        if not self.acknowledged:
            self.owner._emit(
                TransactionTimedOut(transaction=self.key, request=self.request, timer="L")
            )

    def _retransmit(self, now: float, message: object = None) -> None:
        self.owner._transmit(self.wire, self.destination)
        # 17.2.1: "reset with a value of MIN(2*T1, T2)" doubling each time.
        self.interval = min(self.interval * 2, self.owner.timers.t2)
        self._arm("G", self.interval, now)


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 17.2.2."""

    INITIAL = S.TRYING
    __slots__ = ()

    TRANSITIONS = {
        (S.TRYING, I.REQUEST): ("_absorb", S.TRYING),
        (S.TRYING, I.SEND_1XX): ("_send_wire", S.PROCEEDING),
        (S.TRYING, I.SEND_2XX): ("_send_wire", S.COMPLETED),
        (S.TRYING, I.SEND_3XX_6XX): ("_send_wire", S.COMPLETED),
        (S.TRYING, I.TRANSPORT_ERROR): (None, S.TERMINATED),
        (S.PROCEEDING, I.REQUEST): ("_resend_last", S.PROCEEDING),
        (S.PROCEEDING, I.SEND_1XX): ("_send_wire", S.PROCEEDING),
        (S.PROCEEDING, I.SEND_2XX): ("_send_wire", S.COMPLETED),
        (S.PROCEEDING, I.SEND_3XX_6XX): ("_send_wire", S.COMPLETED),
        (S.PROCEEDING, I.TRANSPORT_ERROR): (None, S.TERMINATED),
        (S.COMPLETED, I.REQUEST): ("_resend_last", S.COMPLETED),
        (S.COMPLETED, I.TRANSPORT_ERROR): (None, S.TERMINATED),
        (S.COMPLETED, I.TIMER_J): (None, S.TERMINATED),
    }

    def _on_completed(self, now: float) -> None:
        # From here on the final response (wire) answers retransmissions; the
        # request is read no more for the 32 s of Timer J.
        self.request = SPENT_REQUEST
        self._arm("J", self.owner.timers.timer_j(self.reliable), now)


#: What a client INVITE transaction in Accepted still reads from its request: the
#: TU's dialog of another fork's 2xx (From tag, Call-ID, CSeq, Contact: the To is the
#: response's, Dialog.as_uac) and the top Via (the layer's fallback to UDP).
_KEPT_IN_ACCEPTED = frozenset({"Via", "From", "Call-ID", "CSeq", "Contact"})


#: The request of a server transaction that reads it no more (a non-INVITE one in
#: Completed, an INVITE one whose final response was acknowledged), for the 32 s
#: that it still absorbs retransmissions: one shared object, where each kept a
#: Request, its Headers and their list, three of the ~22 objects per call that the
#: cyclic garbage collector walks (gateway.ops.collector) and the full collection's
#: pause grows with. Never modified: server transactions' requests are not.
SPENT_REQUEST: Final = Request(method="", uri="")


def slim_request(request: Request) -> Request:
    """The request without body and without the headers Accepted no longer needs."""
    kept = Headers.from_canonical(
        [field for field in request.headers if field[0] in _KEPT_IN_ACCEPTED]
    )
    return Request(method=request.method, uri=request.uri, headers=kept)


TIMER_INPUTS: dict[str, TransactionInput] = {
    name: TransactionInput[f"TIMER_{name}"] for name in "ABDEFGHIJKLM"
}
