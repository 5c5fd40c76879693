"""Telling an emergency centre's address from the PBX's (RFC 6881 SP-35/40 callbacks).

For 30 minutes after an emergency call, a call *from a centre* to the caller's number
bypasses the PBX's forwarding and do-not-disturb. So the gateway must recognise a
centre by what only the centre has. Decision: a centre is its **transport address**,
the host and port of its SIP URI (RFC 3263 section 4.2 resolves a name; an IP literal
is used as is), because that is where the gateway sends the centre's INVITEs and
where a centre's UA, signalling symmetrically over UDP (RFC 3581), sends from. The
host alone is not enough: on a small installation (and in the demo before issue 13)
the PBX and a centre's trunk may sit on one host, and every PBX call to the caller's
number would then be taken for the centre's callback.

Per-centre callback source networks in the sites data would also cover centres that
call back from other ports (TCP from an ephemeral port, another server of the same
centre); they need a column in the routing tables (cdr/migrations) and are left for
a later schema change. Until then such a callback is routed as an ordinary call,
which is what happened before RFC 6881 callbacks existed, never a wrong device.

:func:`address_overlaps` is what ``voipgw check-config`` and ``voipgw sites check``
print: a centre whose host is also the PBX's (upstream, default next hop), lies in
a trusted peer network, or whose transport address another centre has.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.sip.errors import ParseError
from gateway.sip.uri import SipUri, parse_uri
from routing.model import EmergencyCentre

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: RFC 3261 section 19.1.2: the port a SIP URI without one means.
DEFAULT_SIP_PORT = 5060
DEFAULT_SIPS_PORT = 5061


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAddress:
    """The transport address a SIP URI names, without DNS.

    Attributes:
        peer: who it is, for messages ("centre kerava", "upstream sip:...").
        host: an IP address in its normal text form, or a lower-case host name.
        port: the URI's port, or the scheme's default (RFC 3261 19.1.2).
    """

    peer: str
    host: str
    port: int

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address, or None for a host name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def uri_address(peer: str, uri_text: str) -> PeerAddress | None:
    """The transport address of a ``sip:``/``sips:`` URI, or None for anything else.

    Args:
        peer: the name to give it in messages.
        uri_text: the URI.

    Returns:
        Host (IP literals normalised, so "0:0::1" and "::1" compare equal) and port.
    """
    try:
        uri = parse_uri(uri_text)
    except ParseError:
        return None
    if not isinstance(uri, SipUri):
        return None
    host = uri.host.lower()
    with contextlib.suppress(ValueError):
        host = str(ipaddress.ip_address(host))
    default = DEFAULT_SIPS_PORT if uri.scheme == "sips" else DEFAULT_SIP_PORT
    return PeerAddress(peer=peer, host=host, port=uri.port or default)


def in_networks(host: str, networks: Sequence[Network]) -> bool:
    """Whether an IP address (text, as a transport reports a source) lies in one of
    ``networks``; a host name never does."""
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def same_transport_address(a_host: str, a_port: int, b_host: str, b_port: int) -> bool:
    """Whether two (host, port) pairs are one transport address (IP text normalised)."""
    if a_port != b_port:
        return False
    try:
        return ipaddress.ip_address(a_host) == ipaddress.ip_address(b_host)
    except ValueError:
        return a_host.lower() == b_host.lower()


#: A transport address as a set member: the IP parsed (so "::1" and "0:0::1" are one),
#: or a lower-cased host name.
TransportAddress = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | str, int]


def transport_address(host: str, port: int) -> TransportAddress:
    """(host, port) normalised as :func:`same_transport_address` compares them."""
    try:
        return ipaddress.ip_address(host), port
    except ValueError:
        return host.lower(), port


def address_overlaps(
    centres: Iterable[EmergencyCentre],
    *,
    upstream: Sequence[tuple[str, str]] = (),
    trusted: Sequence[tuple[str, Network]] = (),
) -> list[str]:
    """Warnings for centres whose address is not theirs alone, naming both peers.

    Args:
        centres: the emergency centres of the sites data.
        upstream: (what, SIP URI) of the PBX side: ``[upstream] uri``,
            ``[routing] default_next_hop``.
        trusted: (what, network) of trusted peers (``[upstream] trusted_peers``).

    Returns:
        One line per overlap; empty when every centre has an address of its own.
    """
    warnings: list[str] = []
    addresses = [a for c in centres if (a := uri_address(f"centre {c.id}", c.sip_uri)) is not None]
    others = [a for what, uri in upstream if (a := uri_address(what, uri)) is not None]
    for i, centre in enumerate(addresses):
        for other in addresses[:i]:
            if same_transport_address(centre.host, centre.port, other.host, other.port):
                warnings.append(
                    f"{centre.peer} and {other.peer} share the transport address {centre}:"
                    " neither the failover between them nor their callbacks can tell them apart"
                )
        for other in others:
            if same_transport_address(centre.host, centre.port, other.host, other.port):
                warnings.append(
                    f"{centre.peer} and {other.peer} share the transport address {centre}:"
                    f" every call from {other.peer} to an emergency caller's number within"
                    " 30 minutes would be taken for the centre's callback (RFC 6881 SP-35)"
                )
            elif centre.host == other.host:
                warnings.append(
                    f"{centre.peer} ({centre}) shares the host {centre.host} with"
                    f" {other.peer} ({other}): its callbacks are told apart by port alone;"
                    " give the centre an address of its own"
                )
        ip = centre.ip
        for what, network in trusted:
            if ip is not None and ip in network:
                warnings.append(
                    f"{centre.peer} ({centre}) is inside the trusted peer network {network}"
                    f" ({what}): it shares addresses with the PBX and trunks;"
                    " give the centre an address of its own"
                )
    return warnings
