"""Fencing with real processes: an old owner, a separate process, is stopped
by SIGSTOP at a fault point (``DYNAMAIL_FAULTS_DIR``: just before its write
or rename reaches the file system), a new owner takes over and acknowledges
messages, the old owner is resumed with SIGCONT — and its change is refused
and invisible, while everything the new owner acknowledged is there."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dynamail.storage import AppendRequest, FileMailStore

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from dynamail.storage import AppendRequest, FencedError, FileMailStore

    async def main() -> None:
        store = await FileMailStore().open_account(Path(sys.argv[1]), 2)
        print("ready", flush=True)
        sys.stdin.readline()
        try:
            uids = await store.append("INBOX", [AppendRequest(b"Subject: stale\\r\\n\\r\\nold owner\\r\\n")])
            print("ok", uids, flush=True)
        except FencedError as exc:
            print("fenced", exc, flush=True)
        await store.close()

    asyncio.run(main())
    """
)


def stopped(pid: int) -> bool:
    """Every thread of the process is stopped."""
    states = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            states.append(f.read().rsplit(")", 1)[1].split()[0])
    return all(s == "T" for s in states)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("point", ["create", "rename", "write"])
def test_old_owner_stopped_at_a_write_is_fenced(tmp_path: Path, point: str) -> None:
    acct = tmp_path / "acct"
    faults_dir = tmp_path / "faults"
    faults_dir.mkdir()

    async def prepare() -> None:
        s = await FileMailStore().open_account(acct, 1)
        await s.append("INBOX", [AppendRequest(b"Subject: first\r\n\r\nx\r\n")])
        await s.close()

    asyncio.run(prepare())
    env = dict(os.environ, DYNAMAIL_FAULTS_DIR=str(faults_dir))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(acct)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        (faults_dir / "arm").write_text(point)
        child.stdin.write("go\n")
        child.stdin.flush()
        deadline = time.monotonic() + 20
        while not stopped(child.pid):
            assert time.monotonic() < deadline, "the old owner never reached the fault point"
            time.sleep(0.01)
        assert not (faults_dir / "arm").exists()

        async def take_over() -> list[int]:
            s = await FileMailStore().open_account(acct, 3)
            got = await s.append("INBOX", [AppendRequest(b"Subject: new %d\r\n\r\nx\r\n" % i) for i in range(3)])
            await s.close()
            return got

        acked = asyncio.run(take_over())
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate(timeout=30)
        assert out.startswith("fenced"), out
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()

    async def verify() -> list[bytes]:
        s = await FileMailStore().open_account(acct, 4)
        v = await s.select("INBOX")
        subjects = [(await v.read(u)).split(b"\r\n")[0] for u in v.uids()]
        assert list(v.uids())[-3:] == acked
        await s.close()
        return subjects

    assert asyncio.run(verify()) == [b"Subject: first", b"Subject: new 0", b"Subject: new 1", b"Subject: new 2"]
