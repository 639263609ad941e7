"""`msgstatus demo` against real gateway and worker processes: what `make run` shows.

The demo is the first thing a newcomer runs, so it is checked the way they use it: as a
command whose exit status and closing summary say whether every message ended right.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.processes import (
    ROOT,
    SECRETS,
    base_env,
    free_port,
    start_gateway,
    start_worker,
)

from bench.processes import Process

pytestmark = pytest.mark.integration

EVENT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}  \S+:\S+ +#\d+ +\S+ -> \S+")


def run_demo(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "processors.cli", "demo", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for_metrics(worker: Process, port: str, timeout: float = 60) -> None:
    """Like `make run`: the demo measures drops as a difference of the worker's counters."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.alive(), f"worker exited:\n{worker.log_tail()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise AssertionError(f"worker metrics not up in {timeout}s:\n{worker.log_tail()}")


def test_demo_messages_all_end_as_expected(kafka, redis_server, topic_prefix, tmp_path: Path):
    env = base_env(
        kafka.bootstrap,
        topic_prefix,
        tmp_path / "data",
        MSGSTATUS_REDIS_URL=redis_server.url,
        MSGSTATUS_METRICS_PORT=str(free_port()),
    )
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path)
    try:
        wait_for_metrics(worker, env["MSGSTATUS_METRICS_PORT"])
        result = run_demo(env, "--messages", "60", "--url", url, "--timeout", "120")
    finally:
        gateway.stop()
        worker.stop()
    report = f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{report}\nworker:\n{worker.log_tail()}"
    lines = result.stdout.splitlines()
    assert "ended as expected: 60/60" in lines, report
    assert lines[-1] == "demo OK: all 60 messages ended as expected", report
    events = [line for line in lines if EVENT_LINE.match(line)]
    assert len(events) >= 60, report  # the stream itself is shown, at least one per message
    assert re.search(r"^answers: +HTTP 200 \d+$", result.stdout, re.M), report
    # the worker's metrics were read: duplicates were posted, so some were dropped
    dropped = re.search(
        r"^dropped: +([1-9]\d*) duplicates, \d+ stale \(worker ordering outcomes:",
        result.stdout,
        re.M,
    )
    assert dropped, report


def test_demo_names_a_missing_secret(tmp_path: Path):
    env = base_env("127.0.0.1:1", "unused.", tmp_path)
    del env["MSGSTATUS_RYZE_TOKEN"]
    assert "MSGSTATUS_RYZE_TOKEN" in SECRETS
    result = run_demo(env, "--messages", "5", timeout=60)
    assert result.returncode == 1
    assert "MSGSTATUS_RYZE_TOKEN not set" in result.stderr
    assert result.stdout == ""
