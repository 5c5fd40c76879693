"""Shared test data: the demo sites file and small builders."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from gateway.sip.uri import telephone_user
from routing.config import EmergencyConfig
from routing.directory import Directory
from routing.emergency import DialPlan
from routing.model import CallContext, Subscriber
from routing.sites_file import SitesData, parse_sites

DEMO_SITES = Path(__file__).parents[2] / "deploy" / "demo" / "sites.toml"

ALICE_DESK = "<urn:uuid:00000000-0000-1000-8000-A11CE0000001>"
DAVE_ATA = "urn:uuid:00000000-0000-1000-8000-da7e00000004"

#: The default emergency numbers, as the gateway recognises them when it builds a
#: call's context (gateway.service.router.call_context).
DIAL_PLAN = DialPlan(EmergencyConfig())


def demo_data() -> SitesData:
    return parse_sites(DEMO_SITES.read_text(encoding="utf-8"), "toml")


def demo_directory() -> Directory:
    return demo_data().directory()


def ctx(
    directory: Directory,
    source: str,
    user: str | None,
    *,
    dialled: str = "sip:112@gw.example;user=phone",
    ua: str | None = None,
    instance: str | None = None,
    contact: str | None = None,
    via: tuple[str, ...] = (),
    geolocation: tuple[str, ...] = (),
) -> CallContext:
    subscriber: Subscriber | None = directory.subscribers[user] if user else None
    return CallContext(
        dialled=dialled,
        source=ipaddress.ip_address(source),
        via_sent_by=via,
        contact_host=contact,
        user_agent=ua,
        instance_id=instance,
        subscriber=subscriber,
        geolocation=geolocation,
        dialled_user=telephone_user(dialled),
        emergency=DIAL_PLAN.match(dialled),
    )
