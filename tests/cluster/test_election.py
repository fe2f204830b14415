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


def test_first_act_waits_only_when_the_old_record_changed() -> None:
    from dynamail.cluster.election import first_act

    assert first_act(10.0, b"a", b"a", 1.5, 0.3) == 10.0
    assert first_act(10.0, b"a", b"b", 1.5, 0.3) == 10.0 + 1.2
    assert first_act(10.0, None, None, 1.5, 0.3) == 10.0


def test_takeover_reasons() -> None:
    from dynamail.cluster.election import takeover_reason

    o = Observer()
    o.observe(1, b"x", 0.0)
    kw = dict(observer=o, lease=1.5, head_start=0.5, last_contact=0.0, me="b2",
              controller="b1", hear_other_backend=True)
    assert takeover_reason(now=1.4, is_backup=True, contacts=[], **kw) is None  # type: ignore[arg-type]
    assert takeover_reason(now=1.5, is_backup=True, contacts=["b3"], **kw) == "stale"  # type: ignore[arg-type]
    assert takeover_reason(now=1.9, is_backup=False, contacts=[], **kw) is None  # type: ignore[arg-type]
    assert takeover_reason(now=2.0, is_backup=False, contacts=[], **kw) == "stale"  # type: ignore[arg-type]
    o.observe(1, b"y", 1.5)  # the record is alive: only the network rule applies
    assert takeover_reason(now=2.2, is_backup=True, contacts=["b2"], **kw) is None  # type: ignore[arg-type]
    assert takeover_reason(now=2.25, is_backup=True, contacts=["b2"], **kw) == "cut off"  # type: ignore[arg-type]
    assert takeover_reason(now=2.25, is_backup=True, contacts=["b3"], **kw) is None  # type: ignore[arg-type]
    kw["hear_other_backend"] = False
    assert takeover_reason(now=2.25, is_backup=True, contacts=[], **kw) is None  # type: ignore[arg-type]


def test_a_new_controller_listing_nobody_yet_is_not_cut_off() -> None:
    """A Controller that has just taken over lists no backend (members are
    resynchronising): that is no evidence of a partition, however long this
    backend has not heard from a Controller (it may just have woken from a
    pause).  Only once its epoch has been known for the whole window does
    the network rule apply."""
    from dynamail.cluster.election import takeover_reason

    o = Observer()
    o.observe(1, b"x", 0.0)
    o.observe(2, b"n1", 10.0)  # epoch 2 appears
    o.observe(2, b"n2", 10.3)  # and renews
    kw = dict(observer=o, lease=1.5, head_start=0.5, last_contact=0.0, me="b1",
              controller="b2", hear_other_backend=True, is_backup=False, contacts=[])
    assert takeover_reason(now=10.4, **kw) is None  # type: ignore[arg-type]
    o.observe(2, b"n3", 12.0)
    assert takeover_reason(now=12.6, **kw) is None  # type: ignore[arg-type]
    o.observe(2, b"n4", 12.7)
    assert takeover_reason(now=12.75, **kw) == "cut off"  # type: ignore[arg-type]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

T, M = 1.5, 0.3


@settings(max_examples=400, deadline=None)
@given(
    s0_after=st.floats(0, T / 4),  # observer first sees record r0 this long after it was written
    t0_after=st.floats(T / 4, T - M - 1e-6),  # the old Controller starts its next renewal
    pause=st.floats(0, 5 * T),  # ... and is paused between its check and its write
    poll_late=st.floats(0, T / 8),  # the observer's read that decides, after s0 + T
    claim_gap=st.floats(0, 2 * T),  # the observer paused between that read and its claim
    reread_gap=st.floats(0, T / 8),
    post_check=st.floats(1e-6, 0.05),
)
def test_no_two_controllers_act_at_once(s0_after: float, t0_after: float, pause: float,
                                        poll_late: float, claim_gap: float, reread_gap: float,
                                        post_check: float) -> None:
    """Model of the old Controller A and the observer B on one clock, with
    adversarial pauses between every check and the action it guards."""
    from dynamail.cluster.election import first_act

    r0 = 0.0  # A's last renewal: started and written at r0
    a = Tenure(epoch=1, lease=T, margin=M, renewed_at=r0)
    s0 = r0 + s0_after
    t0 = r0 + t0_after
    assert a.valid(t0)  # A checks its tenure (and that epoch 2 does not exist) at t0
    w1 = t0 + pause  # ... then writes its heartbeat
    x = s0 + T + poll_late  # B's deciding read
    if w1 <= x:
        return  # B sees the new record: no takeover, nothing to check
    c = x + claim_gap  # B creates epoch-2
    p = w1 + post_check  # A checks for epoch-2 after its write
    a_renewed = c > p  # A saw no epoch-2: it counts the renewal from t0
    if a_renewed:
        a.renewed(t0)
    reread = c + reread_gap
    current = b"new" if w1 < reread else b"old"
    b = Tenure(epoch=2, lease=T, margin=M, renewed_at=c,
               starts_at=first_act(reread, b"old", current, T, M))
    # A's belief in its tenure (renewed or not) ends before B starts acting
    assert a.expires_at() <= b.starts_at
    for now in (c, reread, b.starts_at, a.expires_at() - 1e-9):
        assert not (a.valid(now) and b.valid(now))


def test_a_gone_controller_is_replaced_at_once_by_the_backup() -> None:
    """A Controller whose cluster port refuses connections (its process is
    gone) is replaced by the Backup without waiting T; other backends still
    wait for the "stale" rule (or claim at once when the Backup is gone too,
    which the caller passes as is_backup)."""
    from dynamail.cluster.election import takeover_reason

    o = Observer()
    o.observe(1, b"x", 0.0)
    kw = dict(observer=o, lease=1.5, head_start=0.5, last_contact=0.0, me="b2",
              controller="b1", hear_other_backend=True, contacts=["b2", "b3"])
    assert takeover_reason(now=0.2, is_backup=True, **kw) is None  # type: ignore[arg-type]
    assert takeover_reason(now=0.2, is_backup=True, controller_gone=True, **kw) == "gone"  # type: ignore[arg-type]
    assert takeover_reason(now=0.2, is_backup=False, controller_gone=True, **kw) is None  # type: ignore[arg-type]


def test_resignation_record_and_its_pruning(tmp_path: Path) -> None:
    store = ElectionStore(tmp_path)
    store.claim(ControllerRecord(4, "b1", "h", 1))
    assert not store.resigned(4)
    store.resign(4)
    store.resign(4)  # a second step-down of the same tenure is harmless
    assert store.resigned(4) and not store.resigned(3)
    store.claim(ControllerRecord(5, "b2", "h", 1))
    store.prune(5)
    assert not store.resigned(4)


def _waiting_successor(tmp_path: Path, wait: float) -> tuple[object, Tenure, ElectionStore]:
    """A new Controller (epoch 8) that must wait out epoch 7's last renewal."""
    import time
    from types import SimpleNamespace

    from dynamail.cluster.candidacy import ControllerDuty

    class Successor(ControllerDuty):
        def __init__(self) -> None:
            self.s = SimpleNamespace(lease=0.4)  # type: ignore[assignment]
            self.election = ElectionStore(tmp_path)
            self.election.ensure()
            self.news = 0

        def ownership_news(self) -> None:  # type: ignore[override]
            self.news += 1

    m = Successor()
    tenure = Tenure(8, 0.4, 0.1, renewed_at=time.monotonic(), starts_at=time.monotonic() + wait)
    m.tenure = tenure
    return m, tenure, m.election  # type: ignore[return-value]


def test_a_successor_acts_as_soon_as_its_predecessor_resigns(tmp_path: Path) -> None:
    import asyncio
    import time

    async def scenario() -> None:
        m, tenure, store = _waiting_successor(tmp_path, wait=100.0)
        watching = asyncio.ensure_future(m._start_on_resignation(tenure, 7))  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)
        assert not tenure.valid(time.monotonic())  # still waiting: 7 has not said it stopped
        store.resign(7)
        await asyncio.wait_for(watching, 5.0)
        assert tenure.valid(time.monotonic()) and m.news == 1  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_resignation_of_another_epoch_does_not_start_the_successor(tmp_path: Path) -> None:
    import asyncio
    import time

    async def scenario() -> None:
        m, tenure, store = _waiting_successor(tmp_path, wait=0.5)
        store.resign(6)
        started = time.monotonic()
        await asyncio.wait_for(m._start_on_resignation(tenure, 7), 5.0)  # type: ignore[attr-defined]
        assert time.monotonic() - started >= 0.4  # waited the full T - m
        assert m.news == 0  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_controller_resigns_only_after_closing_its_accounts(tmp_path: Path) -> None:
    """Stepping down writes ``resigned-<N>`` last: a kill or pause before
    the accounts are closed leaves no file, and the successor waits T - m."""
    import asyncio
    import time
    from types import SimpleNamespace

    from dynamail.cluster.candidacy import ControllerDuty

    store = ElectionStore(tmp_path)
    store.ensure()
    seen_while_closing: list[bool] = []

    class Locator:
        async def drop_all(self) -> None:
            seen_while_closing.append(store.resigned(5))

    class Stepping(ControllerDuty):
        def __init__(self) -> None:
            self.s = SimpleNamespace(lease=0.4)  # type: ignore[assignment]
            self.election = store
            self.controller = object()  # type: ignore[assignment]
            self.tenure = Tenure(5, 0.4, 0.1, renewed_at=time.monotonic())
            self.locator = Locator()  # type: ignore[assignment]

    m = Stepping()
    asyncio.run(m._step_down("a newer controller epoch exists"))
    assert seen_while_closing == [False]
    assert store.resigned(5) and m.controller is None and m.tenure is None
