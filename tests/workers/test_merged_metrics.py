"""The supervisor's /metrics: every worker's samples labelled ``worker``, gauges of a
shared table once (gateway.workers.supervisor.WorkerSamples), and promtool accepts it."""

from __future__ import annotations

import subprocess

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.workers.supervisor import WorkerSamples
from tests.deploy.tools import require
from tests.ops.harness import sum_samples


def worker_scrape(calls: int, bindings: float, lag: float) -> str:
    registry = CollectorRegistry()
    Counter("voipgw_calls", "Calls.", ["outcome"], registry=registry).labels("answered").inc(calls)
    Gauge("voipgw_registered_bindings", "Bindings.", registry=registry).set(bindings)
    Gauge("voipgw_database_restarts_total", "Restarts.", registry=registry).set(0)
    Histogram("voipgw_event_loop_lag_seconds", "Lag.", registry=registry).observe(lag)
    return generate_latest(registry).decode()


def test_samples_are_labelled_by_worker_and_shared_gauges_reported_once() -> None:
    samples = WorkerSamples(own=frozenset({"voipgw_database_restarts_total"}))
    samples.texts = {1: worker_scrape(3, 7, 0.001), 2: worker_scrape(5, float("nan"), 0.2)}
    registry = CollectorRegistry()
    registry.register(samples)
    text = generate_latest(registry).decode()

    assert sum_samples(text, "voipgw_calls_total", worker="1") == 3
    assert sum_samples(text, "voipgw_calls_total", worker="2") == 5
    assert sum_samples(text, "voipgw_calls_total", outcome="answered") == 8
    # A shared table's count: once, the value the worker that read it reports.
    assert "voipgw_registered_bindings 7.0" in text
    assert "voipgw_registered_bindings{" not in text
    assert "voipgw_database_restarts_total" not in text
    assert sum_samples(text, "voipgw_event_loop_lag_seconds_count") == 2
    assert 'voipgw_event_loop_lag_seconds_bucket{le="0.25",worker="2"} 1.0' in text

    check = subprocess.run(
        [require("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_counter_the_supervisor_exports_itself_appears_once_with_its_created_time() -> None:
    worker = CollectorRegistry()
    Counter("voipgw_database_restarts", "Restarts.", registry=worker).inc()
    samples = WorkerSamples(own=frozenset({"voipgw_database_restarts"}))
    samples.texts = {1: generate_latest(worker).decode(), 2: generate_latest(worker).decode()}
    supervisor = CollectorRegistry()
    Counter("voipgw_database_restarts", "Restarts.", registry=supervisor)
    supervisor.register(samples)
    text = generate_latest(supervisor).decode()

    assert text.count("# HELP voipgw_database_restarts_created ") == 1
    assert sum_samples(text, "voipgw_database_restarts_total") == 0  # the supervisor's
    check = subprocess.run(
        [require("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
