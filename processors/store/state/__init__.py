"""Where the agents keep their state: `MSGSTATUS_STATE_BACKEND` = `rocksdb` or `redis`.

One interface (base.py), the backends side by side (rocksdb.py, redis.py), one contract
suite over both (tests/integration/test_state_contract.py).
"""

from __future__ import annotations

from processors.config import Settings
from processors.store.state.base import StateBackend, StateTable, Undecidable, Wiring

__all__ = ["StateBackend", "StateTable", "Undecidable", "Wiring", "open_backend"]


def open_backend(settings: Settings) -> StateBackend:
    if settings.state_backend == "redis":
        from processors.store.state.redis import RedisBackend

        return RedisBackend(settings)
    from processors.store.state.rocksdb import RocksDBBackend

    return RocksDBBackend()
