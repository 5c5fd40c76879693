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

Test calls (``urn:service:test.sos``, test numbers) go to ``test_route`` with the same
location the real call would carry, so a test shows what the centre would see; without
a test route they are rejected with 404.

Ordinary calls go to the default next hop; unknown callers and callers whose customer
or subscriber is not active are rejected with 403.
"""

from __future__ import annotations

import re

from routing.classify import classify_call
from routing.config import NomadicPolicy, RoutingConfig
from routing.directory import Directory
from routing.emergency import recognise_emergency
from routing.model import (
    Action,
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
    RoutingDecision,
    SubscriberState,
    Target,
)
from routing.psap import lookup_psap

NOMADIC_WARNING = "nomadic-emergency-warning"
"""Prompt played before a nomadic emergency call is routed or ended."""

_UNSAFE_RE = re.compile(r"[^ -~]")

#: Longest X-Voipgw-Reason value sent; the full reason stays in the decision and logs.
MAX_REASON_HEADER = 300


def decide(ctx: CallContext, directory: Directory, config: RoutingConfig) -> RoutingDecision:
    """Classifies a call and decides its route (the one entry point the B2BUA needs).

    Args:
        ctx: what the gateway knows of the call.
        directory: the routing data.
        config: routing settings.

    Returns:
        The decision.
    """
    return route_call(ctx, classify_call(ctx, directory), directory, config)


def route_call(
    ctx: CallContext,
    classification: Classification,
    directory: Directory,
    config: RoutingConfig,
) -> RoutingDecision:
    """Decides the B leg of any call: emergency, emergency test or ordinary.

    Args:
        ctx: the call.
        classification: the answer of :func:`routing.classify.classify_call`.
        directory: the routing data.
        config: routing settings.

    Returns:
        The decision.
    """
    match = recognise_emergency(ctx.dialled, config.emergency)
    if match is not None and match.kind is EmergencyKind.EMERGENCY:
        return route_emergency(ctx, classification, directory, config, match=match)
    if match is not None:
        return _route_test(ctx, classification, directory, config, match)
    sub = ctx.subscriber
    if sub is None:
        return _reject(classification, 403, "unknown caller may not place ordinary calls")
    customer = directory.customers.get(sub.customer_id)
    if customer is None:
        return _reject(classification, 403, f"customer {sub.customer_id} is not provisioned")
    if customer.state is not CustomerState.ACTIVE:
        return _reject(classification, 403, f"customer {customer.id} is {customer.state.value}")
    if sub.state is not SubscriberState.ACTIVE:
        return _reject(classification, 403, f"subscriber {sub.sip_user} is {sub.state.value}")
    reason = f"ordinary call; {classification.reason}"
    extra: tuple[tuple[str, str], ...] = ()
    if sub.presentation is Presentation.RESTRICTED:
        # RFC 3323 section 4.2 / RFC 3325 section 9.3: ask the next hop to withhold
        # the asserted identity from the called party.
        extra = (("Privacy", "id"),)
    return RoutingDecision(
        action=Action.ROUTE,
        call_class=classification.call_class,
        reason=reason,
        targets=(Target(request_uri=ctx.dialled, next_hop=config.default_next_hop),),
        language=customer.language,
        headers=_headers(classification, reason) + extra,
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
        match: the recognised dial string; recognised from ``ctx.dialled`` when None
            (and treated as ``urn:service:sos`` if the string is not recognised,
            because the caller asked for an emergency route).

    Returns:
        The decision.
    """
    if match is None:
        match = recognise_emergency(ctx.dialled, config.emergency) or EmergencyMatch(
            kind=EmergencyKind.EMERGENCY, service_urn="urn:service:sos", form="forced"
        )
    language = _language(ctx, directory)
    callback = f"tel:{ctx.subscriber.e164}" if ctx.subscriber is not None else None
    notes = _state_notes(ctx, directory)
    if callback is None:
        notes += "; no callback identity (unknown caller)"
    site = classification.site
    if classification.call_class is CallClass.OFFICE and site is not None:
        route = lookup_psap(site.address, directory.psap)
        location = Location(
            address=site.address,
            verified=True,
            note=f"Registered address of site {site.name}",
        )
        reason = f"emergency {_what(match)} from office; {classification.reason}; {route.reason}"
        action = Action.ROUTE
        announcement = None
    else:
        route = lookup_psap(None, directory.psap)
        location = Location(
            address=None,
            verified=False,
            note="Nomadic call: the caller is not at a registered office address.",
        )
        policy = config.nomadic_policy
        reason = (
            f"emergency {_what(match)} in nomadic use, policy {policy.value};"
            f" {classification.reason}; {route.reason}"
        )
        if policy is NomadicPolicy.ANNOUNCE_AND_END:
            return RoutingDecision(
                action=Action.ANNOUNCE_AND_END,
                call_class=classification.call_class,
                reason=reason + notes,
                emergency=match,
                announcement=NOMADIC_WARNING,
                language=language,
                callback=callback,
                notify_url=config.notification_webhook,
                headers=_headers(classification, reason + notes),
            )
        action = Action.ROUTE if policy is NomadicPolicy.ROUTE else Action.ANNOUNCE_THEN_ROUTE
        announcement = None if policy is NomadicPolicy.ROUTE else NOMADIC_WARNING
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
        call_class=classification.call_class,
        reason=reason,
        targets=targets,
        emergency=match,
        announcement=announcement,
        language=language,
        location=location,
        resource_priority=config.resource_priority or None,
        callback=callback,
        notify_url=config.notification_webhook,
        headers=_headers(classification, reason),
    )


def _route_test(
    ctx: CallContext,
    classification: Classification,
    directory: Directory,
    config: RoutingConfig,
    match: EmergencyMatch,
) -> RoutingDecision:
    site = classification.site
    if classification.call_class is CallClass.OFFICE and site is not None:
        location = Location(
            address=site.address, verified=True, note=f"Test call, site {site.name}"
        )
    else:
        location = Location(address=None, verified=False, note="Test call in nomadic use.")
    if config.test_route is None:
        return _reject(classification, 404, f"emergency test {_what(match)}: no test route")
    reason = f"emergency test {_what(match)}; {classification.reason}"
    return RoutingDecision(
        action=Action.ROUTE,
        call_class=classification.call_class,
        reason=reason,
        targets=(Target(request_uri=config.test_route, next_hop=config.test_route),),
        emergency=match,
        language=_language(ctx, directory),
        location=location,
        headers=_headers(classification, reason),
    )


def _reject(classification: Classification, status: int, why: str) -> RoutingDecision:
    reason = f"{why}; {classification.reason}"
    return RoutingDecision(
        action=Action.REJECT,
        call_class=classification.call_class,
        reason=reason,
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
