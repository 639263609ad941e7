"""The Faust/aiokafka patches: exact versions, unchanged internals, and what each does.

If a new faust-streaming or aiokafka changes a function we patch or rely on, the hash
test below fails and names it: re-read the patch against the new source before raising
the pin in requirements.lock and patches.VERSIONS.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder, MessageAccumulator
from aiokafka.structs import TopicPartition

from processors.stream import fence, patches


def test_patched_and_relied_on_internals_are_the_ones_the_patches_were_written_for():
    assert patches.changed_internals() == []


def test_the_worker_refuses_untested_versions_unless_told(monkeypatch):
    real = patches.importlib.metadata.version
    monkeypatch.setattr(
        patches.importlib.metadata,
        "version",
        lambda name: "9.9.9" if name == "aiokafka" else real(name),
    )
    with pytest.raises(RuntimeError, match=r"aiokafka 9\.9\.9"):
        patches.check({})
    patches.check({patches.ALLOW_ENV: "1"})  # warned, not refused


def test_installed_versions_match_the_pins():
    patches.check({})


def test_install_routes_every_patch():
    patches.install()
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from faust.transport.drivers import aiokafka as faust_aiokafka

    assert GroupCoordinator._do_heartbeat is patches._do_heartbeat
    assert GroupCoordinator._on_join_complete is patches._on_join_complete
    assert MessageAccumulator.drain_by_nodes is patches._drain_by_nodes
    assert faust_aiokafka.Producer._settings_extra is patches._settings_extra
    assert patches.installed()


class Cluster:
    def leader_for_partition(self, tp):
        return 1


def _accumulator() -> MessageAccumulator:
    return MessageAccumulator(Cluster(), 16384, 0, 30, loop=asyncio.get_running_loop())


async def _add(accumulator: MessageAccumulator, tp: TopicPartition) -> asyncio.Future:
    builder = BatchBuilder(16384, 0)
    builder.append(key=b"k", value=b"v", timestamp=None)
    return await accumulator.add_batch(builder, tp, 1)


async def test_a_lapsed_lease_holds_the_producer_and_a_renewal_releases_it():
    patches.install()
    accumulator = _accumulator()
    lease = fence.Lease(session_timeout=1.0)
    lease.renewed(time.monotonic() - 5)  # lapsed: a frozen process just woke up
    accumulator._msgstatus_lease = lease
    tp = TopicPartition("t", 0)
    await _add(accumulator, tp)
    nodes, _ = accumulator.drain_by_nodes(ignore_nodes=set())
    assert nodes == {}  # held: nothing goes to the broker
    lease.renewed(time.monotonic())
    nodes, _ = accumulator.drain_by_nodes(ignore_nodes=set())
    assert tp in nodes[1]


async def test_fail_held_fails_a_zombies_batches_with_fenced():
    accumulator = _accumulator()

    class Producer:
        _message_accumulator = accumulator

    future = await _add(accumulator, TopicPartition("t", 0))
    assert patches.fail_held(Producer()) == 1
    with pytest.raises(fence.Fenced):
        await future


def test_lease_validity():
    lease = fence.Lease(session_timeout=10.0)
    assert lease.valid()  # never joined: nothing owned
    lease.renewed(time.monotonic() - 9)
    assert not lease.valid()  # 0.8 x session timeout
    lease.joined()
    assert lease.valid()
    lease.broken()
    assert not lease.valid()


def test_the_lock_file_installs_the_versions_the_patches_were_written_for():
    lock = (Path(__file__).resolve().parents[2] / "requirements.lock").read_text()
    for package, version in patches.VERSIONS.items():
        assert f"\n{package}=={version} \\" in lock, f"{package} is not locked at {version}"
    assert "--hash=sha256:" in lock
