"""The fork / append / SIGKILL / reopen check shared by ``test_kill``,
``test_kill_compaction`` and ``test_glusterfs`` (and ``bench/storage.py
--kill-iterations`` through ``test_kill.run_iterations``)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

from dynamail.storage import AppendRequest, FileMailStore, NoSuchMailbox

Child = Callable[[Path, int, int, int], None]


def fork_and_kill(child: Child, path: Path, epoch: int, rnd: random.Random, max_delay: float) -> bytes:
    """Fork ``child(path, epoch, wfd, seed)``, wait for its ``ready`` line,
    let it run for a random delay up to ``max_delay`` seconds, SIGKILL it,
    and return everything it wrote to the pipe."""
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
    time.sleep(rnd.random() * max_delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while chunk := os.read(r, 65536):
        buf += chunk
    os.close(r)
    return buf


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


def run_iterations(path: Path, iterations: int, seed: int = 1, max_delay: float = 0.02) -> int:
    """A forked child appends from four writers and reports every acknowledged
    message; it is killed with SIGKILL after a random delay (up to
    ``max_delay`` seconds); the account is reopened with a higher epoch and
    every acknowledged message must be there, with the UIDs seen before."""
    rnd = random.Random(seed)
    acked: dict[str, set[bytes]] = {"INBOX": set(), "Other": set()}
    known: dict[str, dict[int, bytes]] = {"INBOX": {}, "Other": {}}  # uid -> tag, verified
    epoch = 0
    for _ in range(iterations):
        epoch += 1
        buf = fork_and_kill(child, path, epoch, rnd, max_delay)
        for line in buf.split(b"\n"):
            parts = line.split(b" ")
            if len(parts) == 2:
                acked[parts[0].decode()].add(parts[1])
        epoch += 1
        asyncio.run(verify_known(path, epoch, known))
        for mbox, tags in acked.items():
            missing = tags - set(known[mbox].values())
            assert not missing, f"acknowledged but lost in {mbox}: {sorted(missing)[:5]}"
    return sum(len(t) for t in acked.values())


async def verify_known(path: Path, epoch: int, known: dict[str, dict[int, bytes]]) -> None:
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
