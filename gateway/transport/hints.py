"""What routing and DNS learnt about a next hop's transports, for the transport manager.

RFC 3261 18.1.1 moves a request over 1300 bytes from UDP to TCP (the transaction
layer does it), and falls back to UDP when the TCP connection is refused. An
emergency INVITE with its PIDF-LO is always that large. Two things go wrong with a
centre that speaks only UDP:

* the gateway tries TCP although the centre said it does not speak it: its URI
  names ``transport=udp``, or its DNS lists only UDP (NAPTR ``SIP+D2U`` / SRV
  ``_sip._udp`` alone, RFC 3263 4.1);
* behind a firewall that drops TCP silently, no reset comes, and the fallback waits
  for the connect timeout, longer than the emergency failover timer: the nearest
  centre is skipped for the next one.

So the router and the resolver record here, per transport address, that a next hop
is UDP only, or that it is an emergency centre; the transport manager then does not
open a TCP connection to a UDP-only next hop (it reports the transport error at
once, and the transaction layer resends over UDP as 18.1.1 says for a refused
connection), and gives a TCP connection to an emergency centre
:data:`EMERGENCY_CONNECT_TIMEOUT`: on a working path a TCP handshake takes one round
trip, and a fallback to UDP on doubt costs nothing but fragmentation.

One process-wide :data:`PEER_HINTS`, like the resolver's DNS cache; bounded, oldest
entries forgotten first.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.sip.errors import ParseError
from gateway.sip.events import Endpoint
from gateway.sip.uri import SipUri, parse_uri

#: Seconds a TCP connection attempt to an emergency centre may take before the
#: request goes over UDP: a round trip on any sane path is far shorter, and the
#: emergency failover timer (3 s, gateway/service/router.py) must not be reached first.
EMERGENCY_CONNECT_TIMEOUT = 0.5
#: Most transport addresses remembered.
MAX_HINTS = 4096


@dataclass(slots=True)
class _Hint:
    uri_names_udp: bool = False
    """The next hop's URI has ``transport=udp`` (RFC 3263 4.1: that transport is used)."""
    dns_udp_only: bool = False
    """NAPTR or SRV records list UDP and no other transport for it (RFC 3263 4.1)."""
    emergency: bool = False
    """It is an emergency centre."""


def _key(host: str, port: int) -> tuple[str, int]:
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        return host.lower(), port


class PeerHints:
    """Per transport address: UDP only? an emergency centre?

    Args:
        max_entries: bound on the addresses remembered.
    """

    def __init__(self, max_entries: int = MAX_HINTS) -> None:
        self.max_entries = max_entries
        self._hints: OrderedDict[tuple[str, int], _Hint] = OrderedDict()
        #: next-hop URI text -> it names transport=udp: every routed call asks, and
        #: a handful of next hops serve them all, so each URI is parsed once
        self._uri_names_udp: dict[str, bool] = {}

    def _entry(self, host: str, port: int) -> _Hint:
        key = _key(host, port)
        hint = self._hints.get(key)
        if hint is None:
            hint = self._hints[key] = _Hint()
            while len(self._hints) > self.max_entries:
                self._hints.popitem(last=False)
        else:
            self._hints.move_to_end(key)
        return hint

    def learn_route(self, uri_text: str, endpoints: Iterable[Endpoint], *, emergency: bool) -> None:
        """Records what a next-hop URI says of the addresses it resolved to.

        Args:
            uri_text: the next hop's SIP URI.
            endpoints: the transport addresses it resolved to (RFC 3263).
            emergency: the next hop is an emergency centre.
        """
        names_udp = self._uri_names_udp.get(uri_text)
        if names_udp is None:
            try:
                uri = parse_uri(uri_text)
            except ParseError:
                return
            names_udp = isinstance(uri, SipUri) and (uri.transport or "").lower() == "udp"
            if len(self._uri_names_udp) >= self.max_entries:
                self._uri_names_udp.clear()
            self._uri_names_udp[uri_text] = names_udp
        for endpoint in endpoints:
            hint = self._entry(endpoint.host, endpoint.port)
            hint.uri_names_udp = names_udp
            hint.emergency = emergency

    def learn_dns(self, host: str, port: int, *, udp_only: bool) -> None:
        """Records whether DNS (NAPTR/SRV) listed UDP alone for an address."""
        self._entry(host, port).dns_udp_only = udp_only

    def udp_only(self, host: str, port: int) -> bool:
        """Whether the next hop at this address is known to speak only UDP."""
        hint = self._hints.get(_key(host, port))
        return hint is not None and (hint.uri_names_udp or hint.dns_udp_only)

    def connect_timeout(self, host: str, port: int, default: float) -> float:
        """Seconds a TCP connection attempt to this address may take."""
        hint = self._hints.get(_key(host, port))
        if hint is not None and hint.emergency:
            return min(default, EMERGENCY_CONNECT_TIMEOUT)
        return default


#: The process-wide hints: written by the call router and the resolver, read by every
#: TransportManager that is not given its own.
PEER_HINTS = PeerHints()
