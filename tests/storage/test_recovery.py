"""Crash recovery: torn tails, indexes that disagree with the log, compaction
interrupted at every step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dynamail.storage import AppendRequest, FileAccountStore

from .harness import with_account
from .layout import chain, index_file, last_log, mailbox_dir, manifest


def msg(i: int) -> bytes:
    return b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i)


async def contents(store: FileAccountStore) -> dict[int, tuple[bytes, frozenset[str]]]:
    v = await store.select("INBOX")
    out = {u: (await v.read(u), v.info(u).flags) for u in v.uids()}
    v.close()
    return out


def fill(account: Path, n: int, epoch: int = 1, crash: bool = False) -> None:
    async def body(store: FileAccountStore) -> None:
        for i in range(n):
            await store.append("INBOX", [AppendRequest(msg(i), frozenset({"\\Seen"}) if i % 2 else frozenset())])

    with_account(account, body, epoch, crash=crash)


def test_torn_tail_cut_at_every_byte(tmp_path: Path) -> None:
    """An owner crashed in the middle of a write: the next owner seals its
    file at the last complete write, whatever byte the write was cut at."""
    base = tmp_path / "base"
    fill(base, 3)
    fill_more = tmp_path / "more"
    shutil.copytree(base, fill_more)
    fill(fill_more, 1, epoch=2, crash=True)  # the fourth message: its record is the tail to tear
    data2 = last_log(fill_more)
    assert data2.name.startswith("log.2.")
    bigger = data2.read_bytes()
    tail_start = bigger.rfind(b"Subject: m0") - 24 - 40
    assert tail_start > 0
    expected = with_account(base, contents, epoch=2)
    for cut in range(tail_start, len(bigger), 7):
        trial = tmp_path / f"cut{cut}"
        shutil.copytree(fill_more, trial)
        last_log(trial).write_bytes(bigger[:cut])
        assert with_account(trial, contents, epoch=3) == expected
        # the torn bytes are never read: the next owner's append lands in its own file
        fill(trial, 1, epoch=4)
        assert len(with_account(trial, contents, epoch=5)) == 4
        shutil.rmtree(trial)


def test_index_of_another_generation_is_not_used(tmp_path: Path) -> None:
    acct = tmp_path / "a"
    fill(acct, 5)
    before = tmp_path / "before"
    shutil.copytree(acct, before)

    async def drop_and_compact(store: FileAccountStore) -> None:
        v = await store.select("INBOX")
        await v.store([1, 2], "add", frozenset({"\\Deleted"}))
        await v.expunge()
        await store.compact("INBOX")

    with_account(acct, drop_and_compact, epoch=2)
    expected = with_account(before, contents, epoch=2)
    # a checkpoint of the compacted generation beside the older chain
    shutil.copy(index_file(acct), index_file(before))
    assert with_account(before, contents, epoch=3) == expected


@pytest.mark.parametrize("damage", ["garbage", "empty", "flip"])
def test_damaged_index_is_rebuilt(tmp_path: Path, damage: str) -> None:
    acct = tmp_path / "a"
    fill(acct, 20)
    expected = with_account(acct, contents, epoch=2)
    index = index_file(acct)
    blob = bytearray(index.read_bytes())
    if damage == "garbage":
        blob = bytearray(b"nonsense" * 10)
    elif damage == "empty":
        blob = bytearray()
    else:
        blob[len(blob) // 2] ^= 0xFF
    index.write_bytes(bytes(blob))
    assert with_account(acct, contents, epoch=3) == expected


def test_stale_index_replays_tail(tmp_path: Path) -> None:
    acct = tmp_path / "a"
    fill(acct, 4)
    old_index = index_file(acct).read_bytes()

    async def more(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(msg(9))])
        v = await store.select("INBOX")
        await v.store([1], "add", frozenset({"\\Flagged", "$Later"}))
        await v.store([2], "add", frozenset({"\\Deleted"}))
        await v.expunge()

    with_account(acct, more, epoch=2, crash=True)
    expected = with_account(acct, contents, epoch=3)
    # a checkpoint covering only the first file of the chain: the rest is replayed
    index_file(acct).write_bytes(old_index)
    fill_epoch = 3
    assert with_account(acct, contents, epoch=fill_epoch + 1) == expected
    assert expected[1][1] == {"\\Flagged", "$Later"}
    assert 2 not in expected


def test_compaction_crash_at_every_step(tmp_path: Path) -> None:
    """Compaction interrupted at every step leaves the state it started
    from or the one it ends with, and the next owner removes what is left."""
    acct = tmp_path / "a"
    fill(acct, 10)

    async def drop_some(store: FileAccountStore) -> None:
        v = await store.select("INBOX")
        await v.store([2, 3, 5], "add", frozenset({"\\Deleted"}))
        await v.expunge()

    with_account(acct, drop_some, epoch=2)
    expected = with_account(acct, contents, epoch=3)
    before = tmp_path / "before"
    shutil.copytree(acct, before)

    async def compact(store: FileAccountStore) -> int:
        return await store.compact("INBOX")

    assert with_account(acct, compact, epoch=4, crash=True) > 0
    new_chain = chain(acct)
    assert len(new_chain) == 1 and new_chain[0].name.startswith("log.4.")
    new_data = new_chain[0].read_bytes()
    new_index = index_file(acct).read_bytes()
    name = new_chain[0].name
    # the states a crash can leave, in the order compaction writes files
    # (the manifest of epoch 4 naming the new file is the switch)
    steps = [
        {f".{name}.tmp": new_data[: len(new_data) // 2]},
        {f".{name}.tmp": new_data},
        {f".{name}.tmp": new_data, "index.4": new_index},
        {name: new_data, "index.4": new_index},  # renamed, not yet in the manifest
    ]
    for i, extra in enumerate(steps):
        trial = tmp_path / f"step{i}"
        shutil.copytree(before, trial)
        d = mailbox_dir(trial)
        for fname, content in extra.items():
            (d / fname).write_bytes(content)
        assert with_account(trial, contents, epoch=5) == expected, i
        names = sorted(p.name for p in d.iterdir())
        assert all(n.startswith(("log.5.", "index.5")) for n in names), (i, names)
    assert with_account(acct, contents, epoch=5) == expected


def test_views_survive_compaction(tmp_path: Path) -> None:
    acct = tmp_path / "a"
    fill(acct, 6)

    async def body(store: FileAccountStore) -> None:
        v = await store.select("INBOX")
        await v.store([1, 2], "add", frozenset({"\\Deleted"}))
        await v.expunge()
        await store.compact("INBOX")
        assert list(v.uids()) == [3, 4, 5, 6]
        assert await v.read(4) == msg(3)
        f, off, n = await v.open_body(6)
        f.seek(off)
        assert f.read(n) == msg(5)
        assert (await store.append("INBOX", [AppendRequest(msg(7))])) == [7]

    with_account(acct, body, epoch=2)
    assert sorted(with_account(acct, contents, epoch=3)) == [3, 4, 5, 6, 7]


def test_close_compacts_mostly_dead_logs(tmp_path: Path) -> None:
    acct = tmp_path / "a"
    big = b"Subject: big\r\n\r\n" + b"y" * 300_000 + b"\r\n"

    async def body(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(big)] * 8 + [AppendRequest(msg(1))])
        v = await store.select("INBOX")
        await v.store(list(range(1, 9)), "add", frozenset({"\\Deleted"}))
        await v.expunge()
        v.close()

    with_account(acct, body)
    assert manifest(acct)["mailboxes"]["INBOX"]["gen"] == 2
    (only,) = chain(acct)
    assert only.stat().st_size < 10_000
    got = with_account(acct, contents, epoch=2)
    assert list(got) == [9] and got[9][0] == msg(1)
    assert with_account(acct, lambda s: s.append("INBOX", [AppendRequest(msg(2))]), epoch=3) == [10]
