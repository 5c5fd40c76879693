"""The routing decision: where a call goes, with what, and why.

Emergency calls (the delivery terms' IMPORTANT NOTICE):

- OFFICE: routed to the centre serving the site's registered address, then its
  secondary, then the national default (:func:`routing.psap.lookup_psap`), with the
  address as a verified PIDF-LO, ``Resource-Priority: esnet.1`` (RFC 7135) and the
  caller's number as callback identity.
- NOMADIC (softphone or app away from the office, VPN, misplaced desk phone, unknown
  caller): NOT routed to the nearest centre. By ``nomadic_policy``:
  ``announce-then-route`` (default) plays the warning ("please use a mobile phone")
  and then routes to the national default centre with the location marked not
  verified; ``announce-and-end`` plays the warning and ends the call; ``route``
  routes to the national default without the warning.
- * Emergency calls are connected whatever the state of the customer or subscriber
  (closed, suspended, barred, fraud-locked): access to emergency services does not
  depend on the contract (EU Electronic Communications Code article 109); the state
  is written into the reason so the operator sees it.
- * The callback number is shown to the centre even when the subscriber restricts
  presentation: the centre must be able to call back.
- * An unknown caller in a site's office network is an office call of that site (its
  centre, its civic address), without a callback identity; the call's customer is
  the site's (who is told, whose security desk should know).
- * A call from a subscriber's declared location (home office) is office use of the
  declared address; the PIDF-LO and the facts say the address is declared.
- * The device's own location (RFC 6442, by value) is forwarded beside the
  network-derived one, in the customer's precedence (``[routing.location]``); it never
  changes the route or the class: a claim decides nothing. Without the device's
  ``Geolocation-Routing: yes`` it goes second whatever the precedence (RFC 6442 4.2);
  a device location that could not be used is answered with a Geolocation-Error
  (RFC 6442 4.3, routing/geolocation.py) while the call goes on.

Test calls (``urn:service:test.sos``, test numbers) go to ``test_route`` with the same
location the real call would carry, so a test shows what the centre would see; without
a test route the gateway answers them itself with a report of what a real call would
carry (RFC 6881 SP-44).

Ordinary calls go to the default next hop; unknown callers and callers whose customer
or subscriber is not active are rejected with 403; at capacity they are shed with 503.
Calls from a trusted peer (the PBX, a trunk) go to the callee's registration.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from routing import callerid
from routing.classify import classify_call
from routing.config import NomadicPolicy, OutboundCallerId, RoutingConfig
from routing.decision import (
    Action,
    Admission,
    CallerId,
    CallFacts,
    Direction,
    Identity,
    LocationPrecedence,
    LocationSource,
    RoutedBy,
    RoutingDecision,
    Shed,
    Target,
    UnverifiedLocation,
)
from routing.directory import Directory
from routing.geolocation import geolocation_error_for, routing_allowed
from routing.model import (
    Basis,
    CallClass,
    CallContext,
    CentreUriStyle,
    Classification,
    CustomerState,
    EmergencyKind,
    EmergencyMatch,
    Language,
    Location,
    Presentation,
    Subscriber,
    SubscriberState,
)
from routing.psap import lookup_psap

NOMADIC_WARNING = "nomadic-emergency-warning"
"""Prompt played before a nomadic emergency call is routed or ended."""

_UNSAFE_RE = re.compile(r"[^ -~]")

#: Longest X-Voipgw-Reason value sent; the full reason stays in the decision and logs.
MAX_REASON_HEADER = 300
#: Longest reason kept in a call's facts (CDR, logs).
MAX_FACTS_REASON = 300

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    """How busy the gateway is when a call arrives (overload control's input).

    Attributes:
        active_calls: calls the B2BUA holds when the call arrived, this one and the
            calls still being routed included, so that calls routed at the same
            time cannot all pass the limit on one count.
        max_calls: above this, new ordinary calls are refused (emergency calls never).
        retry_after: seconds for the refusal's Retry-After (RFC 3261 21.5.4).
        emergency_reserve: calls above ``max_calls`` kept for emergency calls.
    """

    active_calls: int
    max_calls: int
    retry_after: int
    emergency_reserve: int = 0


def admission(load: Load, *, emergency: bool) -> Admission:
    """What the call limit makes of a new call (a table test pins the arithmetic).

    Ordinary calls are admitted while ``active_calls <= max_calls``: every admitted
    call is still counted when a later one arrives, so at no moment are more than
    ``max_calls`` ordinary calls admitted. Emergency calls draw on the headroom above
    it, ``emergency_reserve``; beyond that they are admitted all the same (the
    product rule: an emergency call is never refused for load), and the result says
    so for the log and the metric.

    Args:
        load: the count the call arrived to, and the bounds.
        emergency: a real emergency call (not a test call).

    Returns:
        The admission.
    """
    if load.active_calls <= load.max_calls:
        return Admission.WITHIN_CAPACITY
    if not emergency:
        return Admission.SHED
    if load.active_calls <= load.max_calls + load.emergency_reserve:
        return Admission.EMERGENCY_RESERVE
    return Admission.BEYOND_RESERVE


def decide(
    ctx: CallContext,
    directory: Directory,
    config: RoutingConfig,
    *,
    trusted_peers: Sequence[Network] = (),
    international_peers: Sequence[Network] = (),
    load: Load | None = None,
) -> RoutingDecision:
    """Decides a call: the one entry point of routing (a pure function).

    In order: a call from a trusted peer (the PBX, a trunk) that is not an emergency
    call goes to the callee's registration; an emergency test call without a test
    route is answered by the gateway; every other call is classified and decided by
    the policy (emergency, test or ordinary); last, an ordinary call is shed with 503
    when the gateway is at capacity (emergency calls never are).

    Args:
        ctx: what the gateway knows of the call, with its emergency match.
        directory: the routing data.
        config: routing settings.
        trusted_peers: the PBX's and trunks' networks ([upstream] trusted_peers).
        international_peers: those of them marked international (caller-ID policy).
        load: the gateway's load, or None to never shed.

    Returns:
        The decision, with the call's facts.
    """
    if is_inbound(ctx, trusted_peers):
        # Calls from the PBX count against max_calls like any ordinary call: they
        # once skipped the limit, and a PBX's load took the gateway past it.
        international = any(ctx.source in net for net in international_peers)
        decision = _route_inbound(ctx, directory, config, international=international)
    else:
        classification = classify_call(ctx, directory)
        decision = route_call(ctx, classification, directory, config)
    if load is None:
        return decision
    admitted = admission(load, emergency=decision.facts.is_emergency)
    facts = replace(decision.facts, admission=admitted)
    if admitted is Admission.SHED:
        # RFC 3261 21.5.4 / RFC 7339: shed ordinary calls with a short Retry-After.
        return RoutingDecision(
            action=Action.REJECT,
            facts=replace(facts, shed=Shed.CAPACITY),
            reject_status=503,
            retry_after=load.retry_after,
            language=decision.language,
        )
    return replace(decision, facts=facts)


def is_inbound(ctx: CallContext, trusted_peers: Sequence[Network]) -> bool:
    """Whether a call comes in from a trusted peer (the PBX, a trunk) for a device
    behind the gateway: any call from there but an emergency or test dial string,
    which routes as such wherever it comes from. A call through an edge proxy is a
    device's call whatever address the proxy vouches for: trust is given to the
    sender of the packet, never to an address a proxy read from a Via."""
    return (
        ctx.emergency is None
        and ctx.edge_proxy is None
        and any(ctx.source in net for net in trusted_peers)
    )


def needs_authentication(ctx: CallContext, trusted_peers: Sequence[Network]) -> bool:
    """Whether a call must prove who places it (digest, when the registrar asks for
    it): every call from a device but an emergency call, which is never challenged
    (RFC 6881 SP-39); inbound calls come from trusted peers."""
    if ctx.emergency is not None and ctx.emergency.kind is EmergencyKind.EMERGENCY:
        return False
    return not is_inbound(ctx, trusted_peers)


def route_call(
    ctx: CallContext,
    classification: Classification,
    directory: Directory,
    config: RoutingConfig,
) -> RoutingDecision:
    """Decides the B leg of a call from a device: emergency, emergency test or ordinary.

    Args:
        ctx: the call (``ctx.emergency``: its dial string recognised).
        classification: the answer of :func:`routing.classify.classify_call`.
        directory: the routing data.
        config: routing settings.

    Returns:
        The decision.
    """
    match = ctx.emergency
    if match is not None and match.kind is EmergencyKind.EMERGENCY:
        return route_emergency(ctx, classification, directory, config, match=match)
    if match is not None:
        return _route_test(ctx, classification, directory, config, match)
    sub = ctx.subscriber
    if sub is None:
        return _reject(ctx, classification, 403, "unknown caller may not place ordinary calls")
    customer = directory.customers.get(sub.customer_id)
    if customer is None:
        return _reject(ctx, classification, 403, f"customer {sub.customer_id} is not provisioned")
    if customer.state is not CustomerState.ACTIVE:
        why = f"customer {customer.id} is {customer.state.value}"
        return _reject(ctx, classification, 403, why)
    if sub.state is not SubscriberState.ACTIVE:
        why = f"subscriber {sub.sip_user} is {sub.state.value}"
        return _reject(ctx, classification, 403, why)
    # Traficom regulation 28: the asserted number is one the customer holds.
    outcome = callerid.outbound(ctx.presented, sub, directory, config.caller_id)
    if outcome.decision is CallerId.REJECTED:
        why = f"caller ID {outcome.presented} is not a number customer {customer.id} holds"
        rejected = _reject(ctx, classification, outcome.reject_status or 403, why)
        return replace(rejected, facts=outcome.apply(rejected.facts))
    reason = f"ordinary call; {classification.reason}"
    restricted = sub.presentation is Presentation.RESTRICTED
    # RFC 3323 section 4.2 / RFC 3325 section 9.3: ask the next hop to withhold the
    # asserted identity from the called party (the identity states it again).
    privacy: tuple[tuple[str, str], ...] = (("Privacy", "id"),) if restricted else ()
    return RoutingDecision(
        action=Action.ROUTE,
        # One CallFacts built whole: each dataclasses.replace of its 32 fields cost an
        # ordinary call ~10 us (issue 17).
        facts=_facts(ctx, classification, reason, privacy=restricted, caller_id=outcome),
        targets=(Target(request_uri=ctx.dialled, next_hop=config.default_next_hop),),
        language=customer.language,
        headers=_headers(classification, reason) + privacy + outcome.headers,
        identity=outcome.identity,
        max_duration=config.max_call_duration_for(customer.id),
    )


def route_emergency(
    ctx: CallContext,
    classification: Classification,
    directory: Directory,
    config: RoutingConfig,
    *,
    match: EmergencyMatch | None = None,
) -> RoutingDecision:
    """Decides the route of an emergency call (see the module docstring).

    Args:
        ctx: the call.
        classification: office or nomadic, with the site for office calls.
        directory: the routing data (emergency centres in ``directory.psap``).
        config: routing settings (nomadic policy, Resource-Priority, webhook).
        match: the recognised dial string; ``ctx.emergency`` when None (and
            ``urn:service:sos`` if the call has none, because the caller asked for
            an emergency route).

    Returns:
        The decision.
    """
    if match is None:
        match = ctx.emergency or EmergencyMatch(
            kind=EmergencyKind.EMERGENCY, service_urn="urn:service:sos", form="forced"
        )
    language = _language(ctx, directory)
    callback = f"tel:{ctx.subscriber.e164}" if ctx.subscriber is not None else None
    notes = _state_notes(ctx, directory)
    # The callback number, whatever the device presented (recorded, never refused).
    caller_id = callerid.emergency(ctx.presented, ctx.subscriber)
    if callback is None:
        notes += "; no callback identity (unknown caller)"
    network = network_location(classification)
    if network is not None:
        location, source = network
        route = lookup_psap(location.address, directory.psap)
        reason = f"emergency {_what(match)} from office; {classification.reason}; {route.reason}"
        action = Action.ROUTE
        announcement = None
        policy = "office"
    else:
        route = lookup_psap(None, directory.psap)
        location = Location(
            address=None,
            verified=False,
            note="Nomadic call: the caller is not at a registered office address.",
        )
        source = LocationSource.NONE
        nomadic = config.nomadic_policy
        reason = (
            f"emergency {_what(match)} in nomadic use, policy {nomadic.value};"
            f" {classification.reason}; {route.reason}"
        )
        if nomadic is NomadicPolicy.ANNOUNCE_AND_END:
            return RoutingDecision(
                action=Action.ANNOUNCE_AND_END,
                facts=caller_id.apply(
                    _location_facts(
                        _facts(
                            ctx,
                            classification,
                            reason + notes,
                            emergency=match,
                            emergency_policy=Action.ANNOUNCE_AND_END.value,
                            callback=callback,
                        ),
                        ctx,
                        classification,
                        config,
                        source,
                    )
                ),
                announcement=NOMADIC_WARNING,
                language=language,
                notify_url=config.notification_webhook,
                headers=_headers(classification, reason + notes),
            )
        action = Action.ROUTE if nomadic is NomadicPolicy.ROUTE else Action.ANNOUNCE_THEN_ROUTE
        announcement = None if nomadic is NomadicPolicy.ROUTE else NOMADIC_WARNING
        policy = action.value
    targets = tuple(
        Target(
            request_uri=match.service_urn if c.uri_style is CentreUriStyle.URN else c.sip_uri,
            next_hop=c.sip_uri,
            centre_id=c.id,
        )
        for c in route.targets
    )
    if not targets:
        # No centre configured at all: hand the call to the carrier with the service
        # URN rather than drop it; the carrier network routes 112 itself.
        targets = (Target(request_uri=match.service_urn, next_hop=config.default_next_hop),)
        reason += "; handed to the default next hop"
    reason += notes
    return RoutingDecision(
        action=action,
        facts=caller_id.apply(
            _location_facts(
                _facts(
                    ctx,
                    classification,
                    reason,
                    emergency=match,
                    emergency_policy=policy,
                    callback=callback,
                    location=location,
                ),
                ctx,
                classification,
                config,
                source,
            )
        ),
        targets=targets,
        announcement=announcement,
        language=language,
        resource_priority=config.resource_priority or None,
        notify_url=config.notification_webhook,
        headers=_headers(classification, reason),
        # RFC 6881 SP-25 / RFC 3325: the centre gets the callback identity even when
        # the caller restricted presentation (routing/callerid.py); an unknown caller
        # has nothing to assert, and nothing it sent is passed on as asserted.
        identity=caller_id.identity or Identity(),
    )


def _route_test(
    ctx: CallContext,
    classification: Classification,
    directory: Directory,
    config: RoutingConfig,
    match: EmergencyMatch,
) -> RoutingDecision:
    network = network_location(classification)
    if network is not None:
        location = replace(network[0], note=f"Test call. {network[0].note}")
    else:
        location = Location(address=None, verified=False, note="Test call in nomadic use.")
    reason = f"emergency test {_what(match)}; {classification.reason}"
    if config.test_route is None:
        # RFC 6881 SP-44: without a test service to route to, the gateway answers.
        return RoutingDecision(
            action=Action.ANSWER_TEST,
            facts=_facts(ctx, classification, reason, emergency=match, location=location),
            language=_language(ctx, directory),
            test_report=test_call_report(ctx, classification, directory),
        )
    facts = _facts(ctx, classification, reason, emergency=match, location=location)
    identity = None
    headers = _headers(classification, reason)
    if ctx.subscriber is not None:
        # A test shows what a real call would carry: never refused for its number.
        policy = replace(config.caller_id, outbound=OutboundCallerId.REPLACE)
        outcome = callerid.outbound(ctx.presented, ctx.subscriber, directory, policy)
        facts, identity, headers = outcome.apply(facts), outcome.identity, headers + outcome.headers
    return RoutingDecision(
        action=Action.ROUTE,
        facts=facts,
        targets=(Target(request_uri=config.test_route, next_hop=config.test_route),),
        language=_language(ctx, directory),
        headers=headers,
        identity=identity,
    )


def network_location(classification: Classification) -> tuple[Location, LocationSource] | None:
    """The location the network vouches for: an office call's site address, or the
    caller's declared address (marked declared); None for a nomadic call.

    Args:
        classification: the call's classification.

    Returns:
        (the location, its source), or None.
    """
    if classification.call_class is not CallClass.OFFICE:
        return None
    site = classification.site
    if site is not None:
        note = f"Registered address of site {site.name}"
        if classification.basis is Basis.UNKNOWN_CALLER:
            note += " (unknown caller on the site's network: no callback identity)"
        return Location(address=site.address, verified=True, note=note), LocationSource.SITE_ADDRESS
    declared = classification.declared
    if declared is not None:
        # "Manual": typed in, as a site address is; the note says who declared it.
        note = (
            f"Declared address {declared.name!r} (remote work) of subscriber"
            f" {declared.sip_user}: declared by the subscriber, not a registered site"
        )
        return (
            Location(address=declared.address, verified=True, note=note),
            LocationSource.DECLARED_ADDRESS,
        )
    return None


#: Classification basis of a nomadic call -> why its location is not verified.
_UNVERIFIED_BY_BASIS = {
    Basis.VPN_POOL: UnverifiedLocation.VPN_POOL,
    Basis.OTHER_CUSTOMER: UnverifiedLocation.OTHER_CUSTOMER,
    Basis.UNKNOWN_CALLER: UnverifiedLocation.UNKNOWN_CALLER,
}


def _location_facts(
    facts: CallFacts,
    ctx: CallContext,
    classification: Classification,
    config: RoutingConfig,
    source: LocationSource,
) -> CallFacts:
    """An emergency call's location facts: the network's source, why it is not
    verified, the device's own location and which goes first."""
    customer = facts.customer_id
    if ctx.subscriber is None and classification.site is not None:
        # An unknown caller on a site's network: the site's customer is the one to
        # tell (notification) and to find the call under (CDR).
        customer = classification.site.customer_id
    office = source is not LocationSource.NONE
    unverified = None
    if not office:
        unverified = _UNVERIFIED_BY_BASIS.get(classification.basis, UnverifiedLocation.OUTSIDE)
    reading = ctx.device_location
    device = reading.location if reading is not None else None
    problem = reading.problem if reading is not None else None
    precedence = None
    if device is not None:
        precedence = config.location.precedence(customer, office=office)
        if not routing_allowed(ctx.geolocation_routing):
            # RFC 6442 4.2: without the device's "yes" its location must not drive
            # routing; the first location is the one a downstream router reads, so
            # the network's goes first whatever the customer's precedence.
            precedence = LocationPrecedence.NETWORK_FIRST
    if source is LocationSource.NONE and device is not None:
        # Still not verified (the reason stays), but the centre is not without one.
        source = LocationSource.DEVICE
    return replace(
        facts,
        customer_id=customer,
        location_source=source,
        unverified_location=unverified,
        device_location=device,
        device_location_ignored=problem,
        location_precedence=precedence,
        geolocation_routing=ctx.geolocation_routing if reading is not None else None,
        geolocation_error=geolocation_error_for(problem),
    )


def _route_inbound(
    ctx: CallContext, directory: Directory, config: RoutingConfig, *, international: bool
) -> RoutingDecision:
    """A call from the PBX or a trunk (a trusted peer) to a device behind the gateway:
    routed to the callee's registration, never classified as a caller's call (the
    caller is outside). The callee is the subscriber here: the call is billed to, and
    the CDR names, her customer and number (itemization; the privacy policy's right
    of access). From an international peer, a Finnish number is blocked or removed
    (Traficom regulation 28, :func:`routing.callerid.inbound`)."""
    callee = called_subscriber(ctx.dialled_user, directory)
    known = "a subscriber" if callee is not None else "not a subscriber"
    peer = "an international" if international else "a trusted"
    outcome = callerid.inbound(
        ctx.presented, directory, config.caller_id, international=international
    )
    facts = outcome.apply(
        CallFacts(
            reason=f"inbound call from {peer} peer to {known}",
            direction=Direction.INBOUND,
            routed_by=RoutedBy.INBOUND_UNREACHABLE,
            customer_id=callee.customer_id if callee is not None else "",
            callee=callee.e164 if callee is not None else None,
        )
    )
    if outcome.decision is CallerId.REJECTED:
        return RoutingDecision(
            action=Action.REJECT,
            facts=replace(
                facts, reason=f"{facts.reason}; Finnish caller ID from an international peer"
            ),
            reject_status=outcome.reject_status,
        )
    return RoutingDecision(
        action=Action.ROUTE_INBOUND,
        facts=facts,
        reject_status=404,
        identity=outcome.identity,
        headers=outcome.headers,
    )


def called_subscriber(user: str | None, directory: Directory) -> Subscriber | None:
    """The subscriber a Request-URI's user names: by SIP user (the AoR a phone
    registers) or by number (a SIP user part or tel URI in E.164, RFC 3966)."""
    if user is None:
        return None
    return directory.subscribers.get(user) or directory.subscribers_by_e164.get(user)


def test_call_report(ctx: CallContext, classification: Classification, directory: Directory) -> str:
    """What a real emergency call from here would carry (class, site, address,
    callback, centres), as the text of the emergency test call's answer (RFC 6881
    SP-44)."""
    site = classification.site
    network = network_location(classification)
    address = network[0].address if network is not None else None
    centres = lookup_psap(address, directory.psap)
    callback = "tel:" + ctx.subscriber.e164 if ctx.subscriber else "none (unknown caller)"
    lines = [
        "voipgw emergency test call",
        f"class: {classification.call_class.value}",
        f"site: {site.id if site is not None and address is not None else 'none (nomadic)'}",
        f"reason: {classification.reason}",
        f"callback: {callback}",
        f"centres: {' > '.join(c.id for c in centres.targets) or 'none'}",
    ]
    if address is not None:
        given = {f.name: getattr(address, f.name) for f in fields(address)}
        lines.append("address: " + "; ".join(f"{k}={v}" for k, v in given.items() if v))
    else:
        lines.append("address: not sent (location not verified)")
    return "\r\n".join(lines) + "\r\n"


def _facts(
    ctx: CallContext,
    classification: Classification,
    reason: str,
    *,
    emergency: EmergencyMatch | None = None,
    emergency_policy: str | None = None,
    callback: str | None = None,
    location: Location | None = None,
    privacy: bool = False,
    caller_id: callerid.CallerIdOutcome | None = None,
) -> CallFacts:
    """The facts of a call from a device (bounded values: no free text but the reason),
    with the caller-ID policy's outcome as :meth:`callerid.CallerIdOutcome.apply`
    records it when ``caller_id`` is given."""
    sub = ctx.subscriber
    site = classification.site
    return CallFacts(
        call_class=classification.call_class,
        reason=reason[:MAX_FACTS_REASON],
        device_kind=classification.device_kind,
        site_id=site.id if site is not None else None,
        customer_id=sub.customer_id if sub is not None else "",
        subscriber=sub.e164 if sub is not None else None,
        emergency=emergency,
        emergency_policy=emergency_policy,
        callback=callback,
        location=location,
        location_source=(
            LocationSource.SITE_ADDRESS
            if location is not None and location.address is not None
            else LocationSource.NONE
        ),
        device_source=ctx.source if ctx.edge_proxy is not None else None,
        privacy=privacy,
        presented_number=caller_id.presented if caller_id is not None else None,
        asserted_number=caller_id.asserted if caller_id is not None else None,
        caller_id=caller_id.decision if caller_id is not None else None,
        caller_id_reason=caller_id.reason if caller_id is not None else None,
    )


def _reject(
    ctx: CallContext, classification: Classification, status: int, why: str
) -> RoutingDecision:
    reason = f"{why}; {classification.reason}"
    return RoutingDecision(
        action=Action.REJECT,
        facts=_facts(ctx, classification, reason),
        reject_status=status,
        headers=_headers(classification, reason),
    )


def _what(match: EmergencyMatch) -> str:
    return match.number if match.number is not None else match.service_urn


def _language(ctx: CallContext, directory: Directory) -> Language:
    if ctx.subscriber is not None:
        customer = directory.customers.get(ctx.subscriber.customer_id)
        if customer is not None:
            return customer.language
    return Language.FI


def _state_notes(ctx: CallContext, directory: Directory) -> str:
    sub = ctx.subscriber
    if sub is None:
        return ""
    notes = ""
    customer = directory.customers.get(sub.customer_id)
    if customer is not None and customer.state is not CustomerState.ACTIVE:
        notes += f"; connected although customer is {customer.state.value}"
    if sub.state is not SubscriberState.ACTIVE:
        notes += f"; connected although subscriber is {sub.state.value}"
    return notes


def _headers(classification: Classification, reason: str) -> tuple[tuple[str, str], ...]:
    value = classification.call_class.value
    if classification.misplaced:
        value += ";misplaced"
    return (("X-Voipgw-Class", value), ("X-Voipgw-Reason", header_safe(reason)))


def header_safe(text: str, limit: int = MAX_REASON_HEADER) -> str:
    """Makes text safe as a SIP header value: printable ASCII only, bounded length.

    RFC 3261 section 25.1: a header value is TEXT-UTF8 without CR/LF; anything from
    a User-Agent or dial string copied into a reason must not be able to start a new
    header.

    Args:
        text: the reason.
        limit: maximum length.

    Returns:
        The sanitised value.
    """
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return _UNSAFE_RE.sub("?", text)
