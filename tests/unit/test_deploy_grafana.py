"""deploy/grafana: the dashboard is valid Grafana JSON whose every query parses as PromQL,
uses known metrics, and covers what operators asked for; provisioning points at it."""

from __future__ import annotations

from collections import Counter

import promql_parser
from support import promql

GRAFANA = promql.ROOT / "deploy" / "grafana"
DOC = promql.dashboard()


def test_dashboard_identity_and_variables() -> None:
    assert DOC["uid"] == "msgstatus-overview" and DOC["title"] == "msgstatus"
    names = {var["name"] for var in DOC["templating"]["list"]}
    assert names == {"datasource", "provider"}
    for panel in promql.panels(DOC):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_every_query_parses_and_uses_known_metrics() -> None:
    queries = promql.dashboard_queries(DOC)
    assert len(queries) >= 20
    known = promql.known_series()
    for title, expr in queries:
        assert "$" not in expr, f"{title}: unsubstituted variable in {expr}"
        promql_parser.parse(expr)  # raises on a syntax error
        unknown = promql.metric_names(expr) - known
        assert not unknown, f"{title}: unknown metrics {unknown}"
    for name, expr in promql.variable_queries(DOC):
        assert promql.metric_names(expr) <= known, name


def test_panels_have_unique_ids_and_refids_and_do_not_overlap() -> None:
    panels = promql.panels(DOC)
    ids = Counter(panel["id"] for panel in panels)
    assert max(ids.values()) == 1
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        here = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not here & cells, f"{panel['title']} overlaps another panel"
        cells |= here


def test_dashboard_covers_the_operators_questions() -> None:
    exprs = " ".join(expr for _, expr in promql.dashboard_queries(DOC))
    wanted = {
        "throughput": "msgstatus_gateway_requests_total",
        "status funnel": 'status=~"sent|delivered|read"',
        "failure categories": "sum by (category)",
        "end-to-end latency": "msgstatus_end_to_end_seconds_bucket",
        "consumer lag": "msgstatus_consumer_lag",
        "delivery_unknown rate": "msgstatus_delivery_unknown_total",
        "dead letters": "msgstatus_deadletters_total",
        "answers by code": "sum by (code)",
    }
    missing = [topic for topic, needle in wanted.items() if needle not in exprs]
    assert not missing


def test_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    source = promql.load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (datasource,) = source["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"]
    provider = promql.load_yaml(GRAFANA / "provisioning" / "dashboards" / "msgstatus.yml")
    (files,) = provider["providers"]
    assert files["type"] == "file"
    assert files["options"]["path"] == "/var/lib/grafana/dashboards"
