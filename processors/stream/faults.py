"""Deterministic fault injection: make the worker die at a named point.

Crash consistency is only believable if a test can stop the process exactly between
two writes that must never be seen half-done. `MSGSTATUS_CRASH_AT=<point>[/<table>][:<n>]`
makes the worker exit (code 99, no clean-up, like SIGKILL) the n-th time (default 1st)
it reaches `<point>` (for the changelog points: with a unit of `<table>`, when given);
several points may be given, comma-separated. Unset, a point costs one dictionary lookup.

Points (docs/architecture.md, "Crash consistency"):
- `changelog-handed`: a table unit was handed to Kafka, its acknowledgement not seen yet
  (nothing of it is in the local RocksDB: write-behind).
- `changelog-acked`: the changelog acknowledged a batch, the local RocksDB not written yet.
- `output-handed`: a `message.status` batch was handed to Kafka, not acknowledged yet.
- `state-applied`: a record's state unit was applied (Redis: the script answered) or
  queued (RocksDB), none of its outputs handed over yet (with `/<table>` as qualifier).
- `revoke-waiting`: a rebalance took partitions away while a record was still in hand.
- `before-commit`: every output of the processed records is acknowledged, their input
  offsets are not committed yet.
- `normalize-before-commit`: the same for the normalize stage's raw offsets.
- `rebuild-applying`: `msgstatus rebuild` wrote one partition's table values to the live
  changelogs; its corrections are not published yet (processors/ops/switch.py).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV = "MSGSTATUS_CRASH_AT"
EXIT_CODE = 99

POINTS = frozenset(
    {
        "changelog-handed",
        "changelog-acked",
        "output-handed",
        "state-applied",
        "revoke-waiting",
        "before-commit",
        "normalize-before-commit",
        "rebuild-applying",
    }
)


def _parse(raw: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, _, count = part.partition(":")
        if name.partition("/")[0] not in POINTS:
            raise ValueError(f"{ENV}: unknown point {name!r} (known: {', '.join(sorted(POINTS))})")
        armed[name] = int(count) if count else 1
    return armed


_armed: dict[str, int] = _parse(os.environ.get(ENV, ""))


def arm(spec: str) -> None:
    """Re-read the points (tests in one process)."""
    global _armed
    _armed = _parse(spec)


def point(name: str, qualifier: str | None = None) -> None:
    """Die here if `name` (or `name/qualifier`) is armed and this is its n-th visit."""
    if not _armed:
        return
    if qualifier is not None and f"{name}/{qualifier}" in _armed:
        name = f"{name}/{qualifier}"
    left = _armed.get(name)
    if left is None:
        return
    left -= 1
    _armed[name] = left
    if left <= 0:
        log.critical("fault injection: exiting at %s", name)
        logging.shutdown()
        os._exit(EXIT_CODE)
