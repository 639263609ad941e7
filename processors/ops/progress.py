"""A progress line on stderr for the operator commands (replay, redrive, rebuild).

Results go to stdout and must stay machine-readable, so progress is stderr only
(DESIGN.md section 10). On a terminal the line is redrawn in place a few times a second;
otherwise (a CI log, `2> file`) one line is written every few seconds, so a log of a
long run shows it moving without growing by thousands of lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR = 24
TTY_EVERY = 0.2  # seconds between redraws on a terminal
LOG_EVERY = 5.0  # seconds between lines elsewhere


def clock(seconds: float) -> str:
    """3725 -> "1:02:05"; 65 -> "1:05"."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render(
    label: str, done: int, total: int | None, rate: float | None, unit: str = "records"
) -> str:
    """One progress line: label, bar, done/total, percent, rate and ETA (when known)."""
    parts = [label]
    if total:
        share = min(1.0, max(0.0, done / total))
        filled = int(share * BAR)
        parts.append("[" + "#" * filled + "-" * (BAR - filled) + "]")
        parts.append(f"{done:,}/{total:,} {unit}")
        parts.append(f"{share * 100:3.0f}%")
    else:
        parts.append(f"{done:,} {unit}")
    if rate is not None:
        parts.append(f"{rate:,.0f}/s")
        if total and rate > 0 and done < total:
            parts.append(f"ETA {clock((total - done) / rate)}")
    return " ".join(parts)


class Progress:
    """Tracks done/total and draws `render()` on `stream`.

    The rate is measured from the first update that moved on (start-up, such as a
    consumer joining, does not count as slow progress).
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "records",
        stream: TextIO | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self._now = now
        self._started = now()
        self.done = 0
        self.note = ""
        self._base: tuple[float, int] | None = None  # (time, done) when it first moved
        self._drawn = float("-inf")
        self._width = 0
        tty = getattr(self.stream, "isatty", None)
        self.tty = bool(tty and tty())

    def rate(self) -> float | None:
        if self._base is None:
            return None
        elapsed = self._now() - self._base[0]
        if elapsed < 0.5:
            return None
        return (self.done - self._base[1]) / elapsed

    def update(self, done: int, total: int | None = None) -> None:
        """Set the absolute count (and the total, when it became known or changed)."""
        if total is not None:
            self.total = total
        if self.total is not None and done > self.total:
            self.total = done  # the log grew while it was read
        if self._base is None and done != self.done:
            # the first move marks the start (its own records came at an unknown time)
            self._base = (self._now(), done)
        self.done = done
        self._draw(False)

    def advance(self, count: int = 1) -> None:
        self.update(self.done + count)

    def line(self) -> str:
        text = render(self.label, self.done, self.total, self.rate(), self.unit)
        return f"{text} -- {self.note}" if self.note else text

    def _draw(self, final: bool) -> None:
        now = self._now()
        every = TTY_EVERY if self.tty else LOG_EVERY
        if not final and now - self._drawn < every:
            return
        self._drawn = now
        text = self.line()
        if self.tty:
            pad = " " * max(0, self._width - len(text))
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, note: str = "") -> None:
        """Draw the last state once more (always), with the time taken and a note."""
        took = f"in {clock(self._now() - self._started)}"
        self.note = f"{took}, {note}" if note else took
        self._draw(True)


def say(message: str, stream: TextIO | None = None) -> None:
    """A one-off progress message (a phase starting, something to do), on stderr."""
    out = stream if stream is not None else sys.stderr
    out.write(message + "\n")
    out.flush()
