"""The injector's new fault plumbing without a cluster: what slow-storage
and clock-step write into a member's faults directory, what healing undoes,
and a clock-step recorded as not available without libfaketime."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from dynamail.chaos import clock
from dynamail.chaos.history import History
from dynamail.chaos.schedule import Injector, Planned, faults_dir
from dynamail.cluster import launcher


def _injector(tmp_path: Path, clock_unavailable: str = "") -> Injector:
    # one "member": this test process (alive, and SIGCONT does it no harm)
    launcher.write_cluster(tmp_path, {"members": [{"name": "b1", "role": "backend", "pid": os.getpid()}]})
    faults_dir(tmp_path, "b1").mkdir(parents=True)
    inj = Injector(tmp_path, History(), seed=1, lease=0.01, duration=0, accounts=[],
                   stop=threading.Event(), clock_unavailable=clock_unavailable)
    inj._status = lambda: {"controller": "b1", "backup": "", "members": []}  # type: ignore[method-assign]
    inj._owners = dict  # type: ignore[method-assign]
    return inj


def test_slow_storage_writes_the_delay_while_held_and_removes_it(tmp_path: Path) -> None:
    inj = _injector(tmp_path)
    seen: list[Any] = []
    slow = faults_dir(tmp_path, "b1") / "slow"
    inj.stop.wait = lambda timeout=None: bool(seen.append(slow.read_text()))  # type: ignore[method-assign]
    inj.inject(Planned(0.0, "slow-storage", "member", hold=0.02, delay=0.25))
    assert seen == ["0.250\n"] and not slow.exists()
    f = inj.history.faults[-1]
    assert f.kind == "slow-storage" and f.members == ["b1"] and f.controller and f.healed >= f.start


def test_clock_step_steps_and_sets_back(tmp_path: Path) -> None:
    inj = _injector(tmp_path)
    offsets: list[str] = []
    path = clock.offset_file(faults_dir(tmp_path, "b1"))
    inj.stop.wait = lambda timeout=None: bool(offsets.append(path.read_text()))  # type: ignore[method-assign]
    inj.inject(Planned(0.0, "clock-step", "member", hold=0.02, step=-312.4))
    assert offsets == ["-312\n", "+0\n"]
    f = inj.history.faults[-1]
    assert f.kind == "clock-step" and f.offset == -312 and f.triggered


def test_clock_step_without_libfaketime_is_recorded_as_not_available(tmp_path: Path) -> None:
    inj = _injector(tmp_path, clock_unavailable="libfaketime is not installed")
    inj.inject(Planned(0.0, "clock-step", "member", hold=0.02, step=45))
    f = inj.history.faults[-1]
    assert not f.triggered and not f.available and "not available" in f.note
    assert not clock.offset_file(faults_dir(tmp_path, "b1")).exists()


def test_heal_all_removes_slowing_and_arming_and_sets_clocks_right(tmp_path: Path) -> None:
    inj = _injector(tmp_path)
    d = faults_dir(tmp_path, "b1")
    (d / "slow").write_text("0.4\n")
    (d / "arm").write_text("write\n")
    clock.step(d, 400)
    inj.heal_all()
    assert not (d / "slow").exists() and not (d / "arm").exists()
    assert clock.offset_file(d).read_text() == "+0\n"


@pytest.mark.parametrize("kind", ["isolate", "partition", "full-fs"])
def test_network_and_file_system_kinds_need_their_option(tmp_path: Path, kind: str) -> None:
    inj = _injector(tmp_path)
    inj.inject(Planned(0.0, kind, "member", hold=0.02, second_role="member"))
    assert inj.history.faults == []
