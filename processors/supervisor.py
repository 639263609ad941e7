"""Keep `msgstatus worker` and `msgstatus poller` running: restart them when they exit.

The worker is crash-only by design: a Kafka write that failed for good, an agent that
crashed, a broker that stayed away too long all end the process (exit code 70 for a
failed write), and everything it had not committed is processed again by the next one.
That is only safe if a next one comes. So the command runs the real process as a child
and restarts it after any exit it did not ask for, with a capped exponential backoff:
1 s, 2 s, 4 s ... 60 s, back to 1 s once a child ran for a minute.

- SIGTERM and SIGINT are forwarded to the child; the supervisor then waits for it and
  exits with its code (0 after a clean stop) without restarting.
- Exit code 2 (bad configuration or usage) is not retried: the supervisor exits 2.
  Neither is faults.EXIT_CODE (99, a crash injected by a test with MSGSTATUS_CRASH_AT,
  which would only happen again).
- The child stays in the supervisor's process group, so a signal to the group (Ctrl-C,
  `kill -STOP -<pgid>`, a SIGKILL of the group) reaches both; the worker and the poller
  act on the first SIGTERM/SIGINT and ignore the forwarded repeat. On Linux the child is
  killed if the supervisor alone dies (PR_SET_PDEATHSIG).

`--no-supervisor` runs the process directly, for process managers that restart it
themselves (systemd `Restart=`, a Kubernetes pod): they then see every exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from processors.stream.faults import EXIT_CODE as INJECTED_CRASH

log = logging.getLogger("msgstatus.supervisor")

FIRST_DELAY = 1.0
MAX_DELAY = 60.0
STABLE_AFTER = 60.0  # a child that ran this long starts the backoff over
BAD_CONFIG = 2
FINAL_CODES = {
    BAD_CONFIG: "bad configuration",
    INJECTED_CRASH: "a crash injected with MSGSTATUS_CRASH_AT",
}
REASONS = {
    1: "an error at start-up or an unexpected failure",
    70: "a Kafka write failed for good",
}


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec hook that makes the child get SIGKILL when the supervisor dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)

    return hook


def describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    reason = FINAL_CODES.get(code) or REASONS.get(code)
    return f"exit code {code}" + (f" ({reason})" if reason else "")


def supervise(
    command: Sequence[str],
    name: str,
    *,
    first_delay: float = FIRST_DELAY,
    max_delay: float = MAX_DELAY,
    stable_after: float = STABLE_AFTER,
) -> int:
    """Run `command` until a signal stops it; returns the exit code to end with."""
    stopping: list[int] = []
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        if child and child[-1].poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child[-1].send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    delay = first_delay
    restarts = 0
    try:
        while True:
            started = time.monotonic()
            proc = subprocess.Popen(list(command), preexec_fn=_die_with_parent())
            child.append(proc)
            del child[:-1]
            if stopping:  # a signal came while it was starting
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(stopping[-1])
            code = proc.wait()
            if stopping:
                return max(code, 0)
            if code in FINAL_CODES:
                log.error("%s ended: %s; not restarting it", name, describe(code))
                return code
            if time.monotonic() - started >= stable_after:
                delay = first_delay
            restarts += 1
            log.error(
                "%s ended: %s; restarting it in %.1f s (restart %d)",
                name,
                describe(code),
                delay,
                restarts,
            )
            wake = time.monotonic() + delay
            while time.monotonic() < wake and not stopping:
                time.sleep(min(0.1, max(0.0, wake - time.monotonic())))
            if stopping:
                return 0
            delay = min(max_delay, delay * 2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
