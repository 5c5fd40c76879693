"""Locating a SIP next hop with DNS (RFC 3263), with TTL caching and failover.

Theory of operation
-------------------
Given the parts of a SIP or SIPS URI that matter (scheme, host, port, transport
parameter), :meth:`SipResolver.resolve` returns every ``Target(transport, host,
address, port)`` to try, best first:

1. Transport (RFC 3263 section 4.1). An explicit ``transport=`` parameter wins. A
   numeric IP host, or a host with an explicit port, means UDP for ``sip:`` and TLS
   over TCP for ``sips:``. Otherwise NAPTR records of the host choose: only those with
   flag ``S`` and a service we speak (``SIP+D2U``, ``SIP+D2T``, ``SIPS+D2T``; only
   ``SIPS+D2T`` for a SIPS URI), in ``order`` then ``preference`` (RFC 3403 section
   4.1). With no usable NAPTR, SRV queries for ``_sip._udp``, ``_sip._tcp`` and
   ``_sips._tcp`` (only ``_sips._tcp`` for SIPS) find the transports the server
   supports. With neither, UDP for SIP and TLS for SIPS.
2. Port and address (section 4.2). A numeric host is used as is. With an explicit
   port, the host's AAAA and A records. Otherwise the SRV records (from the NAPTR
   replacement, or ``_sip``/``_sips`` + the transport) ordered by RFC 2782: lowest
   priority first, and within one priority a weighted random order; then each SRV
   target's AAAA and A records. With no SRV, the host's AAAA and A records on the
   default port (5060, or 5061 for TLS, RFC 3261 section 19.1.2).
3. Failover (section 4.3): :class:`TargetSet` walks the list. A transport error, a
   transaction timeout (Timer B or F) or a 503 moves to the next target; any other
   response ends the search.

What the records say of the server's transports goes to :mod:`gateway.transport.hints`:
when NAPTR (or, without NAPTR, SRV) lists UDP and nothing else, or the URI names
``transport=udp``, each target is marked UDP only, so the RFC 3261 18.1.1 size
switch does not try TCP there.

IPv6 addresses come before IPv4 ones for the same name (RFC 6724's default policy
prefers IPv6); ``prefer_ipv6=False`` reverses that.

Every DNS answer is cached for its TTL, a negative answer (NXDOMAIN, no data) for
``negative_ttl`` (RFC 2308 lets a resolver cap it). The clock and the random source are
injected, so tests run against a fake clock and a seeded ``random.Random``.
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdata
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.NAPTR import NAPTR
from dns.rdtypes.IN.SRV import SRV

from gateway.sip.errors import TransportError
from gateway.transport.hints import PEER_HINTS, PeerHints

SipTransport = Literal["UDP", "TCP", "TLS"]

#: RFC 3261 section 19.1.2 default ports.
DEFAULT_PORTS: dict[str, int] = {"UDP": 5060, "TCP": 5060, "TLS": 5061}

#: RFC 3263 section 4.1 NAPTR services this gateway speaks (no SCTP, RFC 4168).
NAPTR_SERVICES: dict[str, SipTransport] = {
    "SIP+D2U": "UDP",
    "SIP+D2T": "TCP",
    "SIPS+D2T": "TLS",
}

#: SRV owner-name prefixes tried when there is no usable NAPTR (RFC 3263 section 4.1),
#: in our order of preference.
SRV_PREFIXES: dict[SipTransport, str] = {
    "UDP": "_sip._udp",
    "TCP": "_sip._tcp",
    "TLS": "_sips._tcp",
}

#: URI ``transport=`` values we can use, mapped for sip: and sips: URIs. RFC 3261
#: section 26.2.2 / RFC 5630 section 3.1.3: sips: over TCP means TLS; sips: over UDP
#: does not exist. ``transport=tls`` is deprecated but still seen.
_URI_TRANSPORTS: dict[tuple[bool, str], SipTransport] = {
    (False, "udp"): "UDP",
    (False, "tcp"): "TCP",
    (False, "tls"): "TLS",
    (True, "tcp"): "TLS",
    (True, "tls"): "TLS",
}

#: Responses after which RFC 3263 section 4.3 says to try the next target.
FAILOVER_STATUSES = frozenset({503})


class ResolutionError(TransportError):
    """No target could be found for a SIP URI (bad URI or DNS has no usable records).

    ``status_hint`` is 503, as for any next hop that cannot be reached.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One place to send a request to, in the order RFC 3263 says to try them."""

    transport: SipTransport
    """Transport protocol: ``UDP``, ``TCP`` or ``TLS`` (TLS over TCP)."""
    host: str
    """Domain name the address belongs to, lowercase without the trailing dot (the
    SRV target or the URI host); the literal address for a numeric URI host. TLS
    checks the server certificate against the URI's domain, not this (RFC 5922)."""
    address: str
    """IPv4 or IPv6 address, without brackets."""
    port: int
    """Port number."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SrvRecord:
    """The fields of an SRV record used for ordering (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str
    """Target host name, lowercase without the trailing dot."""


def order_srv(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """Order SRV records the way RFC 2782 says clients must try them.

    RFC 2782: "A client MUST attempt to contact the target host with the
    lowest-numbered priority it can reach"; within one priority, "arrange all SRV RRs
    (that have not been ordered yet) in any order, except that all those with weight
    0 are placed at the beginning of the list", then pick a uniform random number
    between 0 and the sum of the weights and select the first record whose running
    sum is greater than or equal to it, and repeat with the rest.

    Args:
        records: SRV records of one owner name.
        rng: random source (inject a seeded one in tests).

    Returns:
        The records in the order to try.
    """
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        # "Any order" is a shuffle, so records of equal weight (all-zero ones
        # especially, which the draw below would always take in list order) share load.
        group = [r for r in records if r.priority == priority]
        rng.shuffle(group)
        remaining = sorted(group, key=lambda r: r.weight != 0)
        while remaining:
            total = sum(r.weight for r in remaining)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= pick:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


def _strip(name: str) -> str:
    return name.rstrip(".").lower()


def _numeric(host: str) -> str | None:
    """Return the address if ``host`` is an IPv4 or IPv6 literal (brackets allowed)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return None


@dataclass(slots=True)
class _CacheEntry:
    expires: float
    records: tuple[dns.rdata.Rdata, ...]


class SipResolver:
    """RFC 3263 resolver with a TTL cache shared by every :meth:`resolve` call.

    Args:
        resolver: the DNS stub resolver to query; the system one by default.
        rng: random source for SRV weights (RFC 2782).
        now: clock in seconds, used only for cache expiry.
        negative_ttl: seconds to remember that a name or record type does not exist.
        prefer_ipv6: list a name's AAAA addresses before its A addresses.
        hints: where to record targets that speak only UDP; the process-wide ones.
    """

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver | None = None,
        *,
        rng: random.Random | None = None,
        now: Callable[[], float] = time.monotonic,
        negative_ttl: float = 30.0,
        prefer_ipv6: bool = True,
        hints: PeerHints | None = None,
    ) -> None:
        self._hints = hints if hints is not None else PEER_HINTS
        self._resolver = resolver if resolver is not None else dns.asyncresolver.Resolver()
        self._rng = rng if rng is not None else random.Random()
        self._now = now
        self._negative_ttl = negative_ttl
        self._address_types = (
            (dns.rdatatype.AAAA, dns.rdatatype.A)
            if prefer_ipv6
            else (dns.rdatatype.A, dns.rdatatype.AAAA)
        )
        self._cache: dict[tuple[str, dns.rdatatype.RdataType], _CacheEntry] = {}
        self._last_failure: str | None = None

    def clear_cache(self) -> None:
        """Forget every cached answer."""
        self._cache.clear()

    async def resolve(
        self,
        *,
        scheme: str,
        host: str,
        port: int | None = None,
        transport: str | None = None,
    ) -> list[Target]:
        """Return the targets for a SIP or SIPS URI, in the order to try them.

        Args:
            scheme: ``"sip"`` or ``"sips"``.
            host: URI host: a domain name, an IPv4 address or an IPv6 reference
                (with or without brackets).
            port: URI port, or None if the URI has none.
            transport: the URI's ``transport`` parameter, or None.

        Returns:
            A non-empty list of targets, without duplicates.

        Raises:
            ResolutionError: unknown scheme or transport, or DNS gave no address.
        """
        secure = _secure(scheme)
        explicit = _explicit_transport(secure, transport)
        self._last_failure = None
        address = _numeric(host)
        if address is not None:
            # RFC 3263 4.1/4.2: a numeric host needs no DNS; UDP for sip, TLS for sips.
            chosen = explicit or ("TLS" if secure else "UDP")
            numeric = [
                Target(
                    transport=chosen,
                    host=address,
                    address=address,
                    port=port if port is not None else DEFAULT_PORTS[chosen],
                )
            ]
            if explicit is not None:
                self._learn(numeric, udp_only=explicit == "UDP")
            return numeric
        name = _strip(host)
        if not name:
            raise ResolutionError("empty host in SIP URI")
        if port is not None:
            # RFC 3263 4.2: "If the TARGET was not a numeric IP address, but a port is
            # present in the URI, the client performs an A or AAAA record lookup".
            chosen = explicit or ("TLS" if secure else "UDP")
            targets = await self._addresses(name, chosen, port)
        elif explicit is not None:
            # RFC 3263 4.2: a transport given explicitly skips NAPTR; the SRV query is
            # for that transport (with "_sips" for TLS).
            targets = await self._srv_targets(f"{SRV_PREFIXES[explicit]}.{name}", explicit)
            if not targets:
                targets = await self._addresses(name, explicit, DEFAULT_PORTS[explicit])
        else:
            targets = await self._naptr_targets(name, secure)
            if not targets:
                targets = await self._srv_fallback(name, secure)
            if targets:
                # RFC 3263 4.1: these records list the transports the server supports.
                self._learn(targets, udp_only={t.transport for t in targets} == {"UDP"})
            else:
                # RFC 3263 4.1: "If no SRV records were found, the client SHOULD use
                # TCP for a SIPS URI, and UDP for a SIP URI" on the default port.
                chosen = "TLS" if secure else "UDP"
                targets = await self._addresses(name, chosen, DEFAULT_PORTS[chosen])
        unique = list(dict.fromkeys(targets))
        if not unique:
            why = f": {self._last_failure}" if self._last_failure else ""
            raise ResolutionError(f"no SIP target for {scheme}:{name}{why}")
        if explicit is not None:
            # RFC 3263 4.1: the URI's transport parameter is the transport to use.
            self._learn(unique, udp_only=explicit == "UDP")
        return unique

    def _learn(self, targets: Sequence[Target], *, udp_only: bool) -> None:
        for target in targets:
            self._hints.learn_dns(target.address, target.port, udp_only=udp_only)

    async def _naptr_targets(self, name: str, secure: bool) -> list[Target]:
        usable: list[tuple[int, int, SipTransport, str]] = []
        for rr in await self._query(name, dns.rdatatype.NAPTR):
            if not isinstance(rr, NAPTR):
                continue
            flags = rr.flags.decode("ascii", "replace").upper()
            chosen = NAPTR_SERVICES.get(rr.service.decode("ascii", "replace").upper())
            # RFC 3263 4.1: a SIPS URI may only use SIPS+D2T; the "S" flag means the
            # replacement names SRV records (RFC 3403 section 6.3).
            if flags != "S" or chosen is None or (secure and chosen != "TLS"):
                continue
            usable.append((rr.order, rr.preference, chosen, rr.replacement.to_text()))
        targets: list[Target] = []
        for _, _, chosen, replacement in sorted(usable, key=lambda u: (u[0], u[1])):
            targets += await self._srv_targets(_strip(replacement), chosen)
        return targets

    async def _srv_fallback(self, name: str, secure: bool) -> list[Target]:
        targets: list[Target] = []
        # RFC 3263 4.1: with no NAPTR, query SRV for each transport we support and use
        # those the server has ("_sips" only for a SIPS URI).
        for chosen, prefix in SRV_PREFIXES.items():
            if secure and chosen != "TLS":
                continue
            targets += await self._srv_targets(f"{prefix}.{name}", chosen)
        return targets

    async def _srv_targets(self, owner: str, chosen: SipTransport) -> list[Target]:
        records = [
            SrvRecord(
                priority=rr.priority,
                weight=rr.weight,
                port=rr.port,
                target=_strip(rr.target.to_text()),
            )
            for rr in await self._query(owner, dns.rdatatype.SRV)
            if isinstance(rr, SRV)
        ]
        # RFC 2782: a target of "." means the service is decidedly not available.
        records = [r for r in records if r.target]
        targets: list[Target] = []
        for record in order_srv(records, self._rng):
            targets += await self._addresses(record.target, chosen, record.port)
        return targets

    async def _addresses(self, name: str, chosen: SipTransport, port: int) -> list[Target]:
        targets = []
        for rdtype in self._address_types:
            for rr in await self._query(name, rdtype):
                targets.append(Target(transport=chosen, host=name, address=rr.to_text(), port=port))
        return targets

    async def _query(
        self, name: str, rdtype: dns.rdatatype.RdataType
    ) -> tuple[dns.rdata.Rdata, ...]:
        """Return the records of one type for an absolute name, from cache or DNS.

        A missing name or type is an empty tuple (and cached); a DNS failure (timeout,
        SERVFAIL) is an empty tuple that is not cached, remembered for the error
        message if nothing else is found.
        """
        key = (name, rdtype)
        now = self._now()
        entry = self._cache.get(key)
        if entry is not None and entry.expires > now:
            return entry.records
        qname = dns.name.from_text(name)
        try:
            answer = await self._resolver.resolve(
                qname, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            self._last_failure = f"NXDOMAIN for {name}"
            self._cache[key] = _CacheEntry(now + self._negative_ttl, ())
            return ()
        except dns.exception.DNSException as exc:
            self._last_failure = f"{dns.rdatatype.to_text(rdtype)} {name}: {exc}"
            return ()
        if answer.rrset is None:
            self._cache[key] = _CacheEntry(now + self._negative_ttl, ())
            return ()
        records = tuple(answer.rrset)
        self._cache[key] = _CacheEntry(now + answer.rrset.ttl, records)
        return records


def _secure(scheme: str) -> bool:
    lowered = scheme.lower()
    if lowered not in ("sip", "sips"):
        raise ResolutionError(f"cannot locate a server for a {scheme!r} URI")
    return lowered == "sips"


def _explicit_transport(secure: bool, transport: str | None) -> SipTransport | None:
    if transport is None:
        return None
    chosen = _URI_TRANSPORTS.get((secure, transport.lower()))
    if chosen is None:
        scheme = "sips" if secure else "sip"
        raise ResolutionError(f"unsupported transport={transport} for a {scheme} URI")
    return chosen


async def resolve(
    scheme: str,
    host: str,
    port: int | None = None,
    transport: str | None = None,
    resolver: dns.asyncresolver.Resolver | None = None,
    *,
    rng: random.Random | None = None,
) -> list[Target]:
    """Resolve a SIP URI's next hop once, without a cache shared between calls.

    Long-lived code should keep one :class:`SipResolver` so answers are cached.

    Args:
        scheme: ``"sip"`` or ``"sips"``.
        host: URI host (domain name, IPv4 address or IPv6 reference).
        port: URI port, or None.
        transport: URI ``transport`` parameter, or None.
        resolver: DNS stub resolver; the system one by default.
        rng: random source for SRV weights.

    Returns:
        The targets in the order to try them.

    Raises:
        ResolutionError: bad scheme or transport, or no address found.
    """
    sip_resolver = SipResolver(resolver, rng=rng)
    return await sip_resolver.resolve(scheme=scheme, host=host, port=port, transport=transport)


def should_fail_over(
    *, status: int | None = None, timed_out: bool = False, transport_error: bool = False
) -> bool:
    """Whether RFC 3263 section 4.3 says to try the next target after this outcome.

    "If a failure occurs [...] either a transport failure or a timeout, or a 503
    response is received, the client SHOULD try the next element." Any other
    response, even a failure, is the server's answer and ends the search.

    Args:
        status: final response status, if one arrived.
        timed_out: the client transaction's Timer B or F fired.
        transport_error: the transport could not deliver the request.

    Returns:
        True to try the next target.
    """
    return transport_error or timed_out or status in FAILOVER_STATUSES


class TargetSet:
    """The targets of one request, walked in order on failure (RFC 3263 section 4.3).

    Example::

        targets = TargetSet(await resolver.resolve(scheme="sip", host="example.com"))
        target = targets.current
        ...  # send; on Timer B:
        target = targets.failed(timed_out=True)  # None when nothing is left

    RFC 3263 section 4.3 also requires an ACK for a non-2xx and a CANCEL to go where
    their INVITE went: send them to ``current`` and do not call :meth:`failed`.

    Args:
        targets: targets in the order to try, as :meth:`SipResolver.resolve` returns.
    """

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = tuple(targets)
        self._index = 0

    @property
    def current(self) -> Target | None:
        """The target to use now, or None once every target has failed."""
        return self.targets[self._index] if self._index < len(self.targets) else None

    @property
    def exhausted(self) -> bool:
        """True once every target has failed."""
        return self._index >= len(self.targets)

    @property
    def tried(self) -> tuple[Target, ...]:
        """Targets that have failed so far, in order."""
        return self.targets[: self._index]

    def failed(
        self, *, status: int | None = None, timed_out: bool = False, transport_error: bool = False
    ) -> Target | None:
        """Record that the current target failed and return the next one to try.

        Args:
            status: final response status from the current target, if any.
            timed_out: Timer B or F fired for the current target.
            transport_error: the current target could not be reached.

        Returns:
            The next target, or None if the outcome does not allow failover (a final
            response other than 503) or no target is left.
        """
        if self.exhausted or not should_fail_over(
            status=status, timed_out=timed_out, transport_error=transport_error
        ):
            return None
        self._index += 1
        return self.current

    def __iter__(self) -> Iterator[Target]:
        return iter(self.targets)

    def __len__(self) -> int:
        return len(self.targets)


__all__ = [
    "DEFAULT_PORTS",
    "FAILOVER_STATUSES",
    "NAPTR_SERVICES",
    "SRV_PREFIXES",
    "ResolutionError",
    "SipResolver",
    "SipTransport",
    "SrvRecord",
    "Target",
    "TargetSet",
    "order_srv",
    "resolve",
    "should_fail_over",
]
