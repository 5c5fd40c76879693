"""A real Prometheus scrapes a StatusServer and evaluates our rules.

The test starts /usr/bin/prometheus on a loopback port with a temporary config
(scrape and rule evaluation every second, our rules.yml), increments metrics and
asserts what Prometheus' HTTP API reports: counter values, a later increment, and
the emergency alert firing. Bounded: each wait gives up after about 20 seconds.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from gateway.http_status import ReadinessChecks, StatusServer
from gateway.metrics import Metrics
from tests.deploy.tools import PROMETHEUS_DIR, require

pytestmark = pytest.mark.tool

WAIT_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    async def get(self, path: str, **params: str) -> Any:
        # urllib blocks; the StatusServer being scraped shares this event loop.
        return await asyncio.to_thread(self._get, path, **params)

    async def query(self, promql: str) -> list[dict[str, Any]]:
        document = await self.get("/api/v1/query", query=promql)
        assert document["status"] == "success", document
        return list(document["data"]["result"])

    async def wait_for(
        self, what: str, probe: Callable[[], Any], check: Callable[[Any], bool]
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECONDS
        last: Any = None
        while loop.time() < deadline:
            try:
                last = await probe()
            except OSError as exc:  # not listening yet
                last = exc
            else:
                if check(last):
                    return last
            await asyncio.sleep(0.25)
        pytest.fail(f"timed out waiting for {what}; last answer: {last!r}")

    async def wait_value(self, promql: str, expected: float) -> None:
        def check(result: list[dict[str, Any]]) -> bool:
            return len(result) == 1 and float(result[0]["value"][1]) == expected

        await self.wait_for(f"{promql} == {expected}", lambda: self.query(promql), check)


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
    binary = require("prometheus")
    shutil.copy(PROMETHEUS_DIR / "rules.yml", tmp_path / "rules.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "rule_files: [rules.yml]\n"
        "scrape_configs:\n"
        "  - job_name: voipgw\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 1s\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{gateway_status.port}']\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=log,
    )
    prom = Prometheus(port)
    try:
        await prom.wait_for(
            "the scrape target to be up",
            lambda: prom.query('up{job="voipgw"}'),
            lambda r: len(r) == 1 and r[0]["value"][1] == "1",
        )
        yield prom
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


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
