"""A real Prometheus scrapes a real ``voipgw run`` while SIPp places calls through it.

Ten ordinary calls from a phone in Setera's Espoo office go through the gateway to a
SIPp UAS standing in for the PBX; one emergency call (alice, 112, from the office
LAN) goes to the Espoo centre (Kerava, a SIPp UAS that checks the emergency headers
and the PIDF-LO). Prometheus scrapes the gateway every second; its HTTP API must then
report 11 calls and one answered emergency call, and ``promtool check metrics``
must accept a live scrape of the gateway.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest

from tests.deploy.prometheus import prometheus_server
from tests.deploy.tools import require
from tests.interop.sipp import SippUas, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    OFFICE_IP_2,
    prepare,
    remove_state,
    running_gateway,
    state_directory,
)

pytestmark = [pytest.mark.tool, pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres]

ORDINARY_CALLS = 10


def value(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if len(result) == 1 else None


@pytest.mark.timeout(150)
@pytest.mark.asyncio
async def test_prometheus_counts_calls_through_a_running_gateway() -> None:
    state = state_directory()
    try:
        async with (
            SippUas("uas-answer", host=HOST, timeout=120) as pbx,
            SippUas("uas-psap-answer", host=HOST, timeout=120) as kerava,
        ):
            setup = prepare(state, upstream=pbx.uri, centre_ports={"kerava": kerava.port})
            async with (
                running_gateway(setup) as gateway,
                prometheus_server(f"{HOST}:{setup.metrics_port}", state) as prom,
            ):
                ordinary, emergency = await asyncio.gather(
                    run_uac(
                        "uac-emergency",
                        setup.target,
                        local_ip=OFFICE_IP,
                        calls=ORDINARY_CALLS,
                        rate=5,
                        call_duration=0.3,
                        timeout=30,
                        extra_args=[
                            "-key",
                            "caller",
                            "bob",
                            "-key",
                            "ruri",
                            f"sip:0401234567@{setup.target}",
                        ],
                    ),
                    run_uac(
                        "uac-emergency",
                        setup.target,
                        local_ip=OFFICE_IP_2,
                        calls=1,
                        call_duration=0.3,
                        timeout=30,
                        extra_args=[
                            "-key",
                            "caller",
                            "alice",
                            "-key",
                            "ruri",
                            f"sip:112@{setup.target}",
                        ],
                    ),
                )
                assert ordinary.ok, ordinary.describe()
                assert emergency.ok, emergency.describe()

                # What Prometheus stored, through its query API.
                await prom.wait_value("sum(voipgw_calls_total)", ORDINARY_CALLS + 1)
                await prom.wait_value(
                    'sum(voipgw_calls_total{outcome="answered"})', ORDINARY_CALLS + 1
                )
                await prom.wait_value('sum(voipgw_emergency_calls_total{outcome="answered"})', 1)
                # Series of other outcomes may exist (created at 0), none above 0.
                failed = await prom.query('voipgw_emergency_calls_total{outcome!="answered"} > 0')
                assert failed == [], failed
                # sum(): with workers (VOIPGW_TEST_WORKERS) each reports its own.
                await prom.wait_value("sum(voipgw_active_calls)", 0)

                # promtool lints a live scrape of the gateway itself.
                body = await gateway.scrape()
                check = await asyncio.to_thread(
                    subprocess.run,
                    [require("promtool"), "check", "metrics"],
                    input=body,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                assert check.returncode == 0, check.stdout + check.stderr
                assert "voipgw_calls_total" in body
        assert pbx.result is not None
        assert pbx.result.successful_calls == ORDINARY_CALLS, pbx.result.describe()
        assert kerava.result is not None
        assert kerava.result.successful_calls == 1, kerava.result.describe()
        assert kerava.result.failed_calls == 0, kerava.result.describe()
    finally:
        remove_state(state)
