"""Background compaction: scheduled by expunges, bulk copy while writers go
on, catch-up of what they wrote meanwhile, crash-safe switch."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from dynamail.storage import AppendRequest, FileAccountStore, FileMailStore
from dynamail.storage.mailbox import generations

from .harness import with_account

BIG = 300_000


def msg(i: int, pad: int = 0) -> bytes:
    return b"Subject: m%d\r\n\r\n" % i + b"y" * pad + b"body %d\r\n" % i


def inbox_dir(account: Path) -> Path:
    doc = json.loads((account / "mailboxes.json").read_text())
    return account / "mail" / str(doc["mailboxes"]["INBOX"]["id"])


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
        assert generations(inbox_dir(acct)) == [2]
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
    assert (inbox_dir(acct) / "data.2").stat().st_size < 4 * (BIG + 1000)
    got = with_account(acct, contents, epoch=2)
    assert [got[u][0] for u in sorted(got)] == [msg(i, BIG) for i in range(4, 8)]


def test_catch_up_of_writes_during_compaction(tmp_path: Path) -> None:
    acct = tmp_path / "a"
    prepare(acct)
    g_old = generations(inbox_dir(acct))[-1]
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
    d_new = inbox_dir(acct)
    g_new = generations(d_new)[-1]
    assert g_new == g_old + 1
    new_data = (d_new / f"data.{g_new}").read_bytes()
    new_index = (d_new / f"index.{g_new}").read_bytes()
    assert with_account(acct, contents, epoch=3) == expected
    # the log of the new generation alone gives the same (no checkpoint)
    (d_new / f"index.{g_new}").unlink()
    assert with_account(acct, contents, epoch=4) == expected
    # a crash at every step of the switch (the files it leaves, in order)
    bulk_end = new_data.index(msg(100, BIG)) - 64  # inside the first caught-up record
    steps = [
        {f".data.{g_new}.tmp": new_data[:bulk_end]},
        {f".data.{g_new}.tmp": new_data[: len(new_data) - 100]},
        {f".data.{g_new}.tmp": new_data},
        {f".data.{g_new}.tmp": new_data, f"index.{g_new}": new_index},
        {f"data.{g_new}": new_data, f"index.{g_new}": new_index},
        {f"data.{g_new}": new_data, f"index.{g_new}": new_index, "drop-old": b""},
        {f"data.{g_new}": new_data, "drop-old": b""},
    ]
    for i, extra in enumerate(steps):
        trial = tmp_path / f"step{i}"
        shutil.copytree(before, trial)
        d = inbox_dir(trial)
        for name, content in extra.items():
            if name == "drop-old":
                (d / f"data.{g_old}").unlink()
                (d / f"index.{g_old}").unlink(missing_ok=True)
            else:
                (d / name).write_bytes(content)
        assert with_account(trial, contents, epoch=5) == expected, i
        assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) in (
            [f"data.{g_old}", f"index.{g_old}"],
            [f"data.{g_new}", f"index.{g_new}"],
        ), i


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
        gen = generations(d)[-1]

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
        assert sorted(p.name for p in d.iterdir()) == [f"data.{gen}", f"index.{gen}"]

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
            assert sorted(p.name for p in d.iterdir()) == [f"data.{gen}", f"index.{gen}"], stage_to_cancel
        store._compact_hook = None
        assert await contents(store) == before
        assert await store.append("INBOX", [AppendRequest(msg(50))]) == [13]
        assert await store.compact("INBOX") > 0
        assert generations(d) == [gen + 1]

    with_account(acct, body, epoch=2)
    got = with_account(acct, contents, epoch=3)
    assert sorted(got) == [8, 9, 10, 11, 12, 13]
