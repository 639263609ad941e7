"""Every provider of the registry meets one contract, from its own declarations.

For each registered provider, its test module (`test_<module>.py` next to this file)
declares:

- CASES: fixtures and what parsing each must yield, among them at least one negative
  case (an item dead-lettered or deliberately ignored);
- CONTRACT (or CONTRACTS, for a provider with several schemes): how to sign a request,
  with the module's own signing function;
- optionally CHECKS (which signature checks apply; default h.SIGNATURE_CHECKS),
  VERIFY_FUZZ ((settings, url) pairs the verify fuzz runs with; default each contract's
  settings) and MIN_MUTATIONS (how many mutations a JSON fixture must give at least).

Here they run for every provider: the cases, the signature contract, and the mandatory
negative cases (mutations of every fixture, junk bodies and random bytes never make
parse() raise anything but FramingError; junk credentials never make verify() raise
anything but SignatureError). A provider registered without declarations fails here.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.config import Settings
from processors.providers import REGISTRY

from . import harness as h


def _declarations(module: ModuleType) -> ModuleType | None:
    short = module.__name__.rsplit(".", 1)[1]
    try:
        return importlib.import_module(f"{__package__}.test_{short}")
    except ModuleNotFoundError:
        return None


DECLARED: dict[str, ModuleType | None] = {
    name: _declarations(module) for name, module in sorted(REGISTRY.items())
}


def _contracts(tests: ModuleType | None) -> list[h.SignatureContract]:
    if tests is None:
        return []
    if hasattr(tests, "CONTRACTS"):
        return list(tests.CONTRACTS)
    return [tests.CONTRACT] if hasattr(tests, "CONTRACT") else []


def _each(what: Any) -> tuple[list[Any], list[str]]:
    """(params, ids) over the declaring providers: `what(name, module, tests)` yields
    (id suffix, values) pairs."""
    params: list[Any] = []
    ids: list[str] = []
    for name, tests in DECLARED.items():
        if tests is None:
            continue
        for suffix, values in what(name, REGISTRY[name], tests):
            params.append(values)
            ids.append(f"{name}-{suffix}" if suffix else name)
    return params, ids


def parametrize(argnames: str, what: Any) -> Any:
    params, ids = _each(what)
    return pytest.mark.parametrize(argnames, params, ids=ids)


@pytest.mark.parametrize("name", list(DECLARED))
def test_every_registered_provider_declares_its_contract(name: str) -> None:
    tests = DECLARED[name]
    module = REGISTRY[name]
    short = module.__name__.rsplit(".", 1)[1]
    assert tests is not None, f"{name}: no tests/unit/providers/test_{short}.py"
    cases: Sequence[h.Case] = getattr(tests, "CASES", ())
    assert cases, f"{name}: test_{short}.py declares no CASES"
    assert any(c.dead or c.ignored for c in cases), (
        f"{name}: CASES needs a negative case (an item dead-lettered or ignored)"
    )
    contracts = _contracts(tests)
    assert contracts, f"{name}: test_{short}.py declares no CONTRACT"
    assert all(c.module is module for c in contracts), f"{name}: a contract for another module"
    assert set(getattr(tests, "CHECKS", h.SIGNATURE_CHECKS)) >= set(h.SIGNATURE_CHECKS) - {
        "missing_header"  # schemes whose credential is inside the signed body
    }, f"{name}: CHECKS leaves out a mandatory signature check"


@parametrize(
    "module,case",
    lambda name, module, tests: [(case.id, (module, case)) for case in getattr(tests, "CASES", ())],
)
def test_case(module: ModuleType, case: h.Case) -> None:
    h.run_case(module, case)


@parametrize(
    "contract,check",
    lambda name, module, tests: [
        (f"{index}-{check}" if len(_contracts(tests)) > 1 else check, (contract, check))
        for index, contract in enumerate(_contracts(tests))
        for check in getattr(tests, "CHECKS", h.SIGNATURE_CHECKS)
    ],
)
def test_signature(contract: h.SignatureContract, check: str) -> None:
    h.check_signature(contract, check)


@parametrize(
    "module,fixture,least",
    lambda name, module, tests: [
        (c.id, (module, c.fixture, getattr(tests, "MIN_MUTATIONS", 10)))
        for c in getattr(tests, "CASES", ())
        if c.fixture.endswith(".json")
    ],
)
def test_json_fixture_mutations_never_crash(module: ModuleType, fixture: str, least: int) -> None:
    assert h.fuzz_json_fixture(module, fixture) > least


@parametrize(
    "module,fixture",
    lambda name, module, tests: [
        (c.id, (module, c.fixture))
        for c in getattr(tests, "CASES", ())
        if c.fixture.endswith((".form", ".query"))
    ],
)
def test_form_fixture_mutations_never_crash(module: ModuleType, fixture: str) -> None:
    assert h.fuzz_form_fixture(module, fixture) > 0


@parametrize("module", lambda name, module, tests: [("", module)])
def test_junk_bodies_never_crash(module: ModuleType) -> None:
    h.fuzz_junk(module)


@parametrize("module", lambda name, module, tests: [("", module)])
@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=512))
def test_random_bytes_never_crash(module: ModuleType, body: bytes) -> None:
    for content_type in module.CONTENT_TYPES:
        h.parse_never_raises(module, body, content_type)


def _verify_fuzz(tests: ModuleType) -> list[tuple[Settings, str | None]]:
    declared = getattr(tests, "VERIFY_FUZZ", None)
    if declared is not None:
        return list(declared)
    return [(contract.settings(), None) for contract in _contracts(tests)]


@parametrize(
    "module,configured,url",
    lambda name, module, tests: [
        (str(index), (module, configured, url))
        for index, (configured, url) in enumerate(_verify_fuzz(tests))
    ],
)
def test_verify_never_crashes_on_junk(
    module: ModuleType, configured: Settings, url: str | None
) -> None:
    h.fuzz_verify(module, configured, url=url)
