"""The location object of nomadic emergency calls on the wire (issue 13, defect 3).

RFC 6442 section 4.1: a ``cid:`` URI in Geolocation names a body part of the same
message. A nomadic call is announced first (``announce-then-route``), which anchors
its media on the gateway, so the centre's INVITE carries the relay's SDP: these tests
run with a ``[media]`` section, as the demo does.

The B2BUA once replaced the whole body of an anchored call with the relay's SDP, the
PIDF-LO part included, and kept the Geolocation header: a reference to nothing. The
route now carries what builds the multipart around the SDP actually sent
(``Route.wrap_sdp``), so the part the header names is always there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emergency.pidf_check import split_multipart
from tests.emergency.rig import (
    OFFICE_IP,
    VPN_IP,
    SipMessage,
    assert_emergency_invite,
    call,
    emergency_rig,
    sip_ruri,
)
from tests.interop.sipp import SippUas, free_port

pytestmark = [pytest.mark.sipp, pytest.mark.postgres, pytest.mark.asyncio]

#: The demo's [media] section on the rig's loopback address.
MEDIA = {"bind_address": "127.0.0.1", "rtp_port_min": 21000, "rtp_port_max": 21999}


def geolocation_parts(invite: SipMessage) -> tuple[list[str], set[str]]:
    """The cid: references of the Geolocation headers, and the body's Content-IDs."""
    cids = [
        v.strip()[len("<cid:") : -1]
        for v in invite.all("geolocation")
        if v.strip().startswith("<cid:") and v.strip().endswith(">")
    ]
    content_type = invite.get("content-type") or ""
    if not content_type.startswith("multipart/"):
        return cids, set()
    parts = split_multipart(content_type, invite.body)
    return cids, {h["content-id"].strip("<>") for h, _ in parts.values() if "content-id" in h}


async def test_nomadic_call_with_anchored_media_names_no_missing_body_part(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with emergency_rig(pg_dsn, tmp_path, policy="announce-then-route", media=MEDIA) as rig:
        await call(rig, "bob", sip_ruri("112", rig), source=VPN_IP)
    [invite] = rig.centres["national"].invites
    cids, content_ids = geolocation_parts(invite)
    # RFC 6442 4.1: every cid: reference names a body part of this INVITE.
    assert cids, invite.raw[:2000]
    assert set(cids) <= content_ids, (cids, content_ids, invite.raw[:2000])
    assert (invite.get("x-voipgw-class") or "").startswith("nomadic")
    assert invite.get("resource-priority") == "esnet.1"


async def test_nomadic_call_with_anchored_media_carries_the_pidf_it_references(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with emergency_rig(pg_dsn, tmp_path, policy="announce-then-route", media=MEDIA) as rig:
        await call(rig, "bob", sip_ruri("112", rig), source=VPN_IP)
    [invite] = rig.centres["national"].invites
    assert assert_emergency_invite(invite, e164="+358401000002", civic=False) == {}
    parts = split_multipart(invite.get("content-type") or "", invite.body)
    sdp = parts["application/sdp"][1]
    # The relay's offer (media anchored after the warning), not the caller's SDP.
    assert b"o=caller" not in sdp, sdp


async def test_office_call_with_anchored_media_keeps_its_civic_pidf(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with emergency_rig(pg_dsn, tmp_path, media=MEDIA) as rig:
        await call(rig, "alice", sip_ruri("112", rig), source=OFFICE_IP)
    [invite] = rig.centres["kerava"].invites
    assert assert_emergency_invite(invite, e164="+358401000001", civic=True)["A3"] == "Espoo"


async def test_real_sipp_centre_accepts_the_nomadic_invite(pg_dsn: str, tmp_path: Path) -> None:
    # uas-psap-answer-unverified.xml fails the call unless the Geolocation cid:, a
    # multipart body, a PIDF-LO part with that Content-ID, "Location not verified"
    # and no civic address are present.
    log = tmp_path / "national-messages.log"
    port = free_port("127.0.0.1")
    uas = SippUas(
        "uas-psap-answer-unverified",
        port=port,
        timeout=30,
        extra_args=["-trace_msg", "-message_file", str(log)],
    )
    async with (
        uas,
        emergency_rig(
            pg_dsn,
            tmp_path,
            policy="announce-then-route",
            media=MEDIA,
            centre_ports={"national": port},
        ) as rig,
    ):
        await call(rig, "bob", sip_ruri("112", rig), source=VPN_IP)
    assert uas.result is not None
    assert uas.result.successful_calls == 1, uas.result.describe()
    assert uas.result.failed_calls == 0, uas.result.describe()
    text = log.read_text(errors="replace")
    assert "Geolocation-Routing: yes" in text
    assert "Location not verified" in text
