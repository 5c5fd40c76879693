"""Reliable provisional responses towards the caller (RFC 3262, "100rel").

When the caller's INVITE requires 100rel, every provisional response the gateway
sends it (relayed from the callee or its own 183) carries ``Require: 100rel`` and an
``RSeq``, is retransmitted from T1 doubling until a matching PRACK arrives, and the
next one waits for that PRACK; a 2xx waits too when the outstanding provisional
carried SDP. Without a PRACK within 64*T1 the INVITE is rejected (504). The B leg
never asks for reliability: the gateway provides it on the A leg itself.
"""

from __future__ import annotations

from mypy_extensions import trait

from gateway.b2bua.call import Call
from gateway.b2bua.host import B2buaHost
from gateway.sip.events import TransactionKey
from gateway.sip.message import Request, Response


def copy_record_route(request: Request, response: Response) -> None:
    """Copies the request's Record-Route values into a response that establishes (or
    may establish) the dialog, once.

    RFC 3261 12.1.1: "When a UAS responds to a request with a response that
    establishes a dialog (such as a 2xx to INVITE), the UAS MUST copy all Record-Route
    header field values from the request into the response [...] and MUST maintain
    the order of those values." Without them a caller behind a record-routing proxy
    (Kamailio's dispatcher in front of several instances, deploy/cluster/) sends its
    ACK and BYE around the proxy.
    """
    if response.headers.get("Record-Route") is not None:
        return
    for value in request.headers.get_lines("Record-Route"):
        response.headers.add("Record-Route", value)


@trait
class ReliableProvisionals(B2buaHost):
    """Mixed into :class:`gateway.b2bua.core.B2bua`."""

    def _send_a(self, call: Call, out: Response, now: float) -> None:
        """Sends a response on the A leg's INVITE, reliably when the caller requires
        100rel: one reliable provisional outstanding at a time, later ones queued;
        a 2xx waits for the PRACK of a provisional that carried SDP (RFC 3262 3).
        Every response but 100 carries the route's ``response_headers`` (set, not
        added: a queued provisional passes here twice), and 18x and 2xx the caller's
        Record-Route (:func:`copy_record_route`)."""
        route = call.route
        if route is not None and route.response_headers and out.status != 100:
            for name, value in route.response_headers:
                out.headers.set(name, value)
        if 100 < out.status < 300:
            copy_record_route(call.a_request, out)
        if not call.reliable or out.status == 100:
            if 200 <= out.status < 300:
                self._a_answered(call, out, now)
            self._send(call.a_tx, out, now)
            return
        if call.rel_pending is not None:
            if out.status < 200 or (out.status < 300 and call.rel_pending.body):
                call.rel_queue = (*call.rel_queue, out)
                return
            self._clear_reliable(call)  # a final response ends the retransmissions
        if out.status >= 200:
            if out.status < 300:
                self._a_answered(call, out, now)
            self._send(call.a_tx, out, now)
            return
        call.rseq += 1
        out.headers.add("Require", "100rel")
        out.headers.add("RSeq", str(call.rseq))
        call.rel_pending = out
        call.rel_started = now
        call.rel_interval = self.layer.timers.t1
        self._send(call.a_tx, out, now)
        self._arm(call, "reliable", call.rel_interval, now)

    def _retransmit_reliable(self, call: Call, now: float) -> None:
        out = call.rel_pending
        if out is None:
            return
        if now - call.rel_started >= 64 * self.layer.timers.t1:
            # RFC 3262 3: no PRACK for 64*T1 -> "SHOULD reject the original request
            # with a 5xx response".
            self._clear_reliable(call)
            self._fail_a(call, 504, "No PRACK", now)
            return
        self._send(call.a_tx, out, now)
        call.rel_interval *= 2
        deadline = call.rel_started + 64 * self.layer.timers.t1
        self._arm(call, "reliable", min(call.rel_interval, deadline - now), now)

    def _on_prack(self, call: Call, key: TransactionKey, prack: Request, now: float) -> None:
        """RFC 3262 7.2: a PRACK whose RAck matches the outstanding reliable
        provisional gets 200; anything else 481."""
        pending = call.rel_pending
        rack = (prack.headers.get("RAck") or "").split()
        if pending is None or len(rack) != 3 or rack[0] != pending.headers.get("RSeq"):
            self._respond(key, prack, 481, now)
            return
        self._respond(key, prack, 200, now)
        self._clear_reliable(call)
        queued, call.rel_queue = call.rel_queue, ()
        for out in queued:
            self._send_a(call, out, now)

    def _clear_reliable(self, call: Call) -> None:
        call.rel_pending = None
        self._disarm(call, "reliable")
