"""The routing adapter: from a new call to a :class:`Route`, :class:`Reject` or
:class:`LocalAnswer`, around the pure decision of :func:`routing.policy.decide`.

Everything decidable is decided in ``routing/`` over typed data; this adapter does
what needs the network, the clock or other parts: it reads the INVITE into a
:class:`routing.model.CallContext` (with the SIP parser), keeps the emergency callback
window (RFC 6881 SP-35), asks the registrar to authenticate ordinary calls, notifies
an emergency call's contacts, looks up a callee's registration, resolves next hops to
transport addresses (RFC 3263), and turns the decision into what the B2BUA sends: the
emergency extras (PIDF-LO in a multipart body with Geolocation, RFC 6442;
P-Asserted-Identity with the callback identity, RFC 3325; Resource-Priority,
RFC 4412/7135), the caller's identity (RFC 3325/3323) and the classification headers
documented in README (``X-Voipgw-Class``, ``X-Voipgw-Reason``). The decision's
:class:`routing.decision.CallFacts` ride along, completed with what only the adapter
learns (which centre each resolved address is, a registration used).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from gateway.b2bua import Announcement, CallEnded, LocalAnswer, Reject, Route, RouteNeeded
from gateway.cluster.callbacks import CallbackWindow, EmergencyCallbacks
from gateway.config import OverloadConfig
from gateway.edge.device_source import device_source
from gateway.edge.peers import TransportAddress, in_networks, transport_address
from gateway.registrar.routing import (
    CALLBACK_MARKER,
    is_relayed_callback,
    relayed_here,
    routed_to_owner,
)
from gateway.sip.errors import SipError
from gateway.sip.events import Endpoint
from gateway.sip.headers import parse_contacts, parse_name_address, parse_via
from gateway.sip.message import Request, Response
from gateway.sip.sdp import parse_sdp
from gateway.sip.uri import SipUri, TelUri, parse_uri, telephone_user
from gateway.transport.hints import PEER_HINTS, PeerHints
from routing.additional_data import additional_data
from routing.callerid import IDENTITY_HEADERS
from routing.config import RoutingConfig
from routing.decision import (
    Action,
    Admission,
    CallerId,
    CallFacts,
    Direction,
    LocationPrecedence,
    RoutedBy,
    RoutingDecision,
)
from routing.device_location import DEFAULT_MAX_PIDF_BYTES, read_device_location, sdp_part
from routing.directory import Directory
from routing.emergency import DialPlan
from routing.geolocation import (
    GeolocationRouting,
    geolocation_error_header,
    read_geolocation_routing,
    routing_allowed,
)
from routing.model import CallContext, EmergencyKind, PresentedIdentity
from routing.multipart import BY_REFERENCE, BodyPart, build_mixed
from routing.pidf import PIDF_CONTENT_TYPE, build_pidf, geolocation_headers
from routing.policy import Load, decide, needs_authentication

log = logging.getLogger("voipgw.router")

#: Seconds an emergency centre may stay silent before the next one is tried; the
#: issue asks for failover "within seconds" and a centre answers 100 at once.
EMERGENCY_FAILOVER_TIMEOUT = 3.0
#: Seconds a ringing emergency centre may take to answer before the next one.
EMERGENCY_NO_ANSWER_TIMEOUT = 30.0

#: Seconds the centres' resolved addresses are reused by the callback check.
CENTRE_ADDRESSES_TTL = 5.0

RouteResult = Route | Reject | LocalAnswer
Resolve = Callable[[str], Awaitable[tuple[Endpoint, ...]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class LocationUnknown:
    """A binding lookup that could not decide: the location service's database is
    away and this instance remembers nothing current of the callee.

    Attributes:
        retry_after: seconds the caller should wait before trying again.
    """

    retry_after: int


#: The call's INVITE -> route to its registered device (over this instance's flow or
#: through the instance holding it), a Reject (the flow is not held here), None (not
#: registered), or LocationUnknown.
BindingLookup = Callable[[Request], Awaitable[Route | Reject | LocationUnknown | None]]
#: (an open callback window, the centre's INVITE, relayed here as the flow owner) ->
#: the callback's route to the window's device through the instance holding its
#: registration's flow (gateway.registrar.routing.choose_callback_flow), a Reject (no
#: such flow held here when relayed here as its owner), or None: the device holds no
#: registration, so the window's own address is called.
CallbackFlow = Callable[[CallbackWindow, Request, bool], Awaitable[Route | Reject | None]]
#: Told of every emergency call as soon as it is routed (webhook / SIP MESSAGE to the
#: customer's on-site contact); must return at once and never delay the call.
EmergencyNotifier = Callable[[RoutingDecision, CallContext], None]
#: Digest authentication of a call: the user name, or the response to send instead.
Authenticate = Callable[[Request, Endpoint], Awaitable["str | Response"]]
#: Dialled Request-URI + caller's language -> the recording notice of a recorded
#: staff line, or None (gateway.rtp.stage reads the lines from [media]).
RecordedLine = Callable[[str, str], Announcement | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class EmergencyTimers:
    """Failover timing of emergency routes, in seconds."""

    failover_timeout: float = EMERGENCY_FAILOVER_TIMEOUT
    no_answer_timeout: float = EMERGENCY_NO_ANSWER_TIMEOUT


def call_context(
    request: Request,
    source: Endpoint,
    directory: Directory,
    dial_plan: DialPlan,
    *,
    max_device_pidf_bytes: int = DEFAULT_MAX_PIDF_BYTES,
    edge_proxy: Endpoint | None = None,
) -> CallContext:
    """What the gateway knows of a call, for routing.

    ``source`` is where the device sent the request from: the transport source, or
    what the trusted ``edge_proxy`` it came through vouched for
    (:func:`gateway.edge.device_source.device_source`).

    The caller is identified by the user part of From; Via, Contact and Geolocation
    are recorded as the device's claims (the classifier never trusts them). The
    Request-URI is recognised as an emergency or test call here, once per call; an
    emergency call's own location (RFC 6442, by value) is read and checked here too,
    so that routing decides over typed data.
    """
    headers = request.headers
    presented = presented_identity(request)
    sent_by: list[str] = []
    for value in headers.values("Via"):
        try:
            sent_by.extend(via.host for via in parse_via(value))
        except SipError:
            continue  # the transaction layer already took the top Via; a claim is lost
    contact_host = None
    instance_id = None
    try:
        contacts = parse_contacts(headers.get("Contact") or "")
        if isinstance(contacts, list) and contacts:
            instance_id = contacts[0].param("+sip.instance")
            uri = parse_uri(contacts[0].uri)
            if isinstance(uri, SipUri):
                contact_host = uri.host
    except SipError:
        pass
    emergency = dial_plan.match(request.uri)
    geolocation = tuple(headers.values("Geolocation"))
    device_location = None
    geolocation_routing = None
    if geolocation and emergency is not None and emergency.kind is EmergencyKind.EMERGENCY:
        device_location = read_device_location(
            geolocation,
            headers.get("Content-Type"),
            request.body,
            max_pidf_bytes=max_device_pidf_bytes,
        )
        geolocation_routing = read_geolocation_routing(headers.values("Geolocation-Routing"))
    return CallContext(
        dialled=request.uri,
        source=ipaddress.ip_address(source.host),
        source_port=source.port,
        edge_proxy=ipaddress.ip_address(edge_proxy.host) if edge_proxy is not None else None,
        via_sent_by=tuple(sent_by),
        contact_host=contact_host,
        user_agent=headers.get("User-Agent"),
        instance_id=instance_id,
        subscriber=directory.subscribers.get(presented.from_user or ""),
        geolocation=geolocation,
        device_location=device_location,
        geolocation_routing=geolocation_routing,
        call_id=headers.get("Call-ID") or "",
        dialled_user=telephone_user(request.uri),
        emergency=emergency,
        presented=presented,
    )


def presented_identity(request: Request) -> PresentedIdentity:
    """Who a request says is calling: the From (user, host and display name apart),
    the first P-Preferred-Identity and P-Asserted-Identity users (RFC 3325 9.1, 9.2:
    a name-addr each; a tel URI's number or a SIP URI's user). Claims only: the
    caller-ID policy (routing/callerid.py) decides which may pass."""
    from_user = from_host = None
    display = ""
    try:
        from_addr = parse_name_address(request.headers.get("From") or "")
        display = from_addr.display_name or ""
        uri = parse_uri(from_addr.uri)
        if isinstance(uri, SipUri):
            from_user, from_host = uri.user_unescaped, uri.host
        elif isinstance(uri, TelUri):
            from_user = uri.number
    except SipError:
        pass
    return PresentedIdentity(
        from_user=from_user,
        from_host=from_host,
        display_name=display,
        preferred=_identity_user(request.headers.get("P-Preferred-Identity")),
        asserted=_identity_user(request.headers.get("P-Asserted-Identity")),
    )


def _identity_user(value: str | None) -> str | None:
    """The user of a P-Preferred/Asserted-Identity value's first name-addr."""
    if not value:
        return None
    try:
        return telephone_user(parse_name_address(value.split(",", 1)[0]).uri)
    except SipError:
        return None


class CallRouter:
    """Carries out the routing decision of every new call.

    Args:
        config: routing settings.
        directory: returns the current routing data (reloaded on SIGHUP).
        overload: capacity bounds (weighed against each call's ``active_calls``).
        resolve: next-hop SIP URI -> transport addresses in failover order.
        dial_plan: recognises emergency dial strings (shared with the guard).
        lookup_binding: AoR -> route to a registered device, None when nobody is
            registered, or :class:`LocationUnknown` when that cannot be told.
        emergency_timers: failover timing of emergency routes.
        notify: told of each emergency call (fire and forget).
        recorded_line: the announcement of a recorded staff line, if the call is to one.
        clock: wall-clock seconds (the callback window of a memory-only store).
        callbacks: the emergency callback windows, shared through PostgreSQL by the
            app (gateway/cluster/callbacks.py); memory only when None.
        trusted_peers: the PBX and trunks: their calls go to registered devices.
        international_peers: those of them marked international (caller-ID policy).
        authenticate: digest authentication of ordinary calls from anywhere else;
            the authenticated user, not the From header, is then the caller.
        peer_hints: where the router records what each next hop's URI says of its
            transports (the transport manager reads them); the process-wide ones.
        callback_flow: how a callback reaches its device's registration flow (the
            app's, over the registrar); None: the window's address, from here.
        cluster_uri: this process's ``[cluster]`` flow URI: a callback relayed here
            by a sibling names it in its Route; None without ``[cluster]``.
        edge_proxies: ``[sip] edge_proxies``: a call from one of them is taken to
            come from where the proxy received it (its Via below, received/rport).
        sibling_calls: the calls the other worker processes of this machine carry,
            counted against ``[overload] max_calls`` with this one's
            (gateway.workers.calls); None: one process.
    """

    def __init__(
        self,
        *,
        config: RoutingConfig,
        directory: Callable[[], Directory],
        overload: OverloadConfig,
        resolve: Resolve,
        dial_plan: DialPlan | None = None,
        lookup_binding: BindingLookup | None = None,
        emergency_timers: EmergencyTimers | None = None,
        notify: EmergencyNotifier | None = None,
        recorded_line: RecordedLine | None = None,
        clock: Callable[[], float] = time.time,
        trusted_peers: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
        international_peers: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
        authenticate: Authenticate | None = None,
        peer_hints: PeerHints | None = None,
        callbacks: EmergencyCallbacks | None = None,
        callback_flow: CallbackFlow | None = None,
        cluster_uri: str | None = None,
        edge_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
        sibling_calls: Callable[[], int] | None = None,
    ) -> None:
        self.sibling_calls = sibling_calls
        self.edge_proxies = edge_proxies
        self.callback_flow = callback_flow
        self.cluster_uri = cluster_uri
        #: what each next hop's URI says of its transports, for the transport manager
        self.peer_hints = peer_hints if peer_hints is not None else PEER_HINTS
        self.dial_plan = dial_plan if dial_plan is not None else DialPlan(config.emergency)
        self.authenticate = authenticate
        self.clock = clock
        self.trusted_peers = trusted_peers
        self.international_peers = international_peers
        #: callback number (E.164 digits) -> the device to reach (RFC 6881 SP-35)
        self.callbacks = callbacks if callbacks is not None else EmergencyCallbacks(clock=clock)
        #: (routing data, reuse until (monotonic), the centres' transport addresses)
        self._centres: tuple[Directory, float, frozenset[TransportAddress]] | None = None
        self.notify = notify
        self.recorded_line = recorded_line
        self.config = config
        self.directory = directory
        self.overload = overload
        self.resolve = resolve
        self.lookup_binding = lookup_binding
        self.emergency_timers = emergency_timers or EmergencyTimers()

    def __call__(self, event: RouteNeeded) -> Awaitable[RouteResult]:
        return self.route(event)

    async def route(self, event: RouteNeeded) -> RouteResult:
        directory = self.directory()
        callback = await self._callback_route(event, directory)
        if callback is not None:
            return callback
        device = device_source(event.request, event.source, self.edge_proxies)
        ctx = call_context(
            event.request,
            device.endpoint,
            directory,
            self.dial_plan,
            max_device_pidf_bytes=self.config.location.max_device_pidf_bytes,
            edge_proxy=device.edge_proxy,
        )
        if self.authenticate is not None and needs_authentication(ctx, self.trusted_peers):
            # Emergency calls are never challenged (RFC 6881 SP-39): only ordinary
            # calls must prove who they are.
            outcome = await self.authenticate(event.request, event.source)
            if isinstance(outcome, Response):
                return Reject(
                    status=outcome.status,
                    reason=outcome.reason,
                    headers=tuple(
                        (n, v) for n, v in outcome.headers if n in _AUTH_RESPONSE_HEADERS
                    ),
                    facts=CallFacts(auth_challenged=True),
                )
            ctx = replace(ctx, subscriber=directory.subscribers.get(outcome))
        load = Load(
            active_calls=event.active_calls
            + (self.sibling_calls() if self.sibling_calls is not None else 0),
            max_calls=self.overload.max_calls,
            retry_after=self.overload.retry_after,
            emergency_reserve=self.overload.emergency_reserve,
        )
        decision = decide(
            ctx,
            directory,
            self.config,
            trusted_peers=self.trusted_peers,
            international_peers=self.international_peers,
            load=load,
        )
        if decision.facts.direction is Direction.INBOUND and routed_to_owner(
            event.request.headers.get_lines("Route"), self.cluster_uri
        ):
            # A sibling relayed the call here as its callee's flow owner; an inbound
            # call comes from a trusted peer, so the Route is believed (a device's is
            # not: gateway/registrar/routing.py).
            decision = replace(decision, facts=relayed_here(decision.facts))
        facts = decision.facts
        if facts.admission is Admission.BEYOND_RESERVE:
            log.warning(
                "call %s: emergency call admitted beyond the emergency reserve"
                " (%d calls; max_calls %d + emergency_reserve %d)",
                ctx.call_id,
                load.active_calls,
                load.max_calls,
                load.emergency_reserve,
            )
        if decision.action is Action.ROUTE_INBOUND:
            return await self._route_inbound(event, decision)
        if facts.shed is not None:
            retry = (("Retry-After", str(decision.retry_after)),)
            return Reject(status=decision.reject_status or 503, headers=retry, facts=facts)
        emergency = facts.is_emergency
        if emergency and ctx.subscriber is not None:
            contact = _contact_uri(event.request)
            if contact is not None:
                # Memory now, PostgreSQL behind the call (never before it).
                self.callbacks.opened(
                    _digits(ctx.subscriber.e164),
                    contact=contact,
                    endpoint=event.source,
                    aor=_from_uri(event.request),
                    call_id=ctx.call_id,
                )
        if emergency and self.notify is not None:
            try:
                self.notify(decision, ctx)
            except Exception:
                # Notification is best effort; it must never cost the call.
                log.exception("emergency notification failed for %s", ctx.call_id)
        log.info(
            "call %s: %s %s (%s)",
            ctx.call_id,
            decision.action.value,
            decision.call_class.value,
            decision.reason,
        )
        if facts.device_location_ignored is not None:
            log.info(
                "call %s: the device's own location is ignored: %s",
                ctx.call_id,
                facts.device_location_ignored.value,
            )
        if decision.action is Action.ANSWER_TEST:
            return _test_call_answer(event.request, decision)
        if decision.action is Action.REJECT:
            if facts.caller_id is CallerId.REJECTED:
                log.warning(
                    "call %s: caller ID %s rejected (%s)",
                    ctx.call_id,
                    facts.presented_number,
                    facts.caller_id_reason,
                )
            return Reject(status=decision.reject_status or 403, facts=facts)
        if decision.action is Action.ANNOUNCE_AND_END:
            # The warning is played, then the call ends (no B leg); without a media
            # stage the caller still learns why from the reason phrase.
            return Route(
                targets=(),
                response_headers=caller_response_headers(facts),
                announcement=Announcement(
                    prompt=decision.announcement or "nomadic-warning",
                    language=decision.language.value,
                    end_after=True,
                    kind="nomadic-warning",
                ),
                emergency=True,
                facts=facts,
            )
        announcement = None
        if decision.action is Action.ANNOUNCE_THEN_ROUTE and decision.announcement:
            announcement = Announcement(
                prompt=decision.announcement,
                language=decision.language.value,
                kind="nomadic-warning",
            )
        elif not emergency and self.recorded_line is not None:
            # The privacy policy's notice, never on emergency calls, and decided
            # before any shortcut below so no route to staff can skip it.
            announcement = self.recorded_line(event.request.uri, decision.language.value)
            if announcement is not None:
                facts = replace(facts, recording_notice_language=announcement.language)
        if not emergency and self.lookup_binding is not None:
            registered = await self.lookup_binding(event.request)
            if isinstance(registered, Reject):
                return replace(registered, facts=facts)
            # Not known to be registered here: the default route (the PBX) decides.
            if isinstance(registered, Route):
                return replace(
                    registered,
                    headers=(*registered.headers, *decision.headers),
                    announcement=announcement,
                    max_duration=decision.max_duration,
                    facts=replace(
                        facts,
                        routed_by=RoutedBy.REGISTERED_BINDING,
                        registered_contact=registered.facts.registered_contact,
                        flow_relay=registered.facts.flow_relay,
                    ),
                )
        return await self._route(event.request, decision, facts, announcement)

    async def _route_inbound(self, event: RouteNeeded, decision: RoutingDecision) -> RouteResult:
        """A call from the PBX or a trunk to a device registered here; 404 when
        none is, 503 with Retry-After when that cannot be told."""
        facts = decision.facts
        known = "a subscriber" if facts.callee is not None else "not a subscriber"
        call_id = event.request.headers.get("Call-ID") or ""
        if self.lookup_binding is not None:
            registered = await self.lookup_binding(event.request)
            if isinstance(registered, Reject):
                log.info("call %s: inbound reject %d (%s)", call_id, registered.status, known)
                return replace(registered, facts=facts)
            if isinstance(registered, LocationUnknown):
                # 404 is permanent (RFC 3261 21.4.5): a PBX would stop trying a phone
                # that may well be registered. RFC 3261 21.5.4: 503 "MAY indicate
                # when the client should retry the request in a Retry-After header".
                log.warning(
                    "call %s: inbound reject 503 (registration unknown while the "
                    "database is away, %s)",
                    call_id,
                    known,
                )
                retry = (("Retry-After", str(registered.retry_after)),)
                return Reject(status=503, headers=retry, facts=facts)
            if registered is not None:
                log.info("call %s: inbound route (registered binding, %s)", call_id, known)
                identity = decision.identity
                if identity is not None:
                    # Regulation 28: the number removed; the device sees an anonymous
                    # caller and no identity header of the trunk's.
                    registered = replace(
                        registered,
                        from_value=identity.from_value,
                        remove_headers=(*registered.remove_headers, *IDENTITY_HEADERS),
                        headers=(*registered.headers, *identity.headers, *decision.headers),
                    )
                return replace(
                    registered,
                    facts=replace(
                        facts,
                        routed_by=RoutedBy.INBOUND_TO_REGISTERED,
                        registered_contact=registered.facts.registered_contact,
                        # relayed here (FROM_SIBLING), or relayed on to the owner
                        flow_relay=facts.flow_relay or registered.facts.flow_relay,
                    ),
                )
        log.info("call %s: inbound reject 404 (no registered binding, %s)", call_id, known)
        return Reject(status=decision.reject_status or 404, facts=facts)

    def call_ended(self, event: CallEnded) -> None:
        """Starts the 30-minute callback window when an emergency call ends."""
        number = event.facts.subscriber
        if event.emergency and number:
            self.callbacks.call_ended(_digits(number), centre=event.facts.centre_of(event.attempt))

    async def _callback_route(
        self, event: RouteNeeded, directory: Directory
    ) -> Route | Reject | None:
        """RFC 6881 SP-35/40: "during the call and for 30 minutes after", a call from
        an emergency centre to the callback number reaches the device that made the
        emergency call directly, bypassing the PBX's forwarding and do-not-disturb.

        A centre is recognised by its transport address, never by a host it may share
        with the PBX (gateway/edge/peers.py says why); a call a sibling instance
        relayed here as the flow owner of the device, by the sibling's marker
        (gateway.registrar.routing.is_relayed_callback says when it is believed).

        The window may have been opened by another instance, or by this one before a
        restart: a centre's call to a number this instance remembers nothing of asks
        PostgreSQL, within a short bound (gateway/cluster/callbacks.py, Rule 2)."""
        called = _called_number(event.request.uri)
        if called is None:
            return None
        entry = self.callbacks.local(called)
        if entry is None and self.callbacks.pool is None:
            return None
        relayed = self._relayed_callback(event)
        # Only a centre's call (or a sibling's relay of one) is worth a database read.
        if not relayed and not await self._from_centre(event.source, directory):
            return None
        call_id = event.request.headers.get("Call-ID")
        if entry is None:
            entry = await self.callbacks.find(called)
            if entry is None:
                if relayed:
                    log.warning(
                        "call %s: relayed as an emergency callback to %s, but no window"
                        " of it is open here: an ordinary call",
                        call_id,
                        called,
                    )
                return None
        log.info(
            "call %s: emergency callback to %s (window of call %s via %s)%s",
            call_id,
            entry.contact,
            entry.call_id,
            entry.instance or "this instance",
            ", relayed here as its flow owner" if relayed else "",
        )
        if self.callback_flow is not None:
            through_flow = await self.callback_flow(entry, event.request, relayed)
            if through_flow is not None:
                if relayed:
                    return replace(through_flow, facts=relayed_here(through_flow.facts))
                return through_flow
        return Route(
            targets=(entry.endpoint,),
            request_uri=entry.contact,
            headers=(CALLBACK_MARKER,),
            facts=CallFacts(routed_by=RoutedBy.EMERGENCY_CALLBACK),
        )

    def _relayed_callback(self, event: RouteNeeded) -> bool:
        """Whether a trusted sibling relayed this callback here as the device's flow
        owner (gateway.registrar.routing.is_relayed_callback)."""
        headers = event.request.headers
        marked = headers.values(CALLBACK_MARKER[0])
        if not marked:
            return False  # every ordinary call to a number: keep it cheap
        return is_relayed_callback(
            marked,
            from_trusted_peer=in_networks(event.source.host, self.trusted_peers),
            as_owner=routed_to_owner(headers.get_lines("Route"), self.cluster_uri),
        )

    def may_be_callback(self, request_uri: str, source: Endpoint) -> bool:
        """Whether a new INVITE may be an emergency callback, answered from memory
        alone (no await, no database): load shedding asks it of every INVITE it would
        shed, and a callback is an emergency call's continuation, never shed.

        True for a number with a window this instance holds in memory, and for any
        INVITE from an emergency centre's transport address as last resolved (a
        centre's call to a number whose window another instance opened: only the
        router, after the shedder, can look that up). Before the centres were first
        resolved the second test knows no centre.
        """
        called = _called_number(request_uri)
        if called is not None and self.callbacks.local(called) is not None:
            return True
        cached = self._centres
        return cached is not None and transport_address(source.host, source.port) in cached[2]

    async def _from_centre(self, source: Endpoint, directory: Directory) -> bool:
        """Whether a call comes from an emergency centre's transport address: the host
        and port its SIP URI resolves to (RFC 3263), where its INVITEs go."""
        return transport_address(source.host, source.port) in await self._centre_addresses(
            directory
        )

    async def _centre_addresses(self, directory: Directory) -> frozenset[TransportAddress]:
        """The centres' transport addresses, reused for :data:`CENTRE_ADDRESSES_TTL`
        seconds with the same routing data: with shared callback windows every call to
        a number asks whether it comes from a centre, and resolving each centre per call
        cost an ordinary call about 70 us. A lookup that failed is not reused."""
        now = time.monotonic()
        cached = self._centres
        if cached is not None and cached[0] is directory and now < cached[1]:
            return cached[2]
        addresses: set[TransportAddress] = set()
        complete = True
        for centre in directory.psap.centres.values():
            try:
                endpoints = await self.resolve(centre.sip_uri)
            except (OSError, ValueError, SipError):
                complete = False
                continue
            addresses.update(transport_address(e.host, e.port) for e in endpoints)
        found = frozenset(addresses)
        if complete:
            self._centres = (directory, now + CENTRE_ADDRESSES_TTL, found)
        return found

    async def _route(
        self,
        request: Request,
        decision: RoutingDecision,
        facts: CallFacts,
        announcement: Announcement | None = None,
    ) -> RouteResult:
        emergency = facts.is_emergency
        targets: list[Endpoint] = []
        uris: list[str] = []
        centres: list[str | None] = []
        for target in decision.targets:
            try:
                endpoints = await self.resolve(target.next_hop)
            except (OSError, ValueError, SipError) as exc:
                log.warning("next hop %s unusable: %s", target.next_hop, exc)
                continue
            # A centre's ";transport=udp" keeps its large INVITE off TCP, and a TCP
            # attempt to a centre gives up quickly (gateway/transport/hints.py).
            self.peer_hints.learn_route(target.next_hop, endpoints, emergency=emergency)
            for endpoint in endpoints:
                targets.append(endpoint)
                uris.append(target.request_uri)
                centres.append(target.centre_id)
        if not targets:
            return Reject(
                status=502 if decision.targets else 404,
                headers=caller_response_headers(facts),
                facts=facts,
            )
        headers = list(decision.headers)
        identity = decision.identity
        if identity is not None:
            # The routing layer's Privacy header is re-stated with the identity.
            headers = [h for h in headers if h[0] != "Privacy"] + list(identity.headers)
        wrap_sdp = None
        if emergency:
            if decision.resource_priority:
                headers.append(("Resource-Priority", decision.resource_priority))
            wrap_sdp, extra = _emergency_body(request, decision, self.config, self.directory())
            headers += extra
        return Route(
            targets=tuple(targets),
            request_uris=tuple(uris),
            headers=tuple(headers),
            wrap_sdp=wrap_sdp,
            response_headers=caller_response_headers(facts),
            remove_headers=("P-Asserted-Identity", "Privacy") if identity is not None else (),
            from_value=identity.from_value if identity is not None else None,
            emergency=emergency,
            announcement=announcement,
            max_duration=None if emergency else decision.max_duration,
            failover_timeout=self.emergency_timers.failover_timeout if emergency else None,
            no_answer_timeout=self.emergency_timers.no_answer_timeout if emergency else None,
            facts=replace(facts, centres=tuple(centres)),
        )


def caller_response_headers(facts: CallFacts) -> tuple[tuple[str, str], ...]:
    """Header fields of the gateway's own on every response to the caller's INVITE:
    the Geolocation-Error when its own location could not be used (RFC 6442 4.3),
    rendered here once from the typed fact routing decided.

    Args:
        facts: the call's facts.

    Returns:
        The (name, value) pairs, often none.
    """
    if facts.geolocation_error is None:
        return ()
    return (geolocation_error_header(facts.geolocation_error),)


def _emergency_body(
    request: Request, decision: RoutingDecision, config: RoutingConfig, directory: Directory
) -> tuple[Callable[[bytes], tuple[str, bytes]] | None, tuple[tuple[str, str], ...]]:
    """An emergency INVITE's body parts beside the SDP and the headers naming them:
    the PIDF-LO with Geolocation (RFC 6442 section 3), and the RFC 7852 Additional
    Data blocks with Call-Info (routing/additional_data.py).

    Returns:
        (what packs a given SDP and those parts into one multipart/mixed body, for
        Route.wrap_sdp, or None when there is nothing to add; the headers).
    """
    token = os.urandom(6).hex()
    parts: list[BodyPart] = []
    location_ids: list[str] = []
    facts = decision.facts
    if decision.location is not None:
        content_id = f"loc-{token}@voipgw"
        parts.append(
            BodyPart(
                content_type=PIDF_CONTENT_TYPE,
                body=_pidf(request, decision, config, token),
                content_id=content_id,
            )
        )
        location_ids.append(content_id)
    device = facts.device_location
    if device is not None:
        # The device's PIDF-LO as it sent it (checked, RFC 6442 3.2: more than one
        # location may go), under a Content-ID of the gateway's own: the device's
        # could clash with ours or be unsafe to copy into a header.
        device_id = f"dev-{token}@voipgw"
        device_part = BodyPart(
            content_type=PIDF_CONTENT_TYPE, body=device.pidf, content_id=device_id
        )
        if facts.location_precedence is LocationPrecedence.DEVICE_FIRST:
            parts.insert(0, device_part)
            location_ids.insert(0, device_id)
        else:
            parts.append(device_part)
            location_ids.append(device_id)
    # RFC 6442 4.2: the device's own permission travels with its location (one
    # value per request); the gateway's location alone may be routed on.
    stated = facts.geolocation_routing
    allowed = device is None or routing_allowed(stated)
    routing = GeolocationRouting.YES if allowed else GeolocationRouting.NO
    headers: list[tuple[str, str]] = (
        list(geolocation_headers(*location_ids, routing=routing)) if location_ids else []
    )
    subscriber = directory.subscribers_by_e164.get(facts.subscriber) if facts.subscriber else None
    blocks = additional_data(
        facts,
        provider=config.provider,
        config=config.additional_data,
        subscriber=subscriber,
        customer=directory.customers.get(facts.customer_id),
        token=token,
    )
    for block in blocks:
        parts.append(
            BodyPart(
                content_type=block.content_type,
                body=block.document,
                content_id=block.content_id,
                disposition=BY_REFERENCE,
            )
        )
        headers.append(block.call_info)
    if not parts:
        return None, ()
    a_body = request.body
    a_type = request.headers.get("Content-Type") or ""

    def wrap_sdp(sdp: bytes) -> tuple[str, bytes]:
        if sdp == a_body:
            # The caller's own body: a device sending its location sends SDP and
            # PIDF-LO in one multipart; only its SDP is the offer to pass on.
            sdp = sdp_part(a_type, sdp) or sdp
        offer = BodyPart(content_type="application/sdp", body=sdp)
        return build_mixed((offer, *parts), f"voipgw-{token}")

    return wrap_sdp, tuple(headers)


def _pidf(request: Request, decision: RoutingDecision, config: RoutingConfig, token: str) -> bytes:
    """The PIDF-LO of the decided location (routing/pidf.py)."""
    assert decision.location is not None
    caller = parse_name_address(request.headers.get("From") or "").uri
    entity = "pres:" + caller.split(":", 1)[1] if ":" in caller else "pres:unknown@voipgw"
    return build_pidf(
        decision.location,
        entity=entity.split(";", 1)[0],
        tuple_id=f"t{token}",
        timestamp=dt.datetime.now(dt.UTC),
        provider=config.provider,  # RFC 7852 provider-info: who supplied the location
    )


def _test_call_answer(request: Request, decision: RoutingDecision) -> RouteResult:
    """The emergency test call (RFC 6881 SP-44, ``urn:service:test.sos``) answered by
    the gateway: 200 OK whose body carries the decision's report of what a real
    emergency call from here would carry, beside an SDP answer that declines the
    media (RFC 3264 6: port 0), and BYE a few seconds later."""
    facts = replace(decision.facts, routed_by=RoutedBy.LOCAL)
    try:
        offer = parse_sdp(request.body)
    except SipError:
        return Reject(status=488, facts=facts)
    declined = replace(offer, media=tuple(replace(m, port=0) for m in offer.media))
    boundary = f"voipgw-test-{os.urandom(6).hex()}"
    body = (
        f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n".encode()
        + declined.serialize()
        + f"\r\n--{boundary}\r\nContent-Type: text/plain;charset=utf-8\r\n\r\n".encode()
        + decision.test_report.encode()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return LocalAnswer(body=body, content_type=f"multipart/mixed;boundary={boundary}", facts=facts)


#: Headers of the registrar's answer that the caller gets: the challenges, and the
#: Retry-After of a 503 while the credentials database is unavailable.
_AUTH_RESPONSE_HEADERS = frozenset({"Proxy-Authenticate", "WWW-Authenticate", "Retry-After"})


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


def _called_number(request_uri: str) -> str | None:
    user = telephone_user(request_uri)
    return (_digits(user) or None) if user is not None else None


def _from_uri(request: Request) -> str | None:
    try:
        return parse_name_address(request.headers.get("From") or "").uri
    except SipError:
        return None


def _contact_uri(request: Request) -> str | None:
    try:
        contacts = parse_contacts(request.headers.get("Contact") or "")
    except SipError:
        return None
    return contacts[0].uri if isinstance(contacts, list) and contacts else None
