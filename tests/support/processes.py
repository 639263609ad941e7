"""Run msgstatus parts as real separate processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

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


class Part:
    """One `msgstatus <command>` subprocess, its output kept in a log file."""

    def __init__(self, command: str, env: Mapping[str, str], log_dir: Path, *args: str) -> None:
        self.command = command
        self.env = dict(env)
        self.args = args
        self.log_path = log_dir / f"{command}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Part:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "processors.cli", self.command, *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def start_gateway(env: Mapping[str, str], log_dir: Path, timeout: float = 30) -> tuple[Part, str]:
    port = free_port()
    env = {**env, "MSGSTATUS_HTTP_PORT": str(port), "MSGSTATUS_HTTP_HOST": "127.0.0.1"}
    part = Part("gateway", env, log_dir).start()
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
) -> Part:
    env = dict(env)
    if data_dir is not None:
        env["MSGSTATUS_DATA_DIR"] = str(data_dir)
    env.setdefault("MSGSTATUS_METRICS_PORT", str(free_port()))
    return Part("worker", env, log_dir, *args).start()
