"""From bindings to a B-leg route: send calls for a registered user to its contacts.

A binding remembers the transport address its REGISTER came from, and that is where a
call goes (the "received" view, RFC 3261 18.2.2 / RFC 3581): a phone behind NAT
registers a private Contact, but only the NAT's public mapping reaches it. The contact
URI becomes the B-leg Request-URI, so the phone sees the URI it registered (RFC 3261
10.3 and 16.5: a proxy retargets to the registered contact).

Several instances: who holds the flow
-------------------------------------

That received address is only good from the instance that took the REGISTER: the
phone's NAT (or firewall) lets in traffic from the address the phone sent to, and a
TCP/TLS flow is a connection only that instance has. So each binding records its
``flow_owner`` (the instance's ``[cluster] sip_uri``), and :func:`choose_flow` decides:

* the best binding's flow is held here (or has no owner: rows from before owners
  were recorded) -> deliver to its received address;
* it is held by another instance -> the call goes to that instance with the original
  Request-URI and a ``Route: <owner;lr>`` naming it (:func:`route_via_owner`), as a
  registrar routes through an edge proxy's Path (RFC 3327 5.3) or an RFC 5626 edge
  proxy's flow token: the owner, not this instance, knows the flow;
* the request carries a Route naming this instance (it came through a sibling that
  looked the binding up) -> only bindings whose flow is held here are candidates, and
  none is a 480: such a request is never routed on to a third instance, so two
  instances whose views of the table differ for a moment cannot loop a call.

Why not forward the INVITE "internally" (a private protocol between instances)? The
owner must run the call's B2BUA leg to the phone anyway (it is the only one that can
send to it), and SIP between instances reuses the transaction layer, retransmission,
CANCEL and in-dialog routing the gateway already has; sibling instances are trusted
peers by configuration (``[upstream] trusted_peers``), so the owner routes the call
as an inbound call without challenging it.

When the owner does not answer (Timer B, a transport error, 408/5xx, or nothing within
:data:`OWNER_RESPONSE_TIMEOUT`), the caller gets 480 Temporarily Unavailable with a
Retry-After (:func:`owner_unreachable`): RFC 3261 21.4.18 gives 480 to a proxy "that
recognizes the user identified by the Request-URI, but does not currently have a
valid forwarding location for that user", which is exactly the case: the device is
registered but its flow died with the instance. Not 503: the caller (a PBX) would
take this instance for overloaded and fail over to another instance (RFC 3263 4.3),
which cannot reach the phone either, and RFC 3261 16.7 forbids passing a 503 up.
The device is reached again once it re-registers, through whichever instance it
then reaches; the binding then names that instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from gateway.b2bua.events import Reject, Route
from gateway.edge.peers import uri_address
from gateway.registrar.bindings import Binding
from gateway.sip.errors import ParseError
from gateway.sip.events import Endpoint
from gateway.sip.headers import parse_contacts
from gateway.sip.uri import SipUri, parse_uri
from routing.decision import CallFacts, RoutedBy

#: Seconds the instance holding a callee's flow may take to send any response to a
#: call relayed to it (an instance on the same LAN answers 100 Trying in
#: milliseconds); after that the caller gets :func:`owner_unreachable`'s 480 rather
#: than waiting for Timer B (32 s).
OWNER_RESPONSE_TIMEOUT: Final = 2.0
#: Longest Retry-After promised when the flow owner is gone, in seconds.
MAX_RETRY_AFTER: Final = 300


def binding_target(binding: Binding) -> Endpoint:
    """Returns the next hop of a binding: the address its REGISTER came from.

    Args:
        binding: a current binding.

    Returns:
        The received transport, host and port.
    """
    return binding.received


def request_uri_for(binding: Binding) -> str:
    """Returns the B-leg Request-URI for a binding: its contact URI, headers removed.

    RFC 3261 19.1.1 (table): URI headers and the ``method`` parameter are not allowed
    in a Request-URI; registered contacts may carry them (RFC 4475 regescrt).

    Raises:
        ValueError: the contact is not a sip/sips URI, so it cannot be called.
    """
    try:
        uri = parse_uri(binding.contact)
    except ParseError as exc:
        raise ValueError(f"binding {binding.id} has an unusable contact: {exc}") from None
    if not isinstance(uri, SipUri):
        raise ValueError(f"binding {binding.id} contact is not a SIP URI: {binding.contact}")
    return str(replace(uri, headers=()).without_param("method"))


def route_to_binding(binding: Binding) -> Route:
    """Builds a :class:`~gateway.b2bua.events.Route` that calls one binding.

    Add headers, timeouts or facts with :func:`dataclasses.replace`.

    Args:
        binding: the binding to call.

    Returns:
        A route with the binding's received address as the only target, its contact
        as Request-URI, and the contact in its facts' ``registered_contact``.

    Raises:
        ValueError: the contact is not a SIP URI.
    """
    return Route(
        targets=(binding_target(binding),),
        request_uri=request_uri_for(binding),
        facts=CallFacts(routed_by=RoutedBy.REGISTERED_BINDING, registered_contact=binding.contact),
    )


def best_binding(bindings: Sequence[Binding]) -> Binding | None:
    """Picks the binding to call: highest q, then the most recently registered.

    RFC 3261 16.6 tries targets in q order (a Contact without q counts as 1.0); the
    B2BUA does not fork, so the best one is called. :meth:`BindingStore.lookup`
    already returns this order.

    Returns:
        The binding, or None when there is none.
    """
    if not bindings:
        return None
    return max(bindings, key=lambda b: (b.q if b.q is not None else 1.0, b.registered_at, b.id))


def same_instance(uri_a: str, uri_b: str) -> bool:
    """Whether two ``[cluster] sip_uri`` values name the same transport address
    (host, IP literals normalised, and port with the scheme's default)."""
    a, b = uri_address("a", uri_a), uri_address("b", uri_b)
    return a is not None and b is not None and (a.host, a.port) == (b.host, b.port)


def holds_flow(binding: Binding, local: str | None) -> bool:
    """Whether this instance (``local``, its ``[cluster] sip_uri``) holds the flow
    of ``binding``. A binding with no recorded owner counts as held here, and so does
    every binding of an instance without ``[cluster]`` (``local`` None: alone). So
    does one registered with a Path: the edge proxy holds that flow and every
    instance reaches it (:mod:`gateway.registrar.path`)."""
    return (
        local is None
        or bool(binding.path)
        or binding.flow_owner is None
        or same_instance(binding.flow_owner, local)
    )


def routed_to_owner(route_values: Iterable[str], local: str | None) -> bool:
    """Whether a request's Route header field values name this instance: a sibling
    instance relayed it here as the holder of the callee's flow.

    Args:
        route_values: every Route header field value of the request, in order.
        local: this instance's ``[cluster] sip_uri`` (None: alone, never relayed to).
    """
    if local is None:
        return False
    for value in route_values:
        try:
            entries = parse_contacts(value)
        except ParseError:
            continue
        if entries == "*":
            continue
        if any(same_instance(str(entry.uri), local) for entry in entries):
            return True
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowChoice:
    """Where a call for a registered AoR goes.

    Attributes:
        binding: the binding to call, or None when no binding may be called here (a
            request relayed as the flow owner for a flow this instance no longer
            holds).
        owner: the ``[cluster] sip_uri`` of the instance to relay through, or None to
            deliver over this instance's own flow.
    """

    binding: Binding | None
    owner: str | None = None


def choose_flow(
    bindings: Sequence[Binding], *, local: str | None, as_owner: bool
) -> FlowChoice | None:
    """Decides how to reach an AoR's device (see the module docstring).

    Args:
        bindings: the AoR's current bindings.
        local: this instance's ``[cluster] sip_uri``; None without ``[cluster]``.
        as_owner: the request was relayed here as the flow owner
            (:func:`routed_to_owner`): never relay it on.

    Returns:
        None when the AoR has no binding at all (not registered); otherwise the
        choice.
    """
    if not bindings:
        return None
    if as_owner:
        return FlowChoice(binding=best_binding([b for b in bindings if holds_flow(b, local)]))
    binding = best_binding(bindings)
    assert binding is not None
    if holds_flow(binding, local):
        return FlowChoice(binding=binding)
    return FlowChoice(binding=binding, owner=binding.flow_owner)


def retry_after_for(binding: Binding) -> int:
    """Seconds after which a device whose flow owner is gone should be reachable
    again: it must re-register before its binding expires (RFC 3261 10.2.1), and
    phones behind NAT re-register much sooner; capped at :data:`MAX_RETRY_AFTER`."""
    return max(1, min(binding.expires, MAX_RETRY_AFTER))


def owner_unreachable(binding: Binding) -> Reject:
    """The caller's answer when the instance holding ``binding``'s flow is gone: 480
    with Retry-After (RFC 3261 21.4.18; the module docstring says why not 503)."""
    return Reject(
        status=480,
        reason="Temporarily Unavailable",
        headers=(("Retry-After", str(retry_after_for(binding))),),
    )


def flow_not_held() -> Reject:
    """The answer to a request relayed here as the flow owner when no binding's flow
    is held here any more (the device re-registered through another instance, or
    its binding expired): 480, and the relaying instance passes it on."""
    return Reject(status=480, reason="Temporarily Unavailable")


def route_via_owner(
    binding: Binding, owner_targets: tuple[Endpoint, ...], request_uri: str
) -> Route:
    """Builds the route that relays a call to the instance holding ``binding``'s flow.

    Args:
        binding: the binding to reach; its ``flow_owner`` names the instance.
        owner_targets: that instance's transport addresses (RFC 3263 order).
        request_uri: the call's Request-URI, kept: the owner looks the AoR up itself.

    Returns:
        A route to the owner with ``Route: <owner;lr>`` (loose routing, RFC 3261
        16.12.1.1), a short no-response bound and the 480 of :func:`owner_unreachable`.
    """
    assert binding.flow_owner is not None
    return Route(
        targets=owner_targets,
        request_uri=request_uri,
        headers=(("Route", f"<{_with_lr(binding.flow_owner)}>"),),
        failover_timeout=OWNER_RESPONSE_TIMEOUT,
        unreachable=owner_unreachable(binding),
        facts=CallFacts(routed_by=RoutedBy.REGISTERED_BINDING, registered_contact=binding.contact),
    )


def _with_lr(uri_text: str) -> str:
    uri = parse_uri(uri_text)
    assert isinstance(uri, SipUri)  # ClusterConfig checked it
    return str(uri.with_param("lr"))
