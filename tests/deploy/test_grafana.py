"""The provisioned Grafana dashboard: schema fields, and only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.ops.metrics import Metrics, exported_names
from tests.deploy.promql_names import metric_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "voipgw.json"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def gateway_names() -> frozenset[str]:
    return exported_names(Metrics(CollectorRegistry()).registry)


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    result = []
    for panel in dashboard["panels"]:
        result.append(panel)
        result.extend(panel.get("panels", []))
    return result


def test_dashboard_schema_fields(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "voipgw-main"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard  # provisioning assigns ids; a fixed one would clash
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    all_panels = panels(dashboard)
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    for panel in all_panels:
        assert isinstance(panel["id"], int)
        assert panel["type"]
        assert panel["title"]
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["refId"]
            assert target["expr"]
            assert "$instance" in target["expr"], panel["title"]


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def test_required_views_are_there(dashboard: dict[str, Any]) -> None:
    by_type: dict[str, set[str]] = {}
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            by_type.setdefault(panel["type"], set()).update(metric_names(target["expr"]))
    assert {
        "voipgw_call_setup_seconds_bucket",
        "voipgw_transaction_duration_seconds_bucket",
    } <= by_type["heatmap"]
    everything = set().union(*by_type.values())
    for name in (
        "voipgw_calls_total",
        "voipgw_emergency_calls_total",
        "voipgw_cdr_queue_depth",
        "voipgw_cdr_spool_bytes",
        "voipgw_cdr_spool_oldest_age_seconds",
        "voipgw_cdr_partitions_ahead",
        "voipgw_cdr_copy_duration_seconds_bucket",
        "voipgw_sip_responses_total",
        "voipgw_event_loop_lag_seconds_bucket",
    ):
        assert name in everything


def test_every_query_names_an_exported_metric(
    dashboard: dict[str, Any], gateway_names: frozenset[str]
) -> None:
    queried: set[str] = set()
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            names = metric_names(target["expr"])
            assert names, target["expr"]
            unknown = names - gateway_names
            assert not unknown, f"{panel['title']}: {sorted(unknown)} not exported"
            queried |= names
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["definition"])
            assert match, variable["definition"]
            assert match[1] in gateway_names
    assert len(queried) >= 20


def test_provisioning_files() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "voipgw-prometheus"
    dashboard = json.loads(DASHBOARD.read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert variable["current"]["value"] == source["uid"]

    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/voipgw.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    # The provider reads the path compose mounts deploy/grafana/dashboards on.
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
