"""Replay windows for signature schemes that sign a timestamp (DESIGN.md section 7).

A signature proves who sent a request, not when: a captured request stays valid
forever unless the signed timestamp is checked against the time we received it.
"""

from __future__ import annotations

from processors.providers.base import SignatureError


def require_fresh(signed_at: float | None, received_at: float, window: float, label: str) -> None:
    """Refuse a request whose signed time is missing or more than `window` seconds away
    from when the gateway received it (either direction: clocks drift)."""
    if signed_at is None:
        raise SignatureError(f"{label}: signed timestamp missing")
    if window > 0 and abs(received_at - signed_at) > window:
        raise SignatureError(f"{label}: signed timestamp outside the {window:.0f} s replay window")
