"""``[overload] max_calls`` holds on a running gateway, read from /metrics.

Issue 19: ``voipgw_active_calls`` read 5,995 with ``max_calls = 5000``. A SIPp UAS
standing in for the PBX answers and holds every call until the caller's BYE; a SIPp
UAC in Setera's office places more calls than the limit, faster than any ends. While
they are held the test reads ``voipgw_active_calls`` as fast as it can: it reaches
``max_calls`` and never exceeds it, and the calls beyond it are shed with 503.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.interop.sipp import SippUas, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    GatewayProcess,
    prepare,
    remove_state,
    running_gateway,
    state_directory,
    sum_samples,
)

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres]

MAX_CALLS = 8
CALLS = 24
#: Seconds each answered call is held: longer than all CALLS take to arrive.
HOLD = 4.0


async def watch_active_calls(gateway: GatewayProcess, stop: asyncio.Event) -> list[float]:
    """Every ``voipgw_active_calls`` value read until ``stop`` is set."""
    seen = []
    while not stop.is_set():
        seen.append(sum_samples(await gateway.scrape(), "voipgw_active_calls"))
        await asyncio.sleep(0.02)
    return seen


@pytest.mark.timeout(180)
@pytest.mark.asyncio
async def test_active_calls_reach_max_calls_and_never_exceed_it() -> None:
    state = state_directory()
    try:
        async with SippUas("uas-answer", host=HOST, timeout=90) as pbx:
            setup = prepare(state, upstream=pbx.uri, max_calls=MAX_CALLS)
            async with running_gateway(setup) as gateway:
                stop = asyncio.Event()
                watcher = asyncio.create_task(watch_active_calls(gateway, stop))
                try:
                    uac = await run_uac(
                        "uac-long-call-or-failure",
                        setup.target,
                        local_ip=OFFICE_IP,
                        calls=CALLS,
                        rate=12,
                        call_duration=HOLD,
                        timeout=60,
                        extra_args=[
                            "-key",
                            "caller",
                            "bob",
                            "-key",
                            "ruri",
                            f"sip:0401234567@{setup.target}",
                        ],
                    )
                finally:
                    stop.set()
                    seen = await watcher
                metrics = await gateway.scrape()
        print(
            f"voipgw_active_calls: {len(seen)} reads, max {max(seen):g}"
            f" (max_calls {MAX_CALLS}); answered by the PBX {pbx.result and pbx.result.successful_calls}"
        )
        assert uac.ok, uac.describe()
        assert max(seen) == MAX_CALLS, seen
        shed = sum_samples(metrics, "voipgw_calls_total", outcome="shed")
        answered = sum_samples(metrics, "voipgw_calls_total", outcome="answered")
        assert shed >= CALLS - 2 * MAX_CALLS, metrics  # most beyond the limit
        assert shed + answered == CALLS, metrics
        assert pbx.result is not None
        assert pbx.result.successful_calls == answered
    finally:
        remove_state(state)
