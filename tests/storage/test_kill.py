"""A child process appends and is killed with SIGKILL at a random moment;
every message it had acknowledged is there after reopening.

The child is forked (no interpreter start-up), so hundreds of iterations
run in a few seconds; ``bench/storage.py --kill-iterations N`` runs the long
form.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from dynamail.storage import AppendRequest, FileMailStore, NoSuchMailbox

ITERATIONS = 200


def child(path: Path, epoch: int, wfd: int, seed: int) -> None:
    rnd = random.Random(seed)

    async def writer(store, n: int) -> None:  # type: ignore[no-untyped-def]
        for k in range(1000):
            tag = b"%d-%d-%d" % (epoch, n, k)
            size = rnd.choice([50, 2000, 40000])
            body = b"Subject: " + tag + b"\r\n\r\n" + b"z" * size + b"\r\n"
            mbox = "INBOX" if (n + k) % 3 else "Other"
            await store.append(mbox, [AppendRequest(body, frozenset({"\\Seen"}) if k % 2 else frozenset())])
            os.write(wfd, mbox.encode() + b" " + tag + b"\n")
            if k % 5 == 0:
                v = await store.select(mbox)
                uids = list(v.uids())
                if uids:
                    await v.store(uids[-1:], "add", frozenset({"\\Flagged"}))
                v.close()

    async def main() -> None:
        store = await FileMailStore().open_account(path, epoch)
        names = {m.name for m in await store.list_mailboxes()}
        if "Other" not in names:
            await store.create_mailbox("Other")
        os.write(wfd, b"ready\n")
        await asyncio.gather(*(writer(store, n) for n in range(4)))

    try:
        asyncio.run(main())
    finally:
        os._exit(0)


def run_iterations(path: Path, iterations: int, seed: int = 1) -> int:
    rnd = random.Random(seed)
    acked: dict[str, set[bytes]] = {"INBOX": set(), "Other": set()}
    known: dict[str, dict[int, bytes]] = {"INBOX": {}, "Other": {}}  # uid -> tag, verified
    epoch = 0
    for _ in range(iterations):
        epoch += 1
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            child(path, epoch, w, rnd.randrange(1 << 30))
        os.close(w)
        buf = b""
        while b"ready\n" not in buf:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf += chunk
        time.sleep(rnd.random() * 0.02)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf += chunk
        os.close(r)
        for line in buf.split(b"\n"):
            parts = line.split(b" ")
            if len(parts) == 2:
                acked[parts[0].decode()].add(parts[1])
        epoch += 1
        asyncio.run(_verify(path, epoch, known))
        for mbox, tags in acked.items():
            missing = tags - set(known[mbox].values())
            assert not missing, f"acknowledged but lost in {mbox}: {sorted(missing)[:5]}"
    return sum(len(t) for t in acked.values())


async def _verify(path: Path, epoch: int, known: dict[str, dict[int, bytes]]) -> None:
    """Messages verified before must still be there (same UID, same tag);
    read the tags of the new ones."""
    store = await FileMailStore().open_account(path, epoch)
    try:
        for mbox, seen in known.items():
            try:
                v = await store.select(mbox)
            except NoSuchMailbox:
                assert not seen
                continue
            uids = set(v.uids())
            assert set(seen) <= uids, f"{mbox}: messages vanished"
            for uid in sorted(uids - set(seen)):
                head = await v.read_range(uid, 0, 64)
                seen[uid] = head.split(b"\r\n")[0][len(b"Subject: ") :]
            for uid in list(seen)[-3:]:  # spot-check that old ones still read back
                head = await v.read_range(uid, 0, 64)
                assert head.split(b"\r\n")[0][len(b"Subject: ") :] == seen[uid]
            v.close()
    finally:
        await store.close(checkpoint=False)


@pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.xdist_group("storage")
def test_sigkill_loses_no_acknowledged_message(tmp_path: Path) -> None:
    total = run_iterations(tmp_path / "acct", ITERATIONS)
    assert total >= ITERATIONS // 10  # the children did get work acknowledged
