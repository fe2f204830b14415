"""Crash recovery: torn tails, indexes that disagree with the log, compaction
interrupted at every step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dynamail.storage import AppendRequest, FileAccountStore
from dynamail.storage.mailbox import generations

from .harness import with_account


def msg(i: int) -> bytes:
    return b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i)


def inbox_dir(account: Path) -> Path:
    doc = json.loads((account / "mailboxes.json").read_text())
    return account / "mail" / str(doc["mailboxes"]["INBOX"]["id"])


async def contents(store: FileAccountStore) -> dict[int, tuple[bytes, frozenset[str]]]:
    v = await store.select("INBOX")
    out = {u: (await v.read(u), v.info(u).flags) for u in v.uids()}
    v.close()
    return out


def fill(account: Path, n: int, epoch: int = 1) -> None:
    async def body(store: FileAccountStore) -> None:
        for i in range(n):
            await store.append("INBOX", [AppendRequest(msg(i), frozenset({"\\Seen"}) if i % 2 else frozenset())])

    with_account(account, body, epoch)


def test_torn_tail_cut_at_every_byte(tmp_path: Path) -> None:
    base = tmp_path / "base"
    fill(base, 3)
    d = inbox_dir(base)
    data = d / f"data.{generations(d)[-1]}"
    full = data.stat().st_size
    fill_more = tmp_path / "more"
    shutil.copytree(base, fill_more)
    fill(fill_more, 1, epoch=2)  # the fourth message: its record is the tail to tear
    d2 = inbox_dir(fill_more)
    data2 = d2 / f"data.{generations(d2)[-1]}"
    bigger = data2.read_bytes()
    tail_start = bigger.rfind(b"Subject: m0") - 24 - 40
    assert tail_start >= full
    expected = with_account(base, contents, epoch=2)
    for cut in range(tail_start, len(bigger), 7):
        trial = tmp_path / f"cut{cut}"
        shutil.copytree(fill_more, trial)
        d3 = inbox_dir(trial)
        g = generations(d3)[-1]
        (d3 / f"index.{g}").unlink(missing_ok=True)
        (d3 / f"data.{g}").write_bytes(bigger[:cut])
        assert with_account(trial, contents, epoch=3) == expected
        # the torn bytes were cut, so the next append lands cleanly
        fill(trial, 1, epoch=4)
        assert len(with_account(trial, contents, epoch=5)) == 4
        shutil.rmtree(trial)


def test_index_that_disagrees_is_rebuilt(tmp_path: Path) -> None:
    acct = tmp_path / "a"
    fill(acct, 5)
    d = inbox_dir(acct)
    g = generations(d)[-1]
    old_data = (d / f"data.{g}").read_bytes()
    fill(acct, 5, epoch=2)  # index now covers 10 messages
    expected_new = with_account(acct, contents, epoch=3)
    assert len(expected_new) == 10
    # the log rolled back under a newer index: the index must not be trusted
    (d / f"data.{g}").write_bytes(old_data)
    got = with_account(acct, contents, epoch=4)
    assert sorted(got) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("damage", ["garbage", "empty", "flip"])
def test_damaged_index_is_rebuilt(tmp_path: Path, damage: str) -> None:
    acct = tmp_path / "a"
    fill(acct, 20)
    expected = with_account(acct, contents, epoch=2)
    d = inbox_dir(acct)
    index = d / f"index.{generations(d)[-1]}"
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
    d = inbox_dir(acct)
    g = generations(d)[-1]
    old_index = (d / f"index.{g}").read_bytes()

    async def more(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(msg(9))])
        v = await store.select("INBOX")
        await v.store([1], "add", frozenset({"\\Flagged", "$Later"}))
        await v.store([2], "add", frozenset({"\\Deleted"}))
        await v.expunge()

    with_account(acct, more, epoch=2)
    expected = with_account(acct, contents, epoch=3)
    (d / f"index.{g}").write_bytes(old_index)
    assert with_account(acct, contents, epoch=4) == expected
    assert expected[1][1] == {"\\Flagged", "$Later"}
    assert 2 not in expected


def test_compaction_crash_at_every_step(tmp_path: Path) -> None:
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

    assert with_account(acct, compact, epoch=4) > 0
    d_old, d_new = inbox_dir(before), inbox_dir(acct)
    g_old, g_new = generations(d_old)[-1], generations(d_new)[-1]
    assert g_new == g_old + 1
    new_data = (d_new / f"data.{g_new}").read_bytes()
    new_index = (d_new / f"index.{g_new}").read_bytes()
    # the states a crash can leave, in the order compaction writes files
    steps = [
        {f".data.{g_new}.tmp": new_data[: len(new_data) // 2]},
        {f".data.{g_new}.tmp": new_data},
        {f".data.{g_new}.tmp": new_data, f"index.{g_new}": new_index},
        {f"data.{g_new}": new_data, f"index.{g_new}": new_index},  # renamed, old not yet removed
        {f"data.{g_new}": new_data, f"index.{g_new}": new_index, "drop-old-data": b""},
    ]
    for i, extra in enumerate(steps):
        trial = tmp_path / f"step{i}"
        shutil.copytree(before, trial)
        d = inbox_dir(trial)
        for name, content in extra.items():
            if name == "drop-old-data":
                (d / f"data.{g_old}").unlink()
            else:
                (d / name).write_bytes(content)
        assert with_account(trial, contents, epoch=5) == expected, i
        assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) in (
            [f"data.{g_old}", f"index.{g_old}"],
            [f"data.{g_new}", f"index.{g_new}"],
        )
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
    d = inbox_dir(acct)
    g = generations(d)[-1]
    assert g == 2
    assert (d / f"data.{g}").stat().st_size < 10_000
    got = with_account(acct, contents, epoch=2)
    assert list(got) == [9] and got[9][0] == msg(1)
    assert with_account(acct, lambda s: s.append("INBOX", [AppendRequest(msg(2))]), epoch=3) == [10]
