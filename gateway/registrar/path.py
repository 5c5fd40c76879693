"""Registrations through an edge proxy: the Path header (RFC 3327).

A phone behind NAT that registers through Kamailio (deploy/cluster/kamailio.cfg)
has its flow with Kamailio, not with the instance that answered the REGISTER: the
NAT lets in only Kamailio's address. Kamailio's path module puts a Path header in
front of the REGISTER it forwards (``add_path_received()``: ``Path:
<sip:kamailio;received=sip:public-ip:port;lr>``, the phone's NATed address in
``received``). The registrar stores the vector with the binding
(:func:`~gateway.registrar.bindings.parse_register`, migration 0720) and a call for
the binding goes out with the vector as a preloaded Route set (RFC 3327 5.3), to the
first Path URI (:func:`route_via_path`). Kamailio's ``loose_route()`` takes its own entry
off and, with the path module's ``use_received``, sends the INVITE to the
``received`` address over the flow it holds.

Why this comes before flow ownership (:mod:`gateway.registrar.routing`): any
instance can send to Kamailio, so whichever instance a call arrives at delivers it
itself; ``flow_owner`` (the instance that took the REGISTER) does not matter, and a
call still reaches the phone after that instance died.

Support by the UA (RFC 3327 5.3, RFC 3261 8.2.4): the Path is stored and used
whether or not the UA sent ``Supported: path`` (Kamailio's registrar calls this
"lazy" mode): the proxies need it to reach the phone, and most phones never send
that option tag, so refusing them (RFC 3327 lets a registrar that requires the
extension answer 420/421) would keep them from registering through Kamailio at all.
The 200 OK echoes the Path only to a UA that said it supports the extension: a UAS
"MUST NOT apply extensions not listed in the Supported header field in the request".
"""

from __future__ import annotations

from dataclasses import replace

from gateway.b2bua.events import Route
from gateway.registrar.bindings import Binding, RegisterUpdate
from gateway.registrar.routing import OWNER_RESPONSE_TIMEOUT, owner_unreachable, route_to_binding
from gateway.sip.events import Endpoint
from gateway.sip.headers import parse_contacts


def path_echo(update: RegisterUpdate) -> list[tuple[str, str]]:
    """The Path header field of a REGISTER's 200 OK.

    RFC 3327 5.3: the registrar "copies the Path header field values into a Path
    header field in the successful (200 Class) REGISTER response", in order, when
    the UA indicated support (see the module docstring).

    Returns:
        One ``("Path", values)`` pair, or nothing.
    """
    if not update.path or not update.path_supported:
        return []
    return [("Path", ", ".join(update.path))]


def first_hop(binding: Binding) -> str:
    """The URI a call for ``binding`` is sent to: its topmost Path entry's
    (RFC 3261 16.12.1.1 loose routing: the request goes to the first Route URI).

    Raises:
        ValueError: the binding has no Path.
    """
    if not binding.path:
        raise ValueError(f"binding {binding.id} has no Path")
    entries = parse_contacts(binding.path[0])  # parse_register checked the syntax
    assert entries != "*"
    return entries[0].uri


def route_via_path(binding: Binding, targets: tuple[Endpoint, ...]) -> Route:
    """Builds the route of a call for a binding registered with a Path.

    Args:
        binding: the binding; its ``path`` is not empty.
        targets: the transport addresses of :func:`first_hop` (RFC 3263 order).

    Returns:
        The binding's route (its contact as Request-URI) sent to ``targets`` with
        one ``Route`` header field per Path entry, in order: the preloaded Route set
        of RFC 3327 5.3. An edge proxy that does not answer within
        :data:`~gateway.registrar.routing.OWNER_RESPONSE_TIMEOUT` (Kamailio answers
        100 Trying at once) gets the caller the same 480 with Retry-After as a flow
        owner that is gone: the phone is registered, its flow is not reachable.
    """
    return replace(
        route_to_binding(binding),
        targets=targets,
        headers=tuple(("Route", entry) for entry in binding.path),
        failover_timeout=OWNER_RESPONSE_TIMEOUT,
        unreachable=owner_unreachable(binding),
    )
