"""Failover between emergency centres, timed, through the running app.

The Espoo office's centre is Kerava, its secondary Turku, then the national default
(deploy/demo/sites.toml). The issue asks for the secondary within 5 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emergency.rig import PsapUas, call, emergency_rig, sip_ruri

pytestmark = [pytest.mark.sipp, pytest.mark.postgres, pytest.mark.asyncio]

#: The issue's bound: the caller is connected to the secondary within this, in seconds.
FAILOVER_BOUND = 5.0


@pytest.mark.parametrize("primary", ["503", "silent"])
async def test_secondary_within_five_seconds(pg_dsn: str, tmp_path: Path, primary: str) -> None:
    async with emergency_rig(pg_dsn, tmp_path, modes={"kerava": primary}) as rig:
        result = await call(rig, "alice", sip_ruri("112", rig))
    kerava, turku = rig.centres["kerava"], rig.centres["turku"]
    assert len(kerava.invites) == 1
    assert len(turku.invites) == 1
    assert rig.centres["national"].invites == []
    gap = turku.invites[0].at - kerava.invites[0].at
    [setup] = result.setup_times
    print(f"primary {primary}: secondary INVITE after {gap:.3f}s, caller setup {setup:.3f}s")
    assert setup < FAILOVER_BOUND
    assert gap < FAILOVER_BOUND
    if primary == "503":
        assert gap < 0.5  # a final answer needs no timer
    # The secondary gets the same location.
    assert turku.invites[0].get("geolocation")
    assert turku.invites[0].get("resource-priority") == "esnet.1"


async def test_primary_port_closed_fails_over_within_bound(pg_dsn: str, tmp_path: Path) -> None:
    # Nothing listens: the kernel answers ICMP port unreachable, which the UDP
    # transport reads from the socket's error queue as a transport error for that
    # destination (RFC 3261 8.1.3.1), so the secondary is tried at once rather than
    # after the 3 s no-answer timer (which this took before).
    closed = PsapUas("closed")  # never started
    async with emergency_rig(pg_dsn, tmp_path, centre_ports={"kerava": closed.port}) as rig:
        result = await call(rig, "alice", sip_ruri("112", rig))
    assert len(rig.centres["turku"].invites) == 1
    [setup] = result.setup_times
    print(f"primary closed: caller setup {setup:.3f}s")
    assert setup < 1.0, "an ICMP port unreachable should fail over at once"


@pytest.mark.parametrize("mode", ["503", "silent"])
async def test_both_down_goes_to_national_default(pg_dsn: str, tmp_path: Path, mode: str) -> None:
    modes = {"kerava": mode, "turku": mode}
    async with emergency_rig(pg_dsn, tmp_path, modes=modes) as rig:
        result = await call(rig, "alice", sip_ruri("112", rig), sipp_timeout=20)
    national = rig.centres["national"]
    assert len(national.invites) == 1
    gap = national.invites[0].at - rig.centres["kerava"].invites[0].at
    [setup] = result.setup_times
    print(f"both {mode}: national INVITE after {gap:.3f}s, caller setup {setup:.3f}s")
    # Two failover timers at most (3 s each), plus slack.
    assert setup < 2 * FAILOVER_BOUND
    [ended] = rig.ended
    assert ended.final_status == 200
