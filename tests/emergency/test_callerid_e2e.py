"""Caller-ID integrity on the wire (issue 15): what a device presents, what the PBX and
the emergency centre are told, and what the CDR in PostgreSQL keeps of the decision.

SIPp (``uac-presenting-number``) places the calls of bob, a Setera subscriber
(+358401000002) in the demo data, from the Espoo office LAN, presenting a number of its
choosing in P-Preferred-Identity and in the From display name. The PBX and the centres
are the rig's recording peers; the CDR rows are read from the test's database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.emergency.rig import Rig, emergency_rig, sip_ruri
from tests.interop.sipp import run_uac

pytestmark = [pytest.mark.sipp, pytest.mark.postgres, pytest.mark.asyncio]

BOB = "+358401000002"
#: Setera's head office switchboard, in its DDI block +358 9 4243 xxxx.
SWITCHBOARD = "+358942430000"
#: frank's number: Esimerkki's range, not Setera's.
OTHER_CUSTOMERS = "+358402000001"
#: A number no customer holds (a UK number).
FOREIGN = "+442079460000"


async def place(rig: Rig, dialled: str, *, display: str, preferred: str) -> None:
    result = await run_uac(
        "uac-presenting-number",
        rig.target,
        local_ip="127.0.10.5",  # Setera's Espoo office LAN
        timeout=15,
        extra_args=[
            *("-key", "caller", "bob", "-key", "ruri", sip_ruri(dialled, rig)),
            *("-key", "display", display, "-key", "preferred", preferred),
        ],
    )
    assert result.ok, result.describe()


async def cdr_row(dsn: str, dialled: str) -> dict[str, Any]:
    """The one CDR row of the call to ``dialled`` (waits for the writer's batch)."""
    con = await asyncpg.connect(dsn)
    try:
        for _ in range(100):
            rows = await con.fetch(
                "SELECT presented_number, asserted_number, caller_id::text AS caller_id,"
                " caller_id_reason, p_asserted_identity FROM cdr WHERE callee_dialled LIKE $1",
                f"%{dialled}",
            )
            if rows:
                assert len(rows) == 1, rows
                return dict(rows[0])
            await asyncio.sleep(0.1)
    finally:
        await con.close()
    raise AssertionError(f"no CDR row for the call to {dialled}")


@pytest.mark.parametrize(
    ("preferred", "display", "asserted", "decision", "reason"),
    [
        (BOB, "Bob", BOB, "kept", "own-number"),
        (SWITCHBOARD, "Setera switchboard", SWITCHBOARD, "kept", "customer-range"),
        (OTHER_CUSTOMERS, "Bob", BOB, "replaced", "not-held"),
        (FOREIGN, "Bob", BOB, "replaced", "not-held"),
        # Digits in the display name are not a number the gateway asserts: the number
        # is kept, the From rewritten with the provisioned name.
        (BOB, OTHER_CUSTOMERS, BOB, "kept", "own-number"),
    ],
)
async def test_ordinary_call_asserts_a_number_the_customer_holds(
    pg_dsn: str,
    tmp_path: Path,
    preferred: str,
    display: str,
    asserted: str,
    decision: str,
    reason: str,
) -> None:
    dialled = "0401234567"
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        await place(rig, dialled, display=display, preferred=preferred)
        row = await cdr_row(pg_dsn, dialled)
        invites = [m for m in rig.pbx.invites if dialled in m.request_uri]
    assert len(invites) == 1
    invite = invites[0]
    # The provisioned display name may precede the number (RFC 3325 9.1 name-addr).
    assert (invite.get("p-asserted-identity") or "").endswith(f"<tel:{asserted}>")
    assert invite.get("p-preferred-identity") is None  # RFC 3325 9.1: not passed on
    from_header = invite.get("from") or ""
    # The display name the PBX shows never carries a number the customer does not hold.
    assert OTHER_CUSTOMERS not in from_header, from_header
    changed = invite.get("x-voipgw-caller-id")
    assert (changed is not None) == (decision != "kept"), changed
    assert row["presented_number"] == preferred
    assert row["asserted_number"] == asserted
    assert (row["caller_id"], row["caller_id_reason"]) == (decision, reason)


async def test_emergency_call_carries_the_callback_number_whatever_was_presented(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with emergency_rig(pg_dsn, tmp_path) as rig:
        await place(rig, "112", display="Bob", preferred=FOREIGN)
        row = await cdr_row(pg_dsn, "112")
        invites = [m for c in rig.centres.values() for m in c.invites]
    assert len(invites) == 1
    assert invites[0].get("p-asserted-identity") == f"<tel:{BOB}>"
    assert row["presented_number"] == FOREIGN
    assert row["asserted_number"] == BOB
    assert (row["caller_id"], row["caller_id_reason"]) == ("replaced", "emergency-callback")


async def test_reject_policy_refuses_a_number_the_customer_does_not_hold(
    pg_dsn: str, tmp_path: Path
) -> None:
    dialled = "0401234568"
    async with emergency_rig(
        pg_dsn, tmp_path, routing={"caller_id": {"outbound": "reject"}}
    ) as rig:
        result = await run_uac(
            "uac-presenting-number-expect-403",
            rig.target,
            local_ip="127.0.10.5",
            timeout=15,
            extra_args=[
                *("-key", "caller", "bob", "-key", "ruri", sip_ruri(dialled, rig)),
                *("-key", "preferred", OTHER_CUSTOMERS),
            ],
        )
        assert result.ok, result.describe()
        row = await cdr_row(pg_dsn, dialled)
        assert not [m for m in rig.pbx.invites if dialled in m.request_uri]
    assert row["presented_number"] == OTHER_CUSTOMERS
    assert (row["caller_id"], row["caller_id_reason"]) == ("rejected", "not-held")
