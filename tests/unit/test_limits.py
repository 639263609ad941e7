"""The gateway's and the stream's cheap limits agree with what they stand for."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.providers.limits import MAX_FORM_FIELDS, form_fields, json_too_deep


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    best, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, list | dict):
            best = max(best, level + 1)
            stack.extend(
                (child, level + 1) for child in (node.values() if isinstance(node, dict) else node)
            )
    return best


TRICKY_TEXT = st.text(alphabet='[]{}"\\ab,:\n', max_size=12)
values = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY_TEXT, inner, max_size=3),
    max_leaves=60,
)


@settings(max_examples=1500, deadline=None)
@given(values, st.integers(0, 12))
def test_json_too_deep_matches_the_parsed_depth(value: Any, limit: int) -> None:
    for text in (orjson.dumps(value), json.dumps(value, indent=1).encode()):
        assert json_too_deep(text, limit) == (depth(orjson.loads(text)) > limit)


def test_json_too_deep_at_the_limit_and_beyond() -> None:
    for levels in (1, 63, 64, 65, 300, 5000):
        body = b"[" * levels + b"]" * levels
        assert json_too_deep(body, 64) == (levels > 64)
        obj = b'{"k":' * levels + b"1" + b"}" * levels
        assert json_too_deep(obj, 64) == (levels > 64)
    # brackets inside strings, with and without escapes, do not count
    assert not json_too_deep(orjson.dumps(["[" * 500, '\\"[[[' * 200]), 64)


def test_form_fields_counts_without_parsing() -> None:
    assert form_fields(b"") == 0
    assert form_fields(b"a=1") == 1
    assert form_fields(b"a=1&b=2&&") == 4
    assert form_fields(b"&".join([b"x="] * (MAX_FORM_FIELDS + 1))) == MAX_FORM_FIELDS + 1
