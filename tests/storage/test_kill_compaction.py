"""SIGKILL while background compactions run: a child appends 100 KiB
messages and expunges older ones (each expunge leaves enough dead bytes to
start a compaction) and is killed at a random moment.  After reopening,
every acknowledged message not given to an expunge is there, and no
acknowledged expunge came back."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

import pytest
from tests.storage.killing import fork_and_kill

from dynamail.storage import AppendRequest, FileAccountStore, FileMailStore

ITERATIONS = 25


def child(path: Path, epoch: int, wfd: int, seed: int) -> None:
    rnd = random.Random(seed)

    async def main() -> None:
        store = await FileMailStore().open_account(path, epoch)
        os.write(wfd, b"ready\n")
        for k in range(10_000):
            tag = b"%d-%d" % (epoch, k)
            body = b"Subject: " + tag + b"\r\n\r\n" + b"q" * rnd.choice([1000, 100_000, 300_000]) + b"\r\n"
            await store.append("INBOX", [AppendRequest(body)])
            os.write(wfd, b"A " + tag + b"\n")
            if k % 6 == 5:
                v = await store.select("INBOX")
                uids = list(v.uids())
                victims = uids[: len(uids) // 2]
                tags = [(await v.read_range(u, 0, 40)).split(b"\r\n")[0][9:] for u in victims]
                os.write(wfd, b"X " + b" ".join(tags) + b"\n")  # given to an expunge
                await v.store(victims, "add", frozenset({"\\Deleted"}))
                await v.expunge(victims)
                os.write(wfd, b"D " + b" ".join(tags) + b"\n")  # the expunge is durable
                v.close()

    try:
        asyncio.run(main())
    finally:
        os._exit(0)


async def tags_present(path: Path, epoch: int) -> list[bytes]:
    store: FileAccountStore = await FileMailStore().open_account(path, epoch)
    try:
        v = await store.select("INBOX")
        out = [(await v.read_range(u, 0, 40)).split(b"\r\n")[0][9:] for u in v.uids()]
        v.close()
        return out
    finally:
        await store.close(checkpoint=False)


@pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.xdist_group("storage")
def test_sigkill_during_background_compaction(tmp_path: Path) -> None:
    path = tmp_path / "acct"
    rnd = random.Random(7)
    appended: set[bytes] = set()
    submitted: set[bytes] = set()
    expunged: set[bytes] = set()
    epoch = 0
    for _ in range(ITERATIONS):
        epoch += 1
        buf = fork_and_kill(child, path, epoch, rnd, max_delay=0.3)
        for line in buf.split(b"\n"):
            kind, _, rest = line.partition(b" ")
            if kind == b"A":
                appended.add(rest)
            elif kind == b"X":
                submitted.update(rest.split())
            elif kind == b"D":
                expunged.update(rest.split())
        epoch += 1
        present = asyncio.run(tags_present(path, epoch))
        assert len(present) == len(set(present)), "a message appears twice"
        have = set(present)
        lost = appended - submitted - have
        assert not lost, f"acknowledged but lost: {sorted(lost)[:5]}"
        back = expunged & have
        assert not back, f"expunged but back: {sorted(back)[:5]}"
    assert expunged, "no expunge was acknowledged: the test did not exercise compaction"
    from .layout import box

    assert int(box(path)["gen"]) > 1, "no compaction finished before a kill"
    leftovers = [p.name for p in path.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert not leftovers
