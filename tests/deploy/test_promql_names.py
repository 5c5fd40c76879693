"""The PromQL name extractor the dashboard and rules tests rely on."""

from __future__ import annotations

import pytest

from tests.deploy.promql_names import metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", {"up"}),
        (
            'sum by (le, call_class) (rate(voipgw_call_setup_seconds_bucket{instance=~"$instance",'
            'x="by (foo)"}[$__rate_interval]))',
            {"voipgw_call_setup_seconds_bucket"},
        ),
        (
            'a_total{o!="answered"} unless on (job) b_total offset 10m > 0 or c:d:rate5m > 1e3',
            {"a_total", "b_total", "c:d:rate5m"},
        ),
        ("max_over_time(sum by (job) (x)[10m:1m]) / ignoring(i) group_left y", {"x", "y"}),
        ("histogram_quantile(0.95, sum(rate(h_bucket[5m])))", {"h_bucket"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
