"""Tests of the metric definitions: names, bounded labels, helpers, lag monitor, config."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from prometheus_client import CollectorRegistry

from gateway.ops.metrics import (
    CALL_CLASSES,
    CALL_OUTCOMES,
    MAX_TOKEN_VALUES,
    Metrics,
    MetricsConfig,
    default_metrics,
    exported_names,
    normalize_method,
    run_event_loop_lag_monitor,
    status_label,
)
from routing.configfields import ConfigError, Table

REQUIRED_FAMILIES = {
    "voipgw_calls": ("counter", {"call_class", "outcome"}),
    "voipgw_active_calls": ("gauge", set()),
    "voipgw_emergency_calls": ("counter", {"call_class", "policy", "centre", "outcome"}),
    "voipgw_emergency_calls_unverified_location": ("counter", {"reason"}),
    "voipgw_device_location_ignored": ("counter", {"reason"}),
    "voipgw_site_address_problems": ("gauge", {"problem"}),
    "voipgw_caller_id_decisions": ("counter", {"direction", "decision", "reason"}),
    "voipgw_caller_id_changed": ("counter", {"customer", "direction"}),
    "voipgw_sip_requests": ("counter", {"method", "direction"}),
    "voipgw_sip_responses": ("counter", {"code", "method", "direction"}),
    "voipgw_sip_retransmissions": ("counter", {"method"}),
    "voipgw_transaction_duration_seconds": ("histogram", {"method"}),
    "voipgw_call_setup_seconds": ("histogram", {"call_class", "emergency"}),
    "voipgw_parse_errors": ("counter", {"reason"}),
    "voipgw_dropped_messages": ("counter", {"reason"}),
    "voipgw_guard_bans": ("counter", {"reason"}),
    "voipgw_emergency_calls_beyond_reserve": ("counter", set()),
    "voipgw_emergency_desk_messages": ("counter", {"outcome"}),
    "voipgw_emergency_desk_failovers": ("counter", set()),
    "voipgw_guard_unbans": ("counter", {"reason"}),
    "voipgw_guard_banned_sources": ("gauge", set()),
    "voipgw_registrations": ("counter", {"outcome"}),
    "voipgw_registered_bindings": ("gauge", set()),
    "voipgw_call_auth_challenges": ("counter", set()),
    "voipgw_relayed_calls": ("counter", {"side"}),
    "voipgw_announcements": ("counter", {"kind", "result"}),
    "voipgw_rtp_send_lateness_seconds": ("histogram", set()),
    "voipgw_cdr_queue_depth": ("gauge", set()),
    "voipgw_cdr_spool_bytes": ("gauge", set()),
    "voipgw_cdr_spool_oldest_age_seconds": ("gauge", set()),
    "voipgw_cdr_copy_duration_seconds": ("histogram", set()),
    "voipgw_cdr_rows_committed": ("counter", set()),
    "voipgw_database_restarts": ("counter", set()),
    "voipgw_cdr_partitions_ahead": ("gauge", set()),
    "voipgw_cluster_instances": ("gauge", set()),
    "voipgw_cluster_dead_instances": ("counter", set()),
    "voipgw_cluster_calls_closed": ("counter", set()),
    "voipgw_event_loop_lag_seconds": ("histogram", set()),
    "voipgw_overload_shed": ("counter", {"reason"}),
    "voipgw_overload_state": ("gauge", set()),
    "voipgw_overload_state_changes": ("counter", set()),
    "voipgw_overload_loop_lag_seconds": ("histogram", set()),
    "voipgw_overload_receive_queue_bytes": ("gauge", set()),
    "voipgw_transport_listening": ("gauge", {"transport", "family"}),
    "voipgw_build_info": ("gauge", {"version", "python"}),
}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(), version="1.2.3")


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def label_values(m: Metrics, sample_name: str, label: str) -> set[str]:
    return {
        s.labels[label]
        for family in m.registry.collect()
        for s in family.samples
        if s.name == sample_name
    }


def test_every_required_metric_exists_with_its_labels(metrics: Metrics) -> None:
    metrics.sip_request_in("INVITE")
    metrics.sip_response_in(200, "INVITE")
    metrics.sip_retransmission("INVITE")
    metrics.transaction_finished("INVITE", 0.1)
    metrics.emergency_call("nomadic", "psap_direct", "fi-112-south", "answered")
    metrics.parse_error("malformed")
    metrics.message_dropped("oversize")
    metrics.registration("registered")
    metrics.announcement("recording_notice", "played")
    metrics.overload_shed_event("cps_limit")
    metrics.caller_id_decided("outbound", "replaced", "not-held", "setera")
    metrics.set_transport_listening("udp", "127.0.0.1", True)
    families = {f.name: f for f in metrics.registry.collect()}
    assert set(families) == set(REQUIRED_FAMILIES)
    for name, (kind, labels) in REQUIRED_FAMILIES.items():
        family = families[name]
        assert family.type == kind, name
        assert family.documentation, name
        sample_labels = {k for s in family.samples for k in s.labels} - {"le"}
        assert sample_labels == labels, name


def test_names_follow_the_naming_guide(metrics: Metrics) -> None:
    for name in exported_names(metrics.registry):
        assert name.startswith("voipgw_")
        assert "milliseconds" not in name
        assert "_ms" not in name
    names = exported_names(metrics.registry)
    assert "voipgw_calls_total" in names
    assert "voipgw_call_setup_seconds_bucket" in names
    assert "voipgw_active_calls" in names
    assert "voipgw_calls" not in names


def test_call_lifecycle(metrics: Metrics) -> None:
    in_progress = [object(), object()]
    metrics.track_active_calls(lambda: len(in_progress))
    in_progress.pop()
    metrics.call_ended("office", "answered")
    metrics.call_refused("nomadic", "rejected")
    metrics.call_shed("unknown", "call_limit")
    assert value(metrics, "voipgw_active_calls") == 1
    assert value(metrics, "voipgw_calls_total", call_class="office", outcome="answered") == 1
    assert value(metrics, "voipgw_calls_total", call_class="nomadic", outcome="rejected") == 1
    assert value(metrics, "voipgw_calls_total", call_class="unknown", outcome="shed") == 1
    assert value(metrics, "voipgw_overload_shed_total", reason="call_limit") == 1


def test_load_shedding_samples_and_state(metrics: Metrics) -> None:
    metrics.overload_sampled(0.07, 200_000)
    metrics.overload_sampled(0.002, 1000)
    assert value(metrics, "voipgw_overload_loop_lag_seconds_count") == 2
    assert value(metrics, "voipgw_overload_loop_lag_seconds_bucket", le="0.05") == 1
    assert value(metrics, "voipgw_overload_receive_queue_bytes") == 1000
    metrics.overload_state_changed(True)
    assert value(metrics, "voipgw_overload_state") == 1
    metrics.overload_state_changed(False)
    assert value(metrics, "voipgw_overload_state") == 0
    assert value(metrics, "voipgw_overload_state_changes_total") == 2


def test_a_challenge_is_not_a_call(metrics: Metrics) -> None:
    metrics.track_active_calls(lambda: 0)
    metrics.call_challenged()
    assert value(metrics, "voipgw_active_calls") == 0
    assert value(metrics, "voipgw_call_auth_challenges_total") == 1
    calls = [
        s.value for f in metrics.calls.collect() for s in f.samples if s.name.endswith("_total")
    ]
    assert sum(calls) == 0


def test_registered_bindings_unknown_when_not_counted(metrics: Metrics) -> None:
    metrics.set_registered_bindings(3)
    assert value(metrics, "voipgw_registered_bindings") == 3
    metrics.set_registered_bindings(None)
    got = value(metrics, "voipgw_registered_bindings")
    assert got is not None
    assert math.isnan(got)  # a stale count would hide a loss from the alert


def test_call_series_start_at_zero(metrics: Metrics) -> None:
    for call_class in CALL_CLASSES:
        for outcome in CALL_OUTCOMES:
            got = value(metrics, "voipgw_calls_total", call_class=call_class, outcome=outcome)
            assert got == 0


def test_closed_labels_fall_back(metrics: Metrics) -> None:
    metrics.call_ended("sip:alice@example.com", "weird")
    assert value(metrics, "voipgw_calls_total", call_class="unknown", outcome="failed") == 1
    metrics.announcement("nomadic_warning", "exploded")
    assert label_values(metrics, "voipgw_announcements_total", "result") == {"not_played"}


@pytest.mark.parametrize(
    ("method", "label"),
    [
        ("INVITE", "INVITE"),
        (b"BYE", "BYE"),
        ("invite", "other"),  # RFC 3261 7.1: the method is case-sensitive
        ("FOO", "other"),
        (b"\xff\xfe", "other"),
        ("A" * 1000, "other"),
    ],
)
def test_method_normalisation(method: str | bytes, label: str) -> None:
    assert normalize_method(method) == label


@pytest.mark.parametrize(
    ("status", "label"),
    [(100, "100"), (486, "486"), (699, "699"), (99, "other"), (700, "other"), (0, "other")],
)
def test_status_label(status: int, label: str) -> None:
    assert status_label(status) == label


def test_sip_helpers(metrics: Metrics) -> None:
    metrics.sip_request_in("INVITE")
    metrics.sip_request_out("invite")
    metrics.sip_response_out(503, "INVITE")
    metrics.sip_response_in(1000, "OPTIONS")
    metrics.transaction_finished("REGISTER", 0.03)
    metrics.parse_error_from(513)
    metrics.parse_error_from(400)
    metrics.parse_error_from(418)
    assert value(metrics, "voipgw_sip_requests_total", method="INVITE", direction="in") == 1
    assert value(metrics, "voipgw_sip_requests_total", method="other", direction="out") == 1
    assert (
        value(metrics, "voipgw_sip_responses_total", code="503", method="INVITE", direction="out")
        == 1
    )
    assert (
        value(metrics, "voipgw_sip_responses_total", code="other", method="OPTIONS", direction="in")
        == 1
    )
    assert value(metrics, "voipgw_transaction_duration_seconds_count", method="REGISTER") == 1
    assert (
        value(metrics, "voipgw_transaction_duration_seconds_bucket", method="REGISTER", le="0.05")
        == 1
    )
    assert (
        value(metrics, "voipgw_transaction_duration_seconds_bucket", method="REGISTER", le="0.025")
        == 0
    )
    assert label_values(metrics, "voipgw_parse_errors_total", "reason") == {
        "too_large",
        "malformed",
        "other",
    }


def test_open_token_labels_are_capped(metrics: Metrics) -> None:
    for i in range(MAX_TOKEN_VALUES + 10):
        metrics.message_dropped(f"reason_{i}")
    metrics.message_dropped("Not A Token")
    metrics.message_dropped("sip:bob@192.0.2.4")
    reasons = label_values(metrics, "voipgw_dropped_messages_total", "reason")
    assert len(reasons) == MAX_TOKEN_VALUES + 1
    assert "other" in reasons
    assert value(metrics, "voipgw_dropped_messages_total", reason="other") == 12
    # A value admitted before the cap keeps counting under its own name.
    metrics.message_dropped("reason_0")
    assert value(metrics, "voipgw_dropped_messages_total", reason="reason_0") == 2


def test_emergency_series(metrics: Metrics) -> None:
    metrics.emergency_centres_configured("psap_direct", ["fi-112-south"])
    assert (
        value(
            metrics,
            "voipgw_emergency_calls_total",
            call_class="nomadic",
            policy="psap_direct",
            centre="fi-112-south",
            outcome="failed",
        )
        == 0
    )
    metrics.emergency_call("nomadic", "psap_direct", "fi-112-south", "failed")
    metrics.emergency_call("office", "psap_direct", "+358 112", "answered")
    assert (
        value(
            metrics,
            "voipgw_emergency_calls_total",
            call_class="nomadic",
            policy="psap_direct",
            centre="fi-112-south",
            outcome="failed",
        )
        == 1
    )
    assert "other" in label_values(metrics, "voipgw_emergency_calls_total", "centre")


def test_emergency_desk_messages_by_outcome(metrics: Metrics) -> None:
    metrics.emergency_desk_message("delivered")
    metrics.emergency_desk_message("timeout")
    metrics.emergency_desk_message("timeout")
    metrics.emergency_desk_message("sip:desk@example")  # never a URI as a label
    total = "voipgw_emergency_desk_messages_total"
    assert value(metrics, total, outcome="delivered") == 1
    assert value(metrics, total, outcome="timeout") == 2
    assert value(metrics, total, outcome="unreachable") == 1
    assert label_values(metrics, total, "outcome") <= {
        "delivered", "rejected", "timeout", "unreachable", "dropped"
    }  # fmt: skip


def test_emergency_desk_failovers_counted(metrics: Metrics) -> None:
    assert value(metrics, "voipgw_emergency_desk_failovers_total") == 0
    metrics.emergency_desk_failover()
    metrics.emergency_desk_failover()
    assert value(metrics, "voipgw_emergency_desk_failovers_total") == 2


def test_cdr_media_transport_and_build(metrics: Metrics) -> None:
    metrics.cdr_batch_committed(250, 0.04)
    metrics.set_cdr_queue_depth(7)
    metrics.set_cdr_spool(4096, 12.5)
    metrics.set_cdr_partitions_ahead(2)
    metrics.rtp_lateness(-0.001)
    metrics.call_setup_observed("office", True, 0.8)
    metrics.set_transport_listening("TCP", "::1", True)
    metrics.set_transport_listening("udp", "0.0.0.0", False)
    assert value(metrics, "voipgw_cdr_rows_committed_total") == 250
    assert value(metrics, "voipgw_cdr_copy_duration_seconds_sum") == pytest.approx(0.04)
    assert value(metrics, "voipgw_cdr_queue_depth") == 7
    assert value(metrics, "voipgw_cdr_spool_bytes") == 4096
    assert value(metrics, "voipgw_cdr_spool_oldest_age_seconds") == 12.5
    assert value(metrics, "voipgw_cdr_partitions_ahead") == 2
    assert value(metrics, "voipgw_rtp_send_lateness_seconds_sum") == 0
    assert (
        value(metrics, "voipgw_call_setup_seconds_count", call_class="office", emergency="true")
        == 1
    )
    assert value(metrics, "voipgw_transport_listening", transport="tcp", family="ipv6") == 1
    assert value(metrics, "voipgw_transport_listening", transport="udp", family="ipv4") == 0
    build = [
        s for f in metrics.registry.collect() for s in f.samples if s.name == "voipgw_build_info"
    ]
    assert len(build) == 1
    assert build[0].labels["version"] == "1.2.3"
    assert build[0].value == 1


def test_default_metrics_is_one_instance() -> None:
    assert default_metrics() is default_metrics()


@pytest.mark.asyncio
async def test_event_loop_lag_monitor_sees_a_blocked_loop(metrics: Metrics) -> None:
    task = asyncio.create_task(run_event_loop_lag_monitor(metrics, interval=0.02))
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # noqa: ASYNC251 (blocking the loop is the point)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert value(metrics, "voipgw_event_loop_lag_seconds_count") >= 2
    # The blocked stretch lands above 100 ms (a loaded machine may add more).
    over = value(metrics, "voipgw_event_loop_lag_seconds_count") - value(
        metrics, "voipgw_event_loop_lag_seconds_bucket", le="0.1"
    )
    assert over >= 1
    assert value(metrics, "voipgw_event_loop_lag_seconds_sum") >= 0.15


def test_metrics_config() -> None:
    assert MetricsConfig.from_table(Table({}, "metrics")) == MetricsConfig(
        enabled=True, address="127.0.0.1", port=9464, lag_interval=0.25
    )
    got = MetricsConfig.from_table(
        Table({"enabled": False, "address": "::", "port": 0, "lag_interval": 1}, "metrics")
    )
    assert got == MetricsConfig(enabled=False, address="::", port=0, lag_interval=1.0)
    with pytest.raises(ConfigError, match=r"^metrics.port: must be <= 65535"):
        MetricsConfig.from_table(Table({"port": 70000}, "metrics"))
    with pytest.raises(ConfigError, match=r"^metrics.address: expected an IP address"):
        MetricsConfig.from_table(Table({"address": "metrics.example"}, "metrics"))
    with pytest.raises(ConfigError, match=r"^metrics.listen: unknown field"):
        MetricsConfig.from_table(Table({"listen": "127.0.0.1"}, "metrics"))


def test_partitions_ahead_is_unknown_until_measured(metrics: Metrics) -> None:
    got = value(metrics, "voipgw_cdr_partitions_ahead")
    assert got is not None
    assert math.isnan(got)  # alert rules comparing it stay quiet
    metrics.set_cdr_partitions_ahead(0)
    assert value(metrics, "voipgw_cdr_partitions_ahead") == 0


def test_sip_traffic_exports_what_prometheus_client_would() -> None:
    """The hand-counted per-message series equal the library's own Counter and
    Histogram fed the same events (samples and values; only _created differs)."""
    from prometheus_client import Counter, Histogram

    from gateway.ops.metrics import _TRANSACTION_BUCKETS

    ours = Metrics(CollectorRegistry())
    registry = CollectorRegistry()
    requests = Counter("voipgw_sip_requests", "", ["method", "direction"], registry=registry)
    responses = Counter(
        "voipgw_sip_responses", "", ["code", "method", "direction"], registry=registry
    )
    retransmissions = Counter("voipgw_sip_retransmissions", "", ["method"], registry=registry)
    durations = Histogram(
        "voipgw_transaction_duration_seconds",
        "",
        ["method"],
        buckets=_TRANSACTION_BUCKETS,
        registry=registry,
    )
    events = [
        ("req", "INVITE", "in"),
        ("req", "INVITE", "in"),
        ("req", b"BYE", "out"),
        ("req", "FOO", "out"),
        ("resp", 200, "INVITE", "out"),
        ("resp", 200, "INVITE", "out"),
        ("resp", 800, "BYE", "in"),
        ("retx", "INVITE"),
        ("retx", "invite"),
        # on a bound, between bounds, beyond the last bound, zero
        ("dur", "INVITE", 0.005),
        ("dur", "INVITE", 0.3),
        ("dur", "INVITE", 500.0),
        ("dur", "BYE", 0.0),
    ]
    for event in events:
        kind, *args = event
        if kind == "req":
            method, direction = args
            ours.sip_request_in(method) if direction == "in" else ours.sip_request_out(method)
            label = method.decode() if isinstance(method, bytes) else method
            label = label if label in ("INVITE", "BYE") else "other"
            requests.labels(method=label, direction=direction).inc()
        elif kind == "resp":
            status, method, direction = args
            if direction == "in":
                ours.sip_response_in(status, method)
            else:
                ours.sip_response_out(status, method)
            code = str(status) if 100 <= status <= 699 else "other"
            responses.labels(code=code, method=method, direction=direction).inc()
        elif kind == "retx":
            ours.sip_retransmission(args[0])
            retransmissions.labels(method=args[0] if args[0] == "INVITE" else "other").inc()
        else:
            ours.transaction_finished(args[0], args[1])
            durations.labels(method=args[0]).observe(args[1])

    def samples(
        reg: CollectorRegistry,
    ) -> dict[str, set[tuple[str, tuple[tuple[str, str], ...], float]]]:
        out: dict[str, set[tuple[str, tuple[tuple[str, str], ...], float]]] = {}
        for family in reg.collect():
            if family.name not in {
                "voipgw_sip_requests",
                "voipgw_sip_responses",
                "voipgw_sip_retransmissions",
                "voipgw_transaction_duration_seconds",
            }:
                continue
            out[f"{family.name}:{family.type}"] = {
                (s.name, tuple(sorted(s.labels.items())), s.value)
                for s in family.samples
                if not s.name.endswith("_created")
            }
        return out

    expected = samples(registry)
    assert len(expected) == 4
    assert samples(ours.registry) == expected


def test_caller_id_labels_are_bounded() -> None:
    """Unknown tokens fold into fixed values (a number never becomes a label); the
    customer label admits ids up to MAX_CUSTOMER_LABELS, and kept calls never create a
    customer series."""
    from gateway.ops import metrics as metrics_module

    m = Metrics(CollectorRegistry())
    m.caller_id_decided("outbound", "kept", "own-number", "setera")
    m.caller_id_decided("sideways", "bogus", "+358401234567", "acme")
    for i in range(metrics_module.MAX_CUSTOMER_LABELS + 5):
        m.caller_id_decided("outbound", "replaced", "not-held", f"c{i}")
    assert (
        value(
            m,
            "voipgw_caller_id_decisions_total",
            direction="outbound",
            decision="kept",
            reason="other",
        )
        == 1
    )
    customers = label_values(m, "voipgw_caller_id_changed_total", "customer")
    assert "setera" not in customers
    assert "other" in customers
    assert len(customers) == metrics_module.MAX_CUSTOMER_LABELS + 1
