"""The supervisor of `msgstatus worker` / `msgstatus poller`, with a stand-in child: a tiny
Python script that exits with the codes it is told, one per start."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from processors import cli
from processors.supervisor import describe

# Starts are logged to `starts`; the n-th start exits with codes[n], or runs until SIGTERM
# (exit 0) once the codes are used up.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    starts, codes = sys.argv[1], [int(c) for c in sys.argv[2].split(",") if c]
    with open(starts, "a") as f:
        f.write(f"{os.getpid()} {time.monotonic()}\\n")
    n = len(open(starts).read().splitlines())
    if n <= len(codes):
        os._exit(codes[n - 1])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    while True:
        time.sleep(0.05)
    """
)


def start(tmp_path: Path, codes: str) -> tuple[subprocess.Popen[bytes], Path]:
    starts = tmp_path / "starts"
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    code = (
        "import sys; from processors.supervisor import supervise; "
        f"sys.exit(supervise([sys.executable, {str(child)!r}, {str(starts)!r}, {codes!r}], "
        "'test child', first_delay=0.2, max_delay=0.8, stable_after=30))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, start_new_session=True
    )
    return proc, starts


def lines(starts: Path) -> list[tuple[int, float]]:
    try:
        return [
            (int(a), float(b)) for a, b in (x.split() for x in starts.read_text().split("\n") if x)
        ]
    except FileNotFoundError:
        return []


def wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_a_crashed_child_is_restarted_with_growing_pauses_and_sigterm_is_forwarded(
    tmp_path: Path,
) -> None:
    proc, starts = start(tmp_path, "70,1,70,70")
    try:
        wait_for(lambda: len(lines(starts)) == 5)
        times = [t for _, t in lines(starts)]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # 0.2, 0.4, 0.8, 0.8 s: doubling, capped
        wanted = (0.2, 0.4, 0.8, 0.8)
        assert all(g >= want - 0.05 for g, want in zip(gaps, wanted, strict=True)), gaps
        assert gaps[2] < 2.0 and gaps[3] < 2.0, gaps
        child = lines(starts)[-1][0]
        assert alive(child)
        os.kill(proc.pid, signal.SIGTERM)  # a clean stop: forwarded, not restarted
        assert proc.wait(10) == 0
        assert not alive(child)
        time.sleep(0.5)
        assert len(lines(starts)) == 5
        log = proc.stderr.read().decode() if proc.stderr else ""
        assert "exit code 70 (a Kafka write failed for good)" in log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_bad_configuration_is_not_retried(tmp_path: Path) -> None:
    proc, starts = start(tmp_path, "2")
    assert proc.wait(10) == 2
    assert len(lines(starts)) == 1
    assert "bad configuration" in (proc.stderr.read().decode() if proc.stderr else "")


def test_the_child_dies_with_a_killed_supervisor(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    proc, starts = start(tmp_path, "")
    wait_for(lambda: len(lines(starts)) == 1)
    child = lines(starts)[0][0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: not alive(child), timeout=5)


def test_worker_and_poller_run_supervised_unless_told_not_to(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[list[str], str]] = []
    monkeypatch.setattr("processors.supervisor.supervise", lambda c, n: seen.append((c, n)) or 0)
    monkeypatch.setenv("MSGSTATUS_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert cli.main(["worker", "--no-read-model"]) == 0
    assert cli.main(["poller"]) == 0
    assert seen == [
        ([sys.executable, "-m", "processors.cli", "worker", "--no-read-model", "--no-supervisor"],
         "msgstatus worker"),
        ([sys.executable, "-m", "processors.cli", "poller", "--no-supervisor"], "msgstatus poller"),
    ]  # fmt: skip
    # the child itself runs the command (here: the poller refusing its configuration)
    monkeypatch.setitem(cli.COMMANDS, "poller", lambda settings, args: 2)
    assert cli.main(["poller", "--no-supervisor"]) == 2
    assert len(seen) == 2


def test_exits_are_described_for_the_log() -> None:
    assert describe(70) == "exit code 70 (a Kafka write failed for good)"
    assert describe(-9) == "killed by SIGKILL"
    assert describe(3) == "exit code 3"


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


def test_signals_to_the_process_group_reach_the_child_too(tmp_path: Path) -> None:
    """A frozen worker must be frozen for real (`kill -STOP -<pgid>`), and a group SIGTERM
    (the test harness, Ctrl-C) is one clean stop, not a restart."""
    proc, starts = start(tmp_path, "")
    try:
        wait_for(lambda: len(lines(starts)) == 1)
        child = lines(starts)[0][0]
        os.killpg(proc.pid, signal.SIGSTOP)
        wait_for(lambda: state(child) == "T" and state(proc.pid) == "T", timeout=5)
        os.killpg(proc.pid, signal.SIGCONT)
        wait_for(lambda: state(child) != "T", timeout=5)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not alive(child) and len(lines(starts)) == 1
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
