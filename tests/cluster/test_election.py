from __future__ import annotations

import multiprocessing
from pathlib import Path

from dynamail.cluster.election import ControllerRecord, ElectionStore, Observer, Tenure


def _claim(args: tuple[str, str, int]) -> bool:
    base, name, epoch = args
    return ElectionStore(Path(base)).claim(ControllerRecord(epoch, name, "127.0.0.1", 1))


def test_exactly_one_claim_wins_among_racing_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(6) as pool:
        for epoch in (1, 2, 3):
            results = pool.map(_claim, [(str(tmp_path), f"b{i}", epoch) for i in range(12)])
            assert results.count(True) == 1
    store = ElectionStore(tmp_path)
    cur = store.current()
    assert cur is not None and cur.epoch == 3 and store.highest_epoch() == 3


def test_claimed_record_is_complete(tmp_path: Path) -> None:
    store = ElectionStore(tmp_path)
    assert store.current() is None
    assert store.claim(ControllerRecord(1, "b1", "127.0.7.1", 17070))
    assert not store.claim(ControllerRecord(1, "b2", "127.0.7.2", 17070))
    assert store.current() == ControllerRecord(1, "b1", "127.0.7.1", 17070)
    assert not list(store.dir.glob(".claim-*"))


def test_heartbeat_and_prune(tmp_path: Path) -> None:
    store = ElectionStore(tmp_path)
    for n in range(1, 12):
        store.claim(ControllerRecord(n, "b1", "h", 1))
        store.write_heartbeat(n, 1, ["b2"])
    store.prune(11)
    assert store.highest_epoch() == 11
    assert not (store.dir / "epoch-1").exists()
    assert store.read_heartbeat(10) is None
    assert store.contacts_of(store.read_heartbeat(11)) == ["b2"]


def test_observer_measures_unchanged_time_on_its_own_clock() -> None:
    o = Observer()
    o.observe(1, b"a", 10.0)
    o.observe(1, b"a", 11.0)
    assert abs(o.unchanged_for(11.4) - 1.4) < 1e-9
    o.observe(1, b"b", 11.5)
    assert o.unchanged_for(11.6) < 0.2
    o.observe(2, b"b", 12.0)
    assert o.since == 12.0


def test_tenure_stops_before_an_observer_can_take_over() -> None:
    t = Tenure(epoch=1, lease=1.5, margin=0.3, renewed_at=100.0)
    assert t.valid(101.1)
    assert not t.valid(101.2)
    # a pause: the process wakes long after; it must not act
    assert not t.valid(1000.0)
    t.renewed(100.9)
    assert t.valid(102.0)
    t.superseded = True
    assert not t.valid(100.95)
