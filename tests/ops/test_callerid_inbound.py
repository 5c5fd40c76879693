"""Caller ID from an international trunk on the wire (issue 15, Traficom regulation 28).

``voipgw run`` (the installed command) with its PBX address marked ``scope =
"international"``; alice's phone registers through it (SIPp, digest) and is then a
recording Python UAS on the port it registered from. The "trunk" (SIPp from the trusted
address) calls her presenting numbers: a Finnish one is delivered anonymous (or the
call blocked, by configuration), a number of a roaming-capable range and a foreign one
pass. What the phone is shown is read from the INVITE it got; the decision from the CDR
in PostgreSQL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests.emergency.rig import PsapUas
from tests.interop.sipp import SippUas, run_uac
from tests.ops.harness import (
    HOST,
    REALM,
    GatewayProcess,
    GatewaySetup,
    prepare,
    remove_state,
    set_password,
    state_directory,
)

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres, pytest.mark.asyncio]

PASSWORD = "intl-alice-pw-15"
#: A Finnish mobile number no roaming range covers.
FINNISH = "+358501234567"
#: In Setera's roaming-capable range +358 40 100 xxxx (deploy/demo/sites.toml).
ROAMING = "+358401000099"
FOREIGN = "+442079460000"


async def start(pbx: SippUas, dsn: str, state: Path, *, block: bool) -> GatewayProcess:
    setup = prepare(state, upstream=pbx.uri, database_url=dsn, cdr={"batch_age": 0.05})
    text = setup.config.read_text(encoding="utf-8")
    domestic = 'trusted_peers = ["127.0.0.1/32"]'
    # The first is [upstream]'s (the [guard]'s own list follows, unchanged).
    assert text.index(domestic) > text.index("[upstream]"), text
    text = text.replace(
        domestic, 'trusted_peers = [{ cidr = "127.0.0.1/32", scope = "international" }]', 1
    )
    if block:
        text += '\n[routing.caller_id]\ninternational_finnish = "block"\n'
    setup.config.write_text(text, encoding="utf-8")
    gateway = GatewayProcess(setup)
    await gateway.start()
    await set_password(setup.config, "alice", PASSWORD)
    return gateway


async def register_alice(setup: GatewaySetup, port: int) -> None:
    result = await run_uac(
        "uac-register",
        setup.target,
        service="alice",
        timeout=10,
        extra_args=[
            *("-au", "alice", "-ap", PASSWORD, "-auth_uri", REALM),
            *("-set", "domain", REALM, "-set", "expires", "600", "-p", str(port)),
        ],
    )
    assert result.ok, result.describe()


async def trunk_call(setup: GatewaySetup, caller: str, scenario: str = "uac-emergency") -> None:
    result = await run_uac(
        scenario,
        setup.target,
        local_ip=HOST,  # the trusted (international) peer
        call_duration=0.2,
        timeout=15,
        extra_args=["-key", "caller", caller, "-key", "ruri", f"sip:alice@{REALM}"],
    )
    assert result.ok, result.describe()


async def decisions(dsn: str, count: int) -> dict[str, tuple[str, str]]:
    """caller_id and its reason by presented number, once ``count`` rows are in."""
    con = await asyncpg.connect(dsn)
    try:
        for _ in range(100):
            rows = await con.fetch(
                "SELECT presented_number, caller_id::text AS caller_id, caller_id_reason FROM cdr"
            )
            if len(rows) >= count:
                return {
                    r["presented_number"]: (r["caller_id"], r["caller_id_reason"]) for r in rows
                }
            await asyncio.sleep(0.1)
    finally:
        await con.close()
    raise AssertionError(f"fewer than {count} CDR rows")


@pytest.mark.timeout(120)
async def test_international_trunk_finnish_number_removed_roaming_and_foreign_pass(
    pg_dsn: str,
) -> None:
    state = state_directory()
    try:
        async with SippUas("uas-answer", host=HOST, timeout=60) as pbx:
            gateway = await start(pbx, pg_dsn, state, block=False)
            phone = PsapUas("alice")
            try:
                await register_alice(gateway.setup, phone.port)
                await phone.start()
                for number in (FINNISH, ROAMING, FOREIGN):
                    await trunk_call(gateway.setup, number)
                found = await decisions(pg_dsn, 3)
            finally:
                phone.close()
                await gateway.stop()
    finally:
        remove_state(state)
    shown = [invite.get("from") or "" for invite in phone.invites]
    assert len(shown) == 3, shown
    # The Finnish number is gone from what the phone shows; the others are there.
    assert FINNISH not in shown[0] and "anonymous" in shown[0].lower(), shown[0]
    assert ROAMING in shown[1], shown[1]
    assert FOREIGN in shown[2], shown[2]
    assert FINNISH not in (phone.invites[0].get("p-asserted-identity") or "")
    assert found[FINNISH] == ("removed", "international-finnish-number")
    assert found[ROAMING] == ("kept", "roaming-range")
    assert found[FOREIGN] == ("kept", "international-foreign-number")


@pytest.mark.timeout(120)
async def test_international_trunk_finnish_number_blocked_when_configured(pg_dsn: str) -> None:
    state = state_directory()
    try:
        async with SippUas("uas-answer", host=HOST, timeout=60) as pbx:
            gateway = await start(pbx, pg_dsn, state, block=True)
            phone = PsapUas("alice")
            try:
                await register_alice(gateway.setup, phone.port)
                await phone.start()
                await trunk_call(gateway.setup, FINNISH, "uac-emergency-expect-403")
                found = await decisions(pg_dsn, 1)
            finally:
                phone.close()
                await gateway.stop()
    finally:
        remove_state(state)
    assert phone.invites == []
    assert found[FINNISH] == ("rejected", "international-finnish-number")
