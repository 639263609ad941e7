"""Limits on what an untrusted body may cost, shared by the gateway and the stream.

The gateway applies them before it accepts a request; the normalize stage applies the
depth limit again to whatever reaches a raw topic by other means (old records, replays),
so neither depends on the other having done it.
"""

from __future__ import annotations

import re
from itertools import accumulate

# Deeper JSON is refused (gateway: 400; stream: dead letter `too_deep`). Provider
# payloads nest 6-8 levels; orjson itself refuses 1024 when parsing and 255 when writing.
MAX_JSON_DEPTH = 64
# Fields a form body may have before any signature work (gateway: 400). Status
# callbacks carry 10-40 (Twilio with ten media items: ~60).
MAX_FORM_FIELDS = 256

# A JSON string, escapes included (the unrolled form: no alternation per character).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_BRACKETS_OR_QUOTES = bytes(b for b in range(256) if b not in b'[]{}"')
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text nests arrays/objects more than `limit` levels deep.

    Not recursive and never builds a tree: strings are cut out, everything but the
    brackets is dropped (both in C), and the running depth is the sum of +1/-1 steps,
    stopping at the first level past the limit. About 40 ns per bracket: a 1 MiB body of
    nothing but brackets costs ~40 ms, a provider's batch a few microseconds; most bodies
    are decided by the first line (fewer brackets than the limit). For text that is not
    JSON the answer is a guess, and harmless: such a body is refused as unparseable.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    if b"\\" in body:  # escapes: a quote may be inside a string
        skeleton = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    else:  # every quote opens or closes a string: keep what lies between the pairs
        skeleton = b"".join(body.translate(None, _NOT_BRACKETS_OR_QUOTES).split(b'"')[::2])
    return any(depth > limit for depth in accumulate(map(_STEP.__getitem__, skeleton)))


def form_fields(body: bytes) -> int:
    """How many `&`-separated fields a form body has (counted, not parsed)."""
    return body.count(b"&") + 1 if body else 0
