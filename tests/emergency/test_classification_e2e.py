"""Who calls from where, end to end: ordinary calls placed with SIPp from office,
VPN-pool and outside loopback addresses reach the PBX with the class and the reason
in the documented headers (X-Voipgw-Class, X-Voipgw-Reason) and the caller's
asserted identity (RFC 3325)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emergency.rig import call, emergency_rig, sip_ruri

pytestmark = [pytest.mark.asyncio, pytest.mark.sipp, pytest.mark.postgres, pytest.mark.interop]


@pytest.mark.parametrize(
    ("source", "caller", "expected_class", "reason_part"),
    [
        ("127.0.10.5", "alice", "office", "office-lan 127.0.10.0/24"),
        ("127.0.20.7", "alice", "office", "trusted-nat"),
        ("127.0.30.9", "bob", "nomadic", "vpn"),
        ("127.0.0.1", "bob", "nomadic", "outside every registered site network"),
    ],
)
async def test_ordinary_call_carries_its_class(
    pg_dsn: str, tmp_path: Path, source: str, caller: str, expected_class: str, reason_part: str
) -> None:
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        await call(rig, caller, sip_ruri("+358201234567", rig), source=source)
    (invite,) = rig.pbx.invites
    assert (invite.get("x-voipgw-class") or "").split(";")[0] == expected_class
    assert reason_part in (invite.get("x-voipgw-reason") or "").lower()
    assert "tel:+35840100000" in (invite.get("p-asserted-identity") or "")
    assert not any(peer.invites for peer in rig.centres.values())
    (ended,) = rig.ended
    assert ended.facts.call_class == expected_class
