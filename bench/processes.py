"""Real msgstatus processes for the benchmarks and the integration tests.

Each runs in its own process group (so a stop reaches whatever it started), with its
output in a log file, and gets SIGKILL when the process that started it dies: a
benchmark or a test that is interrupted leaves no gateway or worker behind holding
ports and CPU on a shared machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> object:
    """preexec hook: the child gets SIGKILL if the process that started it dies."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return hook


class Process:
    """One subprocess in its own process group, its output appended to `log_path`."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name or Path(args[-1]).name  # what error messages call it
        self.args = list(args)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd or ROOT
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def msgstatus(
        cls,
        command: str,
        args: Sequence[str],
        env: Mapping[str, str],
        log_dir: Path,
        cwd: Path | None = None,
    ) -> Process:
        """`msgstatus <command> <args>` from this checkout, logged in `log_dir`."""
        log_path = log_dir / f"{command}-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "processors.cli", command, *args]
        return cls(argv, env, log_path, cwd, name=command)

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),  # type: ignore[arg-type]
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU the process has used so far (0 once it is gone)."""
        try:
            with open(f"/proc/{self.pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, AssertionError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL to the whole group, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group, SIGKILL after `timeout` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    async def stop_async(self, timeout: float = 15.0) -> None:
        """`stop()` without blocking the event loop; SIGKILL at once if cancelled, and
        to anything the process left behind in its group."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self._signal(signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while self.proc.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
        finally:
            if self.proc.poll() is None:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
            self._signal(signal.SIGKILL)
