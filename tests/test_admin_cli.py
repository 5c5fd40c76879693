"""``voipgw status`` against a real status listener."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.cli.admin import metric_totals
from gateway.ops.http_status import ReadinessChecks, StatusServer
from gateway.ops.metrics import Metrics
from tests.ops.harness import voipgw_command

ROOT = Path(__file__).resolve().parents[1]


def test_metric_totals_sums_labels_and_skips_nan() -> None:
    text = (
        '# HELP x y\nvoipgw_calls_total{outcome="answered"} 3.0\n'
        'voipgw_calls_total{outcome="busy"} 2.0\nvoipgw_cdr_partitions_ahead NaN\n'
    )
    assert metric_totals(text) == {"voipgw_calls_total": 5.0}


@pytest.mark.asyncio
async def test_status_shows_readiness_and_calls() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.track_active_calls(lambda: 1)  # one call still in the B2BUA's table
    metrics.call_ended("office", "answered")
    checks = ReadinessChecks()
    checks.register("transports", lambda: True)
    server = StatusServer(metrics, checks, "127.0.0.1", 0)
    await server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            voipgw_command(),
            "status",
            "--url",
            f"http://127.0.0.1:{server.port}",
            cwd="/",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await server.close()
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "ready transports=ok" in text
    assert (
        "calls in progress" in text and " 1" in text.split("calls in progress")[1].splitlines()[0]
    )
    assert "calls ended" in text
