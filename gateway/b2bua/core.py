"""The B2BUA core: every inbound INVITE becomes an A leg and a B leg.

Theory of operation
-------------------
The core is the transaction user of :class:`TransactionLayer` and does no I/O: the
adapter feeds it the layer's events (``handle_sip_event``), the routing decision
(``route_decided``) and timer expiries (``handle_timer``); it drives the layer's TU
API and emits :class:`RouteNeeded` / :class:`CallEnded`.

Rule 1: the A leg is answered only with what the B leg said or with the gateway's
own decision: provisional and final responses, BYE, re-INVITE, UPDATE and INFO are
relayed; a downstream 503 becomes 500 (RFC 3261 16.7 step 6: a 503 must not be
passed upstream, or the caller would take the gateway itself for overloaded).

Rule 2: when one leg ends, the other is ended (BYE, CANCEL or a final response).

Rule 3: failover. A B-leg attempt that times out, fails at the transport or answers
5xx/408 moves to the next target of the route, until none is left. A route may set
a short ``failover_timeout`` (emergency centres): an attempt with no response at all
after that long is abandoned (it cannot be CANCELled before a provisional, RFC 3261
9.1; a late 2xx from it is ACKed and BYEd).
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable

from gateway.b2bua.announce import AnnouncementStage
from gateway.b2bua.call import (
    NOT_ARMED,
    RELAYED_RESPONSE_HEADERS,
    Call,
    CallState,
    Relay,
    Side,
    ack_request,
    b_dialog_of,
    b_invite_cseq,
    build_b_invite,
    relayed_headers,
    sent_ack,
    shared_reason,
    slim_confirmed,
)
from gateway.b2bua.checks import ALLOW, check_new_request
from gateway.b2bua.events import (
    B2buaEvent,
    CallAnswered,
    CallEnded,
    EndedBy,
    LocalAnswer,
    MediaNeeded,
    Reject,
    Route,
    RouteNeeded,
    ServiceRequest,
)
from gateway.b2bua.message import OutOfDialogMessages
from gateway.b2bua.relay import InDialogRelay
from gateway.b2bua.reliable import ReliableProvisionals
from gateway.b2bua.session import SESSION_TIMERS, SessionTimers
from gateway.sip.builders import build_cancel, build_response
from gateway.sip.dialog import Dialog
from gateway.sip.errors import SipError
from gateway.sip.events import (
    CancelReceived,
    Endpoint,
    RequestReceived,
    ResponseReceived,
    SharedEndpoints,
    SipEvent,
    TransactionKey,
    TransactionTimedOut,
    TransportFailed,
)
from gateway.sip.headers import parse_name_address, parse_option_tags, parse_via
from gateway.sip.message import Request, Response
from gateway.sip.session_timer import SessionTimerPolicy
from gateway.sip.transaction_layer import TransactionLayer

log = logging.getLogger("voipgw.b2bua")

#: Heap entries per call, with room to spare (one live, at the call's earliest
#: deadline, and the stale ones of deadlines moved earlier): the heap is compacted
#: when it holds many more entries than that.
ENTRIES_PER_CALL = 2

#: The A-leg INVITE transaction key of a confirmed call (B2bua._slim): no transaction
#: has it, so a response sent on it is refused as on any ended transaction.
ENDED_TRANSACTION = TransactionKey("", "", "INVITE", True)

#: Callers' addresses kept as one shared object each (B2bua._sources).
MAX_SHARED_SOURCES = 1024

#: B-leg statuses after which the next target of the route is tried.
FAILOVER_STATUSES = frozenset({408, 500, 502, 503, 504})


class B2bua(
    AnnouncementStage, ReliableProvisionals, InDialogRelay, SessionTimers, OutOfDialogMessages
):
    """Back-to-back user agent over one transaction layer.

    Args:
        layer: the transaction layer it is the TU of.
        new_token: fresh random token (tags, Call-IDs, call UUIDs).
        no_answer_timeout: default Timer C, seconds after the first provisional.
        contact_user: user part of the gateway's Contact URIs.
        services: out-of-dialog methods handed to the adapter as
            :class:`ServiceRequest` (e.g. {"REGISTER"} when a registrar is attached).
        new_call_uuid: unique id of a call (the CDR key); ``new_token`` by default.
        on_response: sees every response the B2BUA sends, just before it goes out
            (RFC 7339 overload feedback in the top Via).
        session_timers: session timers (RFC 4028) on both legs (session.py); None
            turns them off (Session-Expires then passes end to end).
    """

    def __init__(
        self,
        layer: TransactionLayer,
        *,
        new_token: Callable[[], str],
        no_answer_timeout: float = 180.0,
        contact_user: str = "voipgw",
        services: frozenset[str] = frozenset(),
        new_call_uuid: Callable[[], str] | None = None,
        on_response: Callable[[Response, float], object] | None = None,
        session_timers: SessionTimerPolicy | None = None,
    ) -> None:
        self.layer = layer
        self.session_timers = session_timers
        self.on_response = on_response
        self.new_call_uuid = new_call_uuid or new_token
        self.services = services
        self.new_token = new_token
        self.no_answer_timeout = no_answer_timeout
        self.contact_user = contact_user
        self.calls: dict[str, Call] = {}
        self._by_a_invite: dict[TransactionKey, Call] = {}
        self._by_b_invite: dict[TransactionKey, Call] = {}
        #: calls by the local tag of either leg's dialog (A: our To tag, B: our From
        #: tag): tokens of ours, unique, held by the call already. The Call-ID is
        #: checked on lookup (_dialog_of); a (Call-ID, tag) key and a (call, side)
        #: value were two tuples per leg, 0.2 KiB per idle call (issue 17).
        self._dialogs: dict[str, Call] = {}
        self._relays: dict[TransactionKey, Relay] = {}
        self._refreshes: dict[TransactionKey, tuple[Call, Side]] = {}
        self._messages: set[TransactionKey] = set()
        self._events: deque[B2buaEvent] = deque()
        #: (deadline in seconds, call uuid): one live entry per call with a timer
        #: armed, at its earliest deadline (Call.timer_at); ties go by uuid
        self._timers: list[tuple[float, str]] = []
        #: set while the instance drains (SIGTERM): OPTIONS outside a dialog gets 503,
        #: so a dispatcher probing with OPTIONS (Kamailio ds_ping_interval) takes the
        #: instance out while its calls end (deploy/OPERATIONS.md "Several instances")
        self.draining = False
        #: our Contact value per local endpoint: built once, shared by every dialog
        #: (two per call otherwise, held for the call's life)
        self._contacts: dict[Endpoint, str] = {}
        #: callers' addresses, one object per address (_new_call): behind a proxy or
        #: PBX every call comes from the same one, and each INVITE's own Endpoint was
        #: 0.12 KiB per idle call; bounded, addresses come from the network
        self._sources = SharedEndpoints(MAX_SHARED_SOURCES)

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> B2buaEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        while self._timers:
            deadline, uuid = self._timers[0]
            call = self.calls.get(uuid)
            if call is not None and call.timer_at == deadline:
                if call.next_deadline() == deadline:
                    return deadline
                # Disarmed or moved later since: the entry goes where it is due.
                call.timer_at = NOT_ARMED
                heapq.heappop(self._timers)
                self._schedule(call)
                continue
            heapq.heappop(self._timers)
        return None

    def handle_timer(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            deadline, uuid = heapq.heappop(self._timers)
            call = self.calls.get(uuid)
            if call is None or call.timer_at != deadline:
                continue  # stale: the call ended, or has an entry at another time
            call.timer_at = NOT_ARMED
            name = call.due_timer(now)
            while name is not None and call.state is not CallState.ENDED:
                call.set_deadline(name, NOT_ARMED)
                self._on_timer(call, name, now)
                name = call.due_timer(now)
            self._schedule(call)

    def _on_timer(self, call: Call, name: str, now: float) -> None:
        if name == "no_answer":
            self._on_no_answer(call, now)
        elif name == "failover":
            self._on_failover_timeout(call, now)
        elif name == "reliable":
            self._retransmit_reliable(call, now)
        elif name == "hangup":
            call.hangup_side = "gateway"
            self._end_call(call, now)
        elif name in SESSION_TIMERS:
            self._on_session_timer(call, name, now)

    def _arm(self, call: Call, name: str, delay: float, now: float) -> None:
        call.set_deadline(name, now + delay)
        self._schedule(call)

    def _disarm(self, call: Call, name: str) -> None:
        # The heap entry stays: get_timer and handle_timer move it to the next deadline.
        call.set_deadline(name, NOT_ARMED)

    def _schedule(self, call: Call) -> None:
        """Gives the call a heap entry at its earliest deadline, unless the one it
        has is no later (a later entry becomes stale: ``timer_at`` differs)."""
        if call.state is CallState.ENDED:
            return
        due = call.next_deadline()
        if due < call.timer_at:
            call.timer_at = due
            heapq.heappush(self._timers, (due, call.uuid))
            if len(self._timers) > ENTRIES_PER_CALL * len(self.calls) + 4096:
                self._compact_timers()

    def _compact_timers(self) -> None:
        """Drops the heap's stale entries (moved earlier, or of ended calls).

        Stale entries are otherwise only dropped when they reach the top: a session
        timer's expiry lies half an hour ahead, so at 1,000 calls/s the heap would
        hold millions of them. Rebuilt only when it outgrows the live calls several
        times over, the cost per arming stays constant.
        """
        live = []
        for entry in self._timers:
            call = self.calls.get(entry[1])
            if call is not None and call.timer_at == entry[0]:
                live.append(entry)
        heapq.heapify(live)
        self._timers = live

    # ------------------------------------------------------------------ input

    def handle_sip_event(self, event: SipEvent, now: float) -> None:
        """Acts on one event of the transaction layer."""
        try:
            if isinstance(event, RequestReceived):
                self._on_request(event, now)
            elif isinstance(event, ResponseReceived):
                self._on_response(event, now)
            elif isinstance(event, CancelReceived):
                self._on_cancel(event, now)
            elif isinstance(event, TransactionTimedOut | TransportFailed):
                self._on_failure(event, now)
        except SipError as exc:
            # A message that parsed but breaks a rule deeper in (bad Contact in a
            # dialog-creating request, say): answer it when we can, never crash.
            log.info("rejected %s: %s", type(event).__name__, exc)
            if isinstance(event, RequestReceived) and event.transaction is not None:
                self._respond(event.transaction, event.request, exc.status_hint, now)

    def answer(self, transaction: TransactionKey, response: Response, now: float) -> None:
        """Sends the adapter's answer to a :class:`ServiceRequest`."""
        self._send(transaction, response, now)

    def route_decided(
        self, call_uuid: str, decision: Route | Reject | LocalAnswer, now: float
    ) -> None:
        """Continues a call with the routing layer's decision.

        Args:
            call_uuid: from :class:`RouteNeeded`.
            decision: where the B leg goes, or how the A leg is refused.
            now: current time in seconds.
        """
        call = self.calls.get(call_uuid)
        if call is None or call.state is not CallState.ROUTING:
            return  # cancelled while routing
        call.facts = decision.facts
        if isinstance(decision, Reject):
            self._fail_a(call, decision.status, decision.reason, now, headers=decision.headers)
            return
        if isinstance(decision, LocalAnswer):
            self._answer_locally(call, decision, now)
            return
        ending = decision.announcement is not None and decision.announcement.end_after
        if not decision.targets and not ending:
            self._fail_a(call, 404, None, now)
            return
        call.route = decision
        if not self._agree_a_timer(call, now):
            return
        call.targets = tuple(decision.targets)
        call.b_call_id = self.new_token() + "@voipgw"
        call.b_tag = self.new_token()
        self._dialogs[call.b_tag] = call
        if decision.announcement is not None:
            call.state = CallState.ANNOUNCING
            self._events.append(
                MediaNeeded(
                    call_uuid=call.uuid,
                    offer=call.a_request.body,
                    announcement=decision.announcement,
                    source=call.a_source,
                )
            )
            return
        self._try_next_target(call, now)

    # ------------------------------------------------------------------ requests

    def _on_request(self, event: RequestReceived, now: float) -> None:
        request = event.request
        to_tag = parse_name_address(request.headers.get("To") or "").tag
        if to_tag is not None:
            self._in_dialog_request(event, to_tag, now)
            return
        key = event.transaction
        if key is None:  # an ACK outside any dialog we know: nothing to do
            return
        method = request.method
        rejection = check_new_request(request, forwards=method == "INVITE")
        if rejection is not None:
            self._respond(key, request, rejection.status, now, headers=rejection.headers)
            return
        if method == "INVITE":
            self._new_call(event, key, now)
        elif method == "OPTIONS" and self.draining:
            # RFC 3261 21.5.4: 503, the server "is temporarily unable to process the
            # request"; Kamailio's dispatcher counts only 2xx (and codes listed in
            # ds_ping_reply_codes) as alive, so it stops sending new calls here.
            self._respond(key, request, 503, now)
        elif method == "OPTIONS":
            # Answered locally: peers use OPTIONS as a keep-alive of the gateway.
            self._respond(
                key,
                request,
                200,
                now,
                headers=(
                    ("Allow", ALLOW),
                    ("Accept", "application/sdp"),
                    ("Supported", "100rel"),
                ),
            )
        elif method == "BYE":
            self._respond(key, request, 481, now)
        elif method in self.services:
            self._events.append(
                ServiceRequest(request=request, source=event.source, transaction=key)
            )
        else:
            # No registrar or other out-of-dialog service is attached here.
            self._respond(key, request, 405, now, headers=(("Allow", ALLOW),))

    def _new_call(self, event: RequestReceived, key: TransactionKey, now: float) -> None:
        request = event.request
        if self._is_loop(request):
            self._respond(key, request, 482, now)
            return
        uuid = self.new_call_uuid()
        a_tag = self.new_token()
        a_dialog = Dialog.as_uas(
            request, local_tag=a_tag, local_contact=self._contact_for(event.source)
        )
        source = self._sources.get(event.source)
        call = Call(
            uuid=uuid,
            a_request=request,
            a_source=source,
            a_tx=key,
            a_tag=a_tag,
            a_dialog=a_dialog,
            setup_at=now,
        )
        # RFC 3262 3: "If the UAC requires 100rel, the UAS MUST send provisional
        # responses reliably". The B leg never asks for it: the gateway makes the
        # caller's provisionals reliable itself.
        call.reliable = "100rel" in [
            tag.lower() for tag in parse_option_tags(",".join(request.headers.get_lines("Require")))
        ]
        self.calls[uuid] = call
        self._by_a_invite[key] = call
        self._dialogs[a_tag] = call
        self._events.append(
            RouteNeeded(
                call_uuid=uuid,
                request=request,
                source=event.source,
                active_calls=len(self.calls),
            )
        )

    def _is_loop(self, request: Request) -> bool:
        """RFC 3261 16.3 item 4 adapted to a B2BUA: the request carries a Via of ours
        (a branch of a live client INVITE transaction) and the same Request-URI as
        that transaction's request, so it is our own B leg come back: a loop, not a
        spiral."""
        for value in request.headers.values("Via"):
            try:
                vias = parse_via(value)
            except SipError:
                continue
            branch = vias[0].branch if vias else None
            if branch is None:
                continue
            tx = self.layer.transaction(TransactionKey(branch, "", "INVITE", False))
            if tx is not None and tx.request.uri == request.uri:
                return True
        return False

    def _in_dialog_request(self, event: RequestReceived, to_tag: str, now: float) -> None:
        request = event.request
        key = event.transaction
        entry = self._dialog_of(request.headers.get("Call-ID") or "", to_tag)
        if entry is None:
            if key is not None:
                # 12.2.2: "If the UAS wishes to reject the request because it does
                # not wish to recreate the dialog, it MUST respond [...] 481".
                self._respond(key, request, 481, now)
            return
        call, side = entry
        if request.method == "ACK":
            self._on_ack(call, side, request, now)
            return
        if key is None:
            return
        dialog = call.dialog(side)
        if dialog is None:
            self._respond(key, request, 481, now)
            return
        dialog.check_remote_request(request)
        if request.method in ("INVITE", "UPDATE"):
            dialog.refresh_target(request)
        if request.method == "BYE":
            self._respond(key, request, 200, now)
            call.hangup_side = side.value
            call.ended_by = EndedBy.CALLER if side is Side.A else EndedBy.CALLEE
            self._end_call(call, now, skip=side)
            return
        if request.method == "OPTIONS":
            self._respond(key, request, 200, now, headers=(("Allow", ALLOW),))
            return
        if request.method == "PRACK" and side is Side.A:
            self._on_prack(call, key, request, now)
            return
        if request.method in ("INVITE", "UPDATE"):
            accepted, timer = self._peer_refresh(call, side, key, request, now)
            if not accepted:
                return
            if call.media_answer is not None:
                self._refresh_anchored(call, side, key, request, now, timer)
            else:
                self._relay_request(call, side, key, request, now, timer)
            return
        self._relay_request(call, side, key, request, now)

    def _dialog_of(self, call_id: str, local_tag: str) -> tuple[Call, Side] | None:
        """The call and leg of the dialog with this Call-ID and our tag, if any."""
        call = self._dialogs.get(local_tag)
        if call is None:
            return None
        if local_tag == call.a_tag and call_id == call.call_id:
            return call, Side.A
        if local_tag == call.b_tag and call_id == call.b_call_id:
            return call, Side.B
        return None

    def _on_ack(self, call: Call, side: Side, ack: Request, now: float) -> None:
        confirmed = side is Side.A and call.state is CallState.ANSWERED
        if confirmed:
            call.state = CallState.CONFIRMED
        other = side.other
        cseq = call.take_ack_owed(other)
        dialog = call.dialog(other)
        if cseq is not None and dialog is not None:
            # Late offer: the answer is in this ACK, and the other leg waits for it.
            content_type = ack.headers.get("Content-Type") or ""
            self.layer.send_ack(
                ack_request(dialog, cseq, content_type, ack.body), self._leg_endpoint(call, other)
            )
            if ack.body:
                call.set_local_sdp(other, content_type, ack.body)
            if other is Side.B:
                call.b_ack = sent_ack(cseq, content_type, ack.body)
        # After the relay: a late-offer call owed the B leg this very ACK, and was
        # never slimmed when the check came first.
        if confirmed and not call.acks_owed:
            self._slim(call)

    def _on_cancel(self, event: CancelReceived, now: float) -> None:
        call = self._by_a_invite.get(event.invite_transaction)
        if call is None or call.state not in (
            CallState.ROUTING,
            CallState.ANNOUNCING,
            CallState.CALLING,
            CallState.EARLY,
        ):
            return
        if call.a_answered_locally:
            return  # already answered: the caller must send BYE, not CANCEL
        call.cancelled = True
        call.hangup_side = Side.A.value
        call.ended_by = EndedBy.CALLER
        # RFC 3261 9.2: the UAS answers the INVITE with 487.
        self._fail_a(call, 487, None, now)

    # ------------------------------------------------------------------ responses

    def _on_response(self, event: ResponseReceived, now: float) -> None:
        response = event.response
        key = event.transaction
        if key is None:
            self._on_stray_2xx(response, now)
            return
        call = self._by_b_invite.get(key)
        if call is not None:
            self._on_b_invite_response(call, key, response, now)
            return
        relay = self._relays.get(key)
        refresh = self._refreshes.get(key)
        if relay is not None:
            self._on_relayed_response(relay, key, response, now)
        elif refresh is not None:
            self._on_refresh_response(refresh[0], refresh[1], key, response, now)
        elif key.method == "MESSAGE":
            self._message_response(key, response)  # message.py: the gateway's own
        elif 200 <= response.status < 300 and key.method == "INVITE":
            # A 2xx retransmission for a call whose set-up index was dropped (_slim):
            # found through its dialog instead, and ACKed again.
            self._on_stray_2xx(response, now, key)

    def _on_stray_2xx(
        self, response: Response, now: float, key: TransactionKey | None = None
    ) -> None:
        """A 2xx after the call's set-up index was dropped (_slim) or its B-leg INVITE
        transaction ended. A retransmission of the answer is ACKed again (RFC 3261
        13.2.2.4) so the callee stops retransmitting; a 2xx of another dialog (a
        forking proxy's second answer: another To tag) is ACKed and ended with BYE,
        as 13.2.2.4 asks of a UAC that keeps one dialog, never given the first
        dialog's ACK, which leaves the second callee's phone answered and unended."""
        from_tag = parse_name_address(response.headers.get("From") or "").tag or ""
        entry = self._dialog_of(response.headers.get("Call-ID") or "", from_tag)
        if entry is None:
            return
        call, side = entry
        if side is not Side.B:
            return
        to_tag = parse_name_address(response.headers.get("To") or "").tag
        if call.b_dialog is None or to_tag == call.b_dialog.remote_tag:
            self._resend_b_ack(call)
        elif key is not None:
            self._ack_and_bye(call, key, response, now)

    def _on_b_invite_response(
        self, call: Call, key: TransactionKey, response: Response, now: float
    ) -> None:
        status = response.status
        if key in call.abandoned or key != call.b_tx:
            if 200 <= status < 300:
                self._ack_and_bye(call, key, response, now)
            return
        self._disarm(call, "failover")
        if status == 100:
            return
        if status < 200:
            self._on_b_provisional(call, response, now)
        elif status < 300:
            self._on_b_answer(call, response, now)
        else:
            self._on_b_failure(call, status, response, now)

    def _on_b_provisional(self, call: Call, response: Response, now: float) -> None:
        call.b_provisional = True
        if call.b_cancel_pending:
            self._cancel_b(call, now)
            return
        if call.state is CallState.CALLING:
            call.state = CallState.EARLY
            route = call.route
            timeout = route.no_answer_timeout if route else None
            self._arm(call, "no_answer", timeout or self.no_answer_timeout, now)
        if call.ringing_at is None and response.status in (180, 183):
            call.ringing_at = now
        if call.b_dialog is None and parse_name_address(response.headers.get("To") or "").tag:
            assert call.b_request is not None
            call.b_dialog = b_dialog_of(call, call.b_request, response)
        self._answer_a(call, response, now)

    def _on_b_answer(self, call: Call, response: Response, now: float) -> None:
        if call.state in (CallState.ANSWERED, CallState.CONFIRMED, CallState.ENDED):
            # A retransmitted 2xx, or a second fork answered: ACK it again, or ACK
            # and BYE the extra dialog.
            if call.b_ack is not None and call.b_target is not None:
                to_tag = parse_name_address(response.headers.get("To") or "").tag
                if call.b_dialog is not None and to_tag == call.b_dialog.remote_tag:
                    self._resend_b_ack(call)
                    return
            if call.b_tx is not None:
                self._ack_and_bye(call, call.b_tx, response, now)
            return
        assert call.b_request is not None
        self._disarm(call, "no_answer")
        to_tag = parse_name_address(response.headers.get("To") or "").tag
        if call.b_dialog is not None and call.b_dialog.remote_tag == to_tag:
            call.b_dialog.confirm(response)  # the early dialog becomes confirmed
        else:
            call.b_dialog = b_dialog_of(call, call.b_request, response)
        call.answered_at = now
        self._b_answered(call, response, now)
        if call.ringing_at is None:
            call.ringing_at = now
        call.state = CallState.CONFIRMED if call.a_answered_locally else CallState.ANSWERED
        if call.a_answered_locally:
            self._slim(call)
        if call.a_request.body or call.b_offer is not None:
            self._send_b_ack(call, b"", None)
        else:
            call.owe_ack(Side.B, b_invite_cseq(call))  # late offer: the answer comes in A's ACK
        self._answer_a(call, response, now)
        self._answered(call, now)
        if call.cancelled:  # CANCEL crossed the 2xx: keep nothing up
            self._end_call(call, now)

    def _send_b_ack(self, call: Call, body: bytes, content_type: str | None) -> None:
        assert call.b_dialog is not None
        assert call.b_target is not None
        content_type = content_type or ""
        cseq = b_invite_cseq(call)
        call.b_ack = sent_ack(cseq, content_type, body)
        self.layer.send_ack(ack_request(call.b_dialog, cseq, content_type, body), call.b_target)

    def _resend_b_ack(self, call: Call) -> None:
        """ACKs a retransmission of the B leg's 2xx again (RFC 3261 13.2.2.4): the
        ACK is rebuilt from the dialog and what Call.b_ack kept of the first one."""
        if call.b_ack is None or call.b_dialog is None or call.b_target is None:
            return
        cseq, content_type, body = call.b_ack
        self.layer.send_ack(ack_request(call.b_dialog, cseq, content_type, body), call.b_target)

    def _on_b_failure(self, call: Call, status: int, response: Response, now: float) -> None:
        self._disarm(call, "no_answer")
        if call.cancelled or call.state is CallState.ENDED:
            return
        if status in FAILOVER_STATUSES and call.targets:
            log.info(
                "call %s: B leg answered %d, trying next target",
                call.call_id,
                status,
                extra={"call_id": call.call_id},
            )
            self._try_next_target(call, now)
            return
        if status in FAILOVER_STATUSES and self._fail_unreachable(call, now):
            return
        if status == 422 and self.session_timers is not None:
            # The interval is the gateway's own offer on the B leg, never the caller's
            # (RFC 4028 7.3: retried once); what the callee still refuses is the
            # gateway's failure, not the caller's: the next target, else 500.
            if self._retry_b_after_422(call, response, now):
                return
            if call.targets:
                self._try_next_target(call, now)
            else:
                self._fail_a(call, 500, None, now)
            return
        call.ended_by = EndedBy.CALLEE
        # RFC 3261 16.7 step 6: a 503 from downstream becomes 500 upstream.
        if status == 503:
            self._fail_a(call, 500, None, now)
            return
        headers = relayed_headers(response.headers, RELAYED_RESPONSE_HEADERS)
        self._fail_a(call, status, response.reason, now, headers=tuple(headers), body=response.body)

    # ------------------------------------------------------------------ failures

    def _on_failure(self, event: TransactionTimedOut | TransportFailed, now: float) -> None:
        key = event.transaction
        call = self._by_a_invite.get(key)
        if call is not None and isinstance(event, TransactionTimedOut):
            # Timer H / L: the caller never ACKed our final response.
            if call.state is CallState.ANSWERED:
                call.hangup_side = "gateway"
                self._end_call(call, now)
            return
        call = self._by_b_invite.get(key)
        if call is not None:
            if key != call.b_tx or call.state not in (CallState.CALLING, CallState.EARLY):
                return
            self._disarm(call, "no_answer")
            self._disarm(call, "failover")
            if call.cancelled:
                return
            if call.targets:
                self._try_next_target(call, now)
            elif not self._fail_unreachable(call, now):
                self._fail_a(call, _failure_status(event), None, now)
            return
        relay = self._relays.pop(key, None)
        if relay is not None:
            self._respond(relay.server_tx, relay.request, _failure_status(event), now)
        refresh = self._refreshes.pop(key, None)
        if refresh is not None:
            # RFC 4028 10: a refresh that times out ends the session.
            self._session_failed(refresh[0], refresh[1], now)
        elif key.method == "MESSAGE":
            self._message_failed(event)  # message.py: the gateway's own

    def _on_no_answer(self, call: Call, now: float) -> None:
        if call.state is not CallState.EARLY:
            return
        self._cancel_b(call, now)
        route = call.route
        if route is not None and route.emergency and call.targets:
            # The centre rings but nobody answers: an emergency call moves on.
            self._try_next_target(call, now)
            return
        self._fail_a(call, 408, None, now)

    def _on_failover_timeout(self, call: Call, now: float) -> None:
        if call.state is not CallState.CALLING or call.b_tx is None:
            return
        log.warning(
            "call %s: no response from %s, failing over",
            call.call_id,
            call.b_target,
            extra={"call_id": call.call_id},
        )
        if call.targets:
            call.abandoned = (*call.abandoned, call.b_tx)
            self._try_next_target(call, now)
        else:
            call.abandoned = (*call.abandoned, call.b_tx)
            self._fail_unreachable(call, now)

    def _fail_unreachable(self, call: Call, now: float) -> bool:
        """Answers the caller the route's ``unreachable`` response, if it has one;
        returns whether it did."""
        route = call.route
        if route is None or route.unreachable is None:
            return False
        answer = route.unreachable
        log.info(
            "call %s: %s unreachable, answering %d",
            call.call_id,
            call.b_target,
            answer.status,
            extra={"call_id": call.call_id},
        )
        self._fail_a(call, answer.status, answer.reason, now, headers=answer.headers)
        return True

    # ------------------------------------------------------------------ B leg

    def _try_next_target(self, call: Call, now: float) -> None:
        route = call.route
        assert route is not None
        if call.b_tx is not None:
            call.abandoned = (*call.abandoned, call.b_tx)
        target, call.targets = call.targets[0], call.targets[1:]
        attempt = len(route.targets) - len(call.targets) - 1
        # Which target this attempt is: the CDR names the centre that answered.
        call.attempt = attempt
        call.b_target = target
        call.b_provisional = False
        call.b_dialog = None
        request = build_b_invite(
            call,
            route,
            call_id=call.b_call_id,
            tag=call.b_tag,
            contact=self._contact_for(target),
            attempt=attempt,
        )
        # Each attempt is a new transaction with a fresh CSeq of the same dialog-less
        # request; keep a copy without our Via to build ACK/CANCEL from.
        self._offer_b_timer(call, request)
        key = self.layer.send_request(request, target, now)
        call.b_request = request
        call.routed_uri = request.uri
        call.b_tx = key
        call.state = CallState.CALLING
        self._by_b_invite[key] = call
        if route.failover_timeout is not None and (call.targets or route.unreachable is not None):
            self._arm(call, "failover", route.failover_timeout, now)

    def _cancel_b(self, call: Call, now: float) -> None:
        if call.b_tx is None or call.b_request is None:
            return
        if not call.b_provisional:
            # RFC 3261 9.1: no CANCEL before a provisional; send it when one comes.
            call.b_cancel_pending = True
            return
        call.b_cancel_pending = False
        try:
            self.layer.send_cancel(call.b_tx, build_cancel(call.b_request), now)
        except SipError:
            log.debug("call %s: B-leg INVITE already gone, no CANCEL", call.uuid)

    def _ack_and_bye(self, call: Call, key: TransactionKey, response: Response, now: float) -> None:
        tx = self.layer.transaction(key)
        request = tx.request if tx is not None else call.b_request
        if request is None:
            return
        dialog = Dialog.as_uac(request, response)
        destination = tx.destination if tx is not None else call.b_target
        if destination is None:
            return
        self.layer.send_ack(dialog.create_request("ACK", cseq=dialog.local_cseq), destination)
        self.layer.send_request(dialog.create_request("BYE"), destination, now)

    # ------------------------------------------------------------------ A leg

    def _answer_a(self, call: Call, response: Response, now: float) -> None:
        if call.media_answer is not None:
            self._answer_anchored(call, response, now)
            return
        headers = relayed_headers(response.headers, RELAYED_RESPONSE_HEADERS)
        headers.append(("Contact", call.a_dialog.local_contact))
        out = build_response(
            call.a_request,
            response.status,
            response.reason,
            to_tag=call.a_tag,
            headers=headers,
            body=response.body,
        )
        if response.status >= 200:
            call.final_status = response.status
            call.final_reason = shared_reason(response.status, response.reason)
        self._send_a(call, out, now)

    def _fail_a(
        self,
        call: Call,
        status: int,
        reason: str | None,
        now: float,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> None:
        out = build_response(
            call.a_request, status, reason, to_tag=call.a_tag, headers=headers, body=body
        )
        call.final_status = status
        call.final_reason = out.reason
        if call.a_answered_locally:
            # The caller already has a 200 (answer-first): the call ends with BYE.
            self._end_call(call, now)
            return
        self._send_a(call, out, now)
        self._end_call(call, now, skip=Side.A)

    def _end_call(
        self, call: Call, now: float, *, skip: Side | None = None, reason: str | None = None
    ) -> None:
        """Ends both legs (except ``skip``, already ended by the peer) and reports;
        ``reason``: the RFC 3326 Reason of the BYEs when the gateway ends the call."""
        if call.state is CallState.ENDED:
            return
        previous = call.state
        call.state = CallState.ENDED
        call.ended_at = now
        self._disarm(call, "no_answer")
        self._disarm(call, "failover")
        a_up = previous in (CallState.ANSWERED, CallState.CONFIRMED) or call.a_answered_locally
        if skip is not Side.A and a_up:
            self.layer.send_request(_bye(call.a_dialog, reason), call.a_source, now)
        if skip is not Side.B:
            if call.b_dialog is not None and call.b_dialog.confirmed and call.b_target:
                self.layer.send_request(_bye(call.b_dialog, reason), call.b_target, now)
            elif previous in (CallState.CALLING, CallState.EARLY):
                self._cancel_b(call, now)
        if call.final_status == 0:
            call.final_status = 200 if call.answered_at is not None else 500
        self._events.append(self._summary(call, now))
        self._forget(call)

    def _slim(self, call: Call) -> None:
        """A confirmed, ACKed call keeps only what its dialogs and CDR need: its set-up
        transactions are no longer looked up by key (a CANCEL or Timer H can no
        longer concern it), so their index entries go too."""
        slim_confirmed(call)
        self._by_a_invite.pop(call.a_tx, None)
        for key in [call.b_tx, *call.abandoned]:
            if key is not None:
                self._by_b_invite.pop(key, None)
        # Nothing answers or cancels these transactions any more (the A leg's 2xx is
        # retransmitted by its transaction until the ACK, RFC 3261 13.3.1.4): their
        # keys and branch texts were ~0.35 KiB per idle call.
        call.a_tx = ENDED_TRANSACTION
        call.b_tx = None
        call.abandoned = ()

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.uuid, None)
        self._by_a_invite.pop(call.a_tx, None)
        self._dialogs.pop(call.a_tag, None)
        if call.b_call_id:
            self._dialogs.pop(call.b_tag, None)
        for key in [call.b_tx, *call.abandoned]:
            if key is not None:
                self._by_b_invite.pop(key, None)
        for key in [k for k, relay in self._relays.items() if relay.call is call]:
            del self._relays[key]
        for key in [k for k, (refreshed, _) in self._refreshes.items() if refreshed is call]:
            del self._refreshes[key]

    def _answered(self, call: Call, now: float) -> None:
        """Reports that the caller has a 2xx (the CDR's in-progress record)."""
        self._events.append(CallAnswered(call_uuid=call.uuid, summary=self._summary(call, now)))

    def _summary(self, call: Call, now: float) -> CallEnded:
        a = call.a_request
        pai = None
        if call.route is not None:
            pai = next(
                (v for n, v in call.route.headers if n.lower() == "p-asserted-identity"), None
            )
        return CallEnded(
            call_uuid=call.uuid,
            call_id=call.call_id,
            caller=parse_name_address(a.headers.get("From") or "").uri,
            callee_dialled=a.uri,
            callee_routed=call.routed_uri,
            p_asserted_identity=pai,
            source=call.a_source,
            user_agent=a.headers.get("User-Agent"),
            setup_at=call.setup_at,
            ringing_at=call.ringing_at,
            answered_at=call.answered_at,
            ended_at=now,
            final_status=call.final_status,
            final_reason=call.final_reason,
            disposition=call.disposition(),
            hangup_side=call.hangup_side,
            ended_by=call.ended_by,
            emergency=bool(call.route and call.route.emergency),
            facts=call.facts,
            attempt=call.attempt,
            recording_notice=call.recording_notice,
            recording_started_at=call.recording_started_at,
        )

    # ------------------------------------------------------------------ helpers

    def _send(self, key: TransactionKey, response: Response, now: float) -> None:
        if self.on_response is not None:
            self.on_response(response, now)
        try:
            self.layer.send_response(key, response, now)
        except SipError as exc:
            log.debug("response %d not sent: %s", response.status, exc)

    def _respond(
        self,
        key: TransactionKey,
        request: Request,
        status: int,
        now: float,
        *,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        to_tag = None if status == 100 else self.new_token()
        self._send(key, build_response(request, status, to_tag=to_tag, headers=headers), now)

    def _leg_endpoint(self, call: Call, side: Side) -> Endpoint:
        """Where in-dialog requests of a leg go.

        The A leg: back to the address the caller's INVITE came from, whatever its
        Contact says (symmetric signalling: a phone behind NAT is only reachable
        through the flow it opened; RFC 5626 makes the same choice). The B leg: the
        next hop chosen by routing (the PBX or trunk).
        """
        if side is Side.A:
            return call.a_source
        assert call.b_target is not None
        return call.b_target

    def _contact_for(self, peer: Endpoint) -> str:
        local = self.layer._local_for(peer)
        contact = self._contacts.get(local)
        if contact is None:
            transport = "" if local.transport == "UDP" else f";transport={local.transport.lower()}"
            contact = f"<sip:{self.contact_user}@{local.host_port}{transport}>"
            self._contacts[local] = contact
        return contact


def _bye(dialog: Dialog, reason: str | None) -> Request:
    bye = dialog.create_request("BYE")
    if reason is not None:
        bye.headers.add("Reason", reason)
    return bye


def _failure_status(event: TransactionTimedOut | TransportFailed) -> int:
    """Status for the caller when the B leg got no answer: 408 on timeout; 502 when
    the next hop is unreachable (not 503, which would tell the caller that the gateway
    itself is overloaded, RFC 3261 21.5.4)."""
    return 408 if isinstance(event, TransactionTimedOut) else 502
