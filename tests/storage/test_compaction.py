"""Background compaction: scheduled by expunges, bulk copy while writers go
on, catch-up of what they wrote meanwhile, crash-safe switch."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from dynamail.storage import AppendRequest, FileAccountStore, FileMailStore

from .harness import with_account
from .layout import box, chain, index_file, mailbox_dir

BIG = 300_000


def msg(i: int, pad: int = 0) -> bytes:
    return b"Subject: m%d\r\n\r\n" % i + b"y" * pad + b"body %d\r\n" % i


def inbox_dir(account: Path) -> Path:
    return mailbox_dir(account)


def gen(account: Path) -> int:
    return int(box(account)["gen"])


async def contents(store: FileAccountStore) -> dict[int, tuple[bytes, frozenset[str], int]]:
    v = await store.select("INBOX")
    out = {u: (await v.read(u), v.info(u).flags, v.info(u).modseq) for u in v.uids()}
    v.close()
    return out


async def writes_during(store: FileAccountStore, stage: str) -> None:
    """What other sessions do while a compaction runs: after the bulk phase
    enough to need a background catch-up round, before the switch a little."""
    v = await store.select("INBOX")
    if stage == "bulk":
        await store.append("INBOX", [AppendRequest(msg(100 + i, BIG)) for i in range(5)])
        await v.store([10], "add", frozenset({"\\Flagged", "$Later"}))
    else:
        await store.append("INBOX", [AppendRequest(msg(200)), AppendRequest(msg(201, BIG))])
        await v.store([9], "add", frozenset({"\\Deleted", "$New"}))
        await v.expunge()
        await v.store([10], "remove", frozenset({"$Later"}))
    v.close()


def prepare(acct: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(msg(i, BIG if i < 8 else 0)) for i in range(12)])
        v = await store.select("INBOX")
        await v.store([1, 2, 3, 4, 5, 6], "add", frozenset({"\\Deleted"}))
        await v.store([7], "add", frozenset({"$Kept"}))
        await v.expunge()
        v.close()
        # expunging 1.8 MB of 3.6 MB scheduled a background compaction
        for task in list(store._compactions.values()):
            await task

    with_account(acct, body)


def test_expunge_schedules_background_compaction(tmp_path: Path) -> None:
    acct = tmp_path / "a"

    async def body(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(msg(i, BIG)) for i in range(8)])
        reader = await store.select("INBOX")  # keeps ghosts of what others expunge
        v = await store.select("INBOX")
        await v.store([1, 2, 3, 4], "add", frozenset({"\\Deleted"}))
        assert await v.expunge() == [1, 2, 3, 4]
        assert store._compactions, "no compaction was scheduled"
        await asyncio.gather(*store._compactions.values())
        assert gen(acct) == 2 and len(chain(acct)) == 1
        # the other view still lists the expunged messages and reads them
        assert list(reader.uids()) == [1, 2, 3, 4, 5, 6, 7, 8]
        assert await reader.read(2) == msg(1, BIG)
        f, off, n = await reader.open_body(3)
        f.seek(off)
        assert f.read(n) == msg(2, BIG)
        assert await reader.read(6) == msg(5, BIG)
        changes = await reader.refresh()
        assert changes.expunged == [1, 2, 3, 4]
        reader.close()
        v.close()

    with_account(acct, body)
    assert chain(acct)[0].stat().st_size < 4 * (BIG + 1000)
    got = with_account(acct, contents, epoch=2)
    assert [got[u][0] for u in sorted(got)] == [msg(i, BIG) for i in range(4, 8)]


def test_catch_up_of_writes_during_compaction(tmp_path: Path) -> None:
    acct = tmp_path / "a"
    prepare(acct)
    g_old = gen(acct)
    before = tmp_path / "before"

    async def body(store: FileAccountStore) -> tuple[int, dict[int, tuple[bytes, frozenset[str], int]]]:
        async def hook(stage: str) -> None:
            await writes_during(store, stage)
            if stage == "switch":  # the files as a crash just before the switch leaves them
                shutil.copytree(acct, before)

        v = await store.select("INBOX")
        await v.store([7, 8], "add", frozenset({"\\Deleted"}))
        await v.expunge()
        v.close()
        store._compact_hook = hook
        reclaimed = await store.compact("INBOX")
        store._compact_hook = None
        return reclaimed, await contents(store)

    reclaimed, expected = with_account(acct, body, epoch=2)
    assert reclaimed > 0
    assert sorted(expected) == list(range(10, 20))
    assert expected[10][1] == {"\\Flagged"}
    assert expected[19][0] == msg(201, BIG)
    g_new = gen(acct)
    assert g_new == g_old + 1
    (new_file,) = chain(acct)
    name = new_file.name
    assert name.startswith("log.2.")
    new_data = new_file.read_bytes()
    new_index = index_file(acct).read_bytes()
    assert with_account(acct, contents, epoch=3) == expected
    # the log of the new generation alone gives the same (no checkpoint)
    index_file(acct).unlink()
    assert with_account(acct, contents, epoch=4) == expected
    # a crash at every step of the switch (the files it leaves, in order;
    # the manifest naming the new file is the switch itself)
    bulk_end = new_data.index(msg(100, BIG)) - 64  # inside the first caught-up record
    steps = [
        {f".{name}.tmp": new_data[:bulk_end]},
        {f".{name}.tmp": new_data[: len(new_data) - 100]},
        {f".{name}.tmp": new_data},
        {f".{name}.tmp": new_data, "index.2": new_index},
        {name: new_data, "index.2": new_index},
    ]
    for i, extra in enumerate(steps):
        trial = tmp_path / f"step{i}"
        shutil.copytree(before, trial)
        d = inbox_dir(trial)
        for fname, content in extra.items():
            (d / fname).write_bytes(content)
        assert with_account(trial, contents, epoch=5) == expected, i
        names = sorted(p.name for p in d.iterdir())
        assert all(n.startswith(("log.5.", "index.5")) for n in names), (i, names)


def test_close_waits_for_background_compaction(tmp_path: Path) -> None:
    acct = tmp_path / "a"

    async def main() -> None:
        store = await FileMailStore().open_account(acct, 1)
        await store.append("INBOX", [AppendRequest(msg(i, BIG)) for i in range(10)])
        v = await store.select("INBOX")
        await v.store(list(range(1, 9)), "add", frozenset({"\\Deleted"}))
        await v.expunge()
        v.close()
        assert store._compactions
        await store.close()  # aborts or finishes it; never leaves a half state
        store = await FileMailStore().open_account(acct, 2)
        got = await contents(store)
        assert [got[u][0] for u in sorted(got)] == [msg(8, BIG), msg(9, BIG)]
        assert not [p for p in inbox_dir(acct).iterdir() if p.name.endswith(".tmp")]
        await store.close()

    asyncio.run(main())


def test_failed_or_cancelled_compaction_leaves_nothing(tmp_path: Path) -> None:
    acct = tmp_path / "a"
    prepare(acct)

    async def body(store: FileAccountStore) -> None:
        v = await store.select("INBOX")
        await v.store([7], "add", frozenset({"\\Deleted"}))
        await v.expunge()
        v.close()
        before = await contents(store)
        d = inbox_dir(acct)
        g0 = gen(acct)
        listing = sorted(p.name for p in d.iterdir())

        async def flush_compaction_thread() -> None:
            assert store._bg is not None
            await asyncio.wrap_future(store._bg.submit(lambda: None))

        async def failing(stage: str) -> None:
            if stage == "bulk":
                raise RuntimeError("stop here")

        store._compact_hook = failing
        try:
            await store.compact("INBOX")
        except RuntimeError:
            pass
        else:
            raise AssertionError("the compaction did not fail")
        await flush_compaction_thread()
        assert sorted(p.name for p in d.iterdir()) == listing

        running: list[asyncio.Task[int]] = []
        for stage_to_cancel in ("bulk", "switch"):

            async def cancelling(stage: str, when: str = stage_to_cancel) -> None:
                if stage == when:
                    running[-1].cancel()
                    await asyncio.sleep(0)

            store._compact_hook = cancelling
            running.append(asyncio.create_task(store.compact("INBOX")))
            try:
                await running[-1]
            except asyncio.CancelledError:
                pass
            await flush_compaction_thread()
            assert sorted(p.name for p in d.iterdir()) == listing, stage_to_cancel
        store._compact_hook = None
        assert await contents(store) == before
        assert await store.append("INBOX", [AppendRequest(msg(50))]) == [13]
        assert await store.compact("INBOX") > 0
        assert gen(acct) == g0 + 1 and len(chain(acct)) == 1

    with_account(acct, body, epoch=2)
    got = with_account(acct, contents, epoch=3)
    assert sorted(got) == [8, 9, 10, 11, 12, 13]


def test_long_chain_is_folded_without_rewriting_the_first_file(tmp_path: Path) -> None:
    """An account that changes owner often grows one small file per owner
    that writes; past MAX_CHAIN files they are folded into one, and the
    large first file is kept as it is (the same inode: not rewritten)."""
    from dynamail.storage.account import MAX_CHAIN

    acct = tmp_path / "a"

    async def big(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(msg(i, 20_000)) for i in range(40)])

    with_account(acct, big)
    base_inode = chain(acct)[0].stat().st_ino
    expected = [msg(i, 20_000) for i in range(40)]
    for epoch in range(2, 3 * MAX_CHAIN):
        with_account(acct, lambda s, e=epoch: s.append("INBOX", [AppendRequest(msg(1000 + e))]), epoch=epoch, crash=epoch % 4 == 0)
        expected.append(msg(1000 + epoch))
        assert len(chain(acct)) <= MAX_CHAIN + 1
    assert chain(acct)[0].stat().st_ino == base_inode
    assert gen(acct) > 1
    got = with_account(acct, contents, epoch=100)
    assert [got[u][0] for u in sorted(got)] == expected
