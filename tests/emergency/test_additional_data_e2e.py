"""RFC 7852 Additional Data at the centre (issue 14, item 4; "What it must show" 1).

SIPp places emergency calls through the running app; the Python centres record the
INVITEs they receive, and the tests parse what arrived: each Call-Info's cid: names a
body part of the INVITE, and each part is valid XML of its block
(tests/emergency/additional_data_check.py, independent of the builder).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emergency.additional_data_check import NS_VCARD, additional_data_blocks, text
from tests.emergency.rig import (
    OFFICE_IP,
    VPN_IP,
    assert_emergency_invite,
    call,
    emergency_rig,
    sip_ruri,
)

pytestmark = [pytest.mark.sipp, pytest.mark.postgres, pytest.mark.asyncio]


async def test_office_call_carries_the_four_blocks_at_the_centre(
    pg_dsn: str, tmp_path: Path
) -> None:
    routing = {"provider": {"name": "Operaattori Oy", "id": "operaattori.fi",
                            "contact": "sip:noc@operaattori.fi", "languages": ["fi", "en"]}}  # fmt: skip
    async with emergency_rig(pg_dsn, tmp_path, routing=routing) as rig:
        await call(rig, "alice", sip_ruri("112", rig), source=OFFICE_IP)
    [invite] = rig.centres["kerava"].invites
    assert_emergency_invite(invite, e164="+358401000001", civic=True)
    blocks = additional_data_blocks(
        invite.get("content-type") or "", invite.body, invite.all("call-info")
    )
    assert set(blocks) == {"ProviderInfo", "ServiceInfo", "DeviceInfo", "SubscriberInfo"}
    provider = blocks["ProviderInfo"]
    assert text(provider, "ProviderInfo", "DataProviderString") == "Operaattori Oy"
    assert text(provider, "ProviderInfo", "ProviderID") == "operaattori.fi"
    assert text(provider, "ProviderInfo", "ContactURI") == "sip:noc@operaattori.fi"
    ns = "{urn:ietf:params:xml:ns:EmergencyCallData:ProviderInfo}"
    assert [e.text for e in provider.findall(f"{ns}Language")] == ["fi", "en"]
    assert text(blocks["ServiceInfo"], "ServiceInfo", "ServiceMobility") == "Fixed"
    assert text(blocks["ServiceInfo"], "ServiceInfo", "ServiceEnvironment") == "Business"
    # uac-emergency.xml says it is a Yealink desk phone.
    assert text(blocks["DeviceInfo"], "DeviceInfo", "DeviceClassification") == "fixed"
    subscriber = blocks["SubscriberInfo"]
    assert subscriber.get("privacyRequested") == "false"
    vcard = f"{{{NS_VCARD}}}"
    assert subscriber.findtext(f".//{vcard}tel/{vcard}uri") == "tel:+358401000001"
    assert subscriber.findtext(f".//{vcard}fn/{vcard}text") == "Alice (desk phone)"
    assert subscriber.findtext(f".//{vcard}lang/{vcard}language-tag") == "fi"
    # One provider reference ties the blocks together (RFC 7852 4.1.1).
    references = {text(root, name, "DataProviderReference") for name, root in blocks.items()}
    assert len(references) == 1
    assert references.pop().endswith("@operaattori.fi")


async def test_nomadic_call_says_nomadic_and_restricted_caller_asks_privacy(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        await call(rig, "erin", sip_ruri("112", rig), source=VPN_IP)
    [invite] = rig.centres["national"].invites
    blocks = additional_data_blocks(
        invite.get("content-type") or "", invite.body, invite.all("call-info")
    )
    assert text(blocks["ServiceInfo"], "ServiceInfo", "ServiceMobility") == "Nomadic"
    assert blocks["SubscriberInfo"].get("privacyRequested") == "true"


async def test_subscriber_info_withheld_from_a_restricted_caller_when_configured(
    pg_dsn: str, tmp_path: Path
) -> None:
    routing = {"additional_data": {"subscriber_info": "unless-restricted"}}
    async with emergency_rig(pg_dsn, tmp_path, routing=routing) as rig:
        await call(rig, "erin", sip_ruri("112", rig), source=OFFICE_IP)
    [invite] = rig.centres["kerava"].invites
    blocks = additional_data_blocks(
        invite.get("content-type") or "", invite.body, invite.all("call-info")
    )
    assert set(blocks) == {"ProviderInfo", "ServiceInfo", "DeviceInfo"}
    assert b"+358401000005" not in invite.body.split(b"application/EmergencyCallData")[-1]
