"""The announcement stage of the B2BUA: the gateway's own media before (or instead of)
the B leg, and the calls whose media it anchors.

Flow (see :class:`gateway.b2bua.events.MediaNeeded`): the route asks for an
announcement -> the adapter's media stage calls :meth:`media_ready` with the caller's
SDP answer (183 early media, or 200 for ``answer-first``) -> it plays the prompt ->
:meth:`announcement_done` calls the callee with the relay's SDP, or ends the call.
The gateway also answers some calls entirely by itself (:class:`LocalAnswer`: the
emergency test call).
"""

from __future__ import annotations

from mypy_extensions import trait

from gateway.b2bua.call import Call, CallState, Side
from gateway.b2bua.events import LocalAnswer, MediaAnswered
from gateway.b2bua.host import B2buaHost
from gateway.sip.builders import build_response
from gateway.sip.events import TransactionKey
from gateway.sip.message import Request, Response
from gateway.sip.session_timer import SessionTimer
from routing.decision import RecordingNotice


@trait
class AnnouncementStage(B2buaHost):
    """Mixed into :class:`gateway.b2bua.core.B2bua`."""

    def media_ready(
        self, call_uuid: str, answer: bytes | None, b_offer: bytes | None, now: float
    ) -> bool:
        """The media stage is ready to play to the caller.

        Args:
            call_uuid: the call.
            answer: the gateway's SDP answer to the caller; None when the caller
                offered no codec the gateway can play (no prompt: the call goes on,
                marked ``not-played`` so the PBX knows not to record).
            b_offer: the relay's SDP offer for the B leg (None: pass the caller's).
            now: current time in seconds.

        Returns:
            True when the prompt should now be played.
        """
        call = self.calls.get(call_uuid)
        if call is None or call.state is not CallState.ANNOUNCING or call.route is None:
            return False
        announcement = call.route.announcement
        assert announcement is not None
        if answer is None:
            if announcement.kind == "recording":
                call.recording_notice = RecordingNotice.NOT_PLAYED
            if announcement.end_after:
                self._fail_a(call, 480, None, now)
            else:
                self._try_next_target(call, now)
            return False
        call.media_answer = answer
        call.b_offer = b_offer
        status = 200 if announcement.mode == "answer-first" else 183
        out = build_response(
            call.a_request,
            status,
            to_tag=call.a_tag,
            headers=[("Contact", call.a_dialog.local_contact)],
            body=answer,
            content_type="application/sdp",
        )
        if status == 200:
            call.a_answered_locally = True
            call.a_dialog.confirmed = True
        self._send_a(call, out, now)
        if announcement.kind == "recording":
            # The privacy promise's "told before the call": a nomadic warning is not it.
            call.recording_started_at = now
        return True

    def announcement_done(self, call_uuid: str, played: bool, now: float) -> None:
        """The prompt ended (``played``: to the end); the call goes on or ends."""
        call = self.calls.get(call_uuid)
        if call is None or call.state is not CallState.ANNOUNCING or call.route is None:
            return
        announcement = call.route.announcement
        assert announcement is not None
        if announcement.kind == "recording":
            call.recording_notice = RecordingNotice.PLAYED if played else RecordingNotice.NOT_PLAYED
        if announcement.end_after:
            call.hangup_side = "gateway"
            self._fail_a(call, 480, "Not routed: use a mobile phone", now)
            return
        self._try_next_target(call, now)

    def _answer_locally(self, call: Call, decision: LocalAnswer, now: float) -> None:
        out = build_response(
            call.a_request,
            200,
            to_tag=call.a_tag,
            headers=[("Contact", call.a_dialog.local_contact)],
            body=decision.body,
            content_type=decision.content_type,
        )
        call.a_answered_locally = True
        call.a_dialog.confirmed = True
        call.answered_at = now
        call.state = CallState.CONFIRMED
        call.final_status = 200
        call.final_reason = "OK"
        self._send_a(call, out, now)
        self._answered(call, now)
        self._arm(call, "hangup", decision.hangup_after, now)

    def _answer_anchored(self, call: Call, response: Response, now: float) -> None:
        """Relays a B-leg answer to a caller whose media the gateway anchors: the
        caller keeps the gateway's SDP (its media path never changes, RFC 3264 answer
        already given in the 183); the callee's SDP goes to the relay."""
        if response.status >= 200 and response.body:
            self._events.append(MediaAnswered(call_uuid=call.uuid, sdp=response.body))
            self._note_offer(call, response.body)
        if call.a_answered_locally:
            if response.status >= 200:
                call.final_status = response.status
                call.final_reason = response.reason
            return
        assert call.media_answer is not None
        body = call.media_answer if response.status >= 200 else b""
        out = build_response(
            call.a_request,
            response.status,
            response.reason,
            to_tag=call.a_tag,
            headers=[("Contact", call.a_dialog.local_contact)],
            body=body,
            content_type="application/sdp" if body else None,
        )
        if response.status >= 200:
            call.final_status = response.status
            call.final_reason = response.reason
        self._send_a(call, out, now)

    def _refresh_anchored(
        self,
        call: Call,
        side: Side,
        key: TransactionKey,
        request: Request,
        now: float,
        timer: SessionTimer | None = None,
    ) -> None:
        """A re-INVITE or UPDATE in a call whose media the gateway anchors is answered
        by the gateway with its own SDP for that leg: relayed, it would carry the far
        side's address and move the caller's media off the relay. (A session refresh
        keeps its media; a hold's direction change is not passed on.) The 2xx refreshes
        that leg's session timer (``timer``, session.py)."""
        sdp = call.media_answer if side is Side.A else call.b_offer
        dialog = call.dialog(side)
        headers = [("Contact", dialog.local_contact)] if dialog is not None else []
        body = sdp if request.body and sdp else b""
        out = build_response(
            request,
            200,
            headers=headers,
            body=body,
            content_type="application/sdp" if body else None,
        )
        if request.method in ("INVITE", "UPDATE"):
            self._peer_refreshed(call, side, timer, out, now)
        self._send(key, out, now)
