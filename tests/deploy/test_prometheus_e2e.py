"""A real Prometheus scrapes a StatusServer and evaluates our rules.

The test starts /usr/bin/prometheus on a loopback port with a temporary config
(scrape and rule evaluation every second, our rules.yml), increments metrics and
asserts what Prometheus' HTTP API reports: counter values, a later increment, and
the emergency alert firing. Bounded: each wait gives up after about 20 seconds.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from gateway.ops.http_status import ReadinessChecks, StatusServer
from gateway.ops.metrics import Metrics
from tests.deploy.prometheus import Prometheus, prometheus_server
from tests.deploy.tools import PROMETHEUS_DIR

pytestmark = pytest.mark.tool


@pytest_asyncio.fixture
async def gateway_status() -> AsyncIterator[StatusServer]:
    server = StatusServer(Metrics(CollectorRegistry()), ReadinessChecks(), "127.0.0.1", 0)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest_asyncio.fixture
async def prometheus(gateway_status: StatusServer, tmp_path: Path) -> AsyncIterator[Prometheus]:
    shutil.copy(PROMETHEUS_DIR / "rules.yml", tmp_path / "rules.yml")
    async with prometheus_server(
        f"127.0.0.1:{gateway_status.port}", tmp_path, rules="rules.yml"
    ) as prom:
        yield prom


@pytest.mark.asyncio
async def test_prometheus_scrapes_counters(
    gateway_status: StatusServer, prometheus: Prometheus
) -> None:
    metrics = gateway_status.metrics
    for _ in range(3):
        metrics.call_ended("office", "answered")
    for _ in range(5):
        metrics.sip_request_in("INVITE")
    metrics.set_cdr_partitions_ahead(2)
    await prometheus.wait_value(
        'voipgw_calls_total{job="voipgw",call_class="office",outcome="answered"}', 3
    )
    await prometheus.wait_value('voipgw_sip_requests_total{method="INVITE",direction="in"}', 5)
    await prometheus.wait_value("voipgw_cdr_partitions_ahead", 2)
    # A later increment shows up too: the scrape is live, not a first snapshot.
    metrics.sip_request_in("INVITE")
    await prometheus.wait_value('voipgw_sip_requests_total{method="INVITE",direction="in"}', 6)
    await prometheus.wait_value(
        'sum(voipgw_calls_total{call_class="office",outcome!="answered"})', 0
    )


@pytest.mark.asyncio
async def test_emergency_failure_fires_the_alert(
    gateway_status: StatusServer, prometheus: Prometheus
) -> None:
    gateway_status.metrics.emergency_call("nomadic", "psap_direct", "fi-south", "failed")

    def firing(document: dict[str, Any]) -> bool:
        return any(
            alert["labels"]["alertname"] == "VoipgwEmergencyCallFailed"
            and alert["labels"].get("centre") == "fi-south"
            and alert["state"] == "firing"
            for alert in document["data"]["alerts"]
        )

    document = await prometheus.wait_for(
        "VoipgwEmergencyCallFailed to fire", lambda: prometheus.get("/api/v1/alerts"), firing
    )
    names = {a["labels"]["alertname"] for a in document["data"]["alerts"]}
    # Nothing else is wrong with this gateway, so nothing else fires.
    assert names == {"VoipgwEmergencyCallFailed"}
