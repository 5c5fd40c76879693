"""Nomadic policy, barred customers, dial-string forms and CDRs through the running app."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.emergency.rig import (
    BARRED_SITE_IP,
    OFFICE_IP,
    VPN_IP,
    assert_emergency_invite,
    call,
    emergency_rig,
    sip_ruri,
)

pytestmark = [pytest.mark.sipp, pytest.mark.postgres, pytest.mark.asyncio]


def reached(rig: object) -> dict[str, int]:
    """Centre id -> INVITEs received, for centres that received any."""
    centres = rig.centres  # type: ignore[attr-defined]
    return {c: len(p.invites) for c, p in centres.items() if p.invites}


@pytest.mark.parametrize("source", ["127.0.0.1", VPN_IP])
@pytest.mark.parametrize("policy", ["route", "announce-then-route"])
async def test_nomadic_call_goes_to_national_default_not_verified(
    pg_dsn: str, tmp_path: Path, policy: str, source: str
) -> None:
    # Delivery terms: nomadic calls are NOT routed to the nearest centre (Espoo ->
    # Kerava); the national default gets them, with no address and "not verified".
    async with emergency_rig(pg_dsn, tmp_path, policy=policy) as rig:
        await call(rig, "bob", "tel:112", source=source)
    assert reached(rig) == {"national": 1}
    invite = rig.centres["national"].invites[0]
    assert assert_emergency_invite(invite, e164="+358401000002", civic=False) == {}
    assert (invite.get("x-voipgw-class") or "").startswith("nomadic")


async def test_nomadic_call_announce_and_end_rejects(pg_dsn: str, tmp_path: Path) -> None:
    async with emergency_rig(pg_dsn, tmp_path, policy="announce-and-end") as rig:
        await call(
            rig, "bob", sip_ruri("112", rig), source=VPN_IP, scenario="uac-emergency-expect-480"
        )
    assert reached(rig) == {}
    [ended] = rig.ended
    assert ended.final_status == 480
    assert ended.facts.emergency_policy == "announce-and-end"


async def test_barred_customer_reaches_centre_but_not_others(pg_dsn: str, tmp_path: Path) -> None:
    # EECC art. 109: emergency access does not depend on the contract state.
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        await call(rig, "gina", sip_ruri("112", rig), source=BARRED_SITE_IP)
        await call(
            rig,
            "gina",
            sip_ruri("0401234567", rig),
            source=BARRED_SITE_IP,
            scenario="uac-emergency-expect-403",
        )
    assert reached(rig) == {"vaasa": 1}
    civic = assert_emergency_invite(
        rig.centres["vaasa"].invites[0], e164="+358403000001", civic=True
    )
    assert civic["A3"] == "Vaasa"
    assert rig.pbx.invites == []
    statuses = sorted(e.final_status for e in rig.ended)
    assert statuses == [200, 403]


EMERGENCY_FORMS = [
    ("112", ""),
    ("112", ";user=phone"),
    ("0112", ""),
    ("9112", ";user=phone"),
    ("%31%31%32", ""),
    ("112;phone-context=+358", ";user=phone"),
    ("tel:112", None),
    ("tel:+358112", None),
    ("urn:service:sos", None),
    ("urn:service:sos.fire", None),
    ("urn:service:sos.police", None),
    ("urn:service:sos.ambulance", None),
    ("urn:service:sos.ecall.manual", None),
    ("URN:Service:SOS.Marine", None),
]
ORDINARY_FORMS = [("1120", ""), ("11", ""), ("0501121234", ";user=phone"), ("tel:1120", None)]


def _ruri(rig: object, user: str, params: str | None) -> str:
    return user if params is None else sip_ruri(user, rig, params)  # type: ignore[arg-type]


async def test_every_dial_string_form_reaches_a_centre(pg_dsn: str, tmp_path: Path) -> None:
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        for user, params in EMERGENCY_FORMS:
            await call(rig, "alice", _ruri(rig, user, params))
        for user, params in ORDINARY_FORMS:
            await call(rig, "alice", _ruri(rig, user, params))
    # Office caller: every emergency form goes to the Espoo centre, nothing else does.
    assert reached(rig) == {"kerava": len(EMERGENCY_FORMS)}
    assert len(rig.pbx.invites) == len(ORDINARY_FORMS)
    routed = [e for e in rig.ended if e.emergency]
    assert len(routed) == len(EMERGENCY_FORMS)


async def test_cdr_records_emergency_flag_centre_policy_and_class(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with emergency_rig(pg_dsn, tmp_path, policy="announce-then-route") as rig:
        await call(rig, "alice", sip_ruri("112", rig), source=OFFICE_IP)
        await call(rig, "bob", "urn:service:sos", source=VPN_IP)
        await call(rig, "gina", sip_ruri("112", rig), source=BARRED_SITE_IP)
        await call(rig, "alice", sip_ruri("0401234567", rig), source=OFFICE_IP)
    # Leaving the app flushes the CDR writer.
    con = await asyncpg.connect(pg_dsn)
    try:
        rows = await con.fetch(
            "SELECT caller, emergency, emergency_centre, emergency_policy, call_class::text AS cls"
            " FROM cdr ORDER BY started_at"
        )
    finally:
        await con.close()
    got = [
        (r["caller"], r["emergency"], r["emergency_centre"], r["emergency_policy"], r["cls"])
        for r in rows
    ]
    assert got == [
        ("+358401000001", True, "kerava", "office", "office"),
        ("+358401000002", True, "national", "announce-then-route", "nomadic"),
        ("+358403000001", True, "vaasa", "office", "office"),
        ("+358401000001", False, None, None, "office"),
    ]
