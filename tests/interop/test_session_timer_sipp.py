"""Session timers (RFC 4028) on the wire: SIPp caller -> gateway -> SIPp callee, with
a 6 s session interval (the gateway's min_se lowered to 5 s for the test; the RFC
minimum of 90 s is the default)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.b2bua import EndedBy
from tests.interop.gateway import gateway_config, running_gateway, sip_target
from tests.interop.sipp import SippUas, run_uac

pytestmark = [pytest.mark.sipp, pytest.mark.interop]

INTERVAL = 6
#: RFC 4028 10: the session is ended by interval - min(32, interval / 3).
BOUND = INTERVAL - min(32, INTERVAL / 3)
SHORT_TIMERS = {"sip": {"session_expires": INTERVAL, "min_se": 5}}


@pytest.mark.asyncio
async def test_callee_that_stops_answering_refreshes_is_hung_up_within_the_bound() -> None:
    async with SippUas("uas-answer-ignore-refresh", calls=1, timeout=30) as uas:
        doc = gateway_config(host="127.0.0.1", upstream=uas.uri, **SHORT_TIMERS)
        async with running_gateway(doc) as (gateway, ended):
            result = await run_uac("uac-expect-session-timer-bye", sip_target(gateway), timeout=20)
            assert result.ok, result.describe()
            (call,) = ended
            assert call.ended_by is EndedBy.SESSION_TIMER
            assert call.answered_at is not None
            assert call.ended_at - call.answered_at <= BOUND + 0.5
        await uas.wait(20)
    assert uas.result is not None and uas.result.successful_calls == 1, uas.result.describe()


@pytest.mark.asyncio
async def test_callee_422_is_retried_with_its_min_se() -> None:
    async with SippUas("uas-422-then-answer", calls=1, timeout=30) as uas:
        doc = gateway_config(host="127.0.0.1", upstream=uas.uri, **SHORT_TIMERS)
        async with running_gateway(doc) as (gateway, ended):
            result = await run_uac("uac-basic-call", sip_target(gateway), timeout=20)
            assert result.ok, result.describe()
            (call,) = ended
            assert call.disposition == "answered"
            assert call.ended_by is EndedBy.CALLER
        await uas.wait(20)
    assert uas.result is not None and uas.result.successful_calls == 1, uas.result.describe()


@pytest.mark.asyncio
async def test_caller_interval_below_min_se_gets_422() -> None:
    doc = gateway_config(host="127.0.0.1", upstream="sip:127.0.0.1:9", **SHORT_TIMERS)
    async with running_gateway(doc) as (gateway, ended):
        result = await run_uac("uac-expect-422", sip_target(gateway), timeout=20)
        assert result.ok, result.describe()
        (call,) = ended
        assert call.final_status == 422


@pytest.mark.asyncio
async def test_calls_still_up_when_the_gateway_stops_end_with_bye() -> None:
    async with SippUas("uas-answer", calls=1, timeout=30) as uas:
        doc = gateway_config(host="127.0.0.1", upstream=uas.uri)
        async with running_gateway(doc) as (gateway, ended):
            caller = asyncio.ensure_future(
                run_uac("uac-expect-shutdown-bye", sip_target(gateway), timeout=20)
            )
            async with asyncio.timeout(10):
                while not any(c.answered_at for c in gateway.b2bua.calls.values()):  # type: ignore[union-attr]  # noqa: ASYNC110 (state changed by the gateway)
                    await asyncio.sleep(0.05)
        # running_gateway closed the gateway with the call up.
        (call,) = ended
        assert call.ended_by is EndedBy.SHUTDOWN
        result = await caller
        assert result.ok, result.describe()
        await uas.wait(20)
    assert uas.result is not None and uas.result.successful_calls == 1, uas.result.describe()
