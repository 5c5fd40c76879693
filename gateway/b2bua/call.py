"""A call through the B2BUA: two dialogs (A leg towards the caller, B leg towards the
callee) and the facts the CDR needs. Pure data plus message-building helpers."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from gateway.b2bua.events import EndedBy, Route
from gateway.sip.dialog import Dialog
from gateway.sip.events import Endpoint, TransactionKey
from gateway.sip.headers import parse_name_address
from gateway.sip.message import Headers, Request, Response, reason_phrase
from gateway.sip.session_timer import SessionTimer
from routing.decision import NO_FACTS, CallFacts, RecordingNotice


class Side(enum.Enum):
    # Members are singletons: the C identity hash, not Enum's interpreted
    # hash(self._name_) (16 calls per call through dicts and sets keyed by these).
    __hash__ = object.__hash__

    A = "caller"
    B = "callee"

    @property
    def other(self) -> Side:
        return Side.B if self is Side.A else Side.A


class CallState(enum.Enum):
    __hash__ = object.__hash__  # as Side's

    ROUTING = "routing"  # waiting for the routing decision
    ANNOUNCING = "announcing"  # the gateway's media plays a prompt to the caller
    CALLING = "calling"  # B-leg INVITE sent, no provisional yet
    EARLY = "early"  # a provisional came back
    ANSWERED = "answered"  # 2xx relayed to A, A's ACK not seen yet
    CONFIRMED = "confirmed"
    ENDED = "ended"


#: Headers of an A-leg request that the B-leg request carries over. Everything else
#: (Via, Route, Contact, Record-Route, tags, identity) is the B2BUA's own.
RELAYED_REQUEST_HEADERS = (
    "Content-Type",
    "Content-Disposition",
    "Content-Language",
    "Allow",
    "Subject",
    "Priority",
    "Accept",
    "Event",
    "Subscription-State",
    "Info-Package",
    "Session-Expires",
    "Min-SE",
    "User-Agent",
    "Privacy",
    "Call-Info",
    "Alert-Info",
    "Reason",
)

#: Headers of a response that are relayed back across the B2BUA.
RELAYED_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Disposition",
    "Allow",
    "Accept",
    "Retry-After",
    "Warning",
    "Reason",
    "Unsupported",
    "Server",
    "Session-Expires",
    "Call-Info",
    "Alert-Info",
)


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, eq=False, kw_only=True)
class Relay:
    """An in-dialog request relayed from one leg to the other.

    Attributes:
        call: the call.
        origin: the side that sent the request.
        server_tx: its server transaction, to answer when the other leg does.
        request: the request as received.
        timer: the session timer agreed with the origin for this refresh (RFC 4028 9),
            put in the 2xx relayed back; None when the leg runs none.
    """

    call: Call
    origin: Side
    server_tx: TransactionKey
    request: Request
    timer: SessionTimer | None

    def __init__(
        self,
        *,
        call: Call,
        origin: Side,
        server_tx: TransactionKey,
        request: Request,
        timer: SessionTimer | None = None,
    ) -> None:
        self.call = call
        self.origin = origin
        self.server_tx = server_tx
        self.request = request
        self.timer = timer


#: The B2BUA's timers, by name (B2bua._arm). A call keeps each one's deadline in a
#: float field (Call.set_deadline; the session timers' in the leg's LegSession), and
#: the B2BUA's heap holds one entry per call, at its earliest deadline: an entry per
#: timer, with a dict of arming tokens per call, was ~0.9 KiB per idle call (four
#: session timers armed), issue 17.
NO_ANSWER = "no_answer"
FAILOVER = "failover"
RELIABLE = "reliable"
HANGUP = "hangup"
MAX_DURATION = "max_duration"
REFRESH = {Side.A: "refresh_a", Side.B: "refresh_b"}
EXPIRY = {Side.A: "expiry_a", Side.B: "expiry_b"}
#: A deadline not armed.
NOT_ARMED = math.inf


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, eq=False, kw_only=True)
class LegSession:
    """The session timer (RFC 4028) running on one leg.

    Attributes:
        interval: the session interval, in seconds.
        gateway_refreshes: the gateway is the leg's refresher (else the peer is).
        by_update: the peer allows UPDATE, so the gateway refreshes with a bodiless
            UPDATE rather than a re-INVITE (RFC 4028 9 recommends UPDATE).
        refresh_at: when the gateway refreshes the leg, in seconds (NOT_ARMED: not).
        expires_at: when the session expires without a refresh, in seconds.
    """

    interval: int
    gateway_refreshes: bool
    by_update: bool
    refresh_at: float
    expires_at: float

    def __init__(self, *, interval: int, gateway_refreshes: bool, by_update: bool) -> None:
        self.interval = interval
        self.gateway_refreshes = gateway_refreshes
        self.by_update = by_update
        self.refresh_at = NOT_ARMED
        self.expires_at = NOT_ARMED


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, eq=False, kw_only=True)
class Call:
    """State of one call through the gateway.

    Times are seconds on the adapter's clock.
    """

    uuid: str
    a_request: Request
    a_source: Endpoint
    a_tx: TransactionKey
    a_tag: str
    a_dialog: Dialog
    setup_at: float
    state: CallState
    route: Route | None
    #: the route's targets not tried yet: a tuple, shared once empty (an empty list
    #: was 56 bytes per idle call)
    targets: tuple[Endpoint, ...]
    b_call_id: str
    b_tag: str
    #: the B-leg INVITE of the current attempt; None once the call is confirmed
    #: (slim_confirmed): what an idle call still needs of it is routed_uri
    b_request: Request | None
    #: the Request-URI of the B-leg INVITE (the CDR's callee_routed)
    routed_uri: str
    b_tx: TransactionKey | None
    b_target: Endpoint | None
    b_dialog: Dialog | None
    #: The ACK sent for the B leg's 2xx as what its dialog does not give: (CSeq
    #: number, Content-Type or "", body). A retransmitted 2xx is ACKed again with the
    #: ACK rebuilt from b_dialog (RFC 3261 13.2.2.4): a copy of the ACK request held
    #: for the whole call was ~0.7 KiB per idle dialog. Most calls share PLAIN_ACK.
    b_ack: tuple[int, str, bytes] | None
    b_provisional: bool
    b_cancel_pending: bool
    #: B-leg INVITE transactions given up on (failover): a late 2xx gets ACK + BYE.
    #: A tuple: most calls never fail over, and the empty tuple is shared (an empty
    #: set is 216 bytes per call).
    abandoned: tuple[TransactionKey, ...]
    #: Late offer (RFC 3264 offer in 2xx, answer in ACK): the CSeq of the ACK owed
    #: on each leg, 0 when none (the gateway's CSeq numbers start at 1). Two fields,
    #: not a dict: an empty dict per call was 64 bytes (ack_owed, owe_ack).
    a_ack_owed: int
    b_ack_owed: int
    ringing_at: float | None
    answered_at: float | None
    ended_at: float | None
    final_status: int
    final_reason: str
    hangup_side: str
    cancelled: bool
    #: what routing decided and why, carried untouched to CallEnded
    facts: CallFacts
    #: the B-leg target last tried (0-based), None before the first
    attempt: int | None
    #: whether the recording notice played, and when it started
    recording_notice: RecordingNotice
    recording_started_at: float | None
    #: the gateway's SDP answer to the caller when it anchors the media
    media_answer: bytes | None
    #: the relay's SDP offer for the B leg
    b_offer: bytes | None
    #: the A leg was answered by the gateway itself (answer-first announcement)
    a_answered_locally: bool
    #: the caller requires reliable provisional responses (RFC 3262)
    reliable: bool
    #: RSeq of the last reliable provisional sent
    rseq: int
    #: the reliable provisional waiting for its PRACK, and what waits behind it
    rel_pending: Response | None
    #: a tuple, shared while empty (most calls queue nothing)
    rel_queue: tuple[Response, ...]
    rel_started: float
    rel_interval: float
    #: deadlines of the B2BUA's own timers, in seconds (NOT_ARMED when not armed);
    #: the session timers' are in a_session and b_session
    no_answer_at: float
    failover_at: float
    reliable_at: float
    hangup_at: float
    max_duration_at: float
    #: the deadline of the call's entry in the B2BUA's timer heap (NOT_ARMED: none);
    #: an entry at another time is stale
    timer_at: float
    #: what ended the call
    ended_by: EndedBy
    #: the caller's session timer as agreed in route_decided, put in the A leg's 2xx
    a_timer: SessionTimer | None
    #: (Session-Expires, Min-SE) offered on the B leg; raised after a 422
    b_timer_offer: tuple[int, int]
    #: the B-leg INVITE was already retried after a 422 (RFC 4028 7.3: once)
    b_retried_422: bool
    #: the session timer running on each leg (session(), set_session()); fields,
    #: not a dict keyed by Side: the dict was ~0.2 KiB per idle call
    a_session: LegSession | None
    b_session: LegSession | None
    #: the last SDP the gateway sent on each leg (Content-Type, body): the body of a
    #: refreshing re-INVITE, which must not change the session (RFC 3264 8);
    #: local_sdp(), set_local_sdp()
    a_sdp: tuple[str, bytes] | None
    b_sdp: tuple[str, bytes] | None
    #: the last offer put the media on hold (dead-media checks are off)
    on_hold: bool

    def __init__(
        self,
        *,
        uuid: str,
        a_request: Request,
        a_source: Endpoint,
        a_tx: TransactionKey,
        a_tag: str,
        a_dialog: Dialog,
        setup_at: float,
        state: CallState = CallState.ROUTING,
        route: Route | None = None,
        targets: tuple[Endpoint, ...] = (),
        b_call_id: str = "",
        b_tag: str = "",
        b_request: Request | None = None,
        routed_uri: str = "",
        b_tx: TransactionKey | None = None,
        b_target: Endpoint | None = None,
        b_dialog: Dialog | None = None,
        b_ack: tuple[int, str, bytes] | None = None,
        b_provisional: bool = False,
        b_cancel_pending: bool = False,
        abandoned: tuple[TransactionKey, ...] = (),
        a_ack_owed: int = 0,
        b_ack_owed: int = 0,
        ringing_at: float | None = None,
        answered_at: float | None = None,
        ended_at: float | None = None,
        final_status: int = 0,
        final_reason: str = "",
        hangup_side: str = "gateway",
        cancelled: bool = False,
        facts: CallFacts = NO_FACTS,
        attempt: int | None = None,
        recording_notice: RecordingNotice = RecordingNotice.NONE,
        recording_started_at: float | None = None,
        media_answer: bytes | None = None,
        b_offer: bytes | None = None,
        a_answered_locally: bool = False,
        reliable: bool = False,
        rseq: int = 0,
        rel_pending: Response | None = None,
        rel_queue: tuple[Response, ...] = (),
        rel_started: float = 0.0,
        rel_interval: float = 0.0,
        ended_by: EndedBy = EndedBy.GATEWAY,
        a_timer: SessionTimer | None = None,
        b_timer_offer: tuple[int, int] = (0, 0),
        b_retried_422: bool = False,
        a_session: LegSession | None = None,
        b_session: LegSession | None = None,
        a_sdp: tuple[str, bytes] | None = None,
        b_sdp: tuple[str, bytes] | None = None,
        on_hold: bool = False,
    ) -> None:
        self.uuid = uuid
        self.a_request = a_request
        self.a_source = a_source
        self.a_tx = a_tx
        self.a_tag = a_tag
        self.a_dialog = a_dialog
        self.setup_at = setup_at
        self.state = state
        self.route = route
        self.targets = targets
        self.b_call_id = b_call_id
        self.b_tag = b_tag
        self.b_request = b_request
        self.routed_uri = routed_uri
        self.b_tx = b_tx
        self.b_target = b_target
        self.b_dialog = b_dialog
        self.b_ack = b_ack
        self.b_provisional = b_provisional
        self.b_cancel_pending = b_cancel_pending
        self.abandoned = abandoned
        self.a_ack_owed = a_ack_owed
        self.b_ack_owed = b_ack_owed
        self.ringing_at = ringing_at
        self.answered_at = answered_at
        self.ended_at = ended_at
        self.final_status = final_status
        self.final_reason = final_reason
        self.hangup_side = hangup_side
        self.cancelled = cancelled
        self.facts = facts
        self.attempt = attempt
        self.recording_notice = recording_notice
        self.recording_started_at = recording_started_at
        self.media_answer = media_answer
        self.b_offer = b_offer
        self.a_answered_locally = a_answered_locally
        self.reliable = reliable
        self.rseq = rseq
        self.rel_pending = rel_pending
        self.rel_queue = rel_queue
        self.rel_started = rel_started
        self.rel_interval = rel_interval
        self.no_answer_at = NOT_ARMED
        self.failover_at = NOT_ARMED
        self.reliable_at = NOT_ARMED
        self.hangup_at = NOT_ARMED
        self.max_duration_at = NOT_ARMED
        self.timer_at = NOT_ARMED
        self.ended_by = ended_by
        self.a_timer = a_timer
        self.b_timer_offer = b_timer_offer
        self.b_retried_422 = b_retried_422
        self.a_session = a_session
        self.b_session = b_session
        self.a_sdp = a_sdp
        self.b_sdp = b_sdp
        self.on_hold = on_hold

    @property
    def call_id(self) -> str:
        """The A leg's Call-ID (its dialog holds the INVITE's)."""
        return self.a_dialog.call_id

    def dialog(self, side: Side) -> Dialog | None:
        return self.a_dialog if side is Side.A else self.b_dialog

    def session(self, side: Side) -> LegSession | None:
        """The session timer running on ``side``, if any."""
        return self.a_session if side is Side.A else self.b_session

    def set_session(self, side: Side, session: LegSession | None) -> None:
        if side is Side.A:
            self.a_session = session
        else:
            self.b_session = session

    def local_sdp(self, side: Side) -> tuple[str, bytes] | None:
        """The last (Content-Type, SDP body) the gateway sent on ``side``, if any."""
        return self.a_sdp if side is Side.A else self.b_sdp

    def set_local_sdp(self, side: Side, content_type: str, body: bytes) -> None:
        # The usual Content-Type as one shared string, not each message's copy.
        sdp = (SDP_CONTENT_TYPE if content_type == SDP_CONTENT_TYPE else content_type, body)
        if side is Side.A:
            self.a_sdp = sdp
        else:
            self.b_sdp = sdp

    def owe_ack(self, side: Side, cseq: int) -> None:
        """Late offer: the ACK of CSeq ``cseq`` on ``side`` waits for the answer."""
        if side is Side.A:
            self.a_ack_owed = cseq
        else:
            self.b_ack_owed = cseq

    def take_ack_owed(self, side: Side) -> int | None:
        """The CSeq of the ACK owed on ``side`` (now no longer owed), or None."""
        cseq = self.a_ack_owed if side is Side.A else self.b_ack_owed
        if not cseq:
            return None
        self.owe_ack(side, 0)
        return cseq

    @property
    def acks_owed(self) -> bool:
        return bool(self.a_ack_owed or self.b_ack_owed)

    def set_deadline(self, name: str, at: float) -> None:
        """Arms the timer ``name`` for ``at`` (seconds), or disarms it (NOT_ARMED).
        A session timer of a leg with no session is not armed."""
        if name == NO_ANSWER:
            self.no_answer_at = at
        elif name == FAILOVER:
            self.failover_at = at
        elif name == RELIABLE:
            self.reliable_at = at
        elif name == HANGUP:
            self.hangup_at = at
        elif name == MAX_DURATION:
            self.max_duration_at = at
        else:
            side = Side.A if name in (REFRESH[Side.A], EXPIRY[Side.A]) else Side.B
            session = self.session(side)
            if session is None:
                return
            if name == REFRESH[side]:
                session.refresh_at = at
            else:
                session.expires_at = at

    def next_deadline(self) -> float:
        """The earliest deadline armed, NOT_ARMED when none."""
        # Comparisons, not min(): compiled, these stay native floats, where min()
        # boxed each deadline and called the builtin (1.2 % of the CPU per call:
        # this runs on every get_timer and _schedule).
        at = self.no_answer_at
        if self.failover_at < at:
            at = self.failover_at
        if self.reliable_at < at:
            at = self.reliable_at
        if self.hangup_at < at:
            at = self.hangup_at
        if self.max_duration_at < at:
            at = self.max_duration_at
        for session in (self.a_session, self.b_session):
            if session is not None:
                if session.refresh_at < at:
                    at = session.refresh_at
                if session.expires_at < at:
                    at = session.expires_at
        return at

    def due_timer(self, now: float) -> str | None:
        """The name of the earliest timer due at ``now``, None when none is."""
        name: str | None = None
        at = now
        for candidate, deadline in (
            (NO_ANSWER, self.no_answer_at),
            (FAILOVER, self.failover_at),
            (RELIABLE, self.reliable_at),
            (HANGUP, self.hangup_at),
            (MAX_DURATION, self.max_duration_at),
        ):
            if deadline <= at:
                name, at = candidate, deadline
        for side, session in ((Side.A, self.a_session), (Side.B, self.b_session)):
            if session is not None:
                if session.refresh_at <= at:
                    name, at = REFRESH[side], session.refresh_at
                if session.expires_at <= at:
                    name, at = EXPIRY[side], session.expires_at
        return name

    def disposition(self) -> str:
        """The CDR disposition of the call (answered, busy, no-answer ...)."""
        if self.answered_at is not None:
            return "answered"
        if self.cancelled:
            return "cancelled"
        status = self.final_status
        if status in (486, 600):
            return "busy"
        if status in (408, 480):
            return "no-answer"
        if status in (403, 404, 405, 415, 416, 420, 482, 483, 484, 488, 603, 606):
            return "rejected"
        return "failed"


def build_b_invite(
    call: Call, route: Route, *, call_id: str, tag: str, contact: str, attempt: int = 0
) -> Request:
    """Builds the B-leg INVITE from the A-leg INVITE and the routing decision.

    The B leg is a new dialog: its own Call-ID, From tag and Contact (RFC 3261
    12.1.2 from the B2BUA's UAC side). Max-Forwards is carried over minus one so a
    loop through other B2BUAs still ends (RFC 3261 16.6 step 3 in spirit).
    """
    a = call.a_request
    headers = Headers()
    try:
        max_forwards = int(a.headers.get("Max-Forwards") or "70")
    except ValueError:
        max_forwards = 70
    headers.add("Max-Forwards", str(max(0, min(max_forwards, 71) - 1)))
    from_value = route.from_value or str(_without_tag(a.headers.get("From") or ""))
    headers.add("From", f"{from_value};tag={tag}")
    headers.add("To", _without_tag(a.headers.get("To") or ""))
    headers.add("Call-ID", call_id)
    headers.add("CSeq", "1 INVITE")
    headers.add("Contact", contact)
    removed = {name.lower() for name in route.remove_headers}
    for name, value in a.headers:
        if name in RELAYED_REQUEST_HEADERS and name.lower() not in removed:
            headers.add(name, value)
    for name, value in route.headers:
        headers.add(name, value)
    body = a.body
    if route.wrap_sdp is not None:
        # The SDP sent is the relay's when the media is anchored, else the caller's.
        content_type, body = route.wrap_sdp(call.b_offer if call.b_offer is not None else a.body)
        headers.set("Content-Type", content_type)
    elif call.b_offer is not None:
        # Anchored media: the callee talks to the relay, not to the caller.
        body = call.b_offer
        headers.set("Content-Type", "application/sdp")
    if call.recording_notice is not RecordingNotice.NONE:
        # Documented in README: tells the PBX whether it may record the call.
        headers.add("X-Voipgw-Recording-Notice", call.recording_notice.value)
    uri = route.request_uri or a.uri
    if attempt < len(route.request_uris):
        uri = route.request_uris[attempt]
    return Request(method="INVITE", uri=uri, headers=headers, body=body)


#: The B-leg ACK of most calls (Call.b_ack): CSeq 1, no body (the offer was in the
#: INVITE), one tuple shared by all of them.
PLAIN_ACK: tuple[int, str, bytes] = (1, "", b"")


def b_invite_cseq(call: Call) -> int:
    """The CSeq number of the call's B-leg INVITE, which its ACK must repeat (RFC 3261
    13.2.2.4): 1, and 2 once the INVITE was retried after a 422 (RFC 4028 7.3: a new
    request of the same dialog-less INVITE, so a higher CSeq)."""
    return 2 if call.b_retried_422 else 1


def ack_request(dialog: Dialog, cseq: int, content_type: str, body: bytes) -> Request:
    """The ACK of a 2xx in ``dialog`` (RFC 3261 13.2.2.4), without Via (the layer
    gives each its own branch, 17.1.1.3)."""
    ack = dialog.create_request("ACK", cseq=cseq)
    ack.body = body
    if content_type:
        ack.headers.add("Content-Type", content_type)
    return ack


def sent_ack(cseq: int, content_type: str, body: bytes) -> tuple[int, str, bytes]:
    """What Call.b_ack keeps of an ACK built by :func:`ack_request`."""
    if cseq == 1 and not content_type and not body:
        return PLAIN_ACK
    return (cseq, content_type, body)


#: What a confirmed call still reads from its A-leg INVITE: the CDR (From,
#: User-Agent, the Request-URI). Call.call_id is its dialog's.
_KEPT_A_AFTER_CONFIRM = frozenset({"From", "User-Agent"})


def slim_confirmed(call: Call) -> None:
    """Drops what a confirmed call no longer needs from its INVITEs (bodies, Via,
    Route, Allow ...): an idle dialog then costs little memory. In-dialog requests
    are built from the dialogs; retransmissions live in the transactions.

    The B-leg INVITE goes whole: a 2xx of another fork is ACKed and ended from the
    INVITE its client transaction holds (B2bua._ack_and_bye), and the CDR reads
    Call.routed_uri (0.5 KiB per idle call, issue 17).
    """
    a = call.a_request
    # The same (name, value) tuples: the names are canonical already.
    kept = Headers.from_canonical([f for f in a.headers if f[0] in _KEPT_A_AFTER_CONFIRM])
    call.a_request = Request(method=a.method, uri=a.uri, headers=kept)
    call.b_request = None


#: The usual Content-Type of a leg's SDP (Call.set_local_sdp).
SDP_CONTENT_TYPE = "application/sdp"


def shared_reason(status: int, reason: str) -> str:
    """``reason`` as the shared RFC 3261 phrase of ``status`` when it is that phrase
    ("OK"): a call keeps its final reason for the CDR, and each response's own copy
    of the text was a string per call."""
    phrase = reason_phrase(status)
    return phrase if reason == phrase else reason


def b_dialog_of(call: Call, request: Request, response: Response) -> Dialog:
    """The B leg's dialog from its INVITE and a response (Dialog.as_uac), its URIs
    the A leg's strings where the texts are the same (the B2BUA copies From and To
    across, RFC 3261 12.1.2 gives each dialog its own): two strings fewer per call."""
    dialog = Dialog.as_uac(request, response)
    a = call.a_dialog
    if dialog.local_uri == a.remote_uri:
        dialog.local_uri = a.remote_uri
    if dialog.remote_uri == a.local_uri:
        dialog.remote_uri = a.local_uri
    return dialog


def relayed_headers(source: Headers, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """The fields of ``source`` named in ``names``, in order."""
    return [(name, value) for name, value in source if name in names]


def _without_tag(value: str) -> str:
    address = parse_name_address(value)
    params = tuple(p for p in address.params if p[0].lower() != "tag")
    return str(type(address)(address.display_name, address.uri, params))
