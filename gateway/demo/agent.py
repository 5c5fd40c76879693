"""The SIP half of a demo peer that answers every call (sans-IO).

Theory of operation: :class:`AnsweringAgent` sits on a
:class:`~gateway.sip.transaction_layer.TransactionLayer` (which absorbs
retransmissions, sends 100 Trying and retransmits our 2xx until the ACK) and turns
its events into calls:

* a new INVITE gets 180 Ringing at once (with our To tag and Contact, so the early
  dialog exists, RFC 3261 12.1.1) and becomes a :class:`CallOffered` for the adapter,
  which opens media and then calls :meth:`AnsweringAgent.answer` with its SDP;
* a CANCEL while ringing ends the call with 487 (RFC 3261 9.2);
* a BYE in the dialog gets 200 and ends the call (15.1.2); an unknown one gets 481;
* :meth:`AnsweringAgent.hang_up` sends our own BYE along the dialog's route set.

Each ended call is reported once as :class:`CallEnded`. Nothing here touches a
socket or a clock: ``now`` comes in, messages leave through the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.service.server import ip_literal_endpoint
from gateway.sip.builders import build_response
from gateway.sip.dialog import Dialog
from gateway.sip.errors import SipError
from gateway.sip.events import (
    CancelReceived,
    Endpoint,
    RequestReceived,
    SipEvent,
    TransactionKey,
)
from gateway.sip.headers import parse_name_address
from gateway.sip.message import Request
from gateway.sip.transaction_layer import TransactionLayer

#: Methods the peers understand (Allow, RFC 3261 20.5).
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOffered:
    """A new call rings here; the adapter answers it with :meth:`AnsweringAgent.answer`.

    Attributes:
        call_id: the call's Call-ID (the agent's key for it).
        invite: the INVITE as received (headers and body, for the report line).
        source: where the INVITE came from.
    """

    call_id: str
    invite: Request
    source: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded:
    """A call is over.

    Attributes:
        call_id: the call's Call-ID.
        reason: "caller hung up", "cancelled", "we hung up" or "rejected".
    """

    call_id: str
    reason: str


AgentEvent = CallOffered | CallEnded


@dataclass(slots=True, eq=False)
class _Call:
    invite: Request
    transaction: TransactionKey
    dialog: Dialog
    answer: bytes = b""
    """Our SDP once answered (repeated for a re-INVITE)."""
    answered: bool = False
    ended: bool = False


@dataclass(slots=True, eq=False)
class AnsweringAgent:
    """Answers INVITEs and BYEs on a transaction layer.

    Args:
        layer: the peer's transaction layer.
        contact: our Contact value (``<sip:name@host:port>``).
        new_tag: returns a fresh To tag for each call.
    """

    layer: TransactionLayer
    contact: str
    new_tag: Callable[[], str]
    calls: dict[str, _Call] = field(default_factory=dict)

    def receive(self, event: SipEvent, now: float) -> list[AgentEvent]:
        """Handles one event of the layer; returns what the adapter must act on."""
        if isinstance(event, CancelReceived):
            return self._cancelled(event, now)
        if not isinstance(event, RequestReceived):
            # Responses to our BYEs and their timeouts: the call ended when we sent it.
            return []
        request = event.request
        key = event.transaction
        call_id = request.headers.get("Call-ID") or ""
        call = self.calls.get(call_id)
        if request.method == "ACK" or key is None:
            return []
        if request.method == "INVITE" and call is None:
            return self._offered(event, key, call_id, now)
        if request.method == "INVITE" and call is not None and not call.ended:
            # A re-INVITE (session refresh, hold): the same answer still holds.
            self._respond(call, request, key, 200, now, body=call.answer)
            return []
        if request.method == "BYE":
            return self._bye(request, key, call, now)
        if request.method == "OPTIONS":
            self.layer.send_response(
                key, build_response(request, 200, headers=[("Allow", ALLOW)]), now
            )
            return []
        status = 481 if call is not None else 405
        self.layer.send_response(
            key, build_response(request, status, headers=[("Allow", ALLOW)]), now
        )
        return []

    def answer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Answers a ringing call with 200 OK and our SDP (RFC 3264 answer)."""
        call = self.calls.get(call_id)
        if call is None or call.ended or call.answered:
            return
        call.answer = sdp
        call.answered = True
        self._respond(call, call.invite, call.transaction, 200, now, body=sdp)

    def reject(self, call_id: str, status: int, now: float) -> CallEnded | None:
        """Ends a ringing call with a final error response (488: no G.711 offered)."""
        call = self.calls.get(call_id)
        if call is None or call.ended or call.answered:
            return None
        call.ended = True
        self._respond(call, call.invite, call.transaction, status, now)
        return CallEnded(call_id=call_id, reason="rejected")

    def hang_up(self, call_id: str, now: float) -> CallEnded | None:
        """Sends BYE in an answered call's dialog (RFC 3261 15.1.1)."""
        call = self.calls.get(call_id)
        if call is None or call.ended or not call.answered:
            return None
        call.ended = True
        bye = call.dialog.create_request("BYE")
        first_hop = call.dialog.route_set[0] if call.dialog.route_set else None
        hop_uri = parse_name_address(first_hop).uri if first_hop else bye.uri
        destination = ip_literal_endpoint(hop_uri)
        if destination is not None:
            self.layer.send_request(bye, destination, now)
        return CallEnded(call_id=call_id, reason="we hung up")

    def forget(self, call_id: str) -> None:
        """Drops an ended call's state (after the adapter closed its media)."""
        call = self.calls.get(call_id)
        if call is not None and call.ended:
            del self.calls[call_id]

    # ------------------------------------------------------------------ internals

    def _offered(
        self, event: RequestReceived, key: TransactionKey, call_id: str, now: float
    ) -> list[AgentEvent]:
        try:
            dialog = Dialog.as_uas(
                event.request, local_tag=self.new_tag(), local_contact=self.contact
            )
        except SipError as exc:
            self.layer.send_response(
                key, build_response(event.request, exc.status_hint, to_tag="x"), now
            )
            return []
        call = _Call(invite=event.request, transaction=key, dialog=dialog)
        self.calls[call_id] = call
        self._respond(call, call.invite, key, 180, now)
        return [CallOffered(call_id=call_id, invite=event.request, source=event.source)]

    def _cancelled(self, event: CancelReceived, now: float) -> list[AgentEvent]:
        call_id = event.cancel.headers.get("Call-ID") or ""
        call = self.calls.get(call_id)
        if call is None or call.ended or call.answered:
            return []
        call.ended = True
        self._respond(call, call.invite, event.invite_transaction, 487, now)
        return [CallEnded(call_id=call_id, reason="cancelled")]

    def _bye(
        self, request: Request, key: TransactionKey, call: _Call | None, now: float
    ) -> list[AgentEvent]:
        to_tag = parse_name_address(request.headers.get("To") or "").tag
        if call is None or to_tag != call.dialog.local_tag:
            # RFC 3261 15.1.2: "If the BYE does not match an existing dialog, the UAS
            # core SHOULD generate a 481 (Call/Transaction Does Not Exist)".
            self.layer.send_response(key, build_response(request, 481), now)
            return []
        self.layer.send_response(key, build_response(request, 200), now)
        if call.ended:
            return []  # our BYE crossed theirs
        call.ended = True
        return [CallEnded(call_id=call.dialog.call_id, reason="caller hung up")]

    def _respond(
        self,
        call: _Call,
        request: Request,
        key: TransactionKey,
        status: int,
        now: float,
        *,
        body: bytes = b"",
    ) -> None:
        headers = [("Allow", ALLOW)]
        if status < 300:
            headers.append(("Contact", self.contact))
        response = build_response(
            request,
            status,
            to_tag=call.dialog.local_tag,
            headers=headers,
            body=body,
            content_type="application/sdp" if body else None,
        )
        self.layer.send_response(key, response, now)
