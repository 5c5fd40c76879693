"""promtool checks of the Prometheus files and of a live /metrics scrape."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from gateway.ops.http_status import ReadinessChecks, StatusServer
from gateway.ops.metrics import Metrics, exported_names
from tests.deploy.promql_names import metric_names
from tests.deploy.tools import PROMETHEUS_DIR, require, scrape

pytestmark = pytest.mark.tool


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROMETHEUS_DIR,
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_rules() -> None:
    result = promtool("check", "rules", "rules.yml")
    assert_ok(result)
    assert "SUCCESS" in result.stdout


def test_check_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert_ok(result)
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_rules_unit_tests() -> None:
    assert_ok(promtool("test", "rules", "rules_test.yml"))


def test_unit_tests_cover_the_critical_alerts() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "rules_test.yml").read_text())
    tested = {
        case["alertname"]
        for group in tests["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {
        "VoipgwEmergencyCallFailed",
        "VoipgwCdrSpoolStale",
        "VoipgwCdrSpoolGrowing",
        "VoipgwSecurityDeskNoticeFailed",
    } <= tested


def test_rules_name_only_existing_metrics() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())
    all_rules = [rule for group in rules["groups"] for rule in group["rules"]]
    recorded = {rule["record"] for rule in all_rules if "record" in rule}
    known = exported_names(Metrics(CollectorRegistry()).registry) | recorded | {"up"}
    alerts = set()
    for rule in all_rules:
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule['record']}: {sorted(unknown)}"
        if "alert" in rule:
            alerts.add(rule["alert"])
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert {"summary", "description", "runbook"} <= set(rule["annotations"])
    assert {
        "VoipgwDown",
        "VoipgwEmergencyCallFailed",
        "VoipgwCdrNoFuturePartition",
        "VoipgwCdrSpoolStale",
        "VoipgwCdrSpoolGrowing",
        "VoipgwOverloadShedding",
        "VoipgwRegistrationsDropping",
        "VoipgwParseErrorSurge",
    } <= alerts


def populate(metrics: Metrics) -> None:
    """Touches every metric so the scrape has samples of each family."""
    metrics.track_active_calls(lambda: 1)
    metrics.call_ended("office", "answered")
    metrics.call_shed("nomadic", "call_limit")
    metrics.call_setup_observed("office", False, 0.4)
    metrics.emergency_call("nomadic", "psap_direct", "fi-south", "failed")
    metrics.sip_request_in("INVITE")
    metrics.sip_request_out("BYE")
    metrics.sip_response_in(180, "INVITE")
    metrics.sip_response_out(486, "INVITE")
    metrics.sip_retransmission("INVITE")
    metrics.transaction_finished("INVITE", 1.5)
    metrics.parse_error_from(400)
    metrics.message_dropped("queue_full")
    metrics.overload_shed_event("register_rate")
    metrics.registration("registered")
    metrics.set_registered_bindings(42)
    metrics.announcement("recording_notice", "played")
    metrics.rtp_lateness(0.0007)
    metrics.cdr_batch_committed(100, 0.02)
    metrics.set_cdr_queue_depth(3)
    metrics.set_cdr_spool(0, 0.0)
    metrics.set_cdr_partitions_ahead(2)
    metrics.event_loop_lag.observe(0.001)
    metrics.set_transport_listening("udp", "127.0.0.1", True)


async def live_scrape(accept: str | None = None) -> bytes:
    metrics = Metrics(CollectorRegistry())
    populate(metrics)
    server = StatusServer(metrics, ReadinessChecks(), "127.0.0.1", 0)
    await server.start()
    try:
        return await scrape(server, accept)
    finally:
        await server.close()


@pytest.mark.asyncio
async def test_check_metrics_on_a_live_scrape() -> None:
    body = await live_scrape()
    assert b"voipgw_emergency_calls_total{" in body
    proc = await asyncio.create_subprocess_exec(
        require("promtool"),
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(body), 30)
    # promtool lints: exit 0 and no complaint about naming, units or suffixes.
    assert proc.returncode == 0, out.decode()
    assert out.decode().strip() == "", out.decode()


@pytest.mark.asyncio
async def test_openmetrics_scrape_parses() -> None:
    # promtool check metrics reads only the classic text format; OpenMetrics goes
    # through prometheus-client's strict OpenMetrics parser instead.
    body = await live_scrape("application/openmetrics-text; version=1.0.0")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["voipgw_calls"].type == "counter"
    assert families["voipgw_call_setup_seconds"].type == "histogram"
    assert len(families) == len(list(Metrics(CollectorRegistry()).registry.collect()))
