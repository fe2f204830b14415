"""Fencing by ownership epochs: a writer holding an old epoch cannot change
an account after a newer owner opened it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dynamail.storage import (
    AppendRequest,
    FencedError,
    FileMailStore,
    epochs_monotonic,
    writer_epochs,
)
from dynamail.storage import records as R
from dynamail.storage.mailbox import generations

MSG = b"Subject: x\r\n\r\nx\r\n"


def test_old_owner_cannot_write_after_takeover(account_dir: Path) -> None:
    async def main() -> None:
        ms = FileMailStore()
        old = await ms.open_account(account_dir, 1)
        await old.create_mailbox("Work")
        assert await old.append("INBOX", [AppendRequest(MSG)]) == [1]
        old_view = await old.select("INBOX")

        new = await ms.open_account(account_dir, 2)
        assert ms.recorded_epoch(account_dir) == 2
        with pytest.raises(FencedError):
            await ms.open_account(account_dir, 1)

        with pytest.raises(FencedError):
            await old.append("INBOX", [AppendRequest(MSG)])
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
        await old.close()

        assert await new.append("INBOX", [AppendRequest(MSG)]) == [2]
        v = await new.select("INBOX")
        assert list(v.uids()) == [1, 2] and v.info(1).flags == frozenset()
        assert {m.name for m in await new.list_mailboxes()} == {"INBOX", "Work"}
        await new.close()

    asyncio.run(main())
    epochs = writer_epochs(account_dir)
    assert epochs["INBOX"] == [1, 2]
    assert epochs_monotonic(account_dir)


def test_stale_record_after_takeover_is_ignored_and_detected(account_dir: Path) -> None:
    """A record an old owner slipped in after the new owner's marker (the
    check-then-write race) is not applied, and shows in writer_epochs."""

    async def main() -> None:
        ms = FileMailStore()
        s1 = await ms.open_account(account_dir, 1)
        await s1.append("INBOX", [AppendRequest(MSG)])
        await s1.close()
        s2 = await ms.open_account(account_dir, 2)
        await s2.append("INBOX", [AppendRequest(MSG)])
        # the paused epoch-1 writer wakes and appends behind the fence
        doc = json.loads((account_dir / "mailboxes.json").read_text())
        d = account_dir / "mail" / str(doc["mailboxes"]["INBOX"]["id"])
        stale = R.frame(R.MESSAGE, 1, R.MESSAGE_FIXED.pack(3, 9, 0, 0, 0, 0, len(MSG), 0), MSG) + R.frame(R.COMMIT, 1)
        with open(d / f"data.{generations(d)[-1]}", "ab") as f:
            f.write(stale)
        assert writer_epochs(account_dir)["INBOX"] == [1, 2, 1]
        assert not epochs_monotonic(account_dir)
        await s2.close(checkpoint=False)
        s3 = await ms.open_account(account_dir, 3)
        v = await s3.select("INBOX")
        assert list(v.uids()) == [1, 2]  # the stale message was never acknowledged
        assert await s3.append("INBOX", [AppendRequest(MSG)]) == [3]
        await s3.close()

    asyncio.run(main())
    assert writer_epochs(account_dir)["INBOX"] == [1, 2, 1, 3]


def test_fenced_owner_does_not_cut_a_newer_owners_write(account_dir: Path) -> None:
    """What looks like a torn tail to a fenced owner may be the new owner's
    write in progress: the fenced owner must not cut it."""

    async def main() -> None:
        ms = FileMailStore()
        s1 = await ms.open_account(account_dir, 1)
        await s1.create_mailbox("Other")
        s2 = await ms.open_account(account_dir, 2)
        doc = json.loads((account_dir / "mailboxes.json").read_text())
        d = account_dir / "mail" / str(doc["mailboxes"]["Other"]["id"])
        data = d / f"data.{generations(d)[-1]}"
        partial = R.frame(R.MESSAGE, 2, R.MESSAGE_FIXED.pack(1, 1, 0, 0, 0, 0, len(MSG), 0), MSG)[:30]
        with open(data, "ab") as f:
            f.write(partial)
        size = data.stat().st_size
        with pytest.raises(FencedError):
            await s1.select("Other")
        assert data.stat().st_size == size
        await s1.close()
        await s2.close()

    asyncio.run(main())
