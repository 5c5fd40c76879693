"""From bindings to a B-leg route: send calls for a registered user to its contacts.

A binding remembers the transport address its REGISTER came from, and that is where a
call goes (the "received" view, RFC 3261 18.2.2 / RFC 3581): a phone behind NAT
registers a private Contact, but only the NAT's public mapping reaches it. The contact
URI becomes the B-leg Request-URI, so the phone sees the URI it registered (RFC 3261
10.3 and 16.5: a proxy retargets to the registered contact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gateway.b2bua.events import Route
from gateway.registrar.bindings import Binding
from gateway.sip.errors import ParseError
from gateway.sip.events import Endpoint
from gateway.sip.uri import SipUri, parse_uri
from routing.decision import CallFacts, RoutedBy


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
