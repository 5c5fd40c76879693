"""Routing benchmark: call classification and dial-string recognition rates.

Run: ``.venv/bin/python -m tests.bench.bench_routing`` (one run, prints figures).

Data: 10,000 sites of 2,500 customers with 50,000 networks (per site: an IPv4 office
LAN /24, a trusted NAT /32, a VPN pool /26, an IPv6 office /64 and a /56 for a second
IPv6 LAN), 20,000 subscribers, emergency centres from the demo data. Calls: sources
drawn so that about 70% fall in a registered network (half of those on a VPN pool or
another customer's network) and 30% outside every network, IPv4 and IPv6 mixed, with a
mix of device User-Agents and instance-ids. Targets: >= 100,000 classifications/s.
The human-readable reason is rendered on demand (logs, headers), so it is timed
separately, as is the whole decision (classification, recognition, PSAP route), and
the caller-ID policy (issue 15: ranges of every customer, devices presenting their own,
their switchboard's, another customer's or a foreign number) as a share of a call's CPU.
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Callable

from routing import callerid
from routing.classify import classify_call
from routing.config import RoutingConfig
from routing.directory import Directory
from routing.emergency import recognise_emergency
from routing.model import (
    CallContext,
    CivicAddress,
    Customer,
    Device,
    DeviceKind,
    NetworkKind,
    PresentedIdentity,
    Site,
    SiteNetwork,
    Subscriber,
)
from routing.numbers import NumberRange
from routing.policy import decide
from tests.routing.data import demo_data

SITES = 10_000
CUSTOMERS = 2_500
SUBSCRIBERS = 20_000
CALLS = 200_000
TARGET_PER_SECOND = 100_000

USER_AGENTS = (
    "Yealink SIP-T46S 66.86.0.15",
    "Zoiper rv2.10.19.6",
    "Setera Mobile/2.1 (iOS 17.2)",
    "Grandstream HT802 1.0.43.11",
    "MicroSIP/3.21.3",
    "Linphone/5.2.0 (Android 14)",
    "FooPhone 1.0",
    None,
)


def build(rng: random.Random) -> tuple[Directory, list[CallContext]]:
    """Builds the directory and the calls to classify."""
    sites = []
    for i in range(SITES):
        v4 = 0x0A000000 + (i << 8)  # 10.0.0.0/8, one /24 per site
        v6 = (0xFD00 << 112) | (i << 72)
        networks = (
            SiteNetwork(cidr=ipaddress.IPv4Network((v4, 24)), kind=NetworkKind.OFFICE_LAN),
            SiteNetwork(
                cidr=ipaddress.IPv4Network((0x64400000 + i, 32)), kind=NetworkKind.TRUSTED_NAT
            ),
            SiteNetwork(
                cidr=ipaddress.IPv4Network((0xAC100000 + (i << 6), 26)), kind=NetworkKind.VPN_POOL
            ),
            SiteNetwork(cidr=ipaddress.IPv6Network((v6, 64)), kind=NetworkKind.OFFICE_LAN),
            SiteNetwork(
                cidr=ipaddress.IPv6Network(((0xFD01 << 112) | (i << 72), 56)),
                kind=NetworkKind.OFFICE_LAN,
            ),
        )
        sites.append(
            Site(
                id=f"site{i:05d}",
                customer_id=f"cust{i % CUSTOMERS:04d}",
                name=f"Site {i}",
                address=CivicAddress(country="FI", a3=rng.choice(["Espoo", "Oulu", "Turku"])),
                networks=networks,
            )
        )
    subscribers = [
        Subscriber(
            e164=f"+35840{n:07d}",
            sip_user=f"user{n:05d}",
            customer_id=f"cust{(n // 8) % CUSTOMERS:04d}",
            site_id=f"site{(n // 2) % SITES:05d}",
        )
        for n in range(SUBSCRIBERS)
    ]
    devices = [
        Device(id=f"dev{n:05d}", kind=DeviceKind.DESK_PHONE, sip_user=s.sip_user,
               instance_id=f"urn:uuid:00000000-0000-1000-8000-{n:012x}")
        for n, s in enumerate(subscribers[: SUBSCRIBERS // 4])
    ]  # fmt: skip
    demo = demo_data()
    # Caller ID (issue 15): each customer holds its 8 subscribers' numbers one by one
    # and a switchboard block +358 91 cccc xxx.
    ranges = [NumberRange(customer_id=s.customer_id, prefix=s.e164) for s in subscribers] + [
        NumberRange(customer_id=f"cust{c:04d}", prefix=f"+35891{c:04d}", wildcards=3)
        for c in range(CUSTOMERS)
    ]
    directory = Directory.build(
        customers=[Customer(id=f"cust{c:04d}", company=f"C{c}") for c in range(CUSTOMERS)],
        sites=sites,
        subscribers=subscribers,
        devices=devices,
        centres=demo.centres,
        number_ranges=ranges,
    )
    calls = []
    for _ in range(CALLS):
        sub = rng.choice(subscribers)
        roll = rng.random()
        i = rng.randrange(SITES)
        if roll < 0.35:
            source: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                0x0A000000 + (i << 8) + rng.randrange(1, 255)
            )
        elif roll < 0.45:
            source = ipaddress.IPv4Address(0x64400000 + i)
        elif roll < 0.55:
            source = ipaddress.IPv4Address(0xAC100000 + (i << 6) + rng.randrange(64))
        elif roll < 0.70:
            source = ipaddress.IPv6Address((0xFD00 << 112) | (i << 72) | rng.getrandbits(64))
        elif roll < 0.85:
            source = ipaddress.IPv4Address(0xC0000000 + rng.getrandbits(24))
        else:
            source = ipaddress.IPv6Address((0x2001 << 112) | rng.getrandbits(100))
        n = int(sub.sip_user[4:])
        instance = f"<urn:uuid:00000000-0000-1000-8000-{n:012x}>" if n < SUBSCRIBERS // 4 else None
        calls.append(
            CallContext(
                dialled=rng.choice(("sip:112@gw;user=phone", "sip:0501234567@gw", "tel:+358112")),
                source=source,
                user_agent=rng.choice(USER_AGENTS),
                instance_id=instance,
                subscriber=sub,
                contact_host="192.168.1.10",
                presented=presented_identity(rng, sub),
            )
        )
    return directory, calls


def presented_identity(rng: random.Random, sub: Subscriber) -> PresentedIdentity:
    """What a device presents: its own number (40 %), its customer's switchboard
    (30 %), another customer's number (20 %) or a foreign one (10 %); a display name
    holding digits one time in ten."""
    customer = int(sub.customer_id[4:])
    roll = rng.random()
    if roll < 0.4:
        preferred = sub.e164
    elif roll < 0.7:
        preferred = f"+35891{customer:04d}{rng.randrange(1000):03d}"
    elif roll < 0.9:
        preferred = f"+35891{(customer + 1) % CUSTOMERS:04d}000"
    else:
        preferred = "+442079460000"
    display = "+358401234567" if rng.random() < 0.1 else "Reception"
    return PresentedIdentity(
        from_user=sub.sip_user, from_host="gw", display_name=display, preferred=preferred
    )


def _rate(label: str, count: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    rate = count / elapsed
    print(f"{label:<44} {rate:>12,.0f}/s  ({count:,} in {elapsed:.2f} s)")
    return rate


def main() -> None:
    """Builds the data, then prints classification, recognition and decision rates."""
    rng = random.Random(5060)
    start = time.perf_counter()
    directory, calls = build(rng)
    built = time.perf_counter() - start
    t0 = time.perf_counter()
    Directory.build(
        customers=directory.customers.values(),
        sites=directory.sites.values(),
        subscribers=directory.subscribers.values(),
        devices=[],
    )
    index_time = time.perf_counter() - t0
    print(f"sites {len(directory.sites):,}, networks {directory.networks.size:,},"
          f" subscribers {len(directory.subscribers):,}")  # fmt: skip
    print(f"data generation {built:.2f} s; Directory.build (index) {index_time:.2f} s")

    def classify_all() -> None:
        for call in calls:
            classify_call(call, directory)

    rate = _rate("classify_call", len(calls), classify_all)

    def classify_and_render() -> None:
        for call in calls:
            _ = classify_call(call, directory).reason

    _rate("classify_call + render reason", len(calls), classify_and_render)

    config = RoutingConfig()
    dialled = [
        "112", "0112", "sip:112@gw;user=phone", "sip:0501234567@gw.example;user=phone",
        "tel:+358112", "urn:service:sos.fire", "sip:alice@gw.example", "0501121234",
        "sips:9112@gw:5061;transport=tls", "urn:service:test.sos",
    ] * (CALLS // 10)  # fmt: skip
    emergency = config.emergency

    def recognise_all() -> None:
        for text in dialled:
            recognise_emergency(text, emergency)

    _rate("recognise_emergency", len(dialled), recognise_all)

    subset = calls[: CALLS // 4]

    def decide_all() -> None:
        for call in subset:
            decide(call, directory, config)

    decide_rate = _rate("decide (classify + recognise + route)", len(subset), decide_all)

    # Issue 15's goal is the caller-ID policy's share of a call's cost: its own time
    # per call, to set against the gateway's CPU per call that tests/bench/ab.py
    # measures (the gateway bench routes no call through routing/, so it cannot
    # show this cost itself).
    ordinary = [c for c in calls if "0501234567" in c.dialled][: CALLS // 4]
    caller_id = config.caller_id

    def outbound_all() -> None:
        for call in ordinary:
            assert call.subscriber is not None
            callerid.outbound(call.presented, call.subscriber, directory, caller_id)

    policy_rate = _rate("caller-ID policy (callerid.outbound)", len(ordinary), outbound_all)
    print(
        f"caller-ID policy: {1e6 / policy_rate:.2f} us per ordinary call"
        f" ({100 * decide_rate / policy_rate:.1f} % of a decide, {1e6 / decide_rate:.1f} us)"
    )
    verdict = "meets" if rate >= TARGET_PER_SECOND else "MISSES"
    print(f"classification {verdict} the target of {TARGET_PER_SECOND:,}/s")


if __name__ == "__main__":
    main()
