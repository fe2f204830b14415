"""The cluster locator's guard on real storage: no write once the lease is gone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dynamail.cluster.ownership import GuardedStore
from dynamail.storage.api import AppendRequest, FencedError

storage = pytest.importorskip("dynamail.storage")


def test_guarded_store_refuses_writes_without_lease_and_storage_fences_old_epoch(tmp_path: Path) -> None:
    async def run() -> None:
        ms = storage.FileMailStore()
        lease = {"ok": True}
        raw = await ms.open_account(tmp_path / "acct", 5)
        store = GuardedStore(raw, lambda: lease["ok"])
        uids = await store.append("INBOX", [AppendRequest(b"Subject: a\r\n\r\nx\r\n")])
        assert uids
        view = await store.select("INBOX")
        lease["ok"] = False
        with pytest.raises(FencedError):
            await store.append("INBOX", [AppendRequest(b"Subject: b\r\n\r\nx\r\n")])
        with pytest.raises(FencedError):
            await view.store(view.uids(), "add", frozenset({"\\Seen"}))
        assert (await store.status("INBOX")).messages == 1  # reads still work
        # a new owner with a higher epoch: the old handle is fenced by storage itself
        lease["ok"] = True
        newer = await ms.open_account(tmp_path / "acct", 6)
        with pytest.raises(FencedError):
            await store.append("INBOX", [AppendRequest(b"Subject: c\r\n\r\nx\r\n")])
        await newer.append("INBOX", [AppendRequest(b"Subject: d\r\n\r\nx\r\n")])
        view.close()
        await newer.close()
        await raw.close()
        assert storage.epochs_monotonic(tmp_path / "acct")

    asyncio.run(run())
