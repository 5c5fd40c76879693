"""The transaction layer: parses what the transport hands in, matches messages to
transactions, owns the transactions and their timers, and hands events to the TU.

Inputs are bytes with a source :class:`Endpoint` and ``now`` (seconds on the
adapter's clock); outputs are :meth:`next_event`, :meth:`datagrams_to_send` and
:meth:`get_timer`, as in aioquic's ``QuicConnection``. Nothing here does I/O.

Bad input never escapes: a message that does not parse is answered statelessly with
the parser's status hint when it is a request carrying enough headers to answer
(RFC 3261 8.2, 16.3), and dropped otherwise; both are counted in :attr:`stats`.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from gateway.sip.builders import build_non2xx_ack, build_response
from gateway.sip.errors import LocalProtocolError, ParseError, SipError
from gateway.sip.events import (
    CancelReceived,
    Endpoint,
    RequestReceived,
    ResponseReceived,
    SharedEndpoints,
    SipEvent,
    TransactionKey,
    TransportFailed,
)
from gateway.sip.headers import BRANCH_MAGIC_COOKIE, Via, parse_cseq, parse_name_address, top_via
from gateway.sip.message import Headers, Request, Response, reason_phrase
from gateway.sip.parser import PartialMessage, parse_message
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
    TransactionOwner,
    TransactionState,
    response_input,
)

#: An armed timer: (deadline in seconds, its transaction, its name "A" ... "M").
TimerEntry = tuple[float, Transaction, str]

#: RFC 3261 18.1.1: a request within 200 bytes of a 1500-byte path MTU "MUST be sent
#: using an RFC 2914 congestion controlled transport protocol, such as TCP".
UDP_SIZE_THRESHOLD = 1300

#: Addresses whose server transactions share one Endpoint object (SharedEndpoints).
MAX_SHARED_DESTINATIONS = 1024

#: Upper bound on live transactions: a memory safety net only. Overload shedding
#: with priority for emergency calls happens earlier, in the TU.
MAX_TRANSACTIONS = 200_000


def server_transaction_key(request: Request, via: Via) -> TransactionKey:
    """Computes the server transaction a request belongs to (RFC 3261 17.2.3).

    "When a request is received from the network by the server, it has to be matched
    to an existing transaction. [...] If the branch parameter in the top Via header
    field value begins with the magic cookie "z9hG4bK", [...] the request matches a
    transaction if:
      1. the branch parameter in the request is equal to the one in the top Via
         header field of the request that created the transaction, and
      2. the sent-by value in the top Via of the request is equal to the one in the
         request that created the transaction, and
      3. the method of the request matches the one that created the transaction,
         except for ACK, where the method of the request that created the
         transaction is INVITE."

    For branches without the cookie (RFC 2543 peers), the request matches when its
    Request-URI, To tag, From tag, Call-ID, CSeq and top Via match; the key is built
    from those fields. An ACK's To tag is the one our response added, so the To tag
    is left out of the key and the ACK still finds its INVITE (the CSeq number and
    everything else must match). CANCEL keeps its own method, so it gets its own
    transaction and finds the INVITE's by swapping the method.
    """
    method = "INVITE" if request.method == "ACK" else request.method
    host, port = via.sent_by
    sent_by = f"{host}:{port}" if port is not None else host
    branch = via.branch
    if branch is not None and branch.startswith(BRANCH_MAGIC_COOKIE):
        return TransactionKey(branch, sent_by, method, True)
    from_value = request.headers.get("From") or ""
    cseq = parse_cseq(request.headers.get("CSeq") or "")
    legacy = "|".join(
        (
            "rfc2543",
            request.uri,
            parse_name_address(from_value).tag or "",
            request.headers.get("Call-ID") or "",
            str(cseq.seq),
            str(via),
        )
    )
    return TransactionKey(legacy, sent_by, method, True)


def client_transaction_key(branch: str, method: str) -> TransactionKey:
    """Computes the client transaction a response belongs to (RFC 3261 17.1.3).

    "the response matches a client transaction if: 1. the response has the same value
    of the branch parameter in the top Via header field as the branch parameter in
    the top Via header field of the request that created the transaction. 2. the
    method parameter in the CSeq header field matches the method of the request that
    created the transaction."
    """
    return TransactionKey(branch, "", method, False)


def response_destination(via: Via, source: Endpoint) -> Endpoint:
    """Where responses to a request go (RFC 3261 18.2.2, RFC 3581 section 4).

    Over a reliable transport the response goes back on the connection the request
    came in on. Otherwise: to ``maddr`` if present; else to the source address
    (``received``) and, when the client asked with ``rport``, the source port; else
    the sent-by port (default 5060).
    """
    if source.reliable:
        return source
    maddr = via.maddr
    if maddr:
        return Endpoint("UDP", maddr, via.port or 5060)
    rport = via.rport
    if rport:
        return Endpoint("UDP", source.host, int(rport))
    host = via.received or source.host
    return Endpoint("UDP", host, via.port or 5060)


class SipObserver(Protocol):
    """Receives a call per message for counting (the adapter's Prometheus metrics).

    Kept as plain callbacks so the core stays free of any metrics library.
    """

    def sip_request_in(self, method: str) -> None: ...
    def sip_response_in(self, status: int, method: str) -> None: ...
    def sip_request_out(self, method: str) -> None: ...
    def sip_response_out(self, status: int, method: str) -> None: ...
    def sip_retransmission(self, method: str) -> None: ...
    def parse_error_from(self, status_hint: int) -> None: ...


class _NullObserver:
    def sip_request_in(self, method: str) -> None:
        pass

    def sip_response_in(self, status: int, method: str) -> None:
        pass

    def sip_request_out(self, method: str) -> None:
        pass

    def sip_response_out(self, status: int, method: str) -> None:
        pass

    def sip_retransmission(self, method: str) -> None:
        pass

    def parse_error_from(self, status_hint: int) -> None:
        pass


class TransactionLayer(TransactionOwner):
    """RFC 3261 transaction layer over any number of transports.

    Args:
        local: our listening endpoints; the Via sent-by of each request we send is
            the one of the destination's transport and address family.
        new_token: returns a fresh random token for branches (the caller passes one
            backed by ``os.urandom``; tests pass a counter).
        timers: T1/T2/T4.
        max_transactions: bound on live transactions.
        observer: counts messages (metrics); optional.
    """

    def __init__(
        self,
        *,
        local: Sequence[Endpoint],
        new_token: Callable[[], str],
        timers: SipTimers | None = None,
        max_transactions: int = MAX_TRANSACTIONS,
        udp_size_threshold: int = UDP_SIZE_THRESHOLD,
        observer: SipObserver | None = None,
    ) -> None:
        self.observer: SipObserver = observer or _NullObserver()
        self.timers = timers or SipTimers()
        self.local = list(local)
        # Which local endpoint sends to a destination, by (transport, IPv6?): asked for
        # every request sent, so answered from a table built once (local is fixed).
        self._local_by_family: dict[tuple[str, bool], Endpoint] = {}
        self._local_by_transport: dict[str, Endpoint] = {}
        for endpoint in self.local:
            self._local_by_family.setdefault((endpoint.transport, ":" in endpoint.host), endpoint)
            self._local_by_transport.setdefault(endpoint.transport, endpoint)
        self.new_token = new_token
        self.max_transactions = max_transactions
        self.udp_size_threshold = udp_size_threshold
        self.transactions: dict[TransactionKey, Transaction] = {}
        #: server transactions' destinations: each is kept 32 s after its final
        #: response (Timers J and L), two per call (its INVITE and its BYE)
        self._destinations = SharedEndpoints(MAX_SHARED_DESTINATIONS)
        #: (Call-ID, CSeq number) -> INVITE server transaction in Accepted, so the
        #: ACK for its 2xx (a new branch, RFC 3261 17.1.1.3) stops the retransmits.
        self._accepted_invites: dict[tuple[str, int], InviteServerTransaction] = {}
        #: client transactions moved from UDP to TCP for size (18.1.1)
        self._switched_to_tcp: set[TransactionKey] = set()
        self._events: deque[SipEvent] = deque()
        self._outgoing: list[tuple[bytes, Endpoint]] = []
        #: armed timers as (deadline, transaction, name), in deadline order: one FIFO
        #: queue per timer name, and a heap for the few armed out of order (see _arm)
        self._timer_queues: dict[str, deque[TimerEntry]] = {}
        self._timer_heap: list[tuple[float, int, TimerEntry]] = []
        self._timer_seq = itertools.count()
        #: the earliest entry of the queues and the heap, or None: not known (any
        #: entry removed since it was) or none at all
        self._earliest: TimerEntry | None = None
        #: counters by reason: parse errors, drops, retransmissions, stateless answers
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> SipEvent | None:
        """Returns the next event for the TU, or None."""
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        """Returns and forgets the messages to transmit, in order."""
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        """Returns the earliest armed timer deadline (seconds), or None."""
        earliest = self._earliest
        if earliest is None or not _armed(earliest):
            earliest = self._earliest = self._earliest_entry()
        return earliest[0] if earliest is not None else None

    def handle_timer(self, now: float) -> None:
        """Fires every timer whose deadline is not after ``now``, earliest first."""
        while due := self._take_due(now):
            for entry in due:
                if not _armed(entry):
                    continue  # disarmed or re-armed since
                _, tx, name = entry
                del tx.timers[name]
                if name in ("A", "E", "G"):
                    self.stats[f"retransmission_{tx.key.method}"] += 1
                    self.observer.sip_retransmission(tx.key.method)
                self._feed(tx, TIMER_INPUTS[name], now)

    def _take_due(self, now: float) -> list[TimerEntry]:
        """Removes the entries due at ``now`` (armed or stale) and returns them in
        deadline order. A timer armed while they fire (the zero wait of a reliable
        transport) is due at ``now`` at the latest: the next call takes it."""
        due: list[TimerEntry] = []
        for queue in self._timer_queues.values():
            while queue and queue[0][0] <= now:
                due.append(queue.popleft())
        heap = self._timer_heap
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        if due:
            self._earliest = None
            # Each queue's part is a sorted run: Timsort merges the runs.
            due.sort(key=_deadline)
        return due

    def _earliest_entry(self) -> TimerEntry | None:
        """The earliest armed entry, dropping the stale ones ahead of it."""
        earliest: TimerEntry | None = None
        for queue in self._timer_queues.values():
            while queue and not _armed(queue[0]):
                queue.popleft()
            if queue and (earliest is None or queue[0][0] < earliest[0]):
                earliest = queue[0]
        heap = self._timer_heap
        while heap and not _armed(heap[0][2]):
            heapq.heappop(heap)
        if heap and (earliest is None or heap[0][0] < earliest[0]):
            earliest = heap[0][2]
        return earliest

    # ------------------------------------------------------------------ owner hooks

    def _transmit(self, data: bytes, destination: Endpoint) -> None:
        self._outgoing.append((data, destination))

    def _emit(self, event: SipEvent) -> None:
        self._events.append(event)

    def _arm(self, tx: Transaction, name: str, deadline: float) -> None:
        # A timer's duration is fixed by its name and the transport (RFC 3261 Table
        # 4: B, D, F, H, I, J, K = 64*T1, 32 s, T4 or 0; A, E, G start at T1), and
        # ``now`` never goes back, so entries of one name mostly arrive in deadline
        # order: appended to their name's queue, O(1), instead of a push into a heap
        # of every timer of the last 32 s. One armed earlier than its queue's last
        # (a retransmit interval after doubling, a reliable transport's 0 s among
        # UDP's 32 s) goes to the heap; handle_timer merges both.
        entry = (deadline, tx, name)
        queue = self._timer_queues.get(name)
        if queue is None:
            queue = self._timer_queues[name] = deque()
        if not queue or queue[-1][0] <= deadline:
            queue.append(entry)
        else:
            heapq.heappush(self._timer_heap, (deadline, next(self._timer_seq), entry))
        earliest = self._earliest
        if earliest is not None and deadline < earliest[0]:
            self._earliest = entry

    def _feed(
        self,
        tx: Transaction,
        event: TransactionInput,
        now: float,
        message: Request | Response | None = None,
    ) -> None:
        try:
            tx.handle(event, now, message)
        finally:
            if tx.terminated:
                self._forget(tx)

    def _forget(self, tx: Transaction) -> None:
        self.transactions.pop(tx.key, None)
        self._switched_to_tcp.discard(tx.key)
        if isinstance(tx, InviteServerTransaction):
            ident = tx.ack_key
            if ident is not None and self._accepted_invites.get(ident) is tx:
                del self._accepted_invites[ident]

    # ------------------------------------------------------------------ network input

    def receive_message(self, data: bytes, source: Endpoint, now: float) -> None:
        """Handles one datagram, or one message cut from a stream by the framer.

        Args:
            data: the raw message.
            source: the transport address it came from.
            now: current time in seconds.
        """
        try:
            message = parse_message(data, stream=source.reliable)
        except ParseError as exc:
            self.stats["parse_error"] += 1
            self.observer.parse_error_from(exc.status_hint)
            partial = exc.partial
            if partial is None and exc.status_hint == 513 and not data.startswith(b"SIP/"):
                # Too large to parse at all (RFC 3261 21.5.14): salvage the few
                # headers a 513 needs so the client learns why.
                partial = PartialMessage(
                    is_request=True, method=None, headers=_salvage_headers(data)
                )
            if isinstance(partial, PartialMessage) and partial.is_request:
                if partial.method != "ACK":  # 17.1.1.3: never answer an ACK
                    self._answer_unparsable(partial.headers, exc, source)
            else:
                self.stats["dropped_bad_response" if partial else "dropped_unparsable"] += 1
            return
        try:
            if isinstance(message, Request):
                self.observer.sip_request_in(message.method)
                self._receive_request(message, source, now)
            else:
                self._receive_response(message, source, now)
        except ParseError as exc:
            # A value the parser's syntax check let through but a typed view
            # rejects (a Via port beyond 65535, say): caught here, at the layer's
            # boundary, and answered like any unparsable request.
            self.stats["parse_error"] += 1
            self.observer.parse_error_from(exc.status_hint)
            if isinstance(message, Request) and message.method != "ACK":
                self._answer_unparsable(message.headers, exc, source)

    def _answer_unparsable(self, headers: Headers, exc: ParseError, source: Endpoint) -> None:
        """Answers a request that did not parse, statelessly (RFC 3261 8.2, 16.3).

        A response needs a Via to be routed; when the Via itself is unusable
        (RFC 4475 3.1.2.1) it goes back to the packet's source address, which is
        where a UDP client listens in practice. Missing From/To/Call-ID (RFC 4475
        3.3.1) are left out rather than invented.
        """
        if "Via" not in headers:
            self.stats["dropped_unanswerable"] += 1
            return
        try:
            destination = response_destination(top_via(headers), source)
        except ParseError:
            destination = source
        copied = ("Via", "From", "To", "Call-ID", "CSeq")
        out = Headers((name, value) for name, value in headers if name in copied)
        out.add("Warning", f'399 voipgw "{_quoted_text(exc.msg)}"')
        response = Response(
            status=exc.status_hint, reason=reason_phrase(exc.status_hint), headers=out
        )
        self.stats[f"stateless_{exc.status_hint}"] += 1
        self.observer.sip_response_out(exc.status_hint, (headers.get("CSeq") or "").split(" ")[-1])
        self._transmit(response.serialize(), destination)

    def _receive_request(self, request: Request, source: Endpoint, now: float) -> None:
        via = stamp_received(request, source)
        key = server_transaction_key(request, via)
        method = request.method
        if method == "ACK":
            self._receive_ack(request, key, source, now)
            return
        tx = self.transactions.get(key)
        if tx is not None:
            self.stats["request_retransmission"] += 1
            self._feed(tx, TransactionInput.REQUEST, now, request)
            return
        if len(self.transactions) >= self.max_transactions:
            self.stats["rejected_transaction_limit"] += 1
            response = build_response(request, 503, headers=[("Retry-After", "5")])
            self._transmit(response.serialize(), response_destination(via, source))
            return
        destination = self._destinations.get(response_destination(via, source))
        server_tx: ServerTransaction
        if method == "INVITE":
            server_tx = InviteServerTransaction(self, key, request, destination, now)
        else:
            server_tx = NonInviteServerTransaction(self, key, request, destination, now)
        self.transactions[key] = server_tx
        server_tx.start(now)
        if method == "INVITE":
            # 17.2.1: the transaction sends 100 Trying itself unless the TU answers
            # within 200 ms; answering at once saves the timer and stops the
            # client's INVITE retransmissions sooner.
            server_tx.send(build_response(request, 100), now)
            self.observer.sip_response_out(100, "INVITE")
        if method == "CANCEL":
            self._receive_cancel(request, key, server_tx, now)
            return
        self._emit(RequestReceived(request=request, source=source, transaction=key))

    def _receive_ack(
        self, request: Request, key: TransactionKey, source: Endpoint, now: float
    ) -> None:
        tx = self.transactions.get(key)
        if isinstance(tx, InviteServerTransaction) and tx.state is TransactionState.COMPLETED:
            self._feed(tx, TransactionInput.ACK, now, request)  # ACK for our non-2xx
            return
        if tx is not None and tx.state is TransactionState.CONFIRMED:
            return  # retransmitted ACK for a non-2xx: absorbed
        # An ACK for a 2xx is its own transaction (17.1.1.3); stop our 2xx
        # retransmissions, then hand it to the TU, which matches it to a dialog.
        ident = _dialog_ack_key(request)
        accepted = self._accepted_invites.get(ident) if ident is not None else None
        if accepted is not None and not accepted.terminated:
            self._feed(accepted, TransactionInput.ACK, now, request)
        self._emit(RequestReceived(request=request, source=source, transaction=None))

    def _receive_cancel(
        self, cancel: Request, key: TransactionKey, tx: ServerTransaction, now: float
    ) -> None:
        invite_key = TransactionKey(key.branch, key.sent_by, "INVITE", True)
        invite = self.transactions.get(invite_key)
        if invite is None:
            # RFC 3261 9.2: no matching transaction -> 481.
            self.send_response(key, build_response(cancel, 481, to_tag=None), now)
            return
        # 9.2: the CANCEL gets a 200 whatever the INVITE's state; only a pending
        # INVITE is affected, so only then is the TU told (it answers 487).
        self.send_response(key, build_response(cancel, 200), now)
        if invite.state is TransactionState.PROCEEDING:
            self._emit(CancelReceived(cancel=cancel, invite_transaction=invite_key))

    def _receive_response(self, response: Response, source: Endpoint, now: float) -> None:
        try:
            via = top_via(response.headers)
            cseq = parse_cseq(response.headers.get("CSeq") or "")
        except ParseError:
            self.stats["dropped_bad_response"] += 1
            return
        self.observer.sip_response_in(response.status, cseq.method)
        branch = via.branch
        tx = self.transactions.get(client_transaction_key(branch, cseq.method)) if branch else None
        if isinstance(tx, ClientTransaction):
            self._feed(tx, response_input(response.status), now, response)
            return
        if cseq.method == "INVITE" and 200 <= response.status < 300:
            # A 2xx retransmission after the transaction is gone: the UA core
            # must ACK it again (RFC 3261 13.2.2.4).
            self._emit(ResponseReceived(response=response, source=source, transaction=None))
            return
        self.stats["dropped_stray_response"] += 1

    # ------------------------------------------------------------------ TU API

    def send_request(
        self,
        request: Request,
        destination: Endpoint,
        now: float,
        *,
        branch: str | None = None,
    ) -> TransactionKey:
        """Starts a client transaction for a request (RFC 3261 17.1).

        Adds the top Via (our sent-by for the destination, a new branch, ``rport``)
        and switches a large request from UDP to TCP (18.1.1).

        Args:
            request: the request without our Via; it is modified in place.
            destination: next-hop transport address.
            now: current time in seconds.
            branch: reuse this branch (only for CANCEL, which must match its INVITE).

        Returns:
            The key of the new client transaction.

        Raises:
            LocalProtocolError: the request is an ACK (use :meth:`send_ack`).
        """
        if request.method == "ACK":
            raise LocalProtocolError("ACK is not sent in a client transaction")
        switched = self._maybe_switch_to_tcp(request, destination)
        if branch is None:
            branch = BRANCH_MAGIC_COOKIE + self.new_token()
        request.headers.prepend("Via", self._via_value(switched, branch))
        key = client_transaction_key(branch, request.method)
        if switched is not destination:
            self._switched_to_tcp.add(key)
        destination = switched
        tx: ClientTransaction
        if request.method == "INVITE":
            tx = InviteClientTransaction(self, key, request, destination, now, build_non2xx_ack)
        else:
            tx = NonInviteClientTransaction(self, key, request, destination, now)
        self.transactions[key] = tx
        tx.start(now)
        self.observer.sip_request_out(request.method)
        return key

    def send_cancel(self, invite: TransactionKey, cancel: Request, now: float) -> TransactionKey:
        """Sends a CANCEL built by ``build_cancel`` for one of our INVITEs (RFC 3261 9.1).

        The CANCEL already carries the INVITE's top Via (same branch), and goes to
        the INVITE's destination.

        Raises:
            LocalProtocolError: the INVITE transaction is unknown.
        """
        tx = self.transactions.get(invite)
        if tx is None:
            raise LocalProtocolError("CANCEL for an unknown INVITE transaction")
        key = client_transaction_key(invite.branch, "CANCEL")
        cancel_tx = NonInviteClientTransaction(self, key, cancel, tx.destination, now)
        self.transactions[key] = cancel_tx
        cancel_tx.start(now)
        self.observer.sip_request_out("CANCEL")
        return key

    def send_ack(self, ack: Request, destination: Endpoint) -> None:
        """Sends an ACK for a 2xx: its own transaction with a new branch (17.1.1.3)."""
        destination = self._maybe_switch_to_tcp(ack, destination)
        if "Via" not in ack.headers:
            branch = BRANCH_MAGIC_COOKIE + self.new_token()
            ack.headers.prepend("Via", self._via_value(destination, branch))
        self.observer.sip_request_out("ACK")
        self._transmit(ack.serialize(), destination)

    def send_response(self, key: TransactionKey, response: Response, now: float) -> None:
        """Sends a response in a server transaction.

        Raises:
            LocalProtocolError: unknown transaction, or the response is not allowed
                in its state.
        """
        tx = self.transactions.get(key)
        if not isinstance(tx, ServerTransaction):
            raise LocalProtocolError(f"no server transaction {key.method} {key.branch}")
        try:
            tx.send(response, now)
        finally:
            if tx.terminated:
                self._forget(tx)
        self.observer.sip_response_out(response.status, tx.key.method)
        if isinstance(tx, InviteServerTransaction) and 200 <= response.status < 300:
            ident = tx.ack_key = _dialog_ack_key(tx.request)
            if ident is not None:
                self._accepted_invites[ident] = tx

    def respond_stateless(self, request: Request, response: Response, source: Endpoint) -> None:
        """Sends a response outside any transaction (e.g. to an out-of-dialog ACK error)."""
        try:
            via = top_via(request.headers)
        except ParseError:
            return
        self._transmit(response.serialize(), response_destination(via, source))

    def transport_failed(self, destination: Endpoint, now: float) -> None:
        """The transport could not reach ``destination``: fail its client transactions.

        RFC 3261 17.1.4: the transport error is an input to each transaction that
        was sending there.
        """
        for tx in list(self.transactions.values()):
            if tx.destination != destination or tx.terminated:
                continue
            if tx.key in self._switched_to_tcp and isinstance(tx, ClientTransaction):
                self._fall_back_to_udp(tx, now)
                continue
            self._feed(tx, TransactionInput.TRANSPORT_ERROR, now)

    def _fall_back_to_udp(self, tx: ClientTransaction, now: float) -> None:
        """RFC 3261 18.1.1: "If an element sends a request over TCP because of these
        message size constraints, and that request would have otherwise been sent
        over UDP, if the attempt to establish the connection generates either an
        ICMP Protocol Not Supported, or results in a TCP reset, the element SHOULD
        retry the request, using UDP." """
        self._switched_to_tcp.discard(tx.key)
        self.stats["tcp_fallback_to_udp"] += 1
        via = top_via(tx.request.headers)
        tx.request.headers.pop_first_value("Via")
        tx.request.headers.prepend("Via", str(replace(via, transport="UDP")))
        tx.destination = Endpoint("UDP", tx.destination.host, tx.destination.port)
        tx.start(now)

    def transaction(self, key: TransactionKey) -> Transaction | None:
        return self.transactions.get(key)

    # ------------------------------------------------------------------ helpers

    def _maybe_switch_to_tcp(self, request: Request, destination: Endpoint) -> Endpoint:
        if destination.transport != "UDP" or not self._has_local("TCP", destination):
            return destination
        # Estimate with room for the Via we are about to add.
        if len(request.serialize()) + 100 > self.udp_size_threshold:
            self.stats["udp_switched_to_tcp"] += 1
            return Endpoint("TCP", destination.host, destination.port)
        return destination

    def _has_local(self, transport: str, destination: Endpoint) -> bool:
        return (transport, ":" in destination.host) in self._local_by_family

    def _local_for(self, destination: Endpoint) -> Endpoint:
        endpoint = self._local_by_family.get((destination.transport, ":" in destination.host))
        if endpoint is None:
            endpoint = self._local_by_transport.get(destination.transport)
        if endpoint is None:
            raise LocalProtocolError(f"no local {destination.transport} endpoint")
        return endpoint

    def _via_value(self, destination: Endpoint, branch: str) -> str:
        local = self._local_for(destination)
        return f"SIP/2.0/{destination.transport} {local.host_port};branch={branch};rport"


def stamp_received(request: Request, source: Endpoint) -> Via:
    """Adds ``received`` (and fills ``rport``) to the top Via (RFC 3261 18.2.1, RFC 3581 4).

    "When the server transport receives a request over any transport, it MUST examine
    the value of the "sent-by" parameter in the top Via header field value. If the
    host portion of the "sent-by" parameter contains a domain name, or if it contains
    an IP address that differs from the packet source address, the server MUST add a
    "received" parameter to that Via header field value."
    """
    via = top_via(request.headers)
    stamped = via
    if via.rport is not None:
        # RFC 3581 4: with rport, received is added even when the host matches.
        stamped = stamped.with_param("received", source.host).with_param("rport", str(source.port))
    elif via.host != source.host:
        stamped = stamped.with_param("received", source.host)
    if stamped is not via:
        request.headers.pop_first_value("Via")
        request.headers.prepend("Via", str(stamped))
    return stamped


#: The headers a stateless response copies, long and compact forms (RFC 3261 7.3.3).
_SALVAGE_RE = re.compile(
    rb"^(via|v|from|f|to|t|call-id|i|cseq)[ \t]*:[ \t]*([^\r\n]{1,1024})\r\n",
    re.IGNORECASE | re.MULTILINE,
)


def _salvage_headers(data: bytes) -> Headers:
    """The Via/From/To/Call-ID/CSeq lines of a message too large to parse (read from
    its first bytes only: the limit that made it unparsable bounds this work too)."""
    head = data[: 16 * 1024]
    return Headers(
        (name.decode("ascii"), value.decode("utf-8", "surrogateescape"))
        for name, value in _SALVAGE_RE.findall(head)
    )


def _armed(entry: TimerEntry) -> bool:
    """Whether a timer entry still stands: its transaction lives and has not
    disarmed or re-armed that timer since (transaction Rule 2)."""
    deadline, tx, name = entry
    return not tx.terminated and tx.timers.get(name) == deadline


def _deadline(entry: TimerEntry) -> float:
    return entry[0]


def _dialog_ack_key(request: Request) -> tuple[str, int] | None:
    call_id = request.headers.get("Call-ID")
    if call_id is None:
        return None
    try:
        cseq = parse_cseq(request.headers.get("CSeq") or "")
    except SipError:
        return None
    return call_id, cseq.seq


def _quoted_text(text: str) -> str:
    """Makes text safe inside a quoted-string (RFC 3261 25.1)."""
    safe = "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in text)
    return safe.replace("\\", "\\\\").replace('"', '\\"')[:120]


__all__ = [
    "MAX_TRANSACTIONS",
    "UDP_SIZE_THRESHOLD",
    "TransactionLayer",
    "TransportFailed",
    "client_transaction_key",
    "response_destination",
    "server_transaction_key",
    "stamp_received",
]
