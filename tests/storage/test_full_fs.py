"""Opening an account on a file system that refuses writes (a real full
ext4 image, as root): a temporary failure, never a raw ``OSError`` that a
protocol would answer as a server bug."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from dynamail.accounts import AccountRef
from dynamail.chaos import smallfs
from dynamail.cluster.locator import AccountUnavailable, StandaloneLocator
from dynamail.storage import AppendRequest, FileMailStore, StorageIOError


@pytest.fixture
def full(tmp_path: Path):  # type: ignore[no-untyped-def]
    why = smallfs.unavailable()
    if why:
        pytest.skip(why)
    try:
        fs = smallfs.SmallFs(tmp_path, smallfs.MIN_SIZE)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot loop-mount an image here: {exc.stderr!r}")
    try:
        yield fs
    finally:
        fs.unmount()


def test_an_account_that_cannot_be_claimed_is_temporarily_unavailable(full: smallfs.SmallFs) -> None:
    ref = AccountRef("main.test", "ann", False)
    path = full.shared / "ann"

    async def scenario() -> None:
        full.fill()
        with pytest.raises(StorageIOError, match="No space left"):
            await FileMailStore().open_account(path, 1)
        locator = StandaloneLocator(FileMailStore(), lambda r: full.shared / r.name)
        with pytest.raises(AccountUnavailable, match="No space left"):
            async with locator.use(ref):
                pass
        full.empty()  # room again: the same open succeeds and the store works
        async with locator.use(ref) as placement:
            store = placement.store  # type: ignore[union-attr]
            assert await store.append("INBOX", [AppendRequest(b"Subject: hi\r\n\r\nbody\r\n")]) == [1]
        await locator.close()

    asyncio.run(scenario())
