"""Query strings as receipts and as credential carriers (processors/providers/query_string.py)."""

from __future__ import annotations

import pytest

from processors.providers import query_string
from processors.providers.base import SignatureError

from . import harness as h


@pytest.mark.parametrize(
    ("query", "names", "expected"),
    [
        ("a=1&token=s&b=%2D2", ("token",), "a=1&b=%2D2"),
        ("token=s", ("token",), ""),
        ("tok%65n=s&a=1", ("token",), "a=1"),  # the name is compared decoded
        ("a=1&&b=2&token", ("token",), "a=1&b=2"),
        ("a=1&b=2", ("token",), "a=1&b=2"),
        ("", ("token",), ""),
    ],
)
def test_without_params_keeps_every_other_byte(
    query: str, names: tuple[str, ...], expected: str
) -> None:
    assert query_string.without_params(query, names) == expected


def test_param_decodes_plus_and_percent() -> None:
    assert query_string.param("a=1&token=x%2By+z", "token") == "x+y z"
    assert query_string.param("a=1", "token") is None
    assert query_string.param("token", "token") is None
    assert query_string.param("x" * 20_000, "token") is None


def test_without_credentials_for_get_and_post() -> None:
    get = h.request(
        "smpp",
        b"id=1&token=s&type=1",
        url="https://gw.example/webhooks/smpp?id=1&token=s&type=1",
        content_type=None,
        method="GET",
    )
    clean = query_string.without_credentials(get, ("token",))
    assert (clean.url, clean.body) == (
        "https://gw.example/webhooks/smpp?id=1&type=1",
        b"id=1&type=1",
    )
    post = h.request("smpp", b"token=stays-in-a-body", url="https://gw.example/x?token=s&t=1")
    clean = query_string.without_credentials(post, ("token",))
    assert (clean.url, clean.body) == ("https://gw.example/x?t=1", b"token=stays-in-a-body")
    untouched = h.request("smpp", b"a=1", url="https://gw.example/x?t=1")
    assert query_string.without_credentials(untouched, ("token",)) is untouched


def test_shared_token_sources() -> None:
    url = "https://gw.example/webhooks/gupshup"
    assert query_string.shared_token(h.request("gupshup", b"{}", url=url + "?token=q")) == "q"
    hdr = h.request("gupshup", b"{}", url=url + "?token=q", headers={"token": "h"})
    assert query_string.shared_token(hdr) == "h"
    bearer = h.request("gupshup", b"{}", url=url, headers={"authorization": "Bearer b"})
    assert query_string.shared_token(bearer) == "b"
    assert query_string.shared_token(h.request("gupshup", b"{}", url=url)) is None


def test_verify_shared_token() -> None:
    url = "https://gw.example/webhooks/gupshup?token="
    good = h.settings(GUPSHUP_TOKEN="t0k")
    query_string.verify_shared_token(
        h.request("gupshup", b"{}", url=url + "t0k"), good, "GUPSHUP_TOKEN", "gupshup"
    )
    for given in ("t0kx", ""):
        with pytest.raises(SignatureError):
            query_string.verify_shared_token(
                h.request("gupshup", b"{}", url=url + given), good, "GUPSHUP_TOKEN", "gupshup"
            )
    with pytest.raises(SignatureError, match="not configured"):
        query_string.verify_shared_token(
            h.request("gupshup", b"{}", url=url + "t0k"), h.settings(), "GUPSHUP_TOKEN", "gupshup"
        )
