"""`make fuzz`: the hostile-input properties of tests/unit/fuzzing.py, for a fixed time.

Round-robin over every registered provider: a batch of parse/normalize examples, then a
batch of gateway requests (a real gateway with the in-memory sink), with fresh random
seeds each round, until MSGSTATUS_FUZZ_SECONDS (default 300) have passed. Prints the
cases tried and every failure (with hypothesis' shrunk example); exit status 1 when
there was one. Add what it finds to REGRESSIONS in tests/unit/test_fuzz.py.

    MSGSTATUS_FUZZ_SECONDS=1800 make fuzz
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "unit"))

from fuzzing import (
    PROVIDERS,
    SIGNERS,
    GatewayCase,
    GatewayHarness,
    bodies,
    check_parse_variants,
    gateway_cases,
)
from hypothesis import HealthCheck, Phase, given, settings

BATCH = 200  # examples per provider and kind in one round
QUIET = list(HealthCheck)


def failure_text(exc: BaseException) -> str:
    notes = "\n".join(getattr(exc, "__notes__", []))
    head = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return f"{head}\n{notes}".strip()


def make_tests(
    provider: str,
    harness: GatewayHarness,
    parse_cases: Counter[str],
    requests: Counter[str],
    accepted: Counter[str],
) -> tuple[Callable[[], None], Callable[[], None]]:
    """One round's parse and gateway tests of a provider (fresh random seeds each time)."""
    run_settings = settings(
        max_examples=BATCH,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=QUIET,
        phases=[Phase.generate, Phase.shrink],
    )

    @run_settings
    @given(bodies(provider))
    def parse(case: tuple[bytes, str]) -> None:
        parse_cases[provider] += check_parse_variants(provider, *case)

    @run_settings
    @given(gateway_cases(provider))
    def gateway(case: GatewayCase) -> None:
        before = harness.accepted
        harness.run(case)
        requests[provider] += 1
        accepted[provider] += harness.accepted - before

    return parse, gateway


def main() -> int:
    seconds = float(os.environ.get("MSGSTATUS_FUZZ_SECONDS", "300"))
    deadline = time.monotonic() + seconds
    parse_cases: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    accepted: Counter[str] = Counter()
    failures: list[tuple[str, str, str]] = []
    harness = GatewayHarness()
    unsigned = sorted(set(PROVIDERS) - set(SIGNERS))
    if unsigned:
        print(f"no signer for {', '.join(unsigned)}: their gateway cases are unsigned only")
    print(f"fuzzing {len(PROVIDERS)} providers for {seconds:g} s", flush=True)
    rounds = 0
    try:
        while time.monotonic() < deadline:
            rounds += 1
            for provider in PROVIDERS:
                if time.monotonic() >= deadline:
                    break
                parse, gateway = make_tests(provider, harness, parse_cases, requests, accepted)
                for kind, test in (("parse", parse), ("gateway", gateway)):
                    try:
                        test()
                    except Exception as exc:
                        failures.append((provider, kind, failure_text(exc)))
                        print(f"FAILURE {provider} {kind}:\n{failures[-1][2]}\n", flush=True)
            done = sum(parse_cases.values()) + sum(requests.values())
            print(f"round {rounds}: {done} cases, {len(failures)} failures", flush=True)
    finally:
        harness.close()
    print("\nprovider      parse cases  gateway requests  accepted")
    for provider in PROVIDERS:
        print(
            f"{provider:<13} {parse_cases[provider]:>11}  {requests[provider]:>16}  "
            f"{accepted[provider]:>8}"
        )
    total = sum(parse_cases.values()) + sum(requests.values())
    print(f"\ncases tried: {total}; failures: {len(failures)}")
    for provider, kind, text in failures:
        print(f"- {provider} {kind}: {text.splitlines()[0]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
