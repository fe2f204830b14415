"""The standalone locator forgets an account handle that another writer
fenced off, so the next use re-opens the account with a fresh epoch."""

from __future__ import annotations

import asyncio
from pathlib import Path

from argon2 import PasswordHasher

from dynamail.cluster.locator import Local, StandaloneLocator
from dynamail.delivery import Delivery
from dynamail.directory import Directory
from dynamail.metrics import Metrics
from dynamail.storage import FileMailStore

MSG = b"From: a@b.example\r\nSubject: t\r\n\r\nhello\r\n"


def test_fenced_handle_is_dropped_and_reopened_with_a_newer_epoch(tmp_path: Path) -> None:
    d = Directory(tmp_path, main_domain="main.example",
                  password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    d.create_domain("example.org")
    d.create_account("example.org", "alice")
    alice = d.find_account("alice@example.org")
    assert alice is not None
    spool = tmp_path / "msg.eml"
    spool.write_bytes(MSG)
    first = StandaloneLocator(FileMailStore(), d.account_mail_path)
    second = StandaloneLocator(FileMailStore(), d.account_mail_path)  # another writer, same path

    async def epoch(loc: StandaloneLocator) -> int:
        async with loc.use(alice) as p:
            assert isinstance(p, Local)
            return p.epoch

    async def run() -> None:
        one, two = Delivery(d, first, Metrics()), Delivery(d, second, Metrics())
        try:
            assert (await one.deliver([alice], spool))[0].ok
            e1 = await epoch(first)
            assert (await two.deliver([alice], spool))[0].ok
            e2 = await epoch(second)
            assert e2 > e1
            # the first handle is fenced: this delivery fails temporarily ...
            r = (await one.deliver([alice], spool))[0]
            assert not r.ok and r.temporary
            assert alice not in first.open_accounts()
            # ... and the next one re-opens the account with a newer epoch
            assert (await one.deliver([alice], spool))[0].ok
            assert await epoch(first) > e2
            async with first.use(alice) as p:
                assert isinstance(p, Local)
                assert (await p.store.status("INBOX")).messages == 3
        finally:
            await first.close()
            await second.close()

    asyncio.run(run())
