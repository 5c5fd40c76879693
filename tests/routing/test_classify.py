"""Who calls from where: table-driven cases on the demo data, and order independence."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.classify import classify_call
from routing.config import DevicePatterns
from routing.directory import Directory
from routing.model import (
    CallClass,
    CallContext,
    CivicAddress,
    Customer,
    DeviceKind,
    NetworkKind,
    Site,
    SiteNetwork,
    Subscriber,
)
from routing.netindex import NetworkEntry, NetworkIndex, tie_key
from tests.routing.data import ALICE_DESK, DAVE_ATA, ctx, demo_directory

DIRECTORY = demo_directory()
ZOIPER = "Zoiper rv2.10.19.6"
MOBILE = "Setera Mobile/2.1 (iOS 17.2)"

# (case id, source, user, user agent, instance-id, class, site, device kind, misplaced)
CASES = [
    ("desk-phone-office-lan", "127.0.10.20", "alice", "Yealink SIP-T46S", ALICE_DESK,
     CallClass.OFFICE, "setera-espoo", DeviceKind.DESK_PHONE, False),
    ("desk-phone-trusted-nat", "127.0.20.1", "alice", None, ALICE_DESK,
     CallClass.OFFICE, "setera-espoo", DeviceKind.DESK_PHONE, False),
    ("desk-phone-outside-misplaced", "127.0.0.1", "alice", None, ALICE_DESK,
     CallClass.NOMADIC, None, DeviceKind.DESK_PHONE, True),
    ("desk-phone-vpn-misplaced", "127.0.30.7", "alice", "Yealink SIP-T46S", None,
     CallClass.NOMADIC, None, DeviceKind.DESK_PHONE, True),
    ("desk-phone-ipv6-office", "fd00:5060:10::20", "alice", None, ALICE_DESK,
     CallClass.OFFICE, "setera-espoo", DeviceKind.DESK_PHONE, False),
    ("desk-phone-ipv6-outside", "fd00:5060:99::20", "alice", None, ALICE_DESK,
     CallClass.NOMADIC, None, DeviceKind.DESK_PHONE, True),
    ("softphone-office-lan", "127.0.10.21", "bob", ZOIPER, None,
     CallClass.OFFICE, "setera-espoo", DeviceKind.SOFTPHONE, False),
    ("softphone-vpn", "127.0.30.8", "bob", ZOIPER, None,
     CallClass.NOMADIC, None, DeviceKind.SOFTPHONE, False),
    ("softphone-ipv6-nomadic", "fd00:5060:99::8", "bob", "baresip v3.9.0 (x86_64/Linux)", None,
     CallClass.NOMADIC, None, DeviceKind.SOFTPHONE, False),
    ("softphone-ipv6-office", "fd00:5060:10::8", "bob", "MicroSIP/3.21.3", None,
     CallClass.OFFICE, "setera-espoo", DeviceKind.SOFTPHONE, False),
    ("softphone-ipv4-mapped-office", "::ffff:127.0.10.22", "bob", "Linphone/5.2", None,
     CallClass.OFFICE, "setera-espoo", DeviceKind.SOFTPHONE, False),
    ("mobile-app-outside", "127.0.0.1", "carol", MOBILE, None,
     CallClass.NOMADIC, None, DeviceKind.MOBILE_APP, False),
    ("mobile-app-office-wifi", "127.0.10.30", "carol", MOBILE, None,
     CallClass.OFFICE, "setera-espoo", DeviceKind.MOBILE_APP, False),
    ("ata-office", "127.0.10.40", "dave", "Grandstream HT802 1.0.43.11", DAVE_ATA,
     CallClass.OFFICE, "setera-espoo", DeviceKind.ATA, False),
    ("ata-outside-misplaced", "127.0.0.1", "dave", None, DAVE_ATA,
     CallClass.NOMADIC, None, DeviceKind.ATA, True),
    ("ata-by-user-agent-outside", "127.0.0.1", "erin", "Grandstream HT802 1.0.43.11", None,
     CallClass.NOMADIC, None, DeviceKind.ATA, True),
    ("unknown-device-outside", "127.0.0.1", "erin", "FooPhone 1.0", None,
     CallClass.NOMADIC, None, DeviceKind.UNKNOWN, False),
    ("no-user-agent-office", "127.0.10.50", "erin", None, None,
     CallClass.OFFICE, "setera-espoo", DeviceKind.UNKNOWN, False),
    ("other-customer-network", "127.0.10.60", "frank", "Yealink SIP-T54W", None,
     CallClass.NOMADIC, None, DeviceKind.DESK_PHONE, True),
    ("own-customer-network", "127.0.40.9", "frank", "Yealink SIP-T54W", None,
     CallClass.OFFICE, "esimerkki-turku", DeviceKind.DESK_PHONE, False),
    # Issue 14 item 1: the site network places any caller, known or not (was NOMADIC).
    ("unknown-caller-office-lan", "127.0.10.70", None, ZOIPER, None,
     CallClass.OFFICE, "setera-espoo", DeviceKind.SOFTPHONE, False),
    ("unknown-caller-vpn-pool", "127.0.30.70", None, ZOIPER, None,
     CallClass.NOMADIC, None, DeviceKind.SOFTPHONE, False),
    ("unknown-caller-outside", "127.0.0.1", None, None, None,
     CallClass.NOMADIC, None, DeviceKind.UNKNOWN, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("source", "user", "ua", "instance", "call_class", "site", "kind", "misplaced"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_classification_table(
    source: str,
    user: str | None,
    ua: str | None,
    instance: str | None,
    call_class: CallClass,
    site: str | None,
    kind: DeviceKind,
    misplaced: bool,
) -> None:
    result = classify_call(ctx(DIRECTORY, source, user, ua=ua, instance=instance), DIRECTORY)
    assert result.call_class is call_class, result.reason
    assert (result.site.id if result.site else None) == site
    assert result.device_kind is kind
    assert result.misplaced is misplaced
    assert result.reason


def test_private_via_and_contact_claims_do_not_make_a_call_office() -> None:
    call = ctx(
        DIRECTORY,
        "127.0.0.1",
        "bob",
        ua=ZOIPER,
        contact="127.0.10.5",
        via=("192.168.1.10", "127.0.10.5"),
    )
    result = classify_call(call, DIRECTORY)
    assert result.call_class is CallClass.NOMADIC
    assert "192.168.1.10" in result.reason
    assert "ignored" in result.reason


def test_geolocation_is_recorded_but_not_used() -> None:
    geo = ("<https://lis.example.com/loc/abc>",)
    nomadic = classify_call(
        ctx(DIRECTORY, "127.0.0.1", "bob", ua=ZOIPER, geolocation=geo), DIRECTORY
    )
    assert nomadic.call_class is CallClass.NOMADIC
    assert "Geolocation" in nomadic.reason
    assert "lis.example.com" in nomadic.reason


def test_reason_quotes_hostile_user_agent_safely() -> None:
    result = classify_call(ctx(DIRECTORY, "127.0.0.1", "bob", ua="Zoiper\r\nX-Evil: 1"), DIRECTORY)
    assert "\r" not in result.reason
    assert "\n" not in result.reason


def _site(sid: str, customer: str, *nets: tuple[str, NetworkKind]) -> Site:
    return Site(
        id=sid,
        customer_id=customer,
        name=sid,
        address=CivicAddress(country="FI", a3="Espoo"),
        networks=tuple(SiteNetwork(cidr=ipaddress.ip_network(c), kind=k) for c, k in nets),
    )


def test_visiting_another_site_of_own_customer_is_office_at_that_site() -> None:
    directory = Directory.build(
        customers=[Customer(id="c", company="C")],
        sites=[
            _site("espoo", "c", ("10.1.0.0/16", NetworkKind.OFFICE_LAN)),
            _site("oulu", "c", ("10.2.0.0/16", NetworkKind.OFFICE_LAN)),
        ],
        subscribers=[Subscriber(e164="+358401", sip_user="u", customer_id="c", site_id="espoo")],
    )
    result = classify_call(ctx(directory, "10.2.3.4", "u", ua=ZOIPER), directory)
    assert result.call_class is CallClass.OFFICE
    assert result.site is not None and result.site.id == "oulu"
    assert "visiting" in result.reason


def test_longest_prefix_wins_over_shorter_network() -> None:
    directory = Directory.build(
        customers=[Customer(id="c", company="C")],
        sites=[
            _site("lan", "c", ("10.0.0.0/8", NetworkKind.OFFICE_LAN)),
            _site("vpn", "c", ("10.9.9.0/24", NetworkKind.VPN_POOL)),
        ],
        subscribers=[Subscriber(e164="+358401", sip_user="u", customer_id="c")],
    )
    inside_vpn = classify_call(ctx(directory, "10.9.9.9", "u", ua=ZOIPER), directory)
    assert inside_vpn.call_class is CallClass.NOMADIC
    assert "VPN" in inside_vpn.reason
    elsewhere = classify_call(ctx(directory, "10.9.8.9", "u", ua=ZOIPER), directory)
    assert elsewhere.call_class is CallClass.OFFICE


def test_same_network_of_two_customers_prefers_the_callers_customer() -> None:
    shared = ("192.0.2.0/24", NetworkKind.TRUSTED_NAT)
    directory = Directory.build(
        customers=[Customer(id="a", company="A"), Customer(id="b", company="B")],
        sites=[_site("a-site", "a", shared), _site("b-site", "b", shared)],
        subscribers=[
            Subscriber(e164="+358401", sip_user="ua", customer_id="a"),
            Subscriber(e164="+358402", sip_user="ub", customer_id="b"),
        ],
    )
    for user, site in (("ua", "a-site"), ("ub", "b-site")):
        result = classify_call(ctx(directory, "192.0.2.7", user), directory)
        assert result.call_class is CallClass.OFFICE
        assert result.site is not None and result.site.id == site


def test_device_patterns_follow_configured_order() -> None:
    patterns = DevicePatterns(
        patterns=((DeviceKind.ATA, "Cisco ATA"), (DeviceKind.DESK_PHONE, "Cisco"))
    )
    assert patterns.match("Cisco ATA 191") is DeviceKind.ATA
    assert patterns.match("Cisco/SPA504G") is DeviceKind.DESK_PHONE
    assert patterns.match("nothing") is None


# -- order independence ---------------------------------------------------------------

_V4 = st.builds(
    lambda a, n: ipaddress.ip_network((a, n), strict=False),
    st.integers(0x0A000000, 0x0A0000FF),
    st.integers(24, 32),
)
_V4_WIDE = st.builds(
    lambda a, n: ipaddress.ip_network((a, n), strict=False),
    st.integers(0x0A000000, 0x0A00FFFF),
    st.integers(8, 32),
)
_V6 = st.builds(
    lambda a, n: ipaddress.ip_network((a, n), strict=False),
    st.integers(0, 0xFFFF).map(lambda x: (0xFD00 << 112) | (x << 100)),
    st.integers(8, 128),
)
_NETWORK = st.tuples(st.one_of(_V4, _V4_WIDE, _V6), st.sampled_from(list(NetworkKind)))
_SITES = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.lists(_NETWORK, min_size=0, max_size=6)),
    min_size=1,
    max_size=8,
)
_SOURCES = st.lists(
    st.one_of(
        st.integers(0x0A000000, 0x0A0000FF).map(ipaddress.IPv4Address),
        st.integers(0x0A000000, 0x0A00FFFF).map(ipaddress.IPv4Address),
        st.integers(0, 0xFFFF).map(
            lambda x: ipaddress.IPv6Address((0xFD00 << 112) | (x << 100) | 5)
        ),
    ),
    min_size=1,
    max_size=10,
)


def _build(sites: list[Site], seed: int) -> Directory:
    rng = random.Random(seed)
    shuffled = [
        Site(
            id=s.id,
            customer_id=s.customer_id,
            name=s.name,
            address=s.address,
            networks=tuple(rng.sample(s.networks, len(s.networks))),
        )
        for s in rng.sample(sites, len(sites))
    ]
    return Directory.build(
        customers=[Customer(id=c, company=c) for c in "abc"],
        sites=shuffled,
        subscribers=[
            Subscriber(e164=f"+35840{i}", sip_user=c, customer_id=c) for i, c in enumerate("abc")
        ],
    )


@settings(max_examples=200, deadline=None)
@given(raw=_SITES, sources=_SOURCES, seed=st.integers(0, 2**32), user=st.sampled_from("abc"))
def test_answer_never_depends_on_order_of_sites_or_networks(
    raw: list[tuple[str, list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, NetworkKind]]]],
    sources: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    seed: int,
    user: str,
) -> None:
    sites = [
        Site(
            id=f"s{i}",
            customer_id=customer,
            name=f"s{i}",
            address=CivicAddress(country="FI"),
            networks=tuple(SiteNetwork(cidr=n, kind=k) for n, k in nets),
        )
        for i, (customer, nets) in enumerate(raw)
    ]
    first = _build(sites, 0)
    second = _build(sites, seed)
    for source in sources:
        a = classify_call(_bare(first, source, user), first)
        b = classify_call(_bare(second, source, user), second)
        assert (a.call_class, a.site.id if a.site else None, a.reason) == (
            b.call_class,
            b.site.id if b.site else None,
            b.reason,
        )
        assert (a.call_class, a.site.id if a.site else None) == _oracle(sites, source, user)


def _bare(
    directory: Directory, source: ipaddress.IPv4Address | ipaddress.IPv6Address, user: str
) -> CallContext:
    return CallContext(dialled="112", source=source, subscriber=directory.subscribers[user])


def _oracle(
    sites: list[Site], source: ipaddress.IPv4Address | ipaddress.IPv6Address, customer: str
) -> tuple[CallClass, str | None]:
    """The rules by linear scan: longest prefix, then caller's customer, then tie key."""
    hits = [
        (net, site)
        for site in sites
        for net in site.networks
        if net.cidr.version == source.version and source in net.cidr
    ]
    if not hits:
        return CallClass.NOMADIC, None
    longest = max(net.cidr.prefixlen for net, _ in hits)
    best = [(n, s) for n, s in hits if n.cidr.prefixlen == longest]
    entries = sorted(
        {NetworkEntry(network=n.cidr, kind=n.kind, site=s) for n, s in best}, key=tie_key
    )
    own = [e for e in entries if e.site.customer_id == customer]
    chosen = own[0] if own else entries[0]
    if chosen.site.customer_id == customer and chosen.kind is not NetworkKind.VPN_POOL:
        return CallClass.OFFICE, chosen.site.id
    return CallClass.NOMADIC, None


def test_index_size_and_empty_lookup() -> None:
    index = NetworkIndex.build([_site("x", "c", ("10.0.0.0/8", NetworkKind.OFFICE_LAN))])
    assert index.size == 1
    assert index.lookup(ipaddress.ip_address("11.0.0.1")) == ()
    assert index.lookup(ipaddress.ip_address("::1")) == ()
