"""A bounded flood of ordinary INVITEs at 5x capacity with one 112 call per second.

The short version of tests/bench/bench_overload.py (10 s per mode): the gateway stays
up and answers OPTIONS, ordinary calls over capacity get 503s (capacity mode; how fast
is the bench's figure) or are dropped by the guard's per-source INVITE bucket (guard
mode), and every emergency call connects, although it comes from the flooding address.
"""

from __future__ import annotations

import pytest

from tests.bench.bench_overload import run_flood

pytestmark = [pytest.mark.sipp, pytest.mark.interop]

DURATION = 10.0
MAX_CALLS = 20
HOLD = 1.0


def check_common(result_text: str, result: object) -> None:
    from tests.bench.bench_overload import FloodResult

    assert isinstance(result, FloodResult)
    emergency = result.emergency
    # every emergency call was placed, answered end to end and seen answered
    assert emergency.outgoing_calls == round(DURATION), result_text
    assert emergency.failed_calls == 0, result_text + "\n" + emergency.describe()
    assert emergency.successful_calls == emergency.outgoing_calls, result_text
    assert result.emergency_connected == emergency.outgoing_calls, result_text
    # How fast they connect is a figure of tests/bench/bench_overload.py (timing
    # goals live in benchmarks, not in tests a loaded machine fails).
    assert emergency.percentile(0.99) is not None, result_text
    # the gateway stayed up and answered its monitor
    assert result.options_sent >= DURATION / 0.5 - 2, result_text
    assert result.options_answered == result.options_sent, result_text


@pytest.mark.asyncio
async def test_flood_is_shed_with_fast_503_and_emergency_calls_connect() -> None:
    result = await run_flood(duration=DURATION, max_calls=MAX_CALLS, hold=HOLD, mode="capacity")
    text = result.report()
    print(text)
    check_common(text, result)
    flood = result.flood
    assert flood.outgoing_calls == round(result.offered * DURATION), text
    # every flood INVITE got a final answer: 200 within capacity or 503
    assert flood.failed_calls == 0, text + "\n" + flood.describe()
    assert len(result.shed) + result.ordinary_answered == flood.outgoing_calls, text
    # most of a 5x flood is shed; goodput stays near capacity, never far above it
    assert len(result.shed) >= 0.6 * flood.outgoing_calls, text
    capacity_calls = result.capacity * DURATION
    assert 0.7 * capacity_calls <= result.ordinary_answered <= 1.3 * capacity_calls, text
    # The 503s' latency is printed by tests/bench/bench_overload.py, not asserted here.
    assert flood.percentile(0.99) is not None, text
    assert result.guard["dropped_rate"] == 0, text


@pytest.mark.asyncio
async def test_flood_from_one_address_is_rate_limited_and_emergency_calls_connect() -> None:
    result = await run_flood(duration=DURATION, max_calls=MAX_CALLS, hold=HOLD, mode="guard")
    text = result.report()
    print(text)
    check_common(text, result)
    # the default guard admits 10 INVITEs/s (burst 20) from one address, for as long
    # as SIPp keeps sending (retransmissions go on after the last new call)
    assert result.guard["dropped_rate"] > result.flood.outgoing_calls / 2, text
    assert result.guard["privileged"] >= round(DURATION), text
    admitted_ordinary = result.ordinary_answered + len(result.shed)
    assert admitted_ordinary <= 10 * result.flood.elapsed + 20, text
