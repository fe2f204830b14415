"""MemberWriter: which documents a member may write, and under which epoch."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from dynamail.cluster.dirfence import MemberWriter
from dynamail.cluster.election import Tenure
from dynamail.directory.files import Superseded


class _Election:
    def __init__(self) -> None:
        self.claims: set[int] = set()

    def exists(self, epoch: int) -> bool:
        return epoch in self.claims


def _member(controller: bool, epoch: int = 5) -> SimpleNamespace:
    tenure = Tenure(epoch=epoch, lease=10.0, margin=1.0, renewed_at=time.monotonic()) if controller else None
    return SimpleNamespace(controller=object() if controller else None, tenure=tenure, election=_Election())


def test_fenced_roots_and_local_files(tmp_path: Path) -> None:
    shared, settings, local = tmp_path / "Domains", tmp_path / "Settings", tmp_path / "Workers/w1"
    ctl = MemberWriter(_member(True), shared, settings)
    assert ctl.epoch(shared / "a.test/Settings.json") == 5
    assert ctl.epoch(settings / "AccountDefaults.json") == 5  # the workers' server-wide settings
    assert ctl.epoch(local / "Queue/x.json") == 0
    other = MemberWriter(_member(False), shared, settings)
    for path in (shared / "a.test/Settings.json", settings / "AccountDefaults.json"):
        with pytest.raises(Superseded):
            other.epoch(path)
    assert other.epoch(local / "x.json") == 0
    # a successor's claim ends the epoch: the write is not acknowledged
    m = _member(True)
    w = MemberWriter(m, shared, settings)
    w.check(settings / "Prefs.json", 5)
    m.election.claims.add(6)
    with pytest.raises(Superseded):
        w.check(settings / "Prefs.json", 5)
