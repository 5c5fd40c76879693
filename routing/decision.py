"""The routing contract: a call's :class:`RoutingDecision` and its typed :class:`CallFacts`.

Routing decides a call once, as a pure function (:func:`routing.policy.decide`), and
the decision carries the call's facts; the routing adapter (``gateway.service.router``) adds
what only it learns from its lookups (the centre behind each resolved next hop, a
registered binding, a shed); the B2BUA carries the facts untouched beside what it alone
knows (which attempt answered, when the recording notice played); ``CallEnded`` hands
both to ``cdr.call_record.record_of``. Nothing on the way goes through a string: a fact
that would not fit its type fails where it is made, not inside the CDR sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from routing.device_location import DeviceLocation, DeviceLocationProblem
from routing.geolocation import GeolocationErrorCode, GeolocationRouting
from routing.model import (
    CallClass,
    DeviceKind,
    EmergencyKind,
    EmergencyMatch,
    IPAddress,
    Language,
    Location,
)


class Direction(StrEnum):
    """Which way a call goes through the gateway."""

    OUTBOUND = "outbound"
    """From a device (a subscriber's phone, or an unknown caller) to the PBX, a trunk
    or an emergency centre: the call the routing policy decides."""
    INBOUND = "inbound"
    """From the PBX or a trunk (a trusted peer) to a device registered here."""


class RoutedBy(StrEnum):
    """How the B leg's destination was found."""

    POLICY = "policy"
    """The routing decision's next hops (default next hop, emergency centres)."""
    REGISTERED_BINDING = "registered-binding"
    """A device's registration (the callee registered here)."""
    INBOUND_TO_REGISTERED = "inbound-to-registered"
    """A call from a trusted peer to a device's registration."""
    INBOUND_UNREACHABLE = "inbound"
    """A call from a trusted peer for which no device is registered (404)."""
    EMERGENCY_CALLBACK = "emergency-callback"
    """A centre's call back to an emergency caller (RFC 6881 SP-35)."""
    FALLBACK = "fallback"
    """The national default centres, after the routing hook itself failed."""
    LOCAL = "local"
    """Answered by the gateway itself (the emergency test call, RFC 6881 SP-44)."""


class FlowRelay(StrEnum):
    """A call that went between two of the gateway's processes because the callee's
    flow is held by another worker or instance (gateway/registrar/routing.py, "Several
    instances"): both are B2BUAs, so one call leaves two records, and this tells them
    apart (enum ``cdr_flow_relay``; None: the call went through one process).

    The relaying process's record is the call's: it took the call from the caller, so
    it holds what a single process would have recorded (the caller's source address,
    subscriber and customer, the caller-ID policy's decision on what the caller
    presented, the recording notice). The flow owner sees a sibling's relay instead:
    a call from a trusted peer, billed to the callee's customer, from the sibling's
    address. Its record adds only the delivery, and the relaying record already holds
    the call's answer and end (a B2BUA passes both on within milliseconds). So
    exports and counts skip :attr:`FROM_SIBLING` records, and subject access returns
    both.
    """

    TO_OWNER = "to-owner"
    """This process relayed (or tried to relay) the B leg to the process holding the
    callee's flow, with ``Route: <owner;lr>``: its record bills the call."""
    FROM_SIBLING = "from-sibling"
    """A sibling relayed the call here as the flow owner, and this process delivered
    it over its flow (or answered that it holds none): the sibling's record bills it."""


class Shed(StrEnum):
    """Why a new call was refused with 503 before any routing."""

    CAPACITY = "capacity"
    DRAINING = "draining"
    #: the event loop was behind (gateway.edge.overload): answered before routing
    LOAD = "load"


class Admission(StrEnum):
    """What the call limit (``[overload] max_calls``) made of a new call.

    The count weighed is every call the B2BUA holds when the call arrived, this one
    and those still being routed included (:func:`routing.policy.admission`).
    """

    WITHIN_CAPACITY = "within-capacity"
    """At most ``max_calls``: admitted."""
    EMERGENCY_RESERVE = "emergency-reserve"
    """An emergency call above ``max_calls``, within ``emergency_reserve`` more."""
    BEYOND_RESERVE = "beyond-reserve"
    """An emergency call beyond the reserve too: admitted all the same (an emergency
    call is never refused for load), logged and counted."""
    SHED = "shed"
    """An ordinary call above ``max_calls``: refused with 503."""


class RecordingNotice(StrEnum):
    """Whether the recording announcement was played (enum ``cdr_recording_notice``)."""

    PLAYED = "played"
    NOT_PLAYED = "not-played"
    NONE = "none"


class LocationSource(StrEnum):
    """Where the location sent with an emergency call comes from."""

    SITE_ADDRESS = "site-address"
    """The registered address of the site whose network the call came from."""
    DECLARED_ADDRESS = "declared-address"
    """An address the caller declared for remote work, whose network the call came
    from (a home office): office use, the address marked as declared."""
    DEVICE = "device"
    """No network location (a nomadic call), but the device's own location, checked
    and forwarded: the only location the centre has is the device's claim."""
    NONE = "none"
    """No location known: the centre is told the location is not verified."""


class LocationPrecedence(StrEnum):
    """Which of two locations goes first to the centre when the device sent its own
    (RFC 6442: the order of the Geolocation locationValues and of the body parts)."""

    NETWORK_FIRST = "network-first"
    """The network-derived location (site or declared address, or "not verified")."""
    DEVICE_FIRST = "device-first"
    """The device's own PIDF-LO."""


class UnverifiedLocation(StrEnum):
    """Why an emergency call was routed without a verified location (label of
    ``voipgw_emergency_calls_unverified_location_total``)."""

    OUTSIDE = "outside"
    """Source outside every registered network, no declared location matched."""
    VPN_POOL = "vpn-pool"
    OTHER_CUSTOMER = "other-customer"
    UNKNOWN_CALLER = "unknown-caller"
    """An unknown caller outside every site's office network."""


class CallerId(StrEnum):
    """What the caller-ID policy did with the number a call presented (enum
    ``cdr_caller_id``; routing/callerid.py decides it)."""

    KEPT = "kept"
    """The presented number is one the caller may use, and is asserted."""
    REPLACED = "replaced"
    """Another number (the subscriber's own, or an emergency callback) is asserted."""
    REMOVED = "removed"
    """No number is passed on: the call is delivered anonymous."""
    REJECTED = "rejected"
    """The call was refused for the number it presented."""


class CallerIdReason(StrEnum):
    """Why the caller-ID policy decided as it did (bounded: a metric label)."""

    OWN_NUMBER = "own-number"
    """A device presented its subscriber's own number (or no number: its SIP user)."""
    CUSTOMER_RANGE = "customer-range"
    """A device presented a number in its customer's ranges (a switchboard number)."""
    NOT_HELD = "not-held"
    """A device presented a number its customer does not hold."""
    EMERGENCY_CALLBACK = "emergency-callback"
    """An emergency call carries the subscriber's callback number, whatever it presented."""
    UNKNOWN_CALLER = "unknown-caller"
    """No subscriber: nothing to assert (an emergency call from an unknown caller)."""
    DOMESTIC_PEER = "domestic-peer"
    """From a domestic trunk: the originating operator vouches for the number."""
    INTERNATIONAL_FOREIGN = "international-foreign-number"
    """From an international trunk, a number outside +358."""
    INTERNATIONAL_FINNISH = "international-finnish-number"
    """From an international trunk, a Finnish number (regulation 28: block or remove)."""
    ROAMING_RANGE = "roaming-range"
    """From an international trunk, a Finnish number of a roaming-capable range."""
    NO_NUMBER = "no-number"
    """From a trunk, no number presented."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallFacts:
    """Everything known of a call when it was decided, typed (the CDR's source).

    A fresh ``CallFacts()`` is the call nothing was learnt of (the default upstream
    route of a gateway without routing data, a call refused while draining).

    Attributes:
        call_class: office, nomadic, or unknown (inbound calls, refused calls).
        reason: why, in one line (logs, ``X-Voipgw-Reason``).
        direction: outbound (from a device) or inbound (from a trusted peer).
        routed_by: how the B leg's destination was found.
        device_kind: the kind of device the classification saw.
        site_id: the site whose network the call came from (office calls).
        customer_id: the customer the call is billed to ("" when unknown).
        subscriber: the caller's E.164 number when a subscriber placed the call.
        callee: the subscriber an inbound call is for (E.164).
        emergency: the recognised emergency or test dial string, or None: the one
            recognition of the call (:func:`routing.emergency.DialPlan.match`).
        emergency_policy: for emergency calls, "office" or the nomadic action taken.
        centres: per B-leg target, in the order the B2BUA tries them, the emergency
            centre it reaches (None for an ordinary next hop).
        callback: the callback identity sent to the centre (tel URI), or None.
        privacy: the caller restricted presentation (RFC 3323 ``Privacy: id`` sent).
        recording_notice_language: the language of the recording notice decided for
            the call, or None when none is to be played.
        location: the location sent with an emergency call.
        location_source: where that location comes from.
        unverified_location: for an emergency call sent without a verified location,
            why (None otherwise).
        device_location: the location the device sent by value, checked and
            forwarded beside the network's (RFC 6442), or None.
        device_location_ignored: why the device's own location was not forwarded,
            or None (it sent none, or it was forwarded).
        location_precedence: which location went first, when the device sent one.
        geolocation_routing: the device's Geolocation-Routing permission (RFC 6442
            4.2) when it sent a location, None when it sent no such header field.
        geolocation_error: the Geolocation-Error (RFC 6442 4.3) the caller's
            responses carry because its own location could not be used, or None.
        shed: why the call was refused before routing, or None.
        admission: what the call limit made of it (None: not weighed, e.g. a call
            refused while draining or a centre's callback).
        auth_challenged: the call was answered with a digest challenge (401/407);
            it is part of the call that follows, not a call of its own.
        registered_contact: the Contact of the registration the call was sent to.
        presented_number: the number the call presented (P-Preferred-Identity or
            From from a device, P-Asserted-Identity or From from a trunk), in E.164
            where it reads as one, else as written (bounded), or None.
        asserted_number: the number the B leg asserts (E.164), or None.
        caller_id: what the caller-ID policy did (None: not decided, e.g. a shed call).
        caller_id_reason: why.
        device_source: the address a trusted edge proxy received the call from
            (the device's, ``CallContext.source``), or None when the call came
            straight from its sender: the CDR's source address is then the
            transport source.
        flow_relay: whether the call was relayed to, or by, the process holding the
            callee's flow, or None (one process): which of its two records bills it.
    """

    call_class: CallClass = CallClass.UNKNOWN
    reason: str = ""
    direction: Direction = Direction.OUTBOUND
    routed_by: RoutedBy = RoutedBy.POLICY
    device_kind: DeviceKind | None = None
    site_id: str | None = None
    customer_id: str = ""
    subscriber: str | None = None
    callee: str | None = None
    emergency: EmergencyMatch | None = None
    emergency_policy: str | None = None
    centres: tuple[str | None, ...] = ()
    callback: str | None = None
    privacy: bool = False
    recording_notice_language: str | None = None
    location: Location | None = None
    location_source: LocationSource = LocationSource.NONE
    unverified_location: UnverifiedLocation | None = None
    device_location: DeviceLocation | None = None
    device_location_ignored: DeviceLocationProblem | None = None
    location_precedence: LocationPrecedence | None = None
    geolocation_routing: GeolocationRouting | None = None
    geolocation_error: GeolocationErrorCode | None = None
    shed: Shed | None = None
    admission: Admission | None = None
    auth_challenged: bool = False
    registered_contact: str | None = None
    presented_number: str | None = None
    asserted_number: str | None = None
    caller_id: CallerId | None = None
    caller_id_reason: CallerIdReason | None = None
    device_source: IPAddress | None = None
    flow_relay: FlowRelay | None = None

    @property
    def is_emergency(self) -> bool:
        """A real emergency call (not a test call): never shed, never challenged."""
        return self.emergency is not None and self.emergency.kind is EmergencyKind.EMERGENCY

    def centre_of(self, attempt: int | None) -> str | None:
        """The emergency centre of the B-leg attempt ``attempt`` (0-based), if any."""
        if attempt is None or not 0 <= attempt < len(self.centres):
            return None
        return self.centres[attempt]


#: The facts of a call nothing was learnt of.
NO_FACTS = CallFacts()


class Action(StrEnum):
    """What the gateway does with the call."""

    ROUTE = "route"
    ANNOUNCE_THEN_ROUTE = "announce-then-route"
    ANNOUNCE_AND_END = "announce-and-end"
    REJECT = "reject"
    ANSWER_TEST = "answer-test"
    """The gateway answers an emergency test call itself (RFC 6881 SP-44) with the
    decision's ``test_report``: no test route is configured."""
    ROUTE_INBOUND = "route-inbound"
    """A call from a trusted peer (PBX, trunk) to the callee's registration."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One place to send the B leg; a decision lists them in failover order."""

    request_uri: str
    """Request-URI of the INVITE (a service URN for URN-style centres, RFC 6881 SP-24)."""
    next_hop: str
    """SIP URI the INVITE is sent to (Route / outbound proxy)."""
    centre_id: str | None = None
    """The emergency centre this target reaches, or None for an ordinary next hop."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who the B leg says is calling (RFC 3325, RFC 3323); it replaces whatever
    P-Asserted-Identity and Privacy the caller sent.

    Attributes:
        headers: P-Asserted-Identity (and ``Privacy: id``) to send; empty for an
            emergency call from an unknown caller (nothing to assert, nothing passed on).
        from_value: the B leg's From name-addr, or None to keep the caller's.
    """

    headers: tuple[tuple[str, str], ...] = ()
    from_value: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingDecision:
    """The routing layer's answer for one call: what to do, and the call's facts.

    The instructions (action, targets, prompt, headers ...) are for the adapter that
    carries them out; :attr:`facts` is what the call is and why, carried to the CDR.
    """

    action: Action
    facts: CallFacts
    targets: tuple[Target, ...] = ()
    """Where to send the B leg, tried in order: the next on timeout or any failure
    final response except 487 (the caller hung up). Empty when not routed."""
    announcement: str | None = None
    """Prompt name to play before routing or ending ("nomadic-emergency-warning")."""
    language: Language = Language.FI
    resource_priority: str | None = None
    """Resource-Priority header value (RFC 7135 "esnet" namespace) or None."""
    reject_status: int | None = None
    retry_after: int | None = None
    """Seconds for the Retry-After of a shed call's 503 (RFC 3261 21.5.4)."""
    notify_url: str | None = None
    """Webhook to notify (emergency calls) or None."""
    test_report: str = ""
    identity: Identity | None = None
    """The caller's identity on the B leg, or None to pass the caller's own on."""
    """What a real emergency call from here would carry (ANSWER_TEST), as text."""
    headers: tuple[tuple[str, str], ...] = field(default=())
    """Extra headers for the B leg and logs (X-Voipgw-Class, X-Voipgw-Reason)."""
    max_duration: float | None = None
    """Seconds after the answer when the gateway ends the call; None: no limit
    (always None for emergency calls)."""

    @property
    def call_class(self) -> CallClass:
        return self.facts.call_class

    @property
    def reason(self) -> str:
        """Why, in one line (logs, ``X-Voipgw-Reason``)."""
        return self.facts.reason

    @property
    def emergency(self) -> EmergencyMatch | None:
        return self.facts.emergency

    @property
    def location(self) -> Location | None:
        """Location to convey as PIDF-LO (RFC 6442) for emergency calls."""
        return self.facts.location

    @property
    def callback(self) -> str | None:
        """Callback identity for P-Asserted-Identity (tel URI), shown to the PSAP even
        if the subscriber restricts presentation."""
        return self.facts.callback
