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

Both instances run a B2BUA leg of the relayed call, so each writes a CDR: the
relaying one's facts say :attr:`~routing.decision.FlowRelay.TO_OWNER`, the owner's
:attr:`~routing.decision.FlowRelay.FROM_SIBLING` (:func:`relayed_here`), and only
the former bills the call (routing.decision.FlowRelay says why). The owner believes
a Route naming it only on an inbound call, that is from a trusted peer: a device
could write one itself, and would take its calls out of the itemization.

Owner known gone: heartbeats
----------------------------

The instances' heartbeats (gateway/cluster/liveness.py) tell whether an owner is
gone before any INVITE is sent: an owner whose heartbeat, as this instance last read
the shared table, is older than ``[cluster] dead_after``, or which another instance
has declared dead, is *gone* (``owner_gone``). :func:`choose_flow` then prefers a
binding whose flow is held here or by a live instance (RFC 3261 16.6 tries the next
target; RFC 5626 11.5 has a proxy told of a failed flow try another one), and
when every binding's owner is gone the caller gets :func:`owner_unreachable`'s 480 at
once instead of after :data:`OWNER_RESPONSE_TIMEOUT`. Bound: an owner that stops is
answered for at once from ``dead_after`` plus one ``heartbeat_interval`` (this
instance's read of the table) after its last heartbeat; before that, within
:data:`OWNER_RESPONSE_TIMEOUT` as above. An owner this instance cannot judge (no row
read yet, a row it left on a clean stop, or its own view of the table older than
``dead_after`` because it cannot reach the database) is never taken for gone.

Emergency callbacks (RFC 6881 SP-35)
------------------------------------

A centre's call back to an emergency caller goes to the device that made the
emergency call (gateway/cluster/callbacks.py). That device behind NAT is reachable
through its registration's flow like any other call, so :func:`choose_callback_flow`
picks the device's own bindings (:func:`device_bindings`: the emergency INVITE's
Contact, else the address it came from) and decides as :func:`choose_flow` does; the
relayed INVITE names the owner in its Route and carries :data:`CALLBACK_MARKER`. A
device with no registration is called at the window's address, as before.

How the owner knows a relayed INVITE is a callback (:func:`is_relayed_callback`): a
centre is recognised by its transport address (gateway/edge/peers.py), and only the
instance the centre's call reached saw it; the owner sees a sibling's address. So the
sibling says so with the marker, and the owner believes it only from a trusted peer
(``[upstream] trusted_peers``, where siblings are listed) on a request relayed to it
as the flow owner (its Route names it). The marker cannot open a window nor choose a
device: the owner reads the window itself (memory, else the shared table) and calls
the device of that window over its own flow, or answers 480. A peer that is not
trusted never gets the treatment, and the B2BUA never copies an ``X-Voipgw-*`` field
of a caller's INVITE onto the next one, so a caller cannot pass one through a
sibling. The most a misbehaving trusted peer gets is what the centre's own call would
get during an open window.

Callback whose owner is gone: the device's received address is tried from here as
a last resort (:func:`callback_last_resort`), bounded by
:data:`OWNER_RESPONSE_TIMEOUT`, then 480 with Retry-After. Why not 480 at once: a
callback exists to reach a caller who may need help (RFC 7090's abstract: one
treated "like any other call" may be blocked or forwarded to an answering machine), and the
address may well answer: a device not behind NAT at all, or behind a NAT with
endpoint-independent filtering, which RFC 4787 REQ-8 recommends "if application
transparency is most important"; RFC 4787 REQ-1 makes the mapping itself the same
for every destination, so the received address is the right one. Behind an
address-dependent filter the attempt is dropped and the centre hears 480 after the
bound: 2 s more than an ordinary call, which a call taker about to try other means
does not notice. (Before flows had owners, every callback went to that address from
the instance the centre reached; a 480 at once would lose the phones it reached.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from gateway.b2bua.events import Reject, Route
from gateway.edge.peers import uri_address
from gateway.registrar.bindings import Binding, canonical_aor
from gateway.sip.errors import ParseError
from gateway.sip.events import Endpoint
from gateway.sip.headers import parse_contacts
from gateway.sip.uri import SipUri, parse_uri
from routing.decision import CallFacts, FlowRelay, RoutedBy

#: Seconds the instance holding a callee's flow may take to send any response to a
#: call relayed to it (an instance on the same LAN answers 100 Trying in
#: milliseconds); after that the caller gets :func:`owner_unreachable`'s 480 rather
#: than waiting for Timer B (32 s).
OWNER_RESPONSE_TIMEOUT: Final = 2.0
#: Longest Retry-After promised when the flow owner is gone, in seconds.
MAX_RETRY_AFTER: Final = 300
#: The header field an instance relaying an emergency callback to the flow owner adds,
#: and the device then sees too (the local callback path sends it already).
CALLBACK_MARKER: Final = ("X-Voipgw-Class", "emergency-callback")

#: ``owner_gone(flow_owner)``: whether the heartbeats say that instance is gone.
OwnerGone = Callable[[str], bool]


def never_gone(_owner: str) -> bool:
    """No instance is ever gone: one instance alone, or no heartbeats."""
    return False


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
    #: the heartbeats say ``owner`` is gone (and so is every other binding's owner)
    owner_gone: bool = False


def choose_flow(
    bindings: Sequence[Binding],
    *,
    local: str | None,
    as_owner: bool,
    owner_gone: OwnerGone = never_gone,
) -> FlowChoice | None:
    """Decides how to reach an AoR's device (see the module docstring).

    Args:
        bindings: the AoR's current bindings.
        local: this instance's ``[cluster] sip_uri``; None without ``[cluster]``.
        as_owner: the request was relayed here as the flow owner
            (:func:`routed_to_owner`): never relay it on.
        owner_gone: whether the heartbeats say an instance is gone; bindings whose
            flow such an instance held are passed over for the others.

    Returns:
        None when the AoR has no binding at all (not registered); otherwise the
        choice (``owner_gone`` set when every binding's owner is gone).
    """
    if not bindings:
        return None
    if as_owner:
        return FlowChoice(binding=best_binding([b for b in bindings if holds_flow(b, local)]))
    reachable = [b for b in bindings if holds_flow(b, local) or not _gone(b, owner_gone)]
    binding = best_binding(reachable or bindings)
    assert binding is not None
    if holds_flow(binding, local):
        return FlowChoice(binding=binding)
    return FlowChoice(binding=binding, owner=binding.flow_owner, owner_gone=not reachable)


def _gone(binding: Binding, owner_gone: OwnerGone) -> bool:
    return binding.flow_owner is not None and owner_gone(binding.flow_owner)


def device_bindings(
    bindings: Sequence[Binding], *, contact: str, endpoint: Endpoint
) -> list[Binding]:
    """The bindings of the device that made an emergency call, among its AoR's.

    The device is the one registered with the emergency INVITE's Contact (scheme,
    user, host and port: a phone sends the Contact it registered, RFC 3261 8.1.1.8 and
    10.2.1), else the one whose REGISTER came from the transport address the
    emergency call came from (one socket, one NAT mapping).

    Args:
        bindings: the AoR's current bindings.
        contact: the emergency INVITE's Contact URI (the window's).
        endpoint: where the emergency call came from.

    Returns:
        Those bindings; empty when none is the device's.
    """
    key = _contact_key(contact)
    same = [b for b in bindings if key is not None and _contact_key(b.contact) == key]
    return same or [b for b in bindings if b.received == endpoint]


def _contact_key(text: str) -> tuple[str, str | None, str, int | None] | None:
    try:
        uri = parse_uri(text)
    except ParseError:
        return None
    if not isinstance(uri, SipUri):
        return None
    return (uri.scheme, uri.user, uri.host.lower(), uri.port)


def choose_callback_flow(
    bindings: Sequence[Binding],
    *,
    contact: str,
    endpoint: Endpoint,
    local: str | None,
    as_owner: bool,
    owner_gone: OwnerGone = never_gone,
) -> FlowChoice | None:
    """Decides how an emergency callback reaches the device of its window.

    Args:
        bindings: the caller's AoR's current bindings.
        contact: the window's Contact (the emergency INVITE's).
        endpoint: the window's address (where the emergency call came from).
        local: this instance's ``[cluster] sip_uri``; None without ``[cluster]``.
        as_owner: a sibling relayed the callback here as the flow owner.
        owner_gone: whether the heartbeats say an instance is gone.

    Returns:
        None when the device holds no registration (call the window's address, the
        only one known; not when ``as_owner``); otherwise :func:`choose_flow`'s
        choice among the device's bindings (with ``owner_gone``: the last resort).
    """
    device = device_bindings(bindings, contact=contact, endpoint=endpoint)
    if not device:
        return FlowChoice(binding=None) if as_owner else None
    return choose_flow(device, local=local, as_owner=as_owner, owner_gone=owner_gone)


def is_relayed_callback(
    class_values: Iterable[str], *, from_trusted_peer: bool, as_owner: bool
) -> bool:
    """Whether an INVITE is an emergency callback a sibling relayed here as the
    flow owner, to be treated as one (the module docstring says why these three).

    Args:
        class_values: the request's ``X-Voipgw-Class`` values.
        from_trusted_peer: it came from ``[upstream] trusted_peers``.
        as_owner: its Route names this instance (:func:`routed_to_owner`).
    """
    return (
        from_trusted_peer
        and as_owner
        and any(v.strip() == CALLBACK_MARKER[1] for v in class_values)
    )


def callback_aors(caller: str | None, *, domains: Sequence[str], realm: str) -> tuple[str, ...]:
    """The AoRs under which an emergency caller's device may be registered.

    A phone's From is usually its AoR (RFC 3261 8.1.1.3), but some put their own
    address in its host; the registrar keeps AoRs under the served ``domains`` (any
    host when empty, then the ``realm`` is the one phones are configured with).

    Args:
        caller: the emergency call's From URI (the window's ``aor``).
        domains: ``[registrar] domains``.
        realm: ``[registrar] realm``.

    Returns:
        Canonical AoRs, the From's own first; empty when it has no SIP user.
    """
    if caller is None:
        return ()
    try:
        uri = parse_uri(caller)
    except ParseError:
        return ()
    if not isinstance(uri, SipUri) or not uri.user:
        return ()
    found = [canonical_aor(uri)]
    for host in domains or (realm,):
        aor = canonical_aor(replace(uri, host=host, port=None))
        if aor not in found:
            found.append(aor)
    return tuple(found)


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
        facts=CallFacts(
            routed_by=RoutedBy.REGISTERED_BINDING,
            registered_contact=binding.contact,
            flow_relay=FlowRelay.TO_OWNER,
        ),
    )


def relayed_here(facts: CallFacts) -> CallFacts:
    """The facts of the flow owner's leg of a call a sibling relayed here (its Route
    names this process, :func:`routed_to_owner`; believed from a trusted peer only):
    marked :attr:`~routing.decision.FlowRelay.FROM_SIBLING`, whatever becomes of the
    call here (delivered, 480, 404), so that the sibling's record alone counts it."""
    return replace(facts, flow_relay=FlowRelay.FROM_SIBLING)


def callback_facts(binding: Binding) -> CallFacts:
    """The facts of a callback routed by a registration: a callback, to its contact."""
    return CallFacts(routed_by=RoutedBy.EMERGENCY_CALLBACK, registered_contact=binding.contact)


def as_callback(route: Route, binding: Binding) -> Route:
    """``route`` to ``binding`` (over this instance's flow, its flow owner, or its
    Path) as an emergency callback: :data:`CALLBACK_MARKER` added to its headers, the
    callback's facts (and the relay's mark, :class:`~routing.decision.FlowRelay`)."""
    facts = replace(callback_facts(binding), flow_relay=route.facts.flow_relay)
    return replace(route, headers=(*route.headers, CALLBACK_MARKER), facts=facts)


def callback_to_binding(binding: Binding) -> Route:
    """The callback over this instance's own flow: the binding's received address,
    marked as the local callback path marks it."""
    return as_callback(route_to_binding(binding), binding)


def callback_via_owner(
    binding: Binding, owner_targets: tuple[Endpoint, ...], request_uri: str
) -> Route:
    """The callback relayed to the instance holding the device's flow: as
    :func:`route_via_owner`, plus :data:`CALLBACK_MARKER` (the owner checks it, see
    :func:`is_relayed_callback`). The Request-URI stays the number called: the owner
    looks its window up itself."""
    return as_callback(route_via_owner(binding, owner_targets, request_uri), binding)


def callback_last_resort(binding: Binding) -> Route:
    """The callback to a device whose flow owner is gone: its received address from
    this instance, bounded by :data:`OWNER_RESPONSE_TIMEOUT`, then 480 with
    Retry-After (the module docstring says why it is tried at all)."""
    return replace(
        callback_to_binding(binding),
        failover_timeout=OWNER_RESPONSE_TIMEOUT,
        unreachable=owner_unreachable(binding),
    )


def _with_lr(uri_text: str) -> str:
    uri = parse_uri(uri_text)
    assert isinstance(uri, SipUri)  # ClusterConfig checked it
    return str(uri.with_param("lr"))
