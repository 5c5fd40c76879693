"""Emergency calls are never shed: a flood of ordinary calls beside 1 emergency call/s."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import pytest

from tests.emergency.rig import OFFICE_IP, emergency_rig, sip_ruri, sipp_keys
from tests.interop.sipp import SippUas, free_port, run_uac

pytestmark = [pytest.mark.sipp, pytest.mark.postgres, pytest.mark.asyncio]

ORDINARY_RATE = 200.0
"""Ordinary calls offered per second."""
ORDINARY_HOLD = 2.0
"""Seconds an answered ordinary call lasts: about 400 would be in progress unshed."""
MAX_CALLS = 20
EMERGENCY_CALLS = 20
"""At 1 per second: the issue's ~20 s."""


async def test_flood_sheds_ordinary_calls_and_connects_every_emergency_call(
    pg_dsn: str, tmp_path: Path
) -> None:
    centre_port, pbx_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    centre = SippUas("uas-psap-answer", port=centre_port, timeout=55)
    pbx = SippUas("uas-answer", port=pbx_port, timeout=55)
    async with (
        centre,
        pbx,
        emergency_rig(
            pg_dsn,
            tmp_path,
            max_calls=MAX_CALLS,
            # One SIPp socket plays many callers: this test is about capacity
            # shedding, so the per-source limits of the guard are lifted for it
            # (tests/security covers them).
            guard={"trusted_peers": ["127.0.10.0/24", "127.0.0.1/32"]},
            centre_ports={"kerava": centre_port},
            pbx_port=pbx_port,
        ) as rig,
    ):
        ordinary, emergency = await asyncio.wait_for(
            asyncio.gather(
                run_uac(
                    "uac-emergency-flood-ordinary",
                    rig.target,
                    local_ip=OFFICE_IP,
                    calls=int(ORDINARY_RATE * EMERGENCY_CALLS),
                    rate=ORDINARY_RATE,
                    call_duration=ORDINARY_HOLD,
                    timeout=45,
                    extra_args=sipp_keys("bob", sip_ruri("0401234567", rig)),
                ),
                run_uac(
                    "uac-emergency",
                    rig.target,
                    local_ip="127.0.10.6",
                    calls=EMERGENCY_CALLS,
                    rate=1.0,
                    call_duration=0.5,
                    timeout=45,
                    extra_args=sipp_keys("alice", sip_ruri("112", rig)),
                ),
            ),
            timeout=60,
        )
    shed_times = ordinary.response_times.get(1, ())
    answered = ordinary.successful_calls - len(shed_times)
    setups = emergency.setup_times
    elapsed = ordinary.elapsed
    p99 = emergency.percentile(0.99) or 0.0
    shed_p99 = sorted(shed_times)[max(0, int(len(shed_times) * 0.99) - 1)] if shed_times else 0.0
    print(
        f"\nflood: offered {ordinary.outgoing_calls} ordinary at {ORDINARY_RATE:g}/s,"
        f" answered {answered} (goodput {answered / elapsed:.1f}/s),"
        f" 503 {len(shed_times)} (p50 {statistics.median(shed_times or [0]) * 1000:.0f} ms,"
        f" p99 {shed_p99 * 1000:.0f} ms), failed {ordinary.failed_calls};"
        f" emergency {emergency.successful_calls}/{EMERGENCY_CALLS} connected,"
        f" setup p50 {statistics.median(setups or [0]) * 1000:.0f} ms p99 {p99 * 1000:.0f} ms"
    )
    assert emergency.ok, emergency.describe()
    assert len(setups) == EMERGENCY_CALLS
    assert centre.result is not None and centre.result.successful_calls == EMERGENCY_CALLS
    # The flood was real: most ordinary calls were shed and some answered. How fast
    # (INVITE -> 503 and the emergency set-up, p99) is measured by
    # tests/bench/bench_capacity.py, not asserted here: on a shared machine a timed
    # assertion fails for the machine's load, not the gateway's (issue 17).
    assert len(shed_times) > ordinary.outgoing_calls / 2, ordinary.describe()
    assert answered > 0
    assert ordinary.ok, ordinary.describe()
    sheds = [e for e in rig.ended if e.final_status == 503]
    assert sheds and not any(e.emergency for e in sheds)
    assert sum(1 for e in rig.ended if e.emergency and e.final_status == 200) == EMERGENCY_CALLS
