"""Calls that end by themselves: session timers (RFC 4028) on each leg, a maximum
duration, and dead media on anchored calls.

Theory of operation
-------------------
Rule 1: each leg runs its own session timer. Towards the caller the gateway is the UAS
of the INVITE and answers the caller's offer (:func:`negotiate_as_uas`, 422 when the
interval is below ``min_se``); towards the callee it is the UAC and offers
``Supported: timer``, ``Session-Expires`` and ``Min-SE``, retrying once after a 422 with
the callee's Min-SE. The gateway refreshes a leg it is the refresher of at half the
interval (a bodiless UPDATE when the peer allows it, else a re-INVITE with the SDP it
last sent on that leg, unchanged per RFC 3264 8); on a leg the peer refreshes, no
refresh by ``interval - min(32, interval / 3)`` ends the call (RFC 4028 10). A refresh
of its own answered 408 or 481, or not at all, ends it too.

Rule 2: a re-INVITE or UPDATE from a peer is still relayed end to end (relay.py), as
before: it may change the media, and only the far side can answer that. Its 2xx then
refreshes both legs, each with its own Session-Expires (the gateway rewrites the
header per leg; the peers never see each other's). So a refresher on one side keeps
both legs alive and the gateway's own refresh of a leg rarely fires. When the gateway
anchors the media (announced calls) it answers such a request itself
(``_refresh_anchored``): that refreshes the leg it came on only.

Rule 3: an emergency call is never ended by the gateway's own timers on the caller's
side: the caller's missed refresh and any dead media stop that leg's checks and are
logged (the centre may still be talking to a caller whose uplink failed). Only the
centre's leg failing ends it. Maximum duration never applies to an emergency call.

Every end decided here sends BYE on both legs with a Reason (RFC 3326) that says why.
"""

from __future__ import annotations

import logging

from mypy_extensions import trait

from gateway.b2bua.call import (
    EXPIRY,
    MAX_DURATION,
    REFRESH,
    Call,
    CallState,
    LegSession,
    Side,
    b_invite_cseq,
)
from gateway.b2bua.events import EndedBy
from gateway.b2bua.host import B2buaHost
from gateway.sip.errors import ParseError
from gateway.sip.events import TransactionKey
from gateway.sip.message import Headers, Request, Response
from gateway.sip.sdp import is_on_hold, parse_sdp
from gateway.sip.session_timer import (
    IntervalTooSmall,
    Refresher,
    SessionExpires,
    SessionTimer,
    negotiate_as_uac,
    negotiate_as_uas,
    retry_after_422,
    timer_offer,
)

log = logging.getLogger("voipgw.b2bua")

#: RFC 3326 Reason of the BYEs the gateway sends when it ends a call by itself. A
#: missed refresh or silent media is a timeout (408), as RFC 4028 10 treats a refresh
#: that gets none; the maximum duration is a normal clearing (Q.850 16), not a
#: failure; a shutdown is the gateway itself becoming unavailable (503).
REASONS = {
    EndedBy.SESSION_TIMER: 'SIP;cause=408;text="Session timer expired"',
    EndedBy.MEDIA_TIMEOUT: 'SIP;cause=408;text="Media timeout"',
    EndedBy.MAX_DURATION: 'Q.850;cause=16;text="Maximum call duration reached"',
    EndedBy.SHUTDOWN: 'SIP;cause=503;text="Gateway shutting down"',
}

#: The timers of this module (``handle_timer`` dispatches on their names).
SESSION_TIMERS = frozenset([*REFRESH.values(), *EXPIRY.values(), MAX_DURATION])


@trait
class SessionTimers(B2buaHost):
    """Mixed into :class:`gateway.b2bua.core.B2bua`."""

    # ------------------------------------------------------------------ inputs

    def media_inactive(self, call_uuid: str, side: Side, now: float) -> None:
        """The media stage saw no RTP from ``side`` of an anchored call for its
        ``media_timeout``: end the call, unless it is on hold or an emergency call.

        Args:
            call_uuid: the call.
            side: the side that went silent.
            now: current time in seconds.
        """
        call = self.calls.get(call_uuid)
        if call is None or call.state not in (CallState.ANSWERED, CallState.CONFIRMED):
            return
        if call.on_hold:
            return
        if call.route is not None and call.route.emergency:
            log.warning(
                "call %s: no RTP from the %s; an emergency call is kept up",
                call.call_id,
                side.value,
                extra={"call_id": call.call_id},
            )
            return
        self._end_by_gateway(call, EndedBy.MEDIA_TIMEOUT, now)

    def shutdown(self, now: float) -> None:
        """The gateway stops: ends every call still in progress (BYE on answered
        legs, 503 to callers not yet answered, RFC 3261 21.5.4)."""
        for call in list(self.calls.values()):
            call.ended_by = EndedBy.SHUTDOWN
            answered = call.state in (CallState.ANSWERED, CallState.CONFIRMED)
            if answered or call.a_answered_locally:
                self._end_call(call, now, reason=REASONS[EndedBy.SHUTDOWN])
            else:
                self._fail_a(call, 503, None, now)

    # ------------------------------------------------------------------ A leg (UAS)

    def _agree_a_timer(self, call: Call, now: float) -> bool:
        """Answers the caller's session-timer offer once the route is known (an
        emergency call is never refused: its interval is taken as offered, and a bad
        header is ignored). Returns False when the call was refused (400 or 422)."""
        policy = self.session_timers
        if policy is None:
            return True
        emergency = call.route is not None and call.route.emergency
        try:
            offer = timer_offer(call.a_request.headers)
        except ParseError as exc:
            if emergency:
                return True
            self._fail_a(call, 400, f"Bad Session-Expires or Min-SE: {exc}"[:80], now)
            return False
        agreed = negotiate_as_uas(
            offer, interval=policy.interval, min_se=policy.min_se, lenient=emergency
        )
        if isinstance(agreed, IntervalTooSmall):
            self._fail_a(call, 422, None, now, headers=(("Min-SE", str(agreed.min_se)),))
            return False
        call.a_timer = agreed
        return True

    def _a_answered(self, call: Call, out: Response, now: float) -> None:
        """A 2xx to the caller's INVITE leaves: it says the agreed timer, and the A
        leg's timer starts."""
        if out.body:
            call.set_local_sdp(Side.A, out.headers.get("Content-Type") or "", out.body)
        timer = call.a_timer
        if timer is None:
            return
        _put_timer_headers(out.headers, timer.response_header, timer.require)
        allow = call.a_request.headers.get_lines("Allow")
        call.a_session = LegSession(
            interval=timer.interval,
            gateway_refreshes=timer.refresher is Refresher.UAS,
            by_update="UPDATE" in ",".join(allow).upper(),
        )
        self._leg_refreshed(call, Side.A, now)

    # ------------------------------------------------------------------ B leg (UAC)

    def _offer_b_timer(self, call: Call, request: Request) -> None:
        """Puts the gateway's offer (RFC 4028 7.1) on a B-leg INVITE."""
        if request.body:
            call.set_local_sdp(Side.B, request.headers.get("Content-Type") or "", request.body)
        policy = self.session_timers
        if policy is None:
            return
        if call.b_timer_offer == (0, 0):
            call.b_timer_offer = (policy.interval, policy.min_se)
        interval, min_se = call.b_timer_offer
        request.headers.remove("Session-Expires")
        request.headers.remove("Min-SE")
        request.headers.add("Supported", "timer")
        request.headers.add("Session-Expires", str(interval))
        request.headers.add("Min-SE", str(min_se))
        if call.b_retried_422:
            # A new request of the same dialog-less INVITE: a higher CSeq, or the
            # callee takes it for a retransmission (RFC 3261 8.1.3.5 does the same).
            request.headers.set("CSeq", f"{b_invite_cseq(call)} INVITE")

    def _retry_b_after_422(self, call: Call, response: Response, now: float) -> bool:
        """RFC 4028 7.3: a 422 from the callee is retried once, same target, with its
        Min-SE. Returns True when the retry was sent."""
        if self.session_timers is None or call.b_retried_422 or call.b_target is None:
            return False
        retry = retry_after_422(*call.b_timer_offer, response.headers)
        if retry is None:
            return False
        call.b_retried_422 = True
        call.b_timer_offer = retry
        call.targets = (call.b_target, *call.targets)
        self._try_next_target(call, now)
        return True

    def _b_answered(self, call: Call, response: Response, now: float) -> None:
        """The callee answered: the B leg's timer and the maximum duration start."""
        route = call.route
        if route is not None and route.max_duration is not None and not route.emergency:
            self._arm(call, MAX_DURATION, route.max_duration, now)
        if self.session_timers is None:
            return
        try:
            timer = negotiate_as_uac(call.b_timer_offer[0], response.headers)
        except ParseError:
            timer = SessionTimer(interval=call.b_timer_offer[0], refresher=Refresher.UAC)
        call.b_session = LegSession(
            interval=timer.interval,
            gateway_refreshes=timer.refresher is Refresher.UAC,
            by_update="UPDATE" in ",".join(response.headers.get_lines("Allow")).upper(),
        )
        self._leg_refreshed(call, Side.B, now)

    # ------------------------------------------------------------------ refreshes

    def _timer_request_headers(self, call: Call, side: Side, request: Request) -> None:
        """Puts the leg's timer on a re-INVITE or UPDATE the gateway sends on ``side``
        (relayed or its own): the gateway is that transaction's UAC."""
        if self.session_timers is None:
            return  # off: the peers' own headers pass end to end, as relayed
        session = call.session(side)
        request.headers.remove("Session-Expires")
        request.headers.remove("Min-SE")
        if session is None:
            return
        refresher = Refresher.UAC if session.gateway_refreshes else Refresher.UAS
        request.headers.add("Supported", "timer")
        request.headers.add(
            "Session-Expires", str(SessionExpires(delta=session.interval, refresher=refresher))
        )
        request.headers.add("Min-SE", str(self.session_timers.min_se))

    def _peer_refresh(
        self, call: Call, side: Side, key: TransactionKey, request: Request, now: float
    ) -> tuple[bool, SessionTimer | None]:
        """A re-INVITE or UPDATE from the peer on ``side``: the timer to answer it
        with (RFC 4028 9; the gateway is the UAS), or (False, None) when it was
        refused here with 400 or 422."""
        if request.body:
            self._note_offer(call, request.body)
        session = call.session(side)
        policy = self.session_timers
        if session is None or policy is None:
            return True, None
        emergency = call.route is not None and call.route.emergency
        try:
            offer = timer_offer(request.headers)
        except ParseError:
            self._respond(key, request, 400, now)
            return False, None
        agreed = negotiate_as_uas(
            offer, interval=session.interval, min_se=policy.min_se, lenient=emergency
        )
        if isinstance(agreed, IntervalTooSmall):
            self._respond(key, request, 422, now, headers=(("Min-SE", str(agreed.min_se)),))
            return False, None
        return True, agreed

    def _peer_refreshed(
        self, call: Call, side: Side, timer: SessionTimer | None, out: Response, now: float
    ) -> None:
        """A 2xx to the peer's refresh leaves on ``side``: the leg is refreshed."""
        if out.body:
            call.set_local_sdp(side, out.headers.get("Content-Type") or "", out.body)
        if self.session_timers is None:
            return
        session = call.session(side)
        out.headers.remove("Session-Expires")
        if timer is None or session is None:
            return
        _put_timer_headers(out.headers, timer.response_header, timer.require)
        session.interval = timer.interval
        session.gateway_refreshes = timer.refresher is Refresher.UAS
        self._leg_refreshed(call, side, now)

    def _refreshed_by_gateway(self, call: Call, side: Side, response: Response, now: float) -> None:
        """A 2xx came back for a re-INVITE or UPDATE the gateway sent on ``side``."""
        session = call.session(side)
        if session is None:
            return
        try:
            timer = negotiate_as_uac(session.interval, response.headers)
        except ParseError:
            timer = SessionTimer(interval=session.interval, refresher=Refresher.UAC)
        session.interval = timer.interval
        session.gateway_refreshes = timer.refresher is Refresher.UAC
        self._leg_refreshed(call, side, now)

    def _leg_refreshed(self, call: Call, side: Side, now: float) -> None:
        session = call.session(side)
        assert session is not None
        timer = SessionTimer(interval=session.interval, refresher=Refresher.UAC)
        self._arm(call, EXPIRY[side], timer.expiry_delay, now)
        if session.gateway_refreshes:
            self._arm(call, REFRESH[side], timer.refresh_delay, now)
        else:
            self._disarm(call, REFRESH[side])

    def _send_refresh(self, call: Call, side: Side, now: float) -> None:
        """The gateway refreshes the leg (RFC 4028 7.4 / 9)."""
        session = call.session(side)
        dialog = call.dialog(side)
        if session is None or dialog is None or call.state is CallState.ENDED:
            return
        sdp = call.local_sdp(side)
        by_update = session.by_update or sdp is None
        request = dialog.create_request("UPDATE" if by_update else "INVITE")
        if not by_update and sdp is not None:
            content_type, body = sdp
            request.headers.add("Content-Type", content_type or "application/sdp")
            request.body = body
        self._timer_request_headers(call, side, request)
        key = self.layer.send_request(request, self._leg_endpoint(call, side), now)
        self._refreshes[key] = (call, side)

    def _on_refresh_response(
        self, call: Call, side: Side, key: TransactionKey, response: Response, now: float
    ) -> None:
        status = response.status
        if status < 200:
            return
        del self._refreshes[key]
        if call.state is CallState.ENDED:
            return
        dialog = call.dialog(side)
        if status < 300:
            if key.method == "INVITE" and dialog is not None:
                dialog.refresh_target(response)
                cseq = int((response.headers.get("CSeq") or "0").split()[0])
                ack = dialog.create_request("ACK", cseq=cseq)
                self.layer.send_ack(ack, self._leg_endpoint(call, side))
            self._refreshed_by_gateway(call, side, response, now)
        elif status in (408, 481):
            # RFC 4028 10: "If the session refresh request transaction times out or
            # generates a 481 or 408 response, then the UAC sends a BYE request."
            self._session_failed(call, side, now)
        # Any other answer (491, 500 ...) leaves the session to its expiry.

    def _on_session_timer(self, call: Call, name: str, now: float) -> None:
        """A timer of this module fired (``handle_timer``)."""
        if name == MAX_DURATION:
            self._end_by_gateway(call, EndedBy.MAX_DURATION, now)
            return
        side = Side.A if name in (REFRESH[Side.A], EXPIRY[Side.A]) else Side.B
        if name == REFRESH[side]:
            self._send_refresh(call, side, now)
        else:
            self._session_failed(call, side, now)

    def _session_failed(self, call: Call, side: Side, now: float) -> None:
        emergency = call.route is not None and call.route.emergency
        if emergency and side is Side.A:
            # Rule 3: the centre may still be talking to this caller.
            log.warning(
                "call %s: the caller's session timer expired; an emergency call is kept up",
                call.call_id,
                extra={"call_id": call.call_id},
            )
            call.set_session(side, None)
            self._disarm(call, REFRESH[side])
            self._disarm(call, EXPIRY[side])
            return
        log.info(
            "call %s: session timer of the %s leg expired",
            call.call_id,
            side.value,
            extra={"call_id": call.call_id},
        )
        self._end_by_gateway(call, EndedBy.SESSION_TIMER, now)

    def _end_by_gateway(self, call: Call, ended_by: EndedBy, now: float) -> None:
        call.ended_by = ended_by
        call.hangup_side = "gateway"
        self._end_call(call, now, reason=REASONS[ended_by])

    def _note_offer(self, call: Call, body: bytes) -> None:
        """Follows hold and resume in the offers of an anchored call's peers (the
        dead-media check is off on hold: a held side sends nothing)."""
        if call.media_answer is None:
            return
        try:
            call.on_hold = is_on_hold(parse_sdp(body))
        except ParseError:
            return


def _put_timer_headers(headers: Headers, value: SessionExpires, require: bool) -> None:
    headers.remove("Session-Expires")
    headers.add("Session-Expires", str(value))
    if require:
        headers.add("Require", "timer")
