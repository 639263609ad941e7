"""The bulk restore's pure parts, on a real RocksDB (rocksdict) database."""

from __future__ import annotations

from types import SimpleNamespace

from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP
from rocksdict import Options, Rdict

from processors.stream import restore


class _Store:
    """The two things `restore.apply` uses of Faust's RocksDB store."""

    offset_key = RocksDBStore.offset_key

    def __init__(self, path) -> None:
        self.db = Rdict(str(path), Options(raw_mode=True))

    def _db_for_partition(self, partition: int) -> Rdict:
        return self.db


def _rec(offset: int, key: bytes, value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(offset=offset, key=key, value=value)


def test_apply_copies_bytes_deletes_and_sets_the_offset_in_one_write(tmp_path):
    store = _Store(tmp_path / "db")
    store.db[b"old"] = b"x"
    top = restore.apply(
        store,
        0,
        [_rec(5, b"a", b"1"), _rec(6, b"old", None), _rec(8, b"a", b"2"), _rec(9, b"b", b"3")],
        last=8,
    )
    assert top == 8
    assert store.db[b"a"] == b"2"
    assert store.db.get(b"old") is None
    assert store.db.get(b"b") is None  # beyond the highwater Faust will read itself
    assert store.db[RocksDBStore.offset_key] == b"8"
    store.db.close()


def test_apply_with_nothing_at_or_below_last_writes_nothing(tmp_path):
    store = _Store(tmp_path / "db")
    assert restore.apply(store, 0, [_rec(10, b"a", b"1")], last=9) is None
    assert store.db.get(RocksDBStore.offset_key) is None
    store.db.close()


def test_plan_keeps_rocksdb_partitions_behind_their_changelog():
    rocks = RocksDBStore.__new__(RocksDBStore)
    memory = object()
    a, b, c, d = (TP("app-ordering-changelog", p) for p in range(4))
    m = TP("app-memory-changelog", 0)
    jobs = restore.plan(
        [a, b, c, d, m],
        {a: None, b: 41, c: 10, d: -1, m: -1},
        {a: 99, b: 41, c: 5, d: -1, m: 7},
        {"app-ordering-changelog": rocks, "app-memory-changelog": memory},
    )
    assert [(j.tp, j.start, j.last) for j in jobs] == [(a, -1, 99)]


def test_table_label_is_the_table_name():
    assert restore._table_name("p.msgstatus-ordering-changelog") == "ordering"
