"""Run msgstatus parts as real separate processes for end-to-end tests (bench/processes.py:
the same helper the benchmarks use)."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from bench.processes import Process
from processors.config import SINGLE_BROKER_ENV
from support.infra import local_infra

free_port = local_infra.free_port

ROOT = Path(__file__).resolve().parents[2]

SECRETS = {
    "MSGSTATUS_TWILIO_AUTH_TOKEN": "twilio-test-token",
    "MSGSTATUS_META_APP_SECRET": "meta-test-secret",
    "MSGSTATUS_META_VERIFY_TOKEN": "meta-verify",
    "MSGSTATUS_RYZE_TOKEN": "ryze-test-token",
    "MSGSTATUS_API_TOKEN": "api-test-token",
    "MSGSTATUS_EVENTS_TOKEN": "events-test-token",
}


def base_env(bootstrap: str, prefix: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGSTATUS_")}
    env.update(SECRETS)
    env.update(
        {
            "MSGSTATUS_KAFKA_BOOTSTRAP": bootstrap,
            "MSGSTATUS_TOPIC_PREFIX": prefix,
            "MSGSTATUS_DATA_DIR": str(data_dir),
            "MSGSTATUS_PARTITIONS": "4",
            "PYTHONUNBUFFERED": "1",
            **SINGLE_BROKER_ENV,
        }
    )
    env.update(extra)
    return env


def start_gateway(
    env: Mapping[str, str], log_dir: Path, timeout: float = 30
) -> tuple[Process, str]:
    port = free_port()
    env = {**env, "MSGSTATUS_HTTP_PORT": str(port), "MSGSTATUS_HTTP_HOST": "127.0.0.1"}
    part = Process.msgstatus("gateway", (), env, log_dir).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not part.alive():
            raise RuntimeError(f"gateway exited:\n{part.log_tail()}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return part, url
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    part.stop()
    raise RuntimeError(f"gateway not ready in {timeout}s:\n{part.log_tail()}")


def start_worker(
    env: Mapping[str, str], log_dir: Path, *args: str, data_dir: Path | None = None
) -> Process:
    env = dict(env)
    if data_dir is not None:
        env["MSGSTATUS_DATA_DIR"] = str(data_dir)
    env.setdefault("MSGSTATUS_METRICS_PORT", str(free_port()))
    return Process.msgstatus("worker", args, env, log_dir).start()
