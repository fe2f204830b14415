"""Fencing of directory documents: a writer paused anywhere inside a write
never destroys a change that a newer writer acknowledged.

For every kind of settings change and every fault point of a fenced write
(``dir-write``, ``dir-link``, ``dir-rename``, ``dir-unlink``), an old writer
(epoch 1) is stopped at that point inside the change, a new writer (epoch 2)
takes over and acknowledges its own change of the same document, the old
writer resumes, and a fresh reader must see the new writer's change.  The
old writer's change must not have been acknowledged unless it completed its
check before the takeover.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dynamail.accounts import AccountRef
from dynamail.directory import Directory, passwords
from dynamail.directory.files import JsonFiles, Superseded, versions
from dynamail.storage import faults

from .conftest import FAST_HASHER

DOMAIN = "shared.example"


@dataclass
class World:
    current: int = 1


class EpochWriter:
    """A writer of one epoch; ``world.current`` is the newest claimed epoch."""

    def __init__(self, world: World, epoch: int) -> None:
        self.world = world
        self.own = epoch

    def epoch(self, path: Path) -> int:
        if self.world.current > self.own:
            raise Superseded("superseded before the write")
        return self.own

    def check(self, path: Path, epoch: int) -> None:
        if self.world.current > epoch:
            raise Superseded(f"epoch {self.world.current} exists")


def open_dir(base: Path, writer: Any = None) -> Directory:
    d = Directory(base, main_domain="main.example", password_hasher=FAST_HASHER)
    if writer is not None:
        d.files.writer = writer
    return d


@dataclass(frozen=True)
class Change:
    name: str
    apply: Callable[[Directory, AccountRef, str], object]
    observe: Callable[[Directory, AccountRef], str | None]
    # what the new writer does instead of ``apply`` (for deletes and renames:
    # change the account the old writer is about to take away)
    apply_new: Callable[[Directory, AccountRef, str], object] | None = None


def _real_name(d: Directory, ref: AccountRef) -> str | None:
    if d.find_account(ref.address) is None:
        return None
    return d.account_settings(ref).get("RealName")


def _set_real_name(d: Directory, ref: AccountRef, tag: str) -> None:
    d.update_account_settings(ref, {"RealName": tag})


def _pw(d: Directory, ref: AccountRef) -> str | None:
    stored = d._record(ref).get("password")
    for tag in ("old", "new"):
        if isinstance(stored, str) and passwords.verify(stored, f"pw-{tag}", FAST_HASHER):
            return tag
    return None


def _alert(d: Directory, ref: AccountRef) -> str | None:
    texts = [a.text for a in d.alerts(("account", ref))]
    return ",".join(texts) or None


CHANGES = [
    Change("account settings",
           lambda d, r, t: d.update_account_settings(r, {"RealName": t}),
           lambda d, r: d.account_settings(r).get("RealName")),
    Change("account prefs",
           lambda d, r, t: d.update_account_prefs(r, {"Language": t}),
           lambda d, r: d.account_prefs(r).get("Language")),
    Change("password",
           lambda d, r, t: d.set_password(r, f"pw-{t}"),
           _pw),
    Change("domain settings",
           lambda d, r, t: d.update_domain_settings(DOMAIN, {"RealName": t}),
           lambda d, r: d.domain_settings(DOMAIN).get("RealName")),
    Change("cluster defaults",
           lambda d, r, t: d.update_cluster_account_defaults({"RealName": t}),
           lambda d, r: d.cluster_account_defaults().get("RealName")),
    Change("aliases",
           lambda d, r, t: d.set_account_aliases(r, [f"alias-{t}"]),
           lambda d, r: ",".join(a.removeprefix("alias-") for a in d.account_aliases(r)) or None),
    Change("alerts",
           lambda d, r, t: d.post_alert(("account", r), t),
           _alert),
    Change("account delete",
           lambda d, r, t: d.delete_account(r),
           _real_name, _set_real_name),
    Change("account rename",
           lambda d, r, t: d.rename_account(r, f"v@{DOMAIN}"),
           _real_name, _set_real_name),
]


def run_case(base: Path, point: str, change: Change, other: Path | None = None) -> str:
    """Returns how the old writer's change ended: refused / done / not on path.
    ``other`` is the same directory seen through another client (GlusterFS):
    the new writer and the readers use it."""
    seen_by = other if other is not None else base
    world = World()
    setup = open_dir(base, EpochWriter(world, 1))
    setup.create_domain(DOMAIN, shared=True)
    ref = setup.create_account(DOMAIN, "u", password="pw-start")
    reached, resume = threading.Event(), threading.Event()
    armed = {"on": True}

    def hook(name: str) -> None:
        if name == point and armed["on"] and threading.current_thread().name == "old-writer":
            armed["on"] = False
            reached.set()
            assert resume.wait(10)

    old = open_dir(base, EpochWriter(world, 1))
    outcome: dict[str, Any] = {}

    def run_old() -> None:
        try:
            change.apply(old, ref, "old")
            outcome["r"] = "done"
        except Superseded:
            outcome["r"] = "refused"
        except BaseException as exc:
            outcome["r"] = f"error: {exc!r}"

    faults.set_hook(hook)
    try:
        t = threading.Thread(target=run_old, name="old-writer")
        t.start()
        while not reached.wait(0.01):
            if not t.is_alive():
                assert not outcome.get("r", "").startswith("error"), outcome
                return "not on path"
        world.current = 2
        new = open_dir(seen_by, EpochWriter(world, 2))
        (change.apply_new or change.apply)(new, ref, "new")  # acknowledged
        assert change.observe(open_dir(seen_by), ref) is not None
        resume.set()
        t.join(10)
        assert not t.is_alive()
    finally:
        faults.set_hook(None)
    result = outcome["r"]
    assert not result.startswith("error"), result
    if point not in ("dir-unlink", "dir-move") or change.apply_new is not None:
        # the old writer had not passed its check when the new one took over
        assert result == "refused", (point, change.name, result)
    seen = change.observe(open_dir(seen_by), ref)
    if change.name == "alerts":
        # an alert list is read-modify-write: the new writer's alert is there
        # and the old writer's, refused, is not
        assert seen is not None and "new" in seen.split(",") and (
            result == "done" or "old" not in seen.split(",")), seen
    elif change.apply_new is not None:
        # the account is still there, under its name, with the newer change
        assert seen == "new", (point, change.name, seen)
        assert open_dir(seen_by).find_account(f"v@{DOMAIN}") is None
    else:
        assert seen == "new", (point, change.name, seen)
    # and again through the new writer's own (cached) view
    assert change.observe(new, ref) == seen
    return str(result)


def expected(point: str, change: Change) -> str:
    """Document writes always pass dir-write, dir-link and dir-rename;
    dir-unlink only when there is a lower version to drop (never here: the
    old writer has the setup's epoch); dir-move only in deletes and renames
    (which write no document here: the account has no aliases)."""
    if change.apply_new is None:
        return "refused" if point in ("dir-write", "dir-link", "dir-rename") else "not on path"
    return "refused" if point == "dir-move" else "not on path"


@pytest.mark.parametrize("point", faults.DIRECTORY_POINTS)
@pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
def test_paused_old_writer_never_destroys_an_acknowledged_change(
        tmp_path: Path, point: str, change: Change) -> None:
    result = run_case(tmp_path / "base", point, change)
    assert result == expected(point, change)


def test_matrix_expectations_count() -> None:
    """The closing figures: 23 cases paused and refused, 22 never reaching
    their point (each case is run and checked by the test above)."""
    outcomes = [expected(p, c) for c in CHANGES for p in faults.DIRECTORY_POINTS]
    assert (outcomes.count("refused"), outcomes.count("not on path")) == (23, 22)


def test_lower_versions_are_collected_and_pointer_is_current(tmp_path: Path) -> None:
    world = World(current=3)
    files = JsonFiles(writer=EpochWriter(world, 3))
    p = tmp_path / "doc.json"
    (tmp_path / "doc.json.e1").write_text('{"v": 1}')
    files.write(p, {"v": 3})
    assert [e for e, _ in versions(p)] == [3]
    assert JsonFiles().read(p, {}) == {"v": 3}
    # the pointer is the version itself (a hard link): plain readers see it
    assert p.stat().st_ino == (tmp_path / "doc.json.e3").stat().st_ino
    assert p.read_text().strip().replace("\n", "").replace(" ", "") == '{"v":3}'


def test_reader_prefers_the_highest_version_over_a_stale_pointer(tmp_path: Path) -> None:
    p = tmp_path / "doc.json"
    reader = JsonFiles()
    world = World(current=2)
    JsonFiles(writer=EpochWriter(world, 2)).write(p, {"v": "new"})
    assert reader.read(p, {}) == {"v": "new"}
    # a stale writer's version renamed over the pointer (the worst it can do)
    (tmp_path / "doc.json.e1").write_text('{"v": "old"}')
    import os
    os.link(tmp_path / "doc.json.e1", tmp_path / ".tmp-link")
    os.replace(tmp_path / ".tmp-link", p)
    assert reader.read(p, {}) == {"v": "new"}
    assert JsonFiles().read(p, {}) == {"v": "new"}


def test_superseded_writer_is_refused_before_touching_anything(tmp_path: Path) -> None:
    world = World(current=5)
    p = tmp_path / "doc.json"
    with pytest.raises(Superseded):
        JsonFiles(writer=EpochWriter(world, 4)).write(p, {"v": 4})
    assert not any(tmp_path.iterdir())


def test_unfenced_write_replaces_versions(tmp_path: Path) -> None:
    """A standalone server over a directory a cluster once wrote."""
    p = tmp_path / "doc.json"
    JsonFiles(writer=EpochWriter(World(current=7), 7)).write(p, {"v": 7})
    files = JsonFiles()
    files.write(p, {"v": 0})
    assert versions(p) == []
    assert JsonFiles().read(p, {}) == {"v": 0}


def test_version_unlinked_under_the_writer_ends_in_superseded(tmp_path: Path) -> None:
    """The new writer collected the old writer's version between its write
    and its link: the old write ends with Superseded, the new value stays."""
    world = World(current=1)
    p = tmp_path / "doc.json"
    old = JsonFiles(writer=EpochWriter(world, 1))

    def hook(name: str) -> None:
        if name == "dir-link" and threading.current_thread().name == "old-writer" and world.current == 1:
            world.current = 2
            JsonFiles(writer=EpochWriter(world, 2)).write(p, {"v": "new"})

    result: dict[str, Any] = {}

    def run() -> None:
        try:
            old.write(p, {"v": "old"})
            result["r"] = "done"
        except Superseded:
            result["r"] = "refused"

    faults.set_hook(hook)
    try:
        t = threading.Thread(target=run, name="old-writer")
        t.start()
        t.join(10)
    finally:
        faults.set_hook(None)
    assert result["r"] == "refused"
    assert JsonFiles().read(p, {}) == {"v": "new"}



def test_superseded_move_whose_old_name_was_taken_again_keeps_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A superseded writer moves a directory back; when the old name was
    taken again meanwhile (by the successor), nothing is removed and the
    error says where the moved directory stays."""
    import dynamail.directory.files as files_module

    world = World(current=1)
    src, dst = tmp_path / "acct", tmp_path / ".deleted-acct"
    src.mkdir()
    (src / "mail").write_text("old")
    real = files_module.rename_new

    def rename_then_successor_takes_the_name(a: Path, b: Path, message: str) -> None:
        real(a, b, message)
        if a == src:
            world.current = 2
            src.mkdir()
            (src / "mail").write_text("new")

    monkeypatch.setattr(files_module, "rename_new", rename_then_successor_takes_the_name)
    with pytest.raises(Superseded, match="kept as it is"):
        JsonFiles(writer=EpochWriter(world, 1)).move(src, dst, "exists")
    assert (dst / "mail").read_text() == "old"
    assert (src / "mail").read_text() == "new"
