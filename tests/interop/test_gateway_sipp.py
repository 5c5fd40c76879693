"""SIPp uac -> gateway -> SIPp uas: every scenario of sip-fixtures/sipp completes with
0 failed calls over UDP, TCP and IPv6, and each call leaves one finished-call record
with the right disposition."""

from __future__ import annotations

import asyncio

import pytest

from tests.interop.gateway import gateway_config, running_gateway, sip_target
from tests.interop.sipp import SippUas, run_uac

pytestmark = [pytest.mark.sipp, pytest.mark.interop]

#: (uac, uas, uas pause in seconds, disposition each call must end with)
PAIRS = [
    ("uac-basic-call", "uas-answer", None, "answered"),
    ("uac-callee-hangup", "uas-hangup", 0.05, "answered"),
    ("uac-cancel", "uas-ring-no-answer", None, "cancelled"),
    ("uac-expect-486", "uas-busy", None, "busy"),
    ("uac-expect-404", "uas-not-found", None, "rejected"),
    ("uac-expect-408", "uas-ring-timeout-408", 0.2, "no-answer"),
    ("uac-reinvite", "uas-answer-reinvite", None, "answered"),
]

NETWORKS = [
    pytest.param("udp", "127.0.0.1", id="udp4"),
    pytest.param("tcp", "127.0.0.1", id="tcp4"),
    pytest.param("udp", "::1", id="udp6"),
    pytest.param("tcp", "::1", id="tcp6"),
]

CALLS = 5


@pytest.mark.asyncio
@pytest.mark.parametrize(("transport", "host"), NETWORKS)
@pytest.mark.parametrize(
    ("uac", "uas_scenario", "uas_pause", "disposition"),
    PAIRS,
    ids=[p[0] for p in PAIRS],
)
async def test_scenario_through_gateway(
    uac: str,
    uas_scenario: str,
    uas_pause: float | None,
    disposition: str,
    transport: str,
    host: str,
) -> None:
    async with SippUas(
        uas_scenario, host=host, transport=transport, call_duration=uas_pause, timeout=60
    ) as uas:
        doc = gateway_config(host=host, upstream=uas.uri)
        async with running_gateway(doc) as (gateway, ended):
            result = await run_uac(
                uac,
                sip_target(gateway, transport.upper()),
                transport=transport,
                calls=CALLS,
                rate=20,
                timeout=30,
            )
            assert result.failed_calls == 0, result.describe()
            assert result.successful_calls == CALLS, result.describe()
            for _ in range(50):  # the last BYE/ACK may still be in flight
                if len(ended) == CALLS:
                    break
                await asyncio.sleep(0.1)
            assert [e.disposition for e in ended] == [disposition] * CALLS
            assert gateway.active_calls == 0


@pytest.mark.asyncio
async def test_options_answered_by_gateway_itself() -> None:
    doc = gateway_config(host="127.0.0.1", upstream="sip:127.0.0.1:9;transport=udp")
    async with running_gateway(doc) as (gateway, ended):
        result = await run_uac(
            "uac-options-200", sip_target(gateway), transport="udp", calls=3, rate=10, timeout=15
        )
        assert result.successful_calls == 3, result.describe()
        assert ended == []
