"""Read the alert rules and the Grafana dashboard as data, and take their PromQL apart.

Alerts compare a signal with a threshold (`<signal> > 0.05`, `A > x and B > y`); the live
test checks that each *signal* returns series, since the alert itself only returns data
while it fires. `signals()` finds them with a real PromQL parser (promql-parser), so a
file edit never needs a matching edit here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "msgstatus.json"

COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
SET_OPERATORS = {"and", "or", "unless"}
# Grafana's built-in variables, as a range a live test with a short history can answer.
# Worker metrics the stream core adds (issue 15); alerts and dashboard use them already.
ANNOUNCED_WORKER_METRICS = {
    "msgstatus_end_to_end_seconds",
    "msgstatus_state_keys",
    "msgstatus_kafka_send_seconds",
    "msgstatus_rebalances_total",
    "msgstatus_watermark_lag_seconds",
    "msgstatus_failures_total",
}
GRAFANA_BUILTINS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
}


@dataclass(frozen=True)
class Alert:
    name: str
    group: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    duration: str | None = None


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alerts(path: Path = ALERTS) -> list[Alert]:
    found = []
    for group in load_yaml(path)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                found.append(
                    Alert(
                        name=rule["alert"],
                        group=group["name"],
                        expr=rule["expr"],
                        labels=dict(rule.get("labels", {})),
                        annotations=dict(rule.get("annotations", {})),
                        duration=rule.get("for"),
                    )
                )
    return found


def _signals(node: Any) -> list[Any]:
    if isinstance(node, promql_parser.ParenExpr):
        return _signals(node.expr)
    if isinstance(node, promql_parser.BinaryExpr):
        op = str(node.op)
        if op in SET_OPERATORS:
            return _signals(node.lhs) + _signals(node.rhs)
        if op in COMPARISONS:
            if isinstance(node.rhs, promql_parser.NumberLiteral):
                return _signals(node.lhs)
            if isinstance(node.lhs, promql_parser.NumberLiteral):
                return _signals(node.rhs)
    return [node]


def signals(expr: str) -> list[str]:
    """The queries an alert's thresholds are applied to, as PromQL text."""
    return [node.prettify() for node in _signals(promql_parser.parse(expr))]


def _walk(node: Any) -> list[Any]:
    out = [node]
    for attr in ("expr", "lhs", "rhs", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, str | int | float):
            out += _walk(child)
    if isinstance(node, promql_parser.Call):
        for arg in node.args:
            out += _walk(arg)
    if isinstance(node, promql_parser.AggregateExpr) and node.param is not None:
        out += _walk(node.param)
    return out


def metric_names(expr: str) -> set[str]:
    """Every metric name a query selects (`up` included)."""
    return {
        node.name
        for node in _walk(promql_parser.parse(expr))
        if isinstance(node, promql_parser.VectorSelector) and node.name
    }


def dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for panel in doc.get("panels", []):
        out.append(panel)
        out += panel.get("panels", [])
    return out


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace Grafana variables (`$provider`, `${provider}`, `$__rate_interval`)."""
    for name, value in {**GRAFANA_BUILTINS, **variables}.items():
        bare = name.lstrip("$")
        expr = expr.replace("${" + bare + "}", value)
        expr = re.sub(re.escape("$" + bare) + r"\b", lambda _m, v=value: v, expr)
    return expr


def dashboard_variables(doc: dict[str, Any]) -> dict[str, str]:
    """Each template variable as 'all values' (a regex that matches anything)."""
    return {
        f"${var['name']}": ".*"
        for var in doc.get("templating", {}).get("list", [])
        if var.get("type") in ("query", "custom")
    }


def dashboard_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL with variables substituted) for every target of every panel."""
    variables = dashboard_variables(doc)
    found = []
    for panel in panels(doc):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                found.append((panel.get("title", "?"), substitute(expr, variables)))
    return found


def variable_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The PromQL inside `label_values(<query>, label)` of each query variable."""
    found = []
    for var in doc.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", (text or "").strip())
        if match:
            found.append((var["name"], match.group(1)))
    return found


def code_metric_names() -> set[str]:
    """Metric names registered by the code (prometheus_client constructors' first arg)."""
    names: set[str] = set()
    pattern = re.compile(r'(?:Counter|Gauge|Histogram|Summary)\(\s*"(msgstatus_\w+)"')
    for path in (ROOT / "processors").rglob("*.py"):
        names |= set(pattern.findall(path.read_text()))
    return names


def series_names(metric: str) -> set[str]:
    """What one metric is exposed as (histograms as _bucket/_sum/_count)."""
    return {metric, f"{metric}_bucket", f"{metric}_sum", f"{metric}_count"}


def known_series() -> set[str]:
    known = {"up"}
    for metric in code_metric_names() | ANNOUNCED_WORKER_METRICS:
        known |= series_names(metric)
    return known
