"""`make bench` smoke test: the processor, gateway and end-to-end benches, shrunk.

Real processes against the session broker; the figures only have to be sane here (the
machine is shared with the rest of the suite), but nothing may be dropped or unmatched.
"""

from __future__ import annotations

import math

import pytest

from bench import e2e, gateway, processor

pytestmark = pytest.mark.integration


def _positive(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


async def test_gateway_bench_quick(kafka, tmp_path):
    figures = await gateway.run(kafka.bootstrap, tmp_path, quick=True)
    notes = figures["notes"]
    for mode in ("kafka", "null"):
        assert _positive(figures[f"{mode}_webhooks_per_s"]), figures
        assert figures[f"{mode}_ok"] > 0, figures
        assert figures[f"{mode}_errors"] == 0, notes
        p50, p99 = figures[f"{mode}_p50_ms"], figures[f"{mode}_p99_ms"]
        assert _positive(p50) and p50 <= p99 <= figures[f"{mode}_max_ms"], figures
    assert _positive(figures["kafka_vs_null_ratio"]), figures
    # every 200 is in Kafka: the raw topic holds at least as many records as 200 answers
    assert figures["raw_records_cover_200s"], notes
    assert figures["raw_records"] >= figures["kafka_accepted_all_phases"] >= figures["kafka_ok"]
    assert isinstance(notes, str) and "Twilio" in notes


async def test_e2e_bench_quick(kafka, tmp_path):
    figures = await e2e.run(kafka.bootstrap, tmp_path, quick=True)
    assert figures["errors"] == 0, figures["notes"]
    assert figures["unmatched"] == 0, figures["notes"]
    assert figures["accepted_200"] == figures["requests"] > 0
    assert figures["matched"] + figures["superseded"] == figures["accepted_200"]
    assert figures["matched"] > 0.9 * figures["requests"], figures
    assert figures["duplicate_events"] == 0, figures
    assert figures["offered_rate_achieved"] >= 0.8 * figures["offered_rate_target"], figures
    assert _positive(figures["p50_ms"]), figures
    assert figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"], figures
    assert isinstance(figures["notes"], str) and figures["notes"]


async def test_processor_bench_quick(kafka, redis_server, tmp_path):
    """Both naive baselines and the worker (with each state backend) run over the same
    records and get rates."""
    figures = await processor.run(kafka.bootstrap, tmp_path, quick=True, redis_url=redis_server.url)
    for name in ("passthrough", "naive_faust", "naive_job", "msgstatus", "msgstatus_redis"):
        assert _positive(figures[name]), (name, figures)
    assert figures["status_events_redis"] > 0 and _positive(figures["redis_vs_rocksdb"])
    assert figures["redis_keys_dropped"] > 0, figures  # the run's state was in that Redis
    assert figures["naive_faust_records"] > 0 and figures["naive_job_records"] > 0, figures
    assert figures["status_events"] > 0, figures
    assert _positive(figures["ratio_vs_naive"]) and _positive(figures["ratio_vs_naive_job"])
