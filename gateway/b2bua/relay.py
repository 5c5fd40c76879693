"""In-dialog requests relayed between the legs of a call (re-INVITE, UPDATE, INFO,
MESSAGE, NOTIFY, REFER ...), and their answers relayed back (RFC 3261 12.2).

A request from one leg becomes a new request in the other leg's dialog; its final
answer goes back on the original server transaction. A 2xx to a re-INVITE is ACKed
at once when the re-INVITE carried the offer, or when the originator's ACK brings the
answer (late offer, RFC 3264).
"""

from __future__ import annotations

from mypy_extensions import trait

from gateway.b2bua.call import (
    RELAYED_REQUEST_HEADERS,
    RELAYED_RESPONSE_HEADERS,
    Call,
    CallState,
    Relay,
    Side,
    relayed_headers,
)
from gateway.b2bua.host import B2buaHost
from gateway.sip.builders import build_response
from gateway.sip.events import TransactionKey
from gateway.sip.message import Request, Response
from gateway.sip.session_timer import SessionTimer


@trait
class InDialogRelay(B2buaHost):
    """Mixed into :class:`gateway.b2bua.core.B2bua`."""

    def _relay_request(
        self,
        call: Call,
        origin: Side,
        key: TransactionKey,
        request: Request,
        now: float,
        timer: SessionTimer | None = None,
    ) -> None:
        """Sends ``request`` on the other leg; ``timer``: the session timer agreed
        with the origin for a refresh, said in the 2xx relayed back (session.py)."""
        target_side = origin.other
        dialog = call.dialog(target_side)
        if dialog is None or call.state is CallState.ENDED:
            self._respond(key, request, 481, now)
            return
        out = dialog.create_request(request.method)
        for name, value in relayed_headers(request.headers, RELAYED_REQUEST_HEADERS):
            out.headers.add(name, value)
        out.body = request.body
        if request.method in ("INVITE", "UPDATE"):
            self._timer_request_headers(call, target_side, out)
            if out.body:
                call.set_local_sdp(target_side, out.headers.get("Content-Type") or "", out.body)
        b_key = self.layer.send_request(out, self._leg_endpoint(call, target_side), now)
        self._relays[b_key] = Relay(
            call=call, origin=origin, server_tx=key, request=request, timer=timer
        )

    def _on_relayed_response(
        self, relay: Relay, key: TransactionKey, response: Response, now: float
    ) -> None:
        call = relay.call
        if response.status == 100:
            return
        if response.status >= 200:
            del self._relays[key]
        target_side = relay.origin.other
        if relay.request.method == "INVITE" and 200 <= response.status < 300:
            dialog = call.dialog(target_side)
            if dialog is not None:
                dialog.refresh_target(response)
                cseq = dialog.local_cseq
                if relay.request.body:
                    ack = dialog.create_request("ACK", cseq=cseq)
                    self.layer.send_ack(ack, self._leg_endpoint(call, target_side))
                else:
                    call.owe_ack(target_side, cseq)
        refresh = relay.request.method in ("INVITE", "UPDATE") and 200 <= response.status < 300
        if refresh:
            self._refreshed_by_gateway(call, target_side, response, now)
        headers = relayed_headers(response.headers, RELAYED_RESPONSE_HEADERS)
        origin_dialog = call.dialog(relay.origin)
        if relay.request.method in ("INVITE", "UPDATE") and origin_dialog is not None:
            headers.append(("Contact", origin_dialog.local_contact))
        out = build_response(
            relay.request,
            response.status,
            response.reason,
            headers=headers,
            body=response.body,
        )
        if refresh:
            self._peer_refreshed(call, relay.origin, relay.timer, out, now)
        self._send(relay.server_tx, out, now)
