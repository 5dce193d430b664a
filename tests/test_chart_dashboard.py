"""The Grafana dashboard: shipped in a ConfigMap, and every query names a real metric.

The metric names come from the server's own Prometheus registry (labelprob.server.metrics
registered in prometheus_client's default registry, which the server serves), expanded
by metric type into the series names Prometheus stores (counter `_total`, histogram
`_bucket`/`_sum`/`_count`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest
from prometheus_client import REGISTRY

import labelprob.server.metrics  # noqa: F401  # registers the server's metrics
from tests.chart_support import CHART_DIR, FULLNAME, ci_values, only, render_valid

SERIES_SUFFIXES = {
    "counter": ["_total", "_created"],
    "gauge": [""],
    "histogram": ["_bucket", "_sum", "_count", "_created"],
    "summary": ["", "_sum", "_count", "_created"],
    "info": ["_info"],
}


def exported_series() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, [""])}
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a Grafana label_values() query)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    if expr.startswith("label_values("):
        first = expr.removeprefix("label_values(").split(",")[0].strip()
        return {first}
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    identifiers = re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr)
    # A name followed by "(" is a function or aggregation; numbers do not match.
    return {m.group(1) for m in identifiers if not m.group(2) and not m.group(1)[0].isdigit()}


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def dashboard(chart: helm.Chart) -> dict[str, Any]:
    docs = render_valid(chart, ci_values("autoscaling-keda"))
    config_map = only(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "ML"}
    loaded: dict[str, Any] = json.loads(config_map["data"]["labelprob.json"])
    return loaded


def test_metric_name_reader() -> None:
    # Guards the test below: the reader finds names inside functions, matchers and ranges.
    expr = 'histogram_quantile(0.9, sum by (le) (rate(a_b_bucket{x="y{z}"}[5m]))) / c_d'
    assert metric_names(expr) == {"a_b_bucket", "c_d"}
    assert metric_names('label_values(a_up{namespace="$namespace"}, pod)') == {"a_up"}
    assert "labelprob_request_total" not in exported_series()  # a near miss is caught


def test_every_dashboard_query_names_an_exported_metric(dashboard: dict[str, Any]) -> None:
    exported = exported_series()
    assert {"labelprob_requests_total", "labelprob_request_latency_seconds_bucket"} <= exported
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 10
    used: set[str] = set()
    for query in queries:
        names = metric_names(query)
        assert names, f"no metric in {query!r}"
        assert names <= exported, f"{sorted(names - exported)} not exported, in {query!r}"
        used |= names
    # Every labelprob metric the server exports has a panel.
    for family in REGISTRY.collect():
        if family.name.startswith("labelprob_"):
            series = {family.name + s for s in SERIES_SUFFIXES[family.type]}
            assert series & used, f"{family.name} has no panel"


def test_dashboard_is_off_by_default(chart: helm.Chart) -> None:
    docs = render_valid(chart, {})
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
