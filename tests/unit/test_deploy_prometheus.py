"""deploy/prometheus: promtool checks the config and rules and runs the alert unit tests;
every alert is tested both ways, names a runbook entry that exists, and uses metrics and
jobs that exist (or are announced for the worker, below)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import promql

ROOT = promql.ROOT
OPERATIONS = ROOT / "docs" / "operations.md"


def promtool() -> str:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        pytest.fail(
            "promtool is not installed: `make test` installs it (deploy/local/infra.py "
            "prepare, Debian's prometheus package); or run "
            "`apt-get install -y --no-install-recommends prometheus`"
        )
    return found


def run_promtool(*args: str) -> str:
    result = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, cwd=promql.PROMETHEUS_DIR, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_promtool_checks_the_scrape_config_and_its_rules() -> None:
    output = run_promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in output and "alerts.yml" in output


def test_promtool_checks_the_rules() -> None:
    output = run_promtool("check", "rules", "alerts.yml")
    assert f"SUCCESS: {len(promql.alerts())} rules found" in output


def test_promtool_alert_unit_tests_pass() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", "alerts_test.yml")


def test_every_alert_is_tested_firing_and_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in promql.load_yaml(promql.ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {alert.name for alert in promql.alerts()}
    assert names - fires == set(), "alerts without a test where they fire"
    assert names - quiet == set(), "alerts without a test where they stay quiet"
    assert (fires | quiet) - names == set(), "tests of alerts that do not exist"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_alert_has_severity_text_and_a_runbook_entry() -> None:
    anchors = _anchors(OPERATIONS.read_text())
    for alert in promql.alerts():
        assert alert.labels.get("severity") in ("critical", "warning"), alert.name
        assert alert.annotations.get("summary") and alert.annotations.get("description")
        url = alert.annotations.get("runbook_url", "")
        assert url == f"docs/operations.md#{alert.name.lower()}", alert.name
        assert alert.name.lower() in anchors, f"docs/operations.md has no '### {alert.name}'"


def test_alerts_use_existing_metrics_and_jobs() -> None:
    known = promql.known_series()
    jobs = {job["job_name"] for job in promql.load_yaml(promql.SCRAPE_CONFIG)["scrape_configs"]}
    for alert in promql.alerts():
        unknown = promql.metric_names(alert.expr) - known
        assert not unknown, f"{alert.name} uses unknown metrics {unknown}"
        for job in re.findall(r'job="([^"]+)"', alert.expr):
            assert job in jobs, f"{alert.name} selects job {job!r}, not in prometheus.yml"


def test_code_metric_names_are_found() -> None:
    # guards the regex above: the existing metrics of every process are seen
    names = promql.code_metric_names()
    assert {
        "msgstatus_gateway_requests_total",
        "msgstatus_emitted_total",
        "msgstatus_poller_provider_stopped",
        "msgstatus_consumer_lag",
        "msgstatus_dependency_up",
    } <= names


def test_scrape_config_jobs_match_the_processes_ports() -> None:
    jobs = {
        job["job_name"]: job for job in promql.load_yaml(promql.SCRAPE_CONFIG)["scrape_configs"]
    }
    assert set(jobs) == {"msgstatus-gateway", "msgstatus-worker", "msgstatus-poller"}
    ports = {
        name: {t.rsplit(":", 1)[1] for c in job["static_configs"] for t in c["targets"]}
        for name, job in jobs.items()
    }
    # MSGSTATUS_HTTP_PORT, MSGSTATUS_METRICS_PORT, MSGSTATUS_POLLER_METRICS_PORT defaults
    assert ports == {
        "msgstatus-gateway": {"8080"},
        "msgstatus-worker": {"6066"},
        "msgstatus-poller": {"6067"},
    }
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs.values())
