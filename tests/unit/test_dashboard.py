"""Lint of the Grafana dashboard deploy/grafana/refund-ledger.json (no Grafana server offline):
uid, unique panel ids, layout, data source references, every PromQL expression parsed with
``promql-parser``, and every metric it reads is one the services export (services/kit/metrics.py)
or one announced for the ops issue (ANNOUNCED_METRICS), so a renamed metric breaks this test
instead of silently emptying a panel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "refund-ledger.json"
DASHBOARD_COPY = ROOT / "deploy" / "k8s" / "base" / "dashboards" / "refund-ledger.json"
METRICS_PY = ROOT / "services" / "kit" / "metrics.py"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

#: Metrics the team adds for the ops issue (name -> type), besides those already in metrics.py.
ANNOUNCED_METRICS = {
    "refund_ledger_consumer_lag_messages": "gauge",        # {topic, partition}
    "refund_ledger_refunds": "gauge",                      # {state, route}
    "refund_ledger_refunds_overdue": "gauge",              # {agency}
    "refund_ledger_sla_breaches_total": "counter",         # {route, owner}
    "refund_ledger_unreflected_payments": "gauge",
    "refund_ledger_status_mismatches": "gauge",
    "refund_ledger_notifications_sent_total": "counter",   # {channel}
    "refund_ledger_notifications_failed_total": "counter",  # {channel}
    "refund_ledger_notifications_pending": "gauge",        # {channel}
    "refund_ledger_dependency_up": "gauge",                # {dependency}, every service
}
#: Series every scrape target has (Prometheus's own).
PROMETHEUS_SERIES = {"up"}

#: What the dashboard must show (the ops issue): a metric per subject.
REQUIRED = {
    "throughput": "refund_ledger_events_consumed_total",
    "consumer lag": "refund_ledger_consumer_lag_messages",
    "rejections": "refund_ledger_events_rejected_total",
    "SLA per agency": "refund_ledger_refunds_overdue",
    "SLA breaches": "refund_ledger_sla_breaches_total",
    "refund funnel": "refund_ledger_refunds",
    "outbox backlog": "refund_ledger_outbox_backlog_events",
    "audit API latency": "refund_ledger_http_request_duration_seconds_bucket",
    "notifications sent": "refund_ledger_notifications_sent_total",
    "notifications failed": "refund_ledger_notifications_failed_total",
    "notifications pending": "refund_ledger_notifications_pending",
}

_DECLARATION = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(refund_ledger_[a-z0-9_]+)\"")
_GRAFANA_DURATION = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}")
_GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def declared_metrics(text: str | None = None) -> dict[str, str]:
    """``refund_ledger_*`` names declared in services/kit/metrics.py -> their type."""
    text = METRICS_PY.read_text() if text is None else text
    found = {name: kind.lower() for kind, name in _DECLARATION.findall(text)}
    # A name in metrics.py declared some other way still counts (as an untyped gauge).
    for name in re.findall(r"\"(refund_ledger_[a-z0-9_]+)\"", text):
        found.setdefault(name, "gauge")
    return found


def series_names(metrics: dict[str, str]) -> set[str]:
    """Every series name the metrics expose: histograms add _bucket/_sum/_count, counters _total."""
    names: set[str] = set()
    for name, kind in metrics.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {name, f"{name}_sum", f"{name}_count"}
        elif kind == "counter":
            names.add(name if name.endswith("_total") else f"{name}_total")
        else:
            names.add(name)
    return names


def known_series() -> set[str]:
    return series_names(declared_metrics() | ANNOUNCED_METRICS) | PROMETHEUS_SERIES


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables by values PromQL accepts (durations, label values)."""
    expr = _GRAFANA_DURATION.sub("5m", expr)
    return _GRAFANA_VARIABLE.sub("var", expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (raises ValueError if it does not parse)."""
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    name = matcher.value
            assert name, f"a selector without a metric name in {expr!r}"
            names.add(name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return panels


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every query: panel targets and query variables."""
    found = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['id']} {panel.get('title')!r} {target.get('refId')}", target.get("expr")))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            label_values = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            found.append((f"variable {variable['name']}", label_values.group(1) if label_values else query))
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_the_dashboard_has_a_stable_uid_title_and_schema(dashboard):
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"]), "Grafana uids: 1-40 of [A-Za-z0-9_-]"
    assert dashboard["uid"] == "refund-ledger"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None, "a provisioned dashboard carries no database id"


def test_panel_ids_are_unique_and_panels_fit_the_grid_without_overlapping(dashboard):
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] >= 0 and grid["y"] >= 0, panel["id"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['id']} is wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {panel['id']} overlap"
                cells[(x, y)] = panel["id"]


def test_every_query_uses_the_datasource_variable(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            assert not panel.get("targets"), f"row {panel['title']} has queries"
            continue
        assert panel.get("datasource") == DATASOURCE, f"panel {panel['id']} {panel['title']}: {panel.get('datasource')}"
        assert panel.get("targets"), f"panel {panel['id']} {panel['title']} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"panel {panel['id']}: duplicate refIds"
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, f"panel {panel['id']} {target['refId']}"


def test_every_variable_a_query_uses_is_defined(dashboard):
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    builtin = {"__rate_interval", "__interval", "__range"}
    for where, expr in expressions(dashboard):
        for name in _GRAFANA_VARIABLE.findall(expr):
            assert name in defined | builtin, f"{where}: ${name} is not a dashboard variable"


def test_every_expression_parses_as_promql(dashboard):
    exprs = expressions(dashboard)
    assert len(exprs) >= 30
    for where, expr in exprs:
        assert expr and expr.strip(), f"{where}: empty expr"
        try:
            promql_parser.parse(grafana_to_promql(expr))
        except ValueError as error:
            pytest.fail(f"{where}: does not parse: {error}\n{expr}")


def test_every_metric_is_one_the_services_export(dashboard):
    known = known_series()
    for where, expr in expressions(dashboard):
        unknown = metric_names(grafana_to_promql(expr)) - known
        assert not unknown, f"{where}: unknown metrics {sorted(unknown)} (known: services/kit/metrics.py, " \
                            f"ANNOUNCED_METRICS)"


def test_the_dashboard_covers_every_subject_of_the_ops_issue(dashboard):
    used = set().union(*(metric_names(grafana_to_promql(e)) for _, e in expressions(dashboard)))
    missing = {subject: metric for subject, metric in REQUIRED.items() if metric not in used}
    assert not missing, f"no panel for {missing}"
    by_reason = [e for _, e in expressions(dashboard)
                 if "refund_ledger_events_rejected_total" in e and "reason_code" in e]
    assert by_reason, "no panel shows rejections by reason"
    per_agency = [e for _, e in expressions(dashboard) if "refund_ledger_refunds_overdue" in e and "agency" in e]
    assert per_agency, "no panel shows overdue refunds per agency"


def test_the_lint_itself_catches_unknown_metrics_and_bad_promql():
    """Guards the guard: a typo in a metric name and broken PromQL must both be found."""
    assert "refund_ledger_events_consumed_total" in known_series()
    assert "refund_ledger_batch_processing_seconds_bucket" in known_series()
    assert "refund_ledger_batch_processing_seconds" not in known_series()
    typo = 'sum(rate(refund_ledger_event_consumed_total{job=~"$job"}[$__rate_interval]))'
    assert metric_names(grafana_to_promql(typo)) == {"refund_ledger_event_consumed_total"}
    assert not metric_names(grafana_to_promql(typo)) <= known_series()
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(refund_ledger_events_consumed_total[5m])")
    source = 'X = Histogram(\n    "refund_ledger_x_seconds", "h")\nY = Counter("refund_ledger_y", "c")'
    declared = declared_metrics(source)
    assert series_names(declared) == {"refund_ledger_x_seconds_bucket", "refund_ledger_x_seconds_sum",
                                      "refund_ledger_x_seconds_count", "refund_ledger_y_total"}


def test_the_kustomize_copy_equals_the_dashboard():
    assert DASHBOARD_COPY.read_text() == DASHBOARD.read_text(), \
        "deploy/k8s/base/dashboards/refund-ledger.json is stale: run `.venv/bin/python deploy/sync_k8s.py`"
