from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamail.cluster.controller import Controller, Refusal, Role, RolesChanged

LEASE, MARGIN = 1.5, 0.3


def make(now: float = 0.0, epoch: int = 1, expected: tuple[str, ...] = ()) -> Controller:
    c = Controller("b1", epoch, now, member_lease=LEASE, member_margin=MARGIN, expected=expected)
    for name in ("b2", "b3"):
        c.heartbeat(name, now, ready=True, sessions=0, open_accounts=0, lag_ms=0, cpu=0)
    c.heartbeat("b1", now, ready=True, sessions=0, open_accounts=0, lag_ms=0, cpu=0)
    return c


def beat(c: Controller, now: float, *names: str, **load: int) -> None:
    for n in names:
        c.heartbeat(n, now, ready=c.member(n).ready if c.member(n) else True,  # type: ignore[union-attr]
                    sessions=load.get("sessions", 0), open_accounts=load.get("open_accounts", 0),
                    lag_ms=load.get("lag_ms", 0), cpu=load.get("cpu", 0))


def test_grant_is_stable_and_epochs_increase() -> None:
    c = make()
    g1 = c.open("d/a", "b2", 0.0)
    assert g1.new and g1.epoch == (1 << 32) | 1
    again = c.open("d/a", "b3", 0.1)
    assert again.owner == g1.owner and again.epoch == g1.epoch and not again.new
    g2 = c.open("d/b", "b2", 0.1)
    assert g2.epoch > g1.epoch


def test_grant_is_above_recorded_epoch() -> None:
    c = make()
    g = c.open("d/a", "b2", 0.0, recorded=(5 << 32) | 7)
    assert g.epoch == (5 << 32) | 8
    assert c.open("d/b", "b2", 0.0).epoch > (1 << 32) | 1


def test_least_loaded_ready_backend_is_chosen() -> None:
    c = make()
    beat(c, 0.1, "b1", cpu=50)
    beat(c, 0.1, "b2", cpu=10)
    beat(c, 0.1, "b3", cpu=30)
    assert c.open("d/a", "b1", 0.1).owner == "b2"
    c.set_ready("b2", False)
    assert c.open("d/b", "b1", 0.1).owner == "b3"


def test_placements_spread_between_reports() -> None:
    c = make()
    owners = {c.open(f"d/a{i}", "b1", 0.0).owner for i in range(9)}
    assert owners == {"b1", "b2", "b3"}


def test_lone_nonready_backend_keeps_serving() -> None:
    c = Controller("b1", 1, 0.0)
    c.set_ready("b1", False)
    assert c.open("d/a", "b1", 0.0).owner == "b1"


def test_member_death_frees_accounts_only_after_lease_and_margin() -> None:
    c = make()
    owned = [c.open(f"d/a{i}", "b1", 0.0) for i in range(6)]
    on_b2 = [g.account for g in owned if g.owner == "b2"]
    assert on_b2
    beat(c, 1.0, "b1", "b3")
    assert "b2" not in c.tick(LEASE + MARGIN - 0.01)
    assert c.locate(on_b2[0]) is not None
    beat(c, LEASE + MARGIN - 0.01, "b1", "b3")
    events = c.tick(LEASE + MARGIN + 0.01)
    assert "b2" in events
    assert c.locate(on_b2[0]) is None
    g = c.open(on_b2[0], "b3", 2.0, recorded=owned[0].epoch)
    assert g.owner != "b2" and g.new


def test_backup_named_and_replaced() -> None:
    c = make()
    events = c.tick(0.0)
    assert any(isinstance(e, RolesChanged) for e in events)
    first = c.backup
    assert first in ("b2", "b3")
    other = "b3" if first == "b2" else "b2"
    beat(c, 1.5, "b1", other)
    events = c.tick(2.0)
    assert first in events and c.backup == other
    beat(c, 3.6, "b1")
    c.tick(3.7)
    assert c.backup == ""


def test_local_only_refused_when_open_elsewhere() -> None:
    c = make()
    g = c.open("d/a", "b2", 0.0, local_only=True)
    assert g.owner == "b2"
    with pytest.raises(Refusal) as exc:
        c.open("d/a", "b3", 0.0, local_only=True)
    assert exc.value.code == "busy"


def test_release() -> None:
    c = make()
    g = c.open("d/a", "b2", 0.0)
    assert not c.release("d/a", g.owner, g.epoch - 1)
    assert c.release("d/a", g.owner, g.epoch)
    assert c.locate("d/a") is None


def test_resync_after_failover_and_grace() -> None:
    old = make()
    grants = [old.open(f"d/a{i}", "b1", 0.0) for i in range(6)]
    # b1 (old Controller) dies; b2 takes over with epoch 2 and expects b3
    new = Controller("b2", 2, 10.0, member_lease=LEASE, member_margin=MARGIN, expected=("b3",))
    with pytest.raises(Refusal) as exc:
        new.open("d/zzz", "b2", 10.0)
    assert exc.value.code == "unavailable"
    mine = [(g.account, g.epoch) for g in grants if g.owner == "b2"]
    theirs = [(g.account, g.epoch) for g in grants if g.owner == "b3"]
    new.resync("b2", 10.0, role=Role.BACKEND, ready=True, sessions=0, version="x", accounts=mine)
    new.resync("b3", 10.1, role=Role.BACKEND, ready=True, sessions=0, version="x", accounts=theirs)
    assert not new.in_grace(10.1)
    for a, e in theirs:
        assert new.locate(a) == ("b3", e)
    g = new.open("d/zzz", "b3", 10.2)
    assert g.epoch >> 32 == 2 and all(g.epoch > x.epoch for x in grants)


def test_grace_ends_by_time_when_a_member_never_resyncs() -> None:
    new = Controller("b2", 2, 10.0, member_lease=LEASE, member_margin=MARGIN, expected=("b3",))
    with pytest.raises(Refusal):
        new.open("d/a", "b2", 10.0 + LEASE)
    assert new.open("d/a", "b2", 10.0 + LEASE + MARGIN + 0.01).owner == "b2"


def test_resync_conflict_keeps_higher_epoch() -> None:
    c = Controller("b1", 3, 0.0, expected=())
    c.resync("b2", 0.0, role=Role.BACKEND, ready=True, sessions=0, version="", accounts=[("d/a", 5)])
    revoked = c.resync("b3", 0.0, role=Role.BACKEND, ready=True, sessions=0, version="",
                       accounts=[("d/a", 4)])
    assert revoked == [("d/a", 4)] and c.locate("d/a") == ("b2", 5)
    c.resync("b3", 0.1, role=Role.BACKEND, ready=True, sessions=0, version="", accounts=[("d/a", 9)])
    assert c.locate("d/a") == ("b3", 9)
    assert c.take_revocations() == [("b2", "d/a", 5)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["open", "release", "beat", "tick", "nonready", "resync"]),
                          st.integers(0, 20), st.sampled_from(["b1", "b2", "b3"]),
                          st.floats(0, 0.8)), max_size=80))
def test_properties(ops: list[tuple[str, int, str, float]]) -> None:
    """Whatever happens: one owner per account, the owner is alive, and every
    grant's epoch is above every earlier grant's epoch for that account."""
    c = make()
    now = 0.0
    last_epoch: dict[str, int] = {}
    for op, n, member, dt in ops:
        now += dt
        account = f"d/a{n}"
        if op == "open":
            try:
                g = c.open(account, member, now, recorded=last_epoch.get(account, 0))
            except Refusal:
                continue
            if g.new:
                assert g.epoch > last_epoch.get(account, 0)
            last_epoch[account] = max(last_epoch.get(account, 0), g.epoch)
            owner = c.member(g.owner)
            assert owner is not None and owner.alive and owner.role is Role.BACKEND
        elif op == "release":
            loc = c.locate(account)
            if loc:
                assert c.release(account, loc[0], loc[1])
        elif op == "beat":
            beat(c, now, member)
        elif op == "resync":
            held = [(a, e) for a, e in c.accounts_of(member)][: n % 3]
            c.resync(member, now, role=Role.BACKEND, ready=True, sessions=0, version="",
                     accounts=held)
        elif op == "nonready":
            c.set_ready(member, not c.member(member).ready)  # type: ignore[union-attr]
        else:
            c.tick(now)
        for i in range(21):
            loc = c.locate(f"d/a{i}")
            if loc:
                m = c.member(loc[0])
                assert m is not None and m.alive
        # the per-member count of map entries is exact (it decides resync scans)
        for m in c.members():
            assert m.mapped == len(c.accounts_of(m.name)), m


def test_stale_grant_of_an_older_controller_is_never_handed_out_again() -> None:
    """Controller 7 adopts, from a member's resync, a grant of Controller 5
    while the storage already records a grant of Controller 6 (the newer
    owner has since gone).  The first OPEN that reports the recorded epoch
    drops the stale grant, tells its holder to close, and grants above it."""
    c = Controller("b1", 7, 0.0, member_lease=LEASE, member_margin=MARGIN)
    c.resync("b2", 0.0, role=Role.BACKEND, ready=True, sessions=0, version="x",
             accounts=[("d/a", (5 << 32) | 11)])
    c.heartbeat("b3", 0.0, ready=True, sessions=0, open_accounts=0, lag_ms=0, cpu=0)
    # without the recorded epoch nobody can tell: the adopted grant stands
    assert c.locate("d/a") == ("b2", (5 << 32) | 11)
    g = c.open("d/a", "b3", 0.1, recorded=(6 << 32) | 1)
    assert g.new and g.epoch > (6 << 32) | 1 and g.epoch >> 32 == 7
    assert c.take_revocations() == [("b2", "d/a", (5 << 32) | 11)]
    assert c.locate("d/a") == (g.owner, g.epoch)
    # every later OPEN, whatever it reports, gets the new grant, never the stale one
    for who, recorded in (("b2", 0), ("b3", (6 << 32) | 1), ("b1", g.epoch)):
        again = c.open("d/a", who, 0.2, recorded=recorded)
        assert (again.owner, again.epoch, again.new) == (g.owner, g.epoch, False)
    assert c.take_revocations() == []
    # the stale holder's resync cannot bring it back
    assert c.resync("b2", 0.3, role=Role.BACKEND, ready=True, sessions=0, version="x",
                    accounts=[("d/a", (5 << 32) | 11)]) == [("d/a", (5 << 32) | 11)]
    assert c.locate("d/a") == (g.owner, g.epoch)


def test_a_gone_member_is_declared_dead_at_once() -> None:
    c = make()
    g = c.open("d/a", "b2", 0.0, local_only=True)
    assert g.owner == "b2"
    assert c.declare_dead("b2")
    assert c.locate("d/a") is None
    again = c.open("d/a", "b1", 0.1)
    assert again.new and again.owner != "b2" and again.epoch > g.epoch
    assert not c.declare_dead("b2")  # already dead
    assert not c.declare_dead("b1")  # never the Controller itself
    beat(c, 0.2, "b2")  # a restarted b2 joins again, holding nothing
    assert c.member("b2").alive  # type: ignore[union-attr]
