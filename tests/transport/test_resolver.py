"""RFC 3263 next-hop resolution against a real DNS server on 127.0.0.1.

The server is a dnspython message handler behind an asyncio DatagramProtocol on a
random loopback port, serving a small ``.test`` zone (RFC 2606 reserves the TLD).
It logs every question, so tests can assert which lookups RFC 3263 made, and which it
did not make (no DNS for a numeric host, no NAPTR when a port is given, no query
while the cache is fresh). Addresses in the zone are never contacted.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import cast

import dns.asyncresolver
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import pytest_asyncio

from gateway.transport.hints import PeerHints
from gateway.transport.resolver import (
    ResolutionError,
    SipResolver,
    SrvRecord,
    Target,
    TargetSet,
    order_srv,
    resolve,
    should_fail_over,
)

TTL = 60

ZONE: dict[tuple[str, str], list[str]] = {
    # NAPTR -> SRV -> A/AAAA. Order 20 has UDP (preference 5) before TCP (10). The
    # SCTP service and the non-"S" flag must be ignored although they sort first.
    ("sip.naptr.test.", "NAPTR"): [
        '10 10 "S" "SIPS+D2T" "" _sips._tcp.sip.naptr.test.',
        '20 10 "S" "SIP+D2T" "" _sip._tcp.sip.naptr.test.',
        '20 5 "S" "SIP+D2U" "" _sip._udp.sip.naptr.test.',
        '5 10 "S" "SIP+D2S" "" _sip._sctp.sip.naptr.test.',
        '1 10 "A" "SIP+D2U" "" bogus.naptr.test.',
    ],
    ("_sips._tcp.sip.naptr.test.", "SRV"): ["0 0 5061 tls.naptr.test."],
    ("_sip._udp.sip.naptr.test.", "SRV"): ["0 0 5060 udp.naptr.test."],
    ("_sip._tcp.sip.naptr.test.", "SRV"): ["0 0 5060 tcp.naptr.test."],
    ("_sip._sctp.sip.naptr.test.", "SRV"): ["0 0 5060 sctp.naptr.test."],
    ("tls.naptr.test.", "A"): ["127.0.1.1"],
    ("tls.naptr.test.", "AAAA"): ["fd00:5060:1::1"],
    ("udp.naptr.test.", "A"): ["127.0.1.2"],
    ("tcp.naptr.test.", "A"): ["127.0.1.3"],
    ("sctp.naptr.test.", "A"): ["127.0.1.4"],
    ("bogus.naptr.test.", "A"): ["127.0.1.5"],
    # SRV without NAPTR. The domain's own A record must not be used.
    ("srv.test.", "A"): ["127.0.2.9"],
    ("_sip._udp.srv.test.", "SRV"): [
        "10 60 5060 a.srv.test.",
        "10 20 5070 b.srv.test.",
        "10 20 5080 c.srv.test.",
        "20 0 5090 backup.srv.test.",
        "5 0 5100 first.srv.test.",
    ],
    ("_sip._tcp.srv.test.", "SRV"): ["0 0 5060 a.srv.test."],
    ("a.srv.test.", "A"): ["127.0.2.1"],
    ("a.srv.test.", "AAAA"): ["fd00:5060:2::1"],
    ("b.srv.test.", "A"): ["127.0.2.2"],
    ("c.srv.test.", "A"): ["127.0.2.3"],
    ("backup.srv.test.", "A"): ["127.0.2.4"],
    ("first.srv.test.", "A"): ["127.0.2.5"],
    # Only A and AAAA.
    ("plain.test.", "A"): ["127.0.3.1"],
    ("plain.test.", "AAAA"): ["fd00:5060:3::1"],
    # A SIPS URI may use only SIPS+D2T although SIP+D2U sorts first.
    ("secure.test.", "NAPTR"): [
        '10 10 "S" "SIP+D2U" "" _sip._udp.secure.test.',
        '20 10 "S" "SIPS+D2T" "" _sips._tcp.secure.test.',
    ],
    ("_sip._udp.secure.test.", "SRV"): ["0 0 5060 plain.test."],
    ("_sips._tcp.secure.test.", "SRV"): ["0 0 5061 tls.naptr.test."],
    # NAPTR records, none usable: fall through to SRV.
    ("only-sctp.test.", "NAPTR"): ['10 10 "S" "SIP+D2S" "" _sip._sctp.only-sctp.test.'],
    ("_sip._tcp.only-sctp.test.", "SRV"): ["0 0 5065 plain.test."],
    # A centre that speaks UDP alone, said by NAPTR, and by SRV without NAPTR.
    ("udp-only.test.", "NAPTR"): ['10 10 "S" "SIP+D2U" "" _sip._udp.udp-only.test.'],
    ("_sip._udp.udp-only.test.", "SRV"): ["0 0 5070 udp.naptr.test."],
    ("_sip._udp.srv-udp.test.", "SRV"): ["0 0 5071 udp.naptr.test."],
}


class DnsServer(asyncio.DatagramProtocol):
    """A tiny authoritative server for :data:`ZONE` that logs every question."""

    def __init__(self, zone: dict[tuple[str, str], list[str]]) -> None:
        self.zone = zone
        self.names = {name for name, _ in zone}
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        texts = self.zone.get((name, rdtype))
        if texts:
            response.answer.append(
                dns.rrset.from_text_list(question.name, TTL, dns.rdataclass.IN, rdtype, texts)
            )
        elif not any(n == name or n.endswith("." + name) for n in self.names):
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)

    def asked(self, rdtype: str) -> list[str]:
        return [name for name, t in self.queries if t == rdtype]


@pytest_asyncio.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    loop = asyncio.get_running_loop()
    server = DnsServer(ZONE)
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    try:
        yield server
    finally:
        transport.close()


@pytest.fixture
def stub(dns_server: DnsServer) -> dns.asyncresolver.Resolver:
    assert dns_server.transport is not None
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.transport.get_extra_info("sockname")[1]
    resolver.timeout = 2.0
    resolver.lifetime = 4.0
    return resolver


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def t(transport: str, host: str, address: str, port: int) -> Target:
    return Target(transport=transport, host=host, address=address, port=port)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_naptr_srv_address_chain(
    dns_server: DnsServer, stub: dns.asyncresolver.Resolver
) -> None:
    targets = await resolve("sip", "sip.naptr.test", resolver=stub)
    assert targets == [
        t("TLS", "tls.naptr.test", "fd00:5060:1::1", 5061),
        t("TLS", "tls.naptr.test", "127.0.1.1", 5061),
        t("UDP", "udp.naptr.test", "127.0.1.2", 5060),
        t("TCP", "tcp.naptr.test", "127.0.1.3", 5060),
    ]
    assert dns_server.queries[0] == ("sip.naptr.test.", "NAPTR")
    assert dns_server.asked("SRV") == [
        "_sips._tcp.sip.naptr.test.",
        "_sip._udp.sip.naptr.test.",
        "_sip._tcp.sip.naptr.test.",
    ]
    # NAPTR found usable records: no SRV guessing, and the unusable ones were skipped.
    assert "bogus.naptr.test." not in dns_server.asked("A")
    assert "sctp.naptr.test." not in dns_server.asked("A")


@pytest.mark.asyncio
@pytest.mark.parametrize("host", ["sip.naptr.test", "secure.test"])
async def test_sips_uri_uses_only_sips_services(
    host: str, stub: dns.asyncresolver.Resolver
) -> None:
    targets = await resolve("sips", host, resolver=stub)
    assert targets == [
        t("TLS", "tls.naptr.test", "fd00:5060:1::1", 5061),
        t("TLS", "tls.naptr.test", "127.0.1.1", 5061),
    ]


@pytest.mark.asyncio
async def test_srv_without_naptr_orders_by_priority(
    dns_server: DnsServer, stub: dns.asyncresolver.Resolver
) -> None:
    targets = await resolve("sip", "srv.test", resolver=stub, rng=random.Random(7))
    udp = [x for x in targets if x.transport == "UDP"]
    tcp = [x for x in targets if x.transport == "TCP"]
    # Priority 5, then the priority-10 group in some weighted order, then 20.
    assert udp[0] == t("UDP", "first.srv.test", "127.0.2.5", 5100)
    assert {(x.host, x.port) for x in udp[1:5]} == {
        ("a.srv.test", 5060),
        ("b.srv.test", 5070),
        ("c.srv.test", 5080),
    }
    assert len(udp) == 6  # a.srv.test has an AAAA and an A record
    assert udp[-1] == t("UDP", "backup.srv.test", "127.0.2.4", 5090)
    assert tcp == [
        t("TCP", "a.srv.test", "fd00:5060:2::1", 5060),
        t("TCP", "a.srv.test", "127.0.2.1", 5060),
    ]
    # UDP targets come first (our preference among the SRV-found transports).
    assert targets[: len(udp)] == udp
    assert dns_server.asked("SRV") == [
        "_sip._udp.srv.test.",
        "_sip._tcp.srv.test.",
        "_sips._tcp.srv.test.",
    ]
    assert "srv.test." not in dns_server.asked("A")


@pytest.mark.asyncio
async def test_srv_weights_through_dns_follow_rfc2782(
    dns_server: DnsServer, stub: dns.asyncresolver.Resolver
) -> None:
    resolver = SipResolver(stub, rng=random.Random(2782), now=FakeClock())
    firsts: Counter[str] = Counter()
    runs = 600
    for _ in range(runs):
        targets = await resolver.resolve(scheme="sip", host="srv.test", transport="udp")
        firsts[targets[1].host] += 1  # targets[0] is the lone priority-5 record
    # Weights 60/20/20: the heavy one leads about 60% of the time (binomial sd ~2%).
    assert 0.52 < firsts["a.srv.test"] / runs < 0.68
    assert 0.13 < firsts["b.srv.test"] / runs < 0.27
    assert 0.13 < firsts["c.srv.test"] / runs < 0.27
    # Every run after the first was served from the cache.
    assert dns_server.asked("SRV") == ["_sip._udp.srv.test."]


def test_order_srv_weight_statistics() -> None:
    rng = random.Random(12345)
    records = [
        SrvRecord(priority=1, weight=0, port=1, target="zero"),
        SrvRecord(priority=1, weight=70, port=2, target="heavy"),
        SrvRecord(priority=1, weight=30, port=3, target="light"),
        SrvRecord(priority=0, weight=5, port=4, target="primary"),
        SrvRecord(priority=2, weight=0, port=5, target="last"),
    ]
    firsts: Counter[str] = Counter()
    runs = 20_000
    for _ in range(runs):
        ordered = order_srv(records, rng)
        assert sorted(ordered, key=lambda r: r.port) == sorted(records, key=lambda r: r.port)
        assert ordered[0].target == "primary"
        assert ordered[-1].target == "last"
        firsts[ordered[1].target] += 1
    # RFC 2782 selection: P(first) = weight / (sum + 1) for weighted records, the +1
    # being the draw of 0 that picks the zero-weight record placed at the front.
    assert firsts["heavy"] / runs == pytest.approx(70 / 101, abs=0.015)
    assert firsts["light"] / runs == pytest.approx(30 / 101, abs=0.015)
    assert firsts["zero"] / runs == pytest.approx(1 / 101, abs=0.004)


def test_order_srv_all_zero_weights_keeps_every_record() -> None:
    rng = random.Random(1)
    records = [SrvRecord(priority=0, weight=0, port=p, target=f"h{p}") for p in range(4)]
    firsts = Counter(order_srv(records, rng)[0].port for _ in range(400))
    assert set(firsts) == {0, 1, 2, 3}
    assert len(order_srv(records, rng)) == 4


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("scheme", "host", "port", "transport", "expected"),
    [
        ("sip", "127.0.0.1", None, None, t("UDP", "127.0.0.1", "127.0.0.1", 5060)),
        ("sips", "127.0.0.1", None, None, t("TLS", "127.0.0.1", "127.0.0.1", 5061)),
        ("sip", "[::1]", None, None, t("UDP", "::1", "::1", 5060)),
        ("sip", "::1", 5080, "tcp", t("TCP", "::1", "::1", 5080)),
        ("sips", "[::1]", 5071, None, t("TLS", "::1", "::1", 5071)),
        ("SIP", "127.0.0.2", 5090, "TLS", t("TLS", "127.0.0.2", "127.0.0.2", 5090)),
    ],
)
async def test_numeric_host_needs_no_dns(
    dns_server: DnsServer,
    stub: dns.asyncresolver.Resolver,
    scheme: str,
    host: str,
    port: int | None,
    transport: str | None,
    expected: Target,
) -> None:
    assert await resolve(scheme, host, port, transport, resolver=stub) == [expected]
    assert dns_server.queries == []


@pytest.mark.asyncio
async def test_explicit_port_skips_naptr_and_srv(
    dns_server: DnsServer, stub: dns.asyncresolver.Resolver
) -> None:
    targets = await resolve("sip", "plain.test", 5070, resolver=stub)
    assert targets == [
        t("UDP", "plain.test", "fd00:5060:3::1", 5070),
        t("UDP", "plain.test", "127.0.3.1", 5070),
    ]
    sips = await resolve("sips", "plain.test", 5071, resolver=stub)
    assert {x.transport for x in sips} == {"TLS"}
    # Even a domain with NAPTR and SRV records is looked up by address only.
    naptr_domain = await resolve("sip", "srv.test", 5062, resolver=stub)
    assert naptr_domain == [t("UDP", "srv.test", "127.0.2.9", 5062)]
    assert dns_server.asked("NAPTR") == []
    assert dns_server.asked("SRV") == []


@pytest.mark.asyncio
async def test_transport_param_selects_srv_of_that_transport(
    dns_server: DnsServer, stub: dns.asyncresolver.Resolver
) -> None:
    tcp = await resolve("sip", "srv.test", transport="tcp", resolver=stub)
    assert tcp == [
        t("TCP", "a.srv.test", "fd00:5060:2::1", 5060),
        t("TCP", "a.srv.test", "127.0.2.1", 5060),
    ]
    tls = await resolve("sip", "secure.test", transport="tls", resolver=stub)
    assert {(x.transport, x.host, x.port) for x in tls} == {("TLS", "tls.naptr.test", 5061)}
    # No SRV for that transport: the host's addresses on the default port.
    plain = await resolve("sip", "plain.test", transport="TCP", resolver=stub)
    assert plain == [
        t("TCP", "plain.test", "fd00:5060:3::1", 5060),
        t("TCP", "plain.test", "127.0.3.1", 5060),
    ]
    assert dns_server.asked("NAPTR") == []
    assert dns_server.asked("SRV") == [
        "_sip._tcp.srv.test.",
        "_sips._tcp.secure.test.",
        "_sip._tcp.plain.test.",
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("scheme", "transport", "port"), [("sip", "UDP", 5060), ("sips", "TLS", 5061)]
)
async def test_no_naptr_no_srv_uses_addresses_on_default_port(
    stub: dns.asyncresolver.Resolver, scheme: str, transport: str, port: int
) -> None:
    targets = await resolve(scheme, "plain.test", resolver=stub)
    assert targets == [
        t(transport, "plain.test", "fd00:5060:3::1", port),
        t(transport, "plain.test", "127.0.3.1", port),
    ]


@pytest.mark.asyncio
async def test_unusable_naptr_falls_back_to_srv(stub: dns.asyncresolver.Resolver) -> None:
    targets = await resolve("sip", "only-sctp.test", resolver=stub)
    assert targets == [
        t("TCP", "plain.test", "fd00:5060:3::1", 5065),
        t("TCP", "plain.test", "127.0.3.1", 5065),
    ]


@pytest.mark.asyncio
async def test_prefer_ipv4_lists_a_before_aaaa(stub: dns.asyncresolver.Resolver) -> None:
    resolver = SipResolver(stub, prefer_ipv6=False)
    targets = await resolver.resolve(scheme="sip", host="plain.test")
    assert [x.address for x in targets] == ["127.0.3.1", "fd00:5060:3::1"]


@pytest.mark.asyncio
async def test_nxdomain_is_a_resolution_error(stub: dns.asyncresolver.Resolver) -> None:
    with pytest.raises(ResolutionError, match="NXDOMAIN") as info:
        await resolve("sip", "nowhere.test", resolver=stub)
    assert info.value.status_hint == 503


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("scheme", "transport", "match"),
    [
        ("sips", "udp", "unsupported transport"),
        ("sip", "sctp", "unsupported transport"),
        ("tel", None, "'tel' URI"),
    ],
)
async def test_bad_uri_is_a_resolution_error(
    dns_server: DnsServer,
    stub: dns.asyncresolver.Resolver,
    scheme: str,
    transport: str | None,
    match: str,
) -> None:
    with pytest.raises(ResolutionError, match=match):
        await resolve(scheme, "plain.test", transport=transport, resolver=stub)
    assert dns_server.queries == []


@pytest.mark.asyncio
async def test_dns_timeout_is_a_resolution_error() -> None:
    loop = asyncio.get_running_loop()
    # A bound socket that never answers: every query times out.
    silent, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        stub = dns.asyncresolver.Resolver(configure=False)
        stub.nameservers = ["127.0.0.1"]
        stub.port = silent.get_extra_info("sockname")[1]
        stub.timeout = stub.lifetime = 0.2
        with pytest.raises(
            ResolutionError, match=r"no SIP target for sip:plain\.test: A plain\.test"
        ):
            await resolve("sip", "plain.test", 5060, resolver=stub)
    finally:
        silent.close()


@pytest.mark.asyncio
async def test_cache_honours_ttl_with_injected_clock(
    dns_server: DnsServer, stub: dns.asyncresolver.Resolver
) -> None:
    clock = FakeClock()
    resolver = SipResolver(stub, now=clock, negative_ttl=30)
    first = await resolver.resolve(scheme="sip", host="sip.naptr.test")
    asked = len(dns_server.queries)
    clock.now += 29
    assert await resolver.resolve(scheme="sip", host="sip.naptr.test") == first
    assert len(dns_server.queries) == asked
    # Past negative_ttl, below the records' TTL: only the empty answers (no AAAA for
    # udp/tcp.naptr.test) are asked again.
    clock.now += 2
    assert await resolver.resolve(scheme="sip", host="sip.naptr.test") == first
    assert dns_server.queries[asked:] == [
        ("udp.naptr.test.", "AAAA"),
        ("tcp.naptr.test.", "AAAA"),
    ]
    clock.now = 1000.0 + TTL + 2  # past every TTL: the whole chain is asked again
    assert await resolver.resolve(scheme="sip", host="sip.naptr.test") == first
    assert dns_server.queries[asked + 2 :] == dns_server.queries[:asked]

    # NXDOMAIN is cached for negative_ttl too.
    for _ in range(2):
        with pytest.raises(ResolutionError):
            await resolver.resolve(scheme="sip", host="gone.test", port=5060)
    assert dns_server.asked("AAAA").count("gone.test.") == 1
    clock.now += 31
    with pytest.raises(ResolutionError):
        await resolver.resolve(scheme="sip", host="gone.test", port=5060)
    assert dns_server.asked("AAAA").count("gone.test.") == 2


@pytest.mark.asyncio
async def test_target_set_fails_over_in_order(stub: dns.asyncresolver.Resolver) -> None:
    targets = TargetSet(await resolve("sip", "sip.naptr.test", resolver=stub))
    assert len(targets) == 4
    order = [targets.current]
    order.append(targets.failed(transport_error=True))
    order.append(targets.failed(timed_out=True))
    order.append(targets.failed(status=503))
    assert order == list(targets)
    assert targets.tried == tuple(order[:3])
    # Any final response other than 503 is the answer: no failover, no advance.
    assert targets.failed(status=486) is None
    assert targets.current == order[3]
    assert targets.failed(timed_out=True) is None
    assert targets.exhausted
    assert targets.current is None
    assert targets.failed(transport_error=True) is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"status": 503}, True),
        ({"timed_out": True}, True),
        ({"transport_error": True}, True),
        ({"status": 500}, False),
        ({"status": 404}, False),
        ({"status": 200}, False),
        ({}, False),
    ],
)
def test_should_fail_over(kwargs: dict[str, object], expected: bool) -> None:
    assert should_fail_over(**kwargs) is expected  # type: ignore[arg-type]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("host", "port", "udp_only"),
    [("udp-only.test", 5070, True), ("srv-udp.test", 5071, True), ("srv.test", 5060, False)],
)
async def test_dns_listing_udp_alone_marks_the_targets_udp_only(
    stub: dns.asyncresolver.Resolver, host: str, port: int, udp_only: bool
) -> None:
    # RFC 3263 4.1: NAPTR (or, without it, SRV) records list the transports the server
    # supports; with UDP alone the 18.1.1 size switch must not try TCP there.
    hints = PeerHints()
    resolver = SipResolver(stub, rng=random.Random(1), hints=hints)
    targets = await resolver.resolve(scheme="sip", host=host)
    assert port in {x.port for x in targets}
    assert all(hints.udp_only(x.address, x.port) is udp_only for x in targets), targets
    # A numeric host or a plain A record says nothing of what the server supports.
    await resolver.resolve(scheme="sip", host="plain.test")
    assert not hints.udp_only("127.0.3.1", 5060)
    # The URI's own transport=udp says it too.
    await resolver.resolve(scheme="sip", host="plain.test", transport="udp")
    assert hints.udp_only("127.0.3.1", 5060)
