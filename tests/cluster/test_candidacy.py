"""The Controller duty's renewal when the duty ends while it waits on the
shared storage."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from dynamail.cluster.candidacy import ControllerDuty
from dynamail.cluster.controller import Controller
from dynamail.cluster.election import Observer, Tenure


class _Duty(ControllerDuty):
    def __init__(self) -> None:
        now = time.monotonic()
        self.name = "b1"
        self.s = SimpleNamespace(lease=1.5, margin=0.3)  # type: ignore[assignment]
        self.controller = Controller("b1", 3, now)
        # renewed "in the future": the tenure cannot lapse however slowly the test runs
        self.tenure = Tenure(3, 1.5, 0.3, renewed_at=now + 3600, starts_at=now)
        self._hb_seq = 0
        self.refused = {}
        self.heartbeats: list[Any] = []
        duty = self

        class Election:
            def exists(self, epoch: int) -> bool:
                # meanwhile, another task of this member steps down
                duty.controller = None
                duty.tenure = None
                return False

            def write_heartbeat(self, *args: Any) -> None:
                duty.heartbeats.append(args)

        self.election = Election()  # type: ignore[assignment]
        self._observer = Observer()

    async def _eio(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


def test_a_renewal_that_finds_the_duty_ended_meanwhile_writes_nothing_and_does_not_fail() -> None:
    duty = _Duty()
    asyncio.run(duty._renew())
    assert duty.heartbeats == [] and duty.controller is None


def test_a_backend_this_member_dialed_counts_as_heard() -> None:
    """Only the listener of a cluster connection learns the other side's
    role; a connection this member dialed to another backend (to the Backup,
    say) must still count when it judges the Controller cut off."""
    duty = _Duty()
    now = time.monotonic()
    dialed = SimpleNamespace(name="b2", role="", closed=False, last_rx=now)
    frontend = SimpleNamespace(name="f1", role="frontend", closed=False, last_rx=now)
    duty.peers = {"f1": frontend, "b2": dialed}  # type: ignore[dict-item]
    duty._inbound = set()
    duty._backend_names = set()
    assert not duty._hear_other_backend("b3")  # b2's role is not known yet
    duty._backend_names.update(["b1", "b2"])  # a Controller's record listed it
    assert duty._hear_other_backend("b3")
    assert not duty._hear_other_backend("b2")  # the Controller itself does not count
    dialed.last_rx = now - 10
    assert not duty._hear_other_backend("b3")  # nothing heard for longer than T


def _holding(duty: _Duty, now: float) -> None:
    duty.role = "backend"
    duty.controller = None
    duty.controller_name = "b3"
    duty.controller_epoch = duty.lease_epoch = 3
    duty.lease_until = now + 0.5
    duty.hold_until = 0.0
    duty.last_controller_contact = now - 0.6
    duty.locator = SimpleNamespace(held=lambda: [("a.test/ann", (3 << 32) | 1)])  # type: ignore[assignment]
    duty.peer_views = {}


def test_a_member_cut_from_a_controller_others_still_hear_does_not_hold_on() -> None:
    """Hold rule 2, second half: this member lost the Controller.  It holds
    its accounts past its lease only when every backend that answered lately
    lost the Controller too (the Controller is the one cut off); one that
    still hears it means this member is the one cut off, and the Controller
    frees its accounts at T + m."""
    duty = _Duty()
    now = time.monotonic()
    _holding(duty, now)
    duty._hold_while_controller_cut_off(now)
    assert duty.hold_until == 0.0  # nobody answered: nothing says the Controller is cut off
    duty.peer_views = {"b2": (now, 3, False), "b4": (now, 3, True)}
    duty._hold_while_controller_cut_off(now)
    assert duty.hold_until == 0.0  # b4 still hears the Controller
    duty.peer_views["b4"] = (now - 1.0, 3, True)  # older than T/2: no longer counts
    duty._hold_while_controller_cut_off(now)
    assert duty.hold_until == now + 0.75
    duty.hold_until = 0.0
    duty.last_controller_contact = now - 3 * 1.5  # the "cut off" rule had its time
    duty._hold_while_controller_cut_off(now)
    assert duty.hold_until == 0.0
    duty.last_controller_contact = now - 0.6
    duty.lease_until = now - 0.1  # not holding any more: a lapsed lease is not revived
    duty._hold_while_controller_cut_off(now)
    assert duty.hold_until == 0.0
