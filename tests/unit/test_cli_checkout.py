"""`msgstatus bench` and `msgstatus demo` run the top-level bench/ package of a source
checkout; installed without one, they say how to get it."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors import cli


def test_bench_gets_its_own_options(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.__main__

    seen: list[list[str]] = []
    monkeypatch.setattr(bench.__main__, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["bench", "--quick", "--only", "gateway", "--out", ""]) == 0
    assert cli.main(["bench"]) == 0
    assert seen == [["--quick", "--only", "gateway", "--out", ""], []]


def test_without_a_checkout_bench_and_demo_say_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    installed = tmp_path / "site-packages" / "processors" / "cli.py"
    monkeypatch.setattr(cli, "__file__", str(installed))
    for command in (["bench", "--quick"], ["demo", "--messages", "5"]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert "source checkout" in err and "not part of the installed msgstatus" in err
