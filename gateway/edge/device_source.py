"""Where a device really is when its request reaches us through an edge proxy.

The routing layer's one fact about a caller is the transport address its packet came
from (:attr:`routing.model.CallContext.source`). Behind an edge proxy (the Kamailio
dispatcher of deploy/cluster/) every request comes from the proxy, so that fact is
the proxy's address, and an office phone's emergency call could never be told from
a nomadic one. A proxy we trust tells us where it received the request: RFC 3261
18.2.1 makes it add ``received`` to the topmost Via it got when the sent-by is not
the packet's source address, and RFC 3581 ``rport`` (Kamailio ``force_rport()``)
adds the source port. That Via is the one right below the proxy's own.

Rule: only when the transport source lies in ``[sip] edge_proxies`` is the Via below
read, and from it only the ``received`` address (else the sent-by host, which the
proxy then found equal to the source address) and the ``rport`` port (else the
sent-by port). A chain of trusted proxies is walked down the same way. A request
from anyone else is taken at its transport address: a phone writing ``received=``
into its own Via, or adding Vias, changes nothing (it is not a proxy we trust, and a
trusted proxy overwrites the received/rport of the Via it received).

When a trusted proxy's request carries no usable Via below its own (none, or a host
name without ``received``), the proxy's own address stays the source: the call is
then classified as it was before (nomadic: a proxy is on no office network), never
as somewhere the proxy did not vouch for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.edge.peers import DEFAULT_SIP_PORT, Network, in_networks
from gateway.sip.errors import SipError
from gateway.sip.events import Endpoint
from gateway.sip.headers import Via, parse_via
from gateway.sip.message import Request


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSource:
    """The address a request is taken to come from.

    Attributes:
        endpoint: the device's transport address: the packet's own source, or what
            a trusted edge proxy vouched for.
        edge_proxy: the trusted edge proxy the request arrived from (its transport
            source), or None when it came straight from the device or the proxy
            vouched for nothing usable.
    """

    endpoint: Endpoint
    edge_proxy: Endpoint | None = None


def device_source(
    request: Request, source: Endpoint, edge_proxies: Sequence[Network]
) -> DeviceSource:
    """Where the device that sent ``request`` is (the module docstring has the rule).

    Args:
        request: the request as received.
        source: the transport address it was received from.
        edge_proxies: ``[sip] edge_proxies``: networks of the edge proxies whose Via
            ``received``/``rport`` are believed.

    Returns:
        The device's address, and the edge proxy when one vouched for it.
    """
    if not in_networks(source.host, edge_proxies):
        return DeviceSource(endpoint=source)
    vias: list[Via] = []
    for value in request.headers.values("Via"):
        try:
            vias.extend(parse_via(value))
        except SipError:
            return DeviceSource(endpoint=source)  # a broken Via below vouches for nothing
    hop = source
    # vias[0] is the proxy's own; each via below was received by the hop above it.
    for via in vias[1:]:
        if not in_networks(hop.host, edge_proxies):
            break
        vouched = _received_from(via, hop.transport)
        if vouched is None:
            return DeviceSource(endpoint=source)
        hop = vouched
    if hop is source:
        return DeviceSource(endpoint=source)
    return DeviceSource(endpoint=hop, edge_proxy=source)


def _received_from(via: Via, transport: str) -> Endpoint | None:
    """The address a proxy received a request from, as it wrote it into ``via``
    (RFC 3261 18.2.1 ``received``, RFC 3581 ``rport``), or None when that is not an
    IP address."""
    host = via.received or via.host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    rport = via.rport
    if rport:
        try:
            port = int(rport)
        except ValueError:
            return None
        if not 0 < port < 65536:
            return None
    else:
        port = via.port or DEFAULT_SIP_PORT
    return Endpoint(via.transport or transport, str(address), port)
