"""Longest-prefix match of a source address over every registered site network.

Theory of operation: the index keeps, per address family, one hash table per prefix
length that occurs in the data, mapping the network's leading ``length`` bits (the
address shifted right, an ``int``) to the entries registered for exactly that
network. A lookup walks the lengths that occur, longest first, and stops at the first
hit, so it costs one shift and one dict probe per distinct prefix length (at most 33
for IPv4, 129 for IPv6, in practice a handful), independent of how many networks are
registered. This is the hash-per-length variant of a binary trie (each table is one
level of the trie with the empty levels skipped); it is chosen because in Python a dict
probe is far cheaper than walking trie nodes bit by bit.

Determinism: the longest prefix wins. Several entries for the *same* network (the same
CIDR registered for two sites, or twice with different kinds) are kept together,
sorted by :func:`tie_key`, so the answer never depends on the order of sites or
networks in the input: (1) VPN pool before trusted NAT before office LAN (when the
data is ambiguous the cautious reading, "not on-site", comes first), then (2) customer
id, (3) site id. The classifier may still prefer an entry of the caller's own customer
among equally long ones; that preference is also order-independent.

IPv4-mapped IPv6 sources (``::ffff:127.0.10.5``, what a dual-stack socket reports for
an IPv4 peer) are looked up as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from routing.model import IPAddress, NetworkEntry, NetworkKind, Site

__all__ = ["NetworkEntry", "NetworkIndex", "tie_key"]

_KIND_RANK = {NetworkKind.VPN_POOL: 0, NetworkKind.TRUSTED_NAT: 1, NetworkKind.OFFICE_LAN: 2}


def tie_key(entry: NetworkEntry) -> tuple[int, str, str]:
    """Orders entries registered for the same network (see the module docstring)."""
    return (_KIND_RANK[entry.kind], entry.site.customer_id, entry.site.id)


class _FamilyIndex:
    __slots__ = ("lengths", "tables", "width")

    def __init__(self, width: int, entries: Iterable[NetworkEntry]) -> None:
        self.width = width
        grouped: dict[int, dict[int, list[NetworkEntry]]] = {}
        for entry in entries:
            length = entry.network.prefixlen
            key = int(entry.network.network_address) >> (width - length)
            grouped.setdefault(length, {}).setdefault(key, []).append(entry)
        self.lengths: tuple[int, ...] = tuple(sorted(grouped, reverse=True))
        self.tables: dict[int, dict[int, tuple[NetworkEntry, ...]]] = {
            length: {key: tuple(sorted(set(group), key=tie_key)) for key, group in table.items()}
            for length, table in grouped.items()
        }

    def lookup(self, value: int) -> tuple[NetworkEntry, ...]:
        width = self.width
        tables = self.tables
        for length in self.lengths:
            hit = tables[length].get(value >> (width - length))
            if hit is not None:
                return hit
        return ()


class NetworkIndex:
    """Longest-prefix-match index over the networks of a set of sites; immutable."""

    __slots__ = ("_v4", "_v6", "size")

    def __init__(self, entries: Iterable[NetworkEntry]) -> None:
        v4: list[NetworkEntry] = []
        v6: list[NetworkEntry] = []
        for entry in entries:
            (v4 if entry.network.version == 4 else v6).append(entry)
        self._v4 = _FamilyIndex(32, v4)
        self._v6 = _FamilyIndex(128, v6)
        self.size = len(v4) + len(v6)
        """Number of (network, site) entries indexed."""

    @classmethod
    def build(cls, sites: Iterable[Site]) -> NetworkIndex:
        """Indexes every network of every site.

        Args:
            sites: the sites, in any order.

        Returns:
            The index.
        """
        return cls(
            NetworkEntry(network=net.cidr, kind=net.kind, site=site)
            for site in sites
            for net in site.networks
        )

    def lookup(self, address: IPAddress) -> tuple[NetworkEntry, ...]:
        """Returns the entries of the longest registered network containing ``address``.

        Args:
            address: the source address of a call.

        Returns:
            The entries registered for that one network, in :func:`tie_key` order, or
            an empty tuple when no registered network contains the address.
        """
        if isinstance(address, ipaddress.IPv6Address):
            mapped = address.ipv4_mapped
            if mapped is None:
                return self._v6.lookup(int(address))
            address = mapped
        return self._v4.lookup(int(address))
