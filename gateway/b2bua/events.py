"""What the B2BUA core asks of its adapter, and what the adapter answers.

The core never awaits: when a new call needs a route it emits :class:`RouteNeeded`;
the adapter runs the routing layer (which may look things up) and calls
``B2bua.route_decided(call_uuid, Route | Reject, now)``. When a call ends it emits
:class:`CallEnded` with everything the CDR needs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.sip.events import Endpoint, TransactionKey
from gateway.sip.message import Request
from routing.decision import NO_FACTS, CallFacts, RecordingNotice


class EndedBy(enum.StrEnum):
    """What ended a call (the CDR reads it as a string).

    ``hangup_side`` says which leg's side hung up; this says why the call ended, and
    tells the gateway's own ends apart.
    """

    CALLER = "caller"
    CALLEE = "callee"
    #: the gateway for any other reason: no ACK, a failure, a routing refusal
    GATEWAY = "gateway"
    #: a session refresh (RFC 4028) missing or failed on a leg
    SESSION_TIMER = "session-timer"
    #: no RTP from a side of an anchored call for ``[media] media_timeout``
    MEDIA_TIMEOUT = "media-timeout"
    #: the route's maximum duration was reached
    MAX_DURATION = "max-duration"
    #: the gateway stopped while the call was up
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Announcement:
    """A prompt the caller hears before the B leg is called (or instead of it).

    Attributes:
        prompt: prompt name ("recording-notice", "nomadic-warning").
        language: "fi", "sv" or "en".
        mode: "early-media" (183 Session Progress with the gateway's SDP) or
            "answer-first" (200 OK first, for phones that ignore early media; the
            CDR's billable time still starts when the callee answers).
        end_after: end the call after the prompt instead of routing it.
        kind: "recording" (the privacy-policy notice; the B leg then carries
            X-Voipgw-Recording-Notice) or "nomadic-warning".
    """

    prompt: str
    language: str
    mode: str = "early-media"
    end_after: bool = False
    kind: str = "recording"


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Where and how the B leg of a call goes.

    Attributes:
        targets: next hops in failover order (RFC 3263 order, then secondary routes).
        request_uri: B-leg Request-URI; the A leg's when None.
        request_uris: per-target Request-URIs (same length as ``targets``), for
            routes whose targets want different URIs (an emergency centre reached
            by service URN, its backup by number); overrides ``request_uri``.
        headers: header fields added to the B-leg INVITE (identity, priority,
            classification headers ...).
        remove_headers: header fields of the A-leg INVITE not to copy.
        wrap_sdp: builds the B-leg body around the SDP that INVITE carries, the
            caller's or, when a media stage anchors the call, the relay's: returns
            (Content-Type, body). It is how an emergency call's PIDF-LO travels (a
            multipart with the SDP, RFC 6442 3.1): the Geolocation header names that
            part by cid:, so the part must be built around the SDP actually sent, not
            replaced with the rest of a body (RFC 6442 4.1).
        from_value: B-leg From name-addr (identity/privacy); the A leg's when None.
        response_headers: header fields of the gateway's own set on every response
            it sends the caller on the A-leg INVITE but 100 (provisional, 2xx and
            failure alike): what routing decided the caller is told, e.g. an RFC 6442
            Geolocation-Error. They replace a field of that name the B leg sent.
        no_answer_timeout: seconds to wait for a final answer after the first
            provisional (RFC 3261 Timer C); None uses the gateway default.
        failover_timeout: seconds to wait for any response from a target before
            trying the next one (emergency routes use a few seconds); None waits
            for Timer B.
        emergency: the call is an emergency call (never shed, failover eager).
        announcement: a prompt to play to the caller first (media stage).
        max_duration: seconds after the answer when the gateway ends the call (BYE on
            both legs); None for no limit. Never applied to an emergency call.
        facts: what routing decided and why (routing.decision): carried untouched to
            :class:`CallEnded`, for the CDR, metrics and logs.
        unreachable: the caller's answer when the last target is unreachable (408,
            5xx, Timer B, a transport error, or no response within
            ``failover_timeout``) instead of the status that failure maps to: a call
            relayed through the sibling instance holding the callee's flow answers
            480 with Retry-After when that instance is gone
            (gateway.registrar.routing).
    """

    targets: tuple[Endpoint, ...]
    request_uri: str | None = None
    request_uris: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    wrap_sdp: Callable[[bytes], tuple[str, bytes]] | None = None
    from_value: str | None = None
    response_headers: tuple[tuple[str, str], ...] = ()
    no_answer_timeout: float | None = None
    failover_timeout: float | None = None
    emergency: bool = False
    announcement: Announcement | None = None
    max_duration: float | None = None
    facts: CallFacts = NO_FACTS
    unreachable: Reject | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """Answer the A leg with a final response instead of routing it (``facts``: why)."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    facts: CallFacts = NO_FACTS


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalAnswer:
    """The gateway answers the call itself (the emergency test call, RFC 6881 SP-44):
    200 OK with ``body``, then BYE after ``hangup_after`` seconds.

    Attributes:
        body: the 200's body (SDP answer, possibly in a multipart with a report).
        content_type: its Content-Type.
        hangup_after: seconds until the gateway ends the call.
        facts: what routing decided and why.
    """

    body: bytes
    content_type: str
    hangup_after: float = 5.0
    facts: CallFacts = NO_FACTS


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class RouteNeeded:
    """A new call waits for the routing decision.

    Attributes:
        call_uuid: handle to pass back to ``route_decided``.
        request: the A-leg INVITE (do not modify).
        source: where the INVITE came from (the packet's address, not the Via's).
        active_calls: calls in progress when it arrived, this one included: the load
            that overload control weighs (the core's own count, so routing needs no
            handle on the gateway to learn it).
    """

    call_uuid: Final[str]
    request: Final[Request]
    source: Final[Endpoint]
    active_calls: Final[int]

    def __init__(
        self, *, call_uuid: str, request: Request, source: Endpoint, active_calls: int = 0
    ) -> None:
        self.call_uuid = call_uuid
        self.request = request
        self.source = source
        self.active_calls = active_calls


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class CallEnded:
    """A call is over; everything the CDR needs, with times on the adapter's clock.

    Attributes:
        call_uuid: unique id of the call.
        call_id: A-leg Call-ID.
        caller: A-leg From URI.
        callee_dialled: A-leg Request-URI.
        callee_routed: B-leg Request-URI ("" when never routed).
        p_asserted_identity: PAI sent on the B leg, if any.
        source: A-leg source address.
        user_agent: A-leg User-Agent.
        setup_at, ringing_at, answered_at, ended_at: seconds (loop clock), None when
            the event did not happen.
        final_status: final status of the A-leg INVITE.
        final_reason: its reason phrase.
        disposition: answered, busy, no-answer, cancelled, failed or rejected.
        hangup_side: caller, callee or gateway.
        ended_by: what ended the call (:class:`EndedBy`).
        emergency: whether the route was an emergency route.
        facts: the routing decision's facts, as routing handed them over.
        attempt: the B-leg target last tried (0-based; the one that answered for an
            answered call), None when no B leg was tried.
        recording_notice: whether the recording notice played.
        recording_started_at: when the recording notice started (loop clock).
    """

    call_uuid: Final[str]
    call_id: Final[str]
    caller: Final[str]
    callee_dialled: Final[str]
    callee_routed: Final[str]
    p_asserted_identity: Final[str | None]
    source: Final[Endpoint]
    user_agent: Final[str | None]
    setup_at: Final[float]
    ringing_at: Final[float | None]
    answered_at: Final[float | None]
    ended_at: Final[float]
    final_status: Final[int]
    final_reason: Final[str]
    disposition: Final[str]
    hangup_side: Final[str]
    ended_by: Final[EndedBy]
    emergency: Final[bool]
    facts: Final[CallFacts]
    attempt: Final[int | None]
    recording_notice: Final[RecordingNotice]
    recording_started_at: Final[float | None]

    def __init__(
        self,
        *,
        call_uuid: str,
        call_id: str,
        caller: str,
        callee_dialled: str,
        callee_routed: str,
        p_asserted_identity: str | None,
        source: Endpoint,
        user_agent: str | None,
        setup_at: float,
        ringing_at: float | None,
        answered_at: float | None,
        ended_at: float,
        final_status: int,
        final_reason: str,
        disposition: str,
        hangup_side: str,
        ended_by: EndedBy,
        emergency: bool,
        facts: CallFacts,
        attempt: int | None,
        recording_notice: RecordingNotice,
        recording_started_at: float | None,
    ) -> None:
        self.call_uuid = call_uuid
        self.call_id = call_id
        self.caller = caller
        self.callee_dialled = callee_dialled
        self.callee_routed = callee_routed
        self.p_asserted_identity = p_asserted_identity
        self.source = source
        self.user_agent = user_agent
        self.setup_at = setup_at
        self.ringing_at = ringing_at
        self.answered_at = answered_at
        self.ended_at = ended_at
        self.final_status = final_status
        self.final_reason = final_reason
        self.disposition = disposition
        self.hangup_side = hangup_side
        self.ended_by = ended_by
        self.emergency = emergency
        self.facts = facts
        self.attempt = attempt
        self.recording_notice = recording_notice
        self.recording_started_at = recording_started_at


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class CallAnswered:
    """The caller has a 2xx: the call is up (the CDR makes its in-progress record, so
    a call cut short by a crash still leaves one).

    Attributes:
        call_uuid: unique id of the call.
        summary: the call as :class:`CallEnded` would describe it if it ended at its
            answer (``ended_at`` is the answer time): the same snapshot the end
            builds, so the in-progress record and the final one cannot disagree on
            what was known at the answer.
    """

    call_uuid: Final[str]
    summary: Final[CallEnded]

    def __init__(self, *, call_uuid: str, summary: CallEnded) -> None:
        self.call_uuid = call_uuid
        self.summary = summary


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class ServiceRequest:
    """An out-of-dialog request for a service attached to the gateway (REGISTER for
    the registrar, ...): the adapter answers it with ``B2bua.answer(transaction,
    response, now)``.

    Attributes:
        request: the request.
        source: where it came from (transport view).
        transaction: its server transaction.
    """

    request: Final[Request]
    source: Final[Endpoint]
    transaction: Final[TransactionKey]

    def __init__(self, *, request: Request, source: Endpoint, transaction: TransactionKey) -> None:
        self.request = request
        self.source = source
        self.transaction = transaction


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class MediaNeeded:
    """A call needs the gateway's media (an announcement, then an RTP relay).

    The adapter opens the media, then calls ``B2bua.media_ready(call_uuid, answer,
    b_offer, now)`` with the SDP answer for the caller (None when the caller offers
    no codec the gateway can play) and the SDP offer for the B leg (the relay's
    address), plays the prompt, and calls ``B2bua.announcement_done``.

    Attributes:
        call_uuid: the call.
        offer: the caller's SDP offer (empty for a late offer).
        announcement: what to play.
        source: where the caller's signalling comes from (media latching hint).
    """

    call_uuid: Final[str]
    offer: Final[bytes]
    announcement: Final[Announcement]
    source: Final[Endpoint]

    def __init__(
        self, *, call_uuid: str, offer: bytes, announcement: Announcement, source: Endpoint
    ) -> None:
        self.call_uuid = call_uuid
        self.offer = offer
        self.announcement = announcement
        self.source = source


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class MediaAnswered:
    """The B leg answered a call whose media the gateway anchors: its SDP is for the
    relay, never for the caller (whose media path must not change)."""

    call_uuid: Final[str]
    sdp: Final[bytes]

    def __init__(self, *, call_uuid: str, sdp: bytes) -> None:
        self.call_uuid = call_uuid
        self.sdp = sdp


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class MessageDone:
    """An out-of-dialog MESSAGE sent with ``B2bua.send_message`` has its outcome.

    Attributes:
        transaction: the key ``send_message`` returned (the client transaction).
        status: the final response's status, or None when none came.
        reason: its reason phrase; without a response, why ("timeout" when Timer F
            fired, RFC 3261 17.1.2.2; "transport error" when the next hop failed).
    """

    transaction: Final[TransactionKey]
    status: Final[int | None]
    reason: Final[str]

    def __init__(self, *, transaction: TransactionKey, status: int | None, reason: str) -> None:
        self.transaction = transaction
        self.status = status
        self.reason = reason


B2buaEvent = (
    RouteNeeded
    | CallAnswered
    | CallEnded
    | ServiceRequest
    | MediaNeeded
    | MediaAnswered
    | MessageDone
)
