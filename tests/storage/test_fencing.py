"""Fencing that no pause can break.

The invariant (docs/storage.md): no file is ever mutated by two ownership
epochs, so an owner paused at *any* point — after its checks, before its
change reaches the file system — cannot change what a newer owner wrote or
acknowledged.  The matrix below pauses an old owner at every fault point
(``storage/faults.py``) of every kind of change, lets a new owner take over
and acknowledge work, resumes the old owner, and proves from a fresh open
that every acknowledged change of the new owner is intact and that the old
owner's change is visible exactly when it was answered as done.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dynamail.storage import (
    AppendRequest,
    FencedError,
    FileAccountStore,
    FileMailStore,
    StorageError,
    StoreClosed,
    epochs_monotonic,
    faults,
    fence,
    writer_epochs,
)
from dynamail.storage.account import MAX_CHAIN

from .layout import files_of


def msg(tag: str) -> bytes:
    return b"Subject: " + tag.encode() + b"\r\n\r\nbody " + tag.encode() + b"\r\n"


def test_old_owner_cannot_write_after_takeover(account_dir: Path) -> None:
    async def main() -> None:
        ms = FileMailStore()
        old = await ms.open_account(account_dir, 1)
        await old.create_mailbox("Work")
        assert await old.append("INBOX", [AppendRequest(msg("a"))]) == [1]
        old_view = await old.select("INBOX")

        new = await ms.open_account(account_dir, 2)
        assert ms.recorded_epoch(account_dir) == 2
        with pytest.raises(FencedError):
            await ms.open_account(account_dir, 1)

        with pytest.raises(FencedError):
            await old.append("INBOX", [AppendRequest(msg("b"))])
        with pytest.raises(FencedError):
            await old_view.store([1], "add", frozenset({"\\Seen"}))
        with pytest.raises(FencedError):
            await old_view.expunge([1])
        with pytest.raises(FencedError):
            await old.create_mailbox("Other")
        with pytest.raises(FencedError):
            await old.rename_mailbox("Work", "Play")
        with pytest.raises(FencedError):
            await old.subscribe("Work")
        with pytest.raises(FencedError):
            await old.put_meta("sieve", b"keep;")
        await old.close()

        assert await new.append("INBOX", [AppendRequest(msg("c"))]) == [2]
        v = await new.select("INBOX")
        assert list(v.uids()) == [1, 2] and v.info(1).flags == frozenset()
        assert {m.name for m in await new.list_mailboxes()} == {"INBOX", "Work"}
        await new.close()

    asyncio.run(main())
    assert writer_epochs(account_dir)["INBOX"] == [1, 2]
    assert epochs_monotonic(account_dir)


@pytest.mark.parametrize("order", [(1, 2, 3), (3, 2, 1), (2, 3, 1), (1, 3, 2)])
def test_racing_opens_only_the_highest_writes(account_dir: Path, order: tuple[int, ...]) -> None:
    """Opens with different epochs in every order (claims are exclusive
    creations, not read-compare-replace): only the highest can write."""

    async def main() -> None:
        ms = FileMailStore()
        stores: dict[int, FileAccountStore] = {}
        for e in order:
            try:
                stores[e] = await ms.open_account(account_dir, e)
            except FencedError:
                pass
        ok = []
        for e, s in sorted(stores.items()):
            try:
                await s.append("INBOX", [AppendRequest(msg(f"e{e}"))])
                ok.append(e)
            except FencedError:
                pass
        assert ok == [3]
        assert ms.recorded_epoch(account_dir) == 3
        for s in stores.values():
            await s.close()
        final = await ms.open_account(account_dir, 4)
        v = await final.select("INBOX")
        assert [await v.read(u) for u in v.uids()] == [msg("e3")]
        await final.close()

    asyncio.run(main())


# -- the matrix: pause an old owner at every point of every change ------------

POINTS = faults.POINTS


@dataclass
class Pause:
    """A fault hook that stops the old owner's threads (named ``old-*``) the
    first time one reaches ``point``; ``go`` resumes it."""

    point: str
    reached: threading.Event
    go: threading.Event
    armed: bool = True

    def __call__(self, name: str) -> None:
        if not self.armed or name != self.point or not threading.current_thread().name.startswith("old-"):
            return
        self.armed = False
        self.reached.set()
        self.go.wait(30)


async def prepare(path: Path) -> None:
    s = await FileMailStore().open_account(path, 1)
    await s.create_mailbox("Work")
    await s.create_mailbox("Work/Sub")
    await s.append("INBOX", [AppendRequest(msg(f"i{i}"), frozenset({"\\Seen"}) if i % 2 else frozenset()) for i in range(4)])
    await s.append("Work", [AppendRequest(msg("w0"))])
    v = await s.select("INBOX")
    await v.store([1], "add", frozenset({"\\Deleted"}))
    v.close()
    await s.close()


async def change_append(s: FileAccountStore) -> None:
    await s.append("INBOX", [AppendRequest(msg("old-append"))])


async def change_flags(s: FileAccountStore) -> None:
    v = await s.select("INBOX")
    await v.store([2], "add", frozenset({"\\Flagged", "$old"}))


async def change_expunge(s: FileAccountStore) -> None:
    v = await s.select("INBOX")
    await v.expunge()


async def change_copy(s: FileAccountStore) -> None:
    v = await s.select("INBOX")
    await v.copy([2, 3], "Work")


async def change_move(s: FileAccountStore) -> None:
    v = await s.select("INBOX")
    await v.move([3], "Work")


async def change_create(s: FileAccountStore) -> None:
    await s.create_mailbox("OldNew")


async def change_rename(s: FileAccountStore) -> None:
    await s.rename_mailbox("Work", "Play/Work")


async def change_delete(s: FileAccountStore) -> None:
    await s.delete_mailbox("Work/Sub")


async def change_subscribe(s: FileAccountStore) -> None:
    await s.subscribe("Work")


async def change_meta(s: FileAccountStore) -> None:
    await s.put_meta("settings", b"old")


async def change_compaction(s: FileAccountStore) -> None:
    v = await s.select("INBOX")
    await v.expunge()
    await s.compact("INBOX")


async def change_checkpoint(s: FileAccountStore) -> None:
    await s.append("INBOX", [AppendRequest(msg("old-ckpt"))])
    st = s._states[s._meta["INBOX"].id]
    await s._run_io(s._checkpoint_sync, st, st.checkpoint_bytes())


CHANGES: dict[str, Callable[[FileAccountStore], Awaitable[None]]] = {
    "append": change_append,
    "flags": change_flags,
    "expunge": change_expunge,
    "copy": change_copy,
    "move": change_move,
    "create": change_create,
    "rename": change_rename,
    "delete": change_delete,
    "subscribe": change_subscribe,
    "meta": change_meta,
    "compaction": change_compaction,
    "checkpoint": change_checkpoint,
}


def _in(box: dict[int, Any], body: bytes) -> bool:
    return any(b == body for b, _flags in box.values())


# How a change shows in a snapshot (None: not observable once the new owner
# has worked, or only partly: then only "nothing changed after the takeover"
# is checked).
VISIBLE: dict[str, Callable[[dict[str, Any]], bool] | None] = {
    "append": lambda snap: _in(snap["INBOX"], msg("old-append")),
    "flags": lambda snap: "$old" in snap["INBOX"][2][1],
    "expunge": lambda snap: 1 not in snap["INBOX"],
    "copy": lambda snap: _in(snap["Work"], msg("i1")) and _in(snap["Work"], msg("i2")),
    "move": lambda snap: 3 not in snap["INBOX"],
    "create": lambda snap: "OldNew" in snap,
    "rename": lambda snap: "Play/Work" in snap,
    "delete": lambda snap: "Work/Sub" not in snap,
    "subscribe": lambda snap: "Work" in snap["subscribed"],
    "meta": None,
    "compaction": None,
    "checkpoint": None,
}


async def snapshot(path: Path, epoch: int) -> dict[str, Any]:
    """Everything a client can see of the account, read by a fresh owner."""
    s = await FileMailStore().open_account(path, epoch)
    out: dict[str, Any] = {"subscribed": sorted(s.subscriptions()), "meta": await s.get_meta("settings")}
    for m in await s.list_mailboxes():
        v = await s.select(m.name)
        out[m.name] = {u: (await v.read(u), v.info(u).flags) for u in v.uids()}
        v.close()
    await s.close()
    return out


async def new_owner_work(new: FileAccountStore) -> dict[str, Any]:
    """Changes the new owner acknowledges while the old one is paused; what
    a later owner must see of them."""
    uids = await new.append("INBOX", [AppendRequest(msg(f"new{i}")) for i in range(3)])
    await new.create_mailbox("Fresh")
    fresh = await new.append("Fresh", [AppendRequest(msg("f0")), AppendRequest(msg("f1"))])
    v = await new.select("INBOX")
    await v.store([4], "add", frozenset({"\\Answered"}))
    v.close()
    await new.subscribe("Fresh")
    await new.put_meta("settings", b"new")
    return {"inbox_uids": uids, "fresh_uids": fresh}


def run_case(tmp_path: Path, point: str, change: str) -> str:
    """One cell of the matrix; returns what happened: "n/a" (the change never
    reaches the point), "refused" or "done" (the old owner's answer)."""
    path = tmp_path / f"{change}-{point}"
    pause = Pause(point, threading.Event(), threading.Event())

    async def main() -> str:
        await prepare(path)
        old = await FileMailStore().open_account(path, 2)
        # name the old owner's threads so the hook pauses only them
        old._io.shutdown(wait=True)
        old._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="old-io")
        old._bg = ThreadPoolExecutor(max_workers=1, thread_name_prefix="old-bg")
        faults.set_hook(pause)
        try:
            task = asyncio.ensure_future(CHANGES[change](old))
            reached = await asyncio.get_running_loop().run_in_executor(None, pause.reached.wait, 5)
            if not reached:
                pause.armed = False
                await task
                await old.close()
                return "n/a"
            # the old owner is paused at the point: a new owner takes over
            new = await FileMailStore().open_account(path, 3)
            acked = await new_owner_work(new)
            before = await snapshot_live(new)
            pause.go.set()
            try:
                await task
                outcome = "done"
            except FencedError:
                outcome = "refused"
            except StorageError:  # a failed write is a refusal too
                outcome = "refused"
            await old.close()
            await new.close()
        finally:
            pause.go.set()
            faults.set_hook(None)
        after = await snapshot(path, 4)
        # every acknowledged change of the new owner is intact
        for uid in acked["inbox_uids"]:
            assert after["INBOX"][uid][0] == before["INBOX"][uid][0]
        assert [after["Fresh"][u][0] for u in acked["fresh_uids"]] == [msg("f0"), msg("f1")]
        assert "\\Answered" in after["INBOX"][4][1]
        assert "Fresh" in after["subscribed"] and after["meta"] == b"new"
        # nothing the old owner did after the takeover is visible ...
        assert after == before, f"{change} at {point}: the old owner changed what the new one acknowledged"
        # ... and its change is visible exactly when it was answered as done
        # (paused before its decision: refused; after it, e.g. in the clean-up
        # of a compaction: done, and the new owner started from it)
        visible = VISIBLE[change]
        if visible is not None:
            assert visible(before) == (outcome == "done"), f"{change} at {point}: {outcome} but visible={visible(before)}"
        return outcome

    return asyncio.run(main())


async def snapshot_live(s: FileAccountStore) -> dict[str, Any]:
    out: dict[str, Any] = {"subscribed": sorted(s.subscriptions()), "meta": await s.get_meta("settings")}
    for m in await s.list_mailboxes():
        v = await s.select(m.name)
        out[m.name] = {u: (await v.read(u), v.info(u).flags) for u in v.uids()}
        v.close()
    return out


@pytest.mark.xdist_group("fencing-matrix")
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_paused_old_owner_at_every_point(tmp_path: Path, change: str) -> None:
    outcomes = {point: run_case(tmp_path, point, change) for point in POINTS}
    # every change mutates the file system somewhere: at least one point paused it
    assert any(o != "n/a" for o in outcomes.values()), outcomes
    # the first mutation of every change comes before its decision: refused
    assert "refused" in outcomes.values(), outcomes


# -- closing under readers ----------------------------------------------------


def test_reads_racing_a_close_fail_cleanly(account_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A search on a reader thread while the store is closed: the read in
    flight finishes on descriptors that stay open for it (none is reused by
    another file meanwhile), later reads raise StoreClosed."""
    from dynamail.storage import view as view_module

    gate = threading.Event()
    started = threading.Event()
    real = view_module.search_many

    def slow(*args: Any) -> list[int]:
        started.set()
        gate.wait(10)
        return real(*args)

    monkeypatch.setattr(view_module, "search_many", slow)

    async def main() -> None:
        s = await FileMailStore().open_account(account_dir, 1)
        await s.append("INBOX", [AppendRequest(msg(f"m{i}") * 20) for i in range(50)])
        v = await s.select("INBOX")
        reading = asyncio.ensure_future(v.search_text(list(v.uids()), "BODY", "body m49"))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        await s.close()
        # descriptors closed under the search would be reused by these opens
        other = await FileMailStore().open_account(account_dir.parent / "other", 1)
        await other.append("INBOX", [AppendRequest(msg("body m49") * 20)])
        ov = await other.select("INBOX")
        gate.set()
        assert await reading == [50]
        with pytest.raises(StoreClosed):
            await v.read(1)
        with pytest.raises(StoreClosed):
            await v.search_text([1], "BODY", "m1")
        ov.close()
        await other.close()

    asyncio.run(main())


def test_garbage_of_a_stale_owner_is_collected(account_dir: Path) -> None:
    """Files a stale owner leaves (its own log files, checkpoints) are
    removed by a later owner; the file count stays bounded however often the
    account changes owner."""

    async def main() -> None:
        for epoch in range(1, 30):
            s = await FileMailStore().open_account(account_dir, epoch)
            await s.append("INBOX", [AppendRequest(msg(f"e{epoch}"))])
            await s.close(checkpoint=epoch % 3 != 0)
        s = await FileMailStore().open_account(account_dir, 100)
        v = await s.select("INBOX")
        assert len(v.uids()) == 29
        await s.close()

    asyncio.run(main())
    names = files_of(account_dir)
    claims = [n for n in names if n.startswith("owners/")]
    logs = [n for n in names if "/log." in n]
    assert len(claims) <= 2 * fence.CLAIMS_KEPT + 2, claims  # + the head link and the current claim
    assert len(logs) <= MAX_CHAIN + 1, logs
    assert len(names) == len(claims) + len(logs) + 2, names  # + manifest, checkpoint
