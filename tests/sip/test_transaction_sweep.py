"""State x input sweep of the transaction tables in gateway.sip.transaction.

Each machine (client INVITE, client non-INVITE, server INVITE, server non-INVITE) is
driven along a short path to each of its states, over UDP and over TCP, and then fed
every :class:`TransactionInput` (an exhaustive ``state x input`` sweep, as h2 sweeps
its ``_transitions``) and Hypothesis sequences of the inputs its transaction layer can
deliver. Every step checks:

* coverage: an input the layer can deliver in a state (responses for clients;
  requests, ACK and the TU's responses for servers; transport errors; each timer the
  state armed) is in the table. The TU's responses are the one exception: a refusal
  is the documented LocalProtocolError. Inputs the layer never delivers (the other
  side's inputs, timers not armed) are ignored explicitly: fed anyway, they may only
  terminate the machine;
* nothing but LocalProtocolError escapes, and only for a TU input, after the machine
  went to TERMINATED; an input outside the table terminates the machine;
* TERMINATED is absorbing: whatever comes, no output and no timer;
* outputs are well formed: deadlines never in the past and positive, except the zero
  waits RFC 3261 gives reliable transports (Timers D, I, J, K); no retransmit timer
  over TCP; a final response passed to the TU at most once (2xx retransmissions in
  Accepted excepted, RFC 6026 7.2); the client INVITE transaction builds the ACK for
  a 300-699 itself and re-sends the same ACK for each retransmission, and never ACKs
  a 2xx; a server sends only the TU's last accepted response; at most one timeout or
  transport failure is reported, and the machine is then TERMINATED.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.builders import build_non2xx_ack, build_response
from gateway.sip.errors import LocalProtocolError
from gateway.sip.events import (
    Endpoint,
    ResponseReceived,
    SipEvent,
    TransactionKey,
    TransactionTimedOut,
    TransportFailed,
)
from gateway.sip.headers import parse_cseq, parse_name_address, top_via
from gateway.sip.message import Headers, Request, Response
from gateway.sip.parser import parse_message
from gateway.sip.timers import SipTimers
from gateway.sip.transaction import (
    TIMER_INPUTS,
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    Transaction,
    TransactionInput,
    TransactionState,
)
from gateway.sip.transaction_layer import TransactionLayer

S = TransactionState
I = TransactionInput  # noqa: E741 - the tables' own alias

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TIMERS = SipTimers()
START = 100.0
BRANCH = "z9hG4bKsweep"
PEER_HOST = "192.0.2.20"
LOCAL = [Endpoint("UDP", "192.0.2.1", 5060), Endpoint("TCP", "192.0.2.1", 5060)]

TU_INPUTS = frozenset({I.SEND_1XX, I.SEND_2XX, I.SEND_3XX_6XX})
RESPONSE_INPUTS = frozenset({I.RESPONSE_1XX, I.RESPONSE_2XX, I.RESPONSE_3XX_6XX})
TIMER_LETTER = {event: name for name, event in TIMER_INPUTS.items()}
#: RFC 3261 17.1.1.2, 17.1.2.2, 17.2.1, 17.2.2: "zero seconds for reliable transports"
ZERO_WHEN_RELIABLE = frozenset("DIJK")
RETRANSMIT_TIMERS = frozenset("AEG")

#: Status codes drawn for each class of response input.
STATUSES = {
    "1": (100, 180, 183),
    "2": (200, 202),
    "3": (300, 302, 404, 408, 486, 487, 500, 503, 603),
}


def _status_class(event: TransactionInput) -> str:
    return {
        I.RESPONSE_1XX: "1",
        I.SEND_1XX: "1",
        I.RESPONSE_2XX: "2",
        I.SEND_2XX: "2",
    }.get(event, "3")


@dataclass(frozen=True)
class Machine:
    """One table under test.

    Attributes:
        cls: the transaction class.
        method: the method of the request that starts it.
        server: server side (responses go out) or client side (responses come in).
        paths: for each state of the machine, the inputs that lead there from the start.
        routed: the inputs the transaction layer hands this kind of transaction, apart
            from its armed timers (transaction_layer: _receive_request, _receive_ack,
            _receive_response, send_response, transport_failed).
    """

    cls: type[Transaction]
    method: str
    server: bool
    paths: dict[TransactionState, tuple[TransactionInput, ...]]
    routed: frozenset[TransactionInput]

    def __str__(self) -> str:
        return self.cls.__name__


CLIENT_ROUTED = RESPONSE_INPUTS | {I.TRANSPORT_ERROR}
MACHINES = [
    Machine(
        InviteClientTransaction,
        "INVITE",
        server=False,
        paths={
            S.CALLING: (),
            S.PROCEEDING: (I.RESPONSE_1XX,),
            S.COMPLETED: (I.RESPONSE_3XX_6XX,),
            S.ACCEPTED: (I.RESPONSE_2XX,),
            S.TERMINATED: (I.TRANSPORT_ERROR,),
        },
        routed=CLIENT_ROUTED,
    ),
    Machine(
        NonInviteClientTransaction,
        "OPTIONS",
        server=False,
        paths={
            S.TRYING: (),
            S.PROCEEDING: (I.RESPONSE_1XX,),
            S.COMPLETED: (I.RESPONSE_2XX,),
            S.TERMINATED: (I.TRANSPORT_ERROR,),
        },
        routed=CLIENT_ROUTED,
    ),
    Machine(
        InviteServerTransaction,
        "INVITE",
        server=True,
        paths={
            S.PROCEEDING: (),
            S.COMPLETED: (I.SEND_3XX_6XX,),
            S.CONFIRMED: (I.SEND_3XX_6XX, I.ACK),
            S.ACCEPTED: (I.SEND_2XX,),
            S.TERMINATED: (I.TRANSPORT_ERROR,),
        },
        routed=TU_INPUTS | {I.REQUEST, I.ACK, I.TRANSPORT_ERROR},
    ),
    Machine(
        NonInviteServerTransaction,
        "OPTIONS",
        server=True,
        paths={
            S.TRYING: (),
            S.PROCEEDING: (I.SEND_1XX,),
            S.COMPLETED: (I.SEND_2XX,),
            S.TERMINATED: (I.TRANSPORT_ERROR,),
        },
        # An ACK carries the INVITE method in its key: it never finds a non-INVITE.
        routed=TU_INPUTS | {I.REQUEST, I.TRANSPORT_ERROR},
    ),
]

#: States that may hold no timer: a client INVITE in Proceeding waits for a final
#: response (the TU cancels, RFC 3261 9.1); a server waits for the TU's response.
UNTIMED = frozenset(
    {
        (InviteClientTransaction, S.PROCEEDING),
        (InviteServerTransaction, S.PROCEEDING),
        (NonInviteServerTransaction, S.TRYING),
        (NonInviteServerTransaction, S.PROCEEDING),
    }
)

MACHINE_STATES = [(m, s) for m in MACHINES for s in m.paths]


def _request(method: str) -> Request:
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP {PEER_HOST}:5060;branch={BRANCH};rport")
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:alice@example.com>;tag=a1")
    headers.add("To", "<sip:bob@example.net>")
    headers.add("Call-ID", "sweep-1@192.0.2.20")
    headers.add("CSeq", f"7 {method}")
    headers.add("Contact", f"<sip:alice@{PEER_HOST}>")
    headers.add("Route", "<sip:proxy.example.net;lr>")
    return Request(method=method, uri="sip:bob@example.net", headers=headers, body=b"v=0\r\n")


class Run:
    """One transaction, its owner (a real TransactionLayer) and what it has output."""

    def __init__(self, machine: Machine, reliable: bool) -> None:
        self.machine = machine
        self.reliable = reliable
        self.layer = TransactionLayer(local=LOCAL, new_token=lambda: "t", timers=TIMERS)
        self.now = START
        self.request = _request(machine.method)
        destination = Endpoint("TCP" if reliable else "UDP", PEER_HOST, 5060)
        sent_by = f"{PEER_HOST}:5060" if machine.server else ""
        key = TransactionKey(BRANCH, sent_by, machine.method, machine.server)
        self.key = key
        tx: Transaction
        if machine.cls is InviteClientTransaction:
            tx = InviteClientTransaction(
                self.layer, key, self.request, destination, self.now, build_non2xx_ack
            )
        else:
            tx = machine.cls(self.layer, key, self.request, destination, self.now)
        assert isinstance(tx, ClientTransaction | ServerTransaction)
        self.tx = tx
        self.request_wire = self.request.serialize()
        # What has come out so far, for the checks across steps.
        self.passed: list[int] = []  # statuses handed to the TU (clients)
        self.ack: bytes | None = None  # the ACK the client INVITE sent for its final
        self.response: bytes | None = None  # the last response the server accepted
        self.final: int | None = None  # the first final the server accepted
        self.acked_2xx = False  # an ACK reached the server INVITE in Accepted
        self.reported = False  # a timeout or transport failure was reported
        self.off_road = False  # an input the layer never delivers was fed
        tx.start(self.now)
        sent, events = self._drain()
        assert events == []
        assert sent == ([] if machine.server else [self.request_wire])
        self._check_timers({})

    # ------------------------------------------------------------------ driving

    def walk(self, path: tuple[TransactionInput, ...]) -> None:
        for event in path:
            self.feed(event)

    def receivable(self) -> set[TransactionInput]:
        """The inputs the layer can hand the transaction now."""
        if self.tx.terminated:
            return set()
        return set(self.machine.routed) | {TIMER_INPUTS[name] for name in self.tx.timers}

    def due_timer(self) -> TransactionInput | None:
        """The timer the layer fires next (earliest deadline), if any."""
        if not self.tx.timers:
            return None
        name = min(self.tx.timers, key=lambda n: (self.tx.timers[n], n))
        return TIMER_INPUTS[name]

    def advance(self, fraction: float) -> None:
        """Moves the clock part of the way to the next deadline (not past it)."""
        deadlines = self.tx.timers.values()
        if deadlines:
            self.now += (min(deadlines) - self.now) * fraction
        else:
            self.now += 10 * fraction

    def feed(self, event: TransactionInput, status: int | None = None) -> None:
        """Feeds one input as its owner would, then checks every property of the step."""
        tx = self.tx
        machine = self.machine
        # Once fed what the layer never delivers, the run is off the layer's paths:
        # from then on only the table rules (Rule 1, absorbing TERMINATED) apply.
        self.off_road = self.off_road or event not in self.receivable()
        strict = not self.off_road
        before = tx.state
        timers_before = dict(tx.timers)
        wire_before = tx.wire
        transition = type(tx).TRANSITIONS.get((before, event))
        if status is None:
            status = STATUSES[_status_class(event)][1 if _status_class(event) == "1" else 0]
        message = self._message(event, status)
        if event in TIMER_LETTER:
            name = TIMER_LETTER[event]
            if name in tx.timers:
                self.now = max(self.now, tx.timers[name])
            # The layer removes a timer before it feeds it (handle_timer).
            tx.timers.pop(name, None)
        error: LocalProtocolError | None = None
        try:
            if event in TU_INPUTS and isinstance(tx, ServerTransaction):
                assert isinstance(message, Response)
                tx.send(message, self.now)
            else:
                tx.handle(event, self.now, message)
        except LocalProtocolError as exc:
            error = exc
        sent, events = self._drain()
        where = f"{machine} {before.name} + {event.name}"

        # Rule 1: outside the table is an error and TERMINATED; only the TU's raise.
        if transition is None:
            assert tx.state is S.TERMINATED, where
            assert (error is not None) == (event in TU_INPUTS), where
            assert sent == [] and events == [], where
            if isinstance(tx, ServerTransaction):
                assert tx.wire == wire_before, where
        else:
            assert error is None, where
            assert tx.state is transition[1], where
        # TERMINATED is absorbing and holds no timer.
        if before is S.TERMINATED:
            assert tx.state is S.TERMINATED and not sent and not events, where
        if tx.state is S.TERMINATED:
            assert tx.timers == {}, where
        self._check_reports(event, events, where, strict=strict)
        if not strict:
            return
        self._check_timers(timers_before, changed=tx.state is not before)
        if machine.server:
            self._check_server(event, message, transition, sent, events, where)
        else:
            self._check_client(event, message, transition, sent, events, where)
        self._check_coverage()

    # ------------------------------------------------------------------ checks

    def _check_coverage(self) -> None:
        tx = self.tx
        for event in self.receivable() - TU_INPUTS:
            assert (tx.state, event) in type(tx).TRANSITIONS, (
                f"{self.machine}: {event.name} can arrive in {tx.state.name} "
                "but the table does not say what it does"
            )

    def _check_timers(self, before: dict[str, float], *, changed: bool = True) -> None:
        tx = self.tx
        if not tx.terminated and not tx.timers:
            # Only a state that waits for the peer or the TU may hold no timer; any
            # other would live for ever.
            assert (type(tx), tx.state) in UNTIMED, f"{self.machine} {tx.state.name}: no timer"
        for name, deadline in tx.timers.items():
            where = f"{self.machine} {tx.state.name} Timer {name}"
            # A timer the state arms is one its table handles (else it would kill it).
            assert (tx.state, TIMER_INPUTS[name]) in type(tx).TRANSITIONS, where
            assert deadline >= self.now, where
            if self.reliable:
                # 17.1.1.2, 17.1.2.2, 17.2.1: retransmit timers only on unreliable transports.
                assert name not in RETRANSMIT_TIMERS, where
            if not changed and before.get(name) == deadline:
                continue  # armed earlier, checked then
            delay = deadline - self.now
            if name in ZERO_WHEN_RELIABLE and self.reliable:
                assert delay == 0, where
            else:
                assert delay > 0, where
            if name in ("E", "G"):
                assert delay <= TIMERS.t2, where
            if name == "A":
                assert delay < TIMERS.timer_b, where

    def _check_reports(
        self, event: TransactionInput, events: list[SipEvent], where: str, *, strict: bool
    ) -> None:
        reports = [e for e in events if isinstance(e, TransactionTimedOut | TransportFailed)]
        assert len(reports) <= 1, where
        ended = strict and self.tx.terminated and not self.reported
        if ended and not self.machine.server and not any(s >= 200 for s in self.passed):
            # The TU learns how each request ended: a final response or a report.
            assert reports, f"{where}: ended with neither a final response nor a report"
        if event is I.TIMER_H and ended:
            # 17.2.1: no ACK within Timer H "SHOULD" be reported to the TU.
            assert reports, where
        if not reports:
            return
        assert not self.reported, f"{where}: a second timeout or transport failure"
        self.reported = True
        (report,) = reports
        assert report.transaction == self.key, where
        assert events[-1] is report, where
        assert self.tx.state is S.TERMINATED, where
        if isinstance(report, TransportFailed):
            assert event is I.TRANSPORT_ERROR and not self.machine.server, where
        else:
            assert event in TIMER_LETTER and report.timer == TIMER_LETTER[event], where
            assert report.timer in ("B", "F", "H", "L"), where

    def _check_client(
        self,
        event: TransactionInput,
        message: Request | Response | None,
        transition: tuple[str | None, TransactionState] | None,
        sent: list[bytes],
        events: list[SipEvent],
        where: str,
    ) -> None:
        passed = [e for e in events if isinstance(e, ResponseReceived)]
        assert len(passed) <= 1, where
        for e in passed:
            assert event in RESPONSE_INPUTS and e.response is message, where
            assert e.transaction == self.key, where
        status = message.status if isinstance(message, Response) else 0
        if self.machine.method == "INVITE" and event is I.RESPONSE_2XX:
            # RFC 6026 7.2: each 2xx, retransmissions too, goes to the TU, which ACKs it.
            assert passed or self.tx.state is S.COMPLETED, f"{where}: 2xx not passed"
        if passed:
            finals = [s for s in self.passed if s >= 200]
            if status < 200:
                assert not finals, f"{where}: 1xx passed after a final"
            elif self.machine.method == "INVITE" and status < 300:
                # RFC 6026 7.2: 2xx retransmissions go to the TU (it ACKs each one).
                assert all(s < 300 for s in finals), f"{where}: 2xx after a 300-699"
            else:
                assert not finals, f"{where}: a second final passed to the TU"
            self.passed.append(status)
        if event in (I.TIMER_A, I.TIMER_E):
            assert sent == [self.request_wire], where
            return
        acks = (
            self.machine.method == "INVITE"
            and event is I.RESPONSE_3XX_6XX
            and self.tx.state is S.COMPLETED
        )
        if not acks:
            # A 2xx is ACKed by the TU (RFC 3261 13.2.2.4), never by the transaction.
            assert sent == [], where
            return
        # 17.1.1.3: the transaction ACKs a 300-699 itself, then each retransmission.
        assert len(sent) == 1, where
        if self.ack is None:
            assert isinstance(message, Response) and passed, where
            self.ack = sent[0]
            self._check_ack(sent[0], message)
        else:
            assert sent == [self.ack] and not passed, where

    def _check_ack(self, data: bytes, response: Response) -> None:
        ack = parse_message(data)
        invite = self.request
        assert isinstance(ack, Request)
        assert ack.method == "ACK" and ack.uri == invite.uri
        assert str(top_via(ack.headers)) == str(top_via(invite.headers))
        assert len(ack.headers.values("Via")) == 1
        cseq = parse_cseq(ack.headers.get("CSeq") or "")
        assert (cseq.seq, cseq.method) == (7, "ACK")
        for name in ("Call-ID", "From", "Max-Forwards"):
            assert ack.headers.get(name) == invite.headers.get(name), name
        to = parse_name_address(ack.headers.get("To") or "")
        assert to.tag == parse_name_address(response.headers.get("To") or "").tag
        assert to.tag
        assert ack.headers.get_lines("Route") == invite.headers.get_lines("Route")
        assert ack.body == b""

    def _check_server(
        self,
        event: TransactionInput,
        message: Request | Response | None,
        transition: tuple[str | None, TransactionState] | None,
        sent: list[bytes],
        events: list[SipEvent],
        where: str,
    ) -> None:
        assert not any(isinstance(e, ResponseReceived) for e in events), where
        if event in TU_INPUTS:
            assert isinstance(message, Response)
            if transition is None:
                return  # refused: checked in feed()
            # A final is followed by nothing but the same class of 2xx (RFC 6026 7.1).
            if self.final is not None:
                assert 200 <= self.final < 300 and 200 <= message.status < 300, where
            elif message.status >= 200:
                self.final = message.status
            self.response = message.serialize()
            assert sent == [self.response], where
            return
        if event is I.ACK and self.tx.state is S.ACCEPTED:
            self.acked_2xx = True
        # Nothing but the last accepted response goes out, and never before one.
        assert all(data == self.response for data in sent), where
        if event in (I.TIMER_G,):
            assert sent == [self.response], where
        if event is I.TIMER_L:
            timed_out = any(isinstance(e, TransactionTimedOut) for e in events)
            # RFC 3261 13.3.1.4: no ACK for the 2xx means the dialog must end.
            assert timed_out == (not self.acked_2xx), where

    # ------------------------------------------------------------------ plumbing

    def _message(self, event: TransactionInput, status: int) -> Request | Response | None:
        if event in RESPONSE_INPUTS or event in TU_INPUTS:
            return build_response(self.request, status, to_tag=None if status == 100 else "b1")
        if event is I.REQUEST:
            return self.request.copy()
        if event is I.ACK:
            return build_non2xx_ack(self.request, build_response(self.request, 486, to_tag="b1"))
        return None

    def _drain(self) -> tuple[list[bytes], list[SipEvent]]:
        destination = self.tx.destination
        sent = []
        for data, to in self.layer.datagrams_to_send():
            assert to == destination
            sent.append(data)
        events = []
        while (event := self.layer.next_event()) is not None:
            events.append(event)
        return sent, events


# --------------------------------------------------------------------------- tests


def test_paths_reach_every_state_of_every_table() -> None:
    for machine in MACHINES:
        table = machine.cls.TRANSITIONS
        states = {s for s, _ in table} | {s for _, s in table.values()}
        assert states | {machine.cls.INITIAL, S.TERMINATED} == set(machine.paths), machine
        for reliable in (False, True):
            for state, path in machine.paths.items():
                run = Run(machine, reliable)
                run.walk(path)
                assert run.tx.state is state, (machine, state)


@pytest.mark.parametrize("reliable", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("machine", MACHINES, ids=str)
def test_every_state_times_every_input(machine: Machine, reliable: bool) -> None:
    """The exhaustive sweep: each state, each input, each class of status."""
    for state, path in machine.paths.items():
        for event in TransactionInput:
            statuses = STATUSES[_status_class(event)]
            if event not in RESPONSE_INPUTS | TU_INPUTS:
                statuses = statuses[:1]
            for status in statuses:
                run = Run(machine, reliable)
                run.walk(path)
                assert run.tx.state is state
                run.feed(event, status)
                # And whatever state that left, every input again.
                after = run.tx.state
                for second in TransactionInput:
                    again = Run(machine, reliable)
                    again.walk(path)
                    again.feed(event, status)
                    assert again.tx.state is after
                    again.feed(second)


@pytest.mark.parametrize("machine", MACHINES, ids=str)
def test_terminated_is_absorbing(machine: Machine) -> None:
    run = Run(machine, reliable=False)
    run.walk(machine.paths[S.TERMINATED])
    for event in TransactionInput:
        for status in STATUSES[_status_class(event)]:
            run.feed(event, status)
            assert run.tx.terminated
            assert run.layer.datagrams_to_send() == [] and run.layer.next_event() is None


@SETTINGS
@given(
    data=st.data(),
    machine_state=st.sampled_from(MACHINE_STATES),
    reliable=st.booleans(),
)
def test_input_sequences_from_each_state(
    data: st.DataObject, machine_state: tuple[Machine, TransactionState], reliable: bool
) -> None:
    """Sequences of what the layer can deliver, timers firing in deadline order."""
    machine, state = machine_state
    run = Run(machine, reliable)
    run.walk(machine.paths[state])
    for _ in range(data.draw(st.integers(0, 30), label="steps")):
        choices = sorted(machine.routed, key=lambda e: e.name)
        due = run.due_timer()
        if due is not None:
            choices.append(due)
        if run.tx.terminated:
            choices = list(TransactionInput)  # anything at all, once terminated
        event = data.draw(st.sampled_from(choices), label="input")
        if event not in TIMER_LETTER:
            run.advance(data.draw(st.floats(0, 1, exclude_max=True), label="wait"))
        status = data.draw(st.sampled_from(STATUSES[_status_class(event)]), label="status")
        run.feed(event, status)
