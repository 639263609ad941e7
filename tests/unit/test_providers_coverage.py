"""`msgstatus providers`: the coverage table is generated from code and matches README.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from processors import providers
from processors.cli import main
from processors.model import STATUSES
from processors.providers import coverage

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- providers:start -->", "<!-- providers:end -->"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["providers", *args]) == 0
    return capsys.readouterr().out


def test_the_registry_refuses_a_provider_without_coverage() -> None:
    import types

    module = types.ModuleType("processors.providers.fake")
    twilio = providers.REGISTRY["twilio"]
    for name in ("NAME", "CONTENT_TYPES", "FRAMING", "SIGNATURE_HEADERS", "enabled", "verify"):
        setattr(module, name, getattr(twilio, name))
    module.parse = twilio.parse  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="COVERAGE"):
        providers._collect({"fake": module})
    module.COVERAGE = {"channels": ("sms",)}  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="COVERAGE"):
        providers._collect({"fake": module})


def test_coverage_entries_use_real_words() -> None:
    from processors.model import CHANNELS

    for name, module in providers.REGISTRY.items():
        entry = module.COVERAGE
        assert set(entry.channels) <= CHANNELS | {"any"}, name
        assert set(entry.receipts) <= set(entry.channels) | CHANNELS, name
        for kinds in entry.receipts.values():
            assert set(kinds) <= {"delivered", "read"}, name
        assert set(entry.extra_statuses) | set(entry.statuses) <= STATUSES, name


def test_statuses_come_from_each_modules_status_map() -> None:
    for name, module in providers.REGISTRY.items():
        table = getattr(module, "STATUS_MAP", None)
        if not isinstance(table, dict):
            continue
        listed = coverage.statuses_of(module, module.COVERAGE)
        assert set(table.values()) <= set(listed), name
    ryze = providers.REGISTRY["ryze"]
    assert coverage.statuses_of(ryze, ryze.COVERAGE) == [
        "queued", "sent", "delivered", "read", "played", "failed", "received"
    ]  # fmt: skip


def test_markdown_table_has_a_row_per_provider(capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "--markdown")
    lines = out.strip().splitlines()
    assert lines[0].startswith("| provider | channels | statuses")
    assert lines[1] == "|---|---|---|---|---|"
    names = [line.split("|")[1].strip() for line in lines[2:]]
    assert sorted(names) == sorted(providers.REGISTRY)
    for line in lines[2:]:
        assert len(re.findall(r"(?<!\\)\|", line)) == 6, line
    twilio = next(line for line in lines if line.startswith("| twilio |"))
    assert "sms: delivered;" in twilio and "whatsapp: delivered, read" in twilio
    assert "X-Twilio-Signature" in twilio


def test_plain_output_says_what_is_enabled(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSGSTATUS_TWILIO_AUTH_TOKEN", "x")
    out = run(capsys)
    assert out.splitlines()[0].split()[:3] == ["provider", "state", "channels"]
    twilio = next(line for line in out.splitlines() if line.startswith("twilio "))
    assert " enabled " in twilio
    assert len(out.splitlines()) == len(providers.REGISTRY) + 1


def test_readme_section_is_the_generated_table(capsys: pytest.CaptureFixture[str]) -> None:
    """Between the README markers stands exactly `msgstatus providers --markdown`."""
    if not README.exists():
        pytest.skip("README.md does not exist yet")
    text = README.read_text()
    if START not in text or END not in text:
        pytest.skip(f"README.md has no {START} ... {END} section yet")
    section = text.split(START, 1)[1].split(END, 1)[0]
    generated = run(capsys, "--markdown")
    assert section.strip() == generated.strip(), (
        "README.md's provider table is stale: replace the section between the markers "
        "with the output of `msgstatus providers --markdown`"
    )
