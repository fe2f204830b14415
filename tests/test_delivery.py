"""Local delivery through the locator into the real storage engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from dynamail.accounts import AccountRef
from dynamail.cluster.locator import AccountUnavailable, Placement, Relay, StandaloneLocator
from dynamail.delivery import Delivery, DeliveryResult, parse_size
from dynamail.directory import Directory
from dynamail.metrics import Metrics
from dynamail.storage import FileMailStore

MSG = b"From: a@b.example\r\nSubject: t\r\n\r\nhello\r\n"


def setup(tmp_path: Path) -> tuple[Directory, StandaloneLocator, Delivery]:
    d = Directory(tmp_path, main_domain="main.example", password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    d.create_domain("example.org")
    for name in ("alice", "bob"):
        d.create_account("example.org", name)
    d.create_account("example.org", "small", settings={"MaxAccountSize": "1K"})
    d.create_account("example.org", "medium", settings={"MaxAccountSize": "3K"})
    locator = StandaloneLocator(FileMailStore(), d.account_mail_path)
    return d, locator, Delivery(d, locator, Metrics())


async def inbox_count(locator: StandaloneLocator, ref: AccountRef) -> int:
    async with locator.use(ref) as placement:
        return (await placement.store.status("INBOX")).messages  # type: ignore[union-attr]


def test_parse_size() -> None:
    assert parse_size("100M") == 100 * 1024**2
    assert parse_size("2K") == 2048
    assert parse_size("1024") == 1024
    assert parse_size("unlimited") is None
    assert parse_size(None) is None
    assert parse_size("junk") is None


def test_deliver_to_several_accounts_from_file(tmp_path: Path) -> None:
    d, locator, delivery = setup(tmp_path)
    alice, bob = d.find_account("alice@example.org"), d.find_account("bob@example.org")
    assert alice and bob
    spool = tmp_path / "msg.eml"
    spool.write_bytes(MSG)

    async def run() -> list[DeliveryResult]:
        try:
            res = await delivery.deliver([alice, bob, alice], spool)
            assert await inbox_count(locator, alice) == 1
            assert await inbox_count(locator, bob) == 1
            return res
        finally:
            await locator.close()

    results = asyncio.run(run())
    assert [r.ok for r in results] == [True, True, True]
    assert results[0] is results[2]  # one copy per distinct account
    assert all(r.uid is not None for r in results)


def test_quota_permanent_and_temporary(tmp_path: Path) -> None:
    d, locator, delivery = setup(tmp_path)
    small, medium = d.find_account("small@example.org"), d.find_account("medium@example.org")
    assert small and medium
    big = MSG + b"x" * 2000 + b"\r\n"

    async def run() -> tuple[list[DeliveryResult], list[DeliveryResult], list[DeliveryResult]]:
        try:
            first = await delivery.deliver([small, medium], big)
            second = await delivery.deliver([medium], big)
            third = await delivery.deliver([medium], MSG)
            return first, second, third
        finally:
            await locator.close()

    first, second, third = asyncio.run(run())
    assert (first[0].code, first[0].status, first[0].permanent) == (552, "5.2.2", True)
    assert first[1].ok
    assert (second[0].code, second[0].status, second[0].temporary) == (452, "4.2.2", True)
    assert third[0].ok


class _ElsewhereLocator(StandaloneLocator):
    """The standalone locator, except that some accounts live on member "m2"
    and one cannot be opened at all."""

    def __init__(self, *a: object, remote: set[AccountRef], broken: set[AccountRef], **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.remote, self.broken = remote, broken

    @contextlib.asynccontextmanager
    async def use(self, ref: AccountRef, *, relay_ok: bool = True) -> AsyncIterator[Placement]:
        if ref in self.broken:
            raise AccountUnavailable("owner lease not expired")
        if ref in self.remote:
            yield Relay(ref, "m2", "127.0.0.2")
            return
        async with super().use(ref, relay_ok=relay_ok) as p:
            yield p


def test_relay_hook_and_unavailable(tmp_path: Path) -> None:
    d, _, _ = setup(tmp_path)
    alice, bob, small = (d.find_account(f"{n}@example.org") for n in ("alice", "bob", "small"))
    assert alice and bob and small
    locator = _ElsewhereLocator(FileMailStore(), d.account_mail_path, remote={bob}, broken={small})
    delivery = Delivery(d, locator)
    handed: list[tuple[str, bytes, str | None]] = []

    async def run() -> tuple[list[DeliveryResult], list[DeliveryResult]]:
        try:
            before = await delivery.deliver([alice, bob, small], MSG)

            async def remote(placement: Relay, message: Path | bytes, mailbox: str,
                             sender: str | None, delivery_id: str | None = None) -> DeliveryResult:
                assert isinstance(message, bytes)
                handed.append((placement.member, message, sender))
                return DeliveryResult(placement.ref, True)

            delivery.remote = remote
            after = await delivery.deliver([bob], MSG, sender="x@example.net")
            return before, after
        finally:
            await locator.close()

    before, after = asyncio.run(run())
    assert before[0].ok
    assert before[1].temporary and before[1].status == "4.4.1"
    assert before[2].temporary and before[2].status == "4.2.1"
    assert after[0].ok and handed == [("m2", MSG, "x@example.net")]  # the owner learns the sender


def test_fenced_store_is_a_temporary_failure(tmp_path: Path) -> None:
    d, locator, delivery = setup(tmp_path)
    alice = d.find_account("alice@example.org")
    assert alice

    async def run() -> tuple[list[DeliveryResult], list[DeliveryResult]]:
        try:
            first = await delivery.deliver([alice], MSG)
            # another owner takes the account over with a higher epoch
            other = await FileMailStore().open_account(d.account_mail_path(alice), 99)
            await other.close()
            second = await delivery.deliver([alice], MSG)
            return first, second
        finally:
            await locator.close()

    first, second = asyncio.run(run())
    assert first[0].ok
    assert second[0].temporary and second[0].code == 451


@pytest.mark.parametrize("mailbox", ["Missing", "INBOX"])
def test_deliver_into_mailbox_falls_back_to_inbox(tmp_path: Path, mailbox: str) -> None:
    d, locator, delivery = setup(tmp_path)
    alice = d.find_account("alice@example.org")
    assert alice

    async def run() -> list[DeliveryResult]:
        try:
            res = await delivery.deliver([alice], MSG, mailbox=mailbox, flags=frozenset({"\\Seen"}))
            assert await inbox_count(locator, alice) == 1
            return res
        finally:
            await locator.close()

    assert asyncio.run(run())[0].ok
