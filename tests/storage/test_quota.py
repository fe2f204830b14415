"""Quota usage is exact over every mailbox of the account, read from the
checkpoint headers of mailboxes that are not loaded, and stays exact after a
crash (an account closed without checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamail.storage import AppendRequest, FileAccountStore, QuotaExceeded

from .harness import with_account


def msg(i: int, pad: int = 0) -> bytes:
    return b"Subject: m%d\r\n\r\n" % i + b"x" * pad + b"\r\n"


NAMES = ("INBOX", "Sent", "Archive", "Lists/a", "Lists/b")


async def populate(store: FileAccountStore) -> tuple[int, int]:
    total = count = 0
    for k, name in enumerate(NAMES):
        if name != "INBOX":
            await store.create_mailbox(name)
        reqs = [AppendRequest(msg(i, pad=k * 100 + i)) for i in range(k + 2)]
        await store.append(name, reqs)
        total += sum(len(r.data) for r in reqs)  # type: ignore[arg-type]
        count += len(reqs)
    v = await store.select("Archive")
    await v.store([1], "add", frozenset({"\\Deleted"}))
    gone = await v.expunge()
    assert gone == [1]
    total -= len(msg(0, pad=200))
    count -= 1
    v.close()
    return total, count


def test_usage_exact_without_loading_mailboxes(tmp_path: Path) -> None:
    acct = tmp_path / "a"
    expected = with_account(acct, populate)

    async def check(store: FileAccountStore) -> None:
        assert await store.quota_usage() == expected
        assert store._states == {}  # only checkpoint headers were read
        # a mailbox loaded afterwards counts from its index, not twice
        await store.append("Sent", [AppendRequest(msg(99))])
        assert await store.quota_usage() == (expected[0] + len(msg(99)), expected[1] + 1)
        await store.delete_mailbox("Lists/a")
        _b, m = await store.quota_usage()
        assert m == expected[1] + 1 - 5

    with_account(acct, check, epoch=2)


def test_usage_exact_after_crash(tmp_path: Path) -> None:
    acct = tmp_path / "a"
    base = with_account(acct, populate)

    async def crash(store: FileAccountStore) -> tuple[int, int]:
        # changes after the last checkpoints, then a crash (no checkpoints)
        await store.append("Lists/b", [AppendRequest(msg(7, pad=1000))])
        v = await store.select("INBOX")
        await v.store([1], "add", frozenset({"\\Deleted"}))
        await v.expunge()
        v.close()
        got = await store.quota_usage()
        await store.close(checkpoint=False)
        return got

    after = with_account(acct, crash, epoch=2)
    assert after == (base[0] + len(msg(7, pad=1000)) - len(msg(0)), base[1])

    async def reopen(store: FileAccountStore) -> tuple[int, int]:
        return await store.quota_usage()

    assert with_account(acct, reopen, epoch=3) == after
    # and once more, now that the close wrote checkpoints again
    assert with_account(acct, reopen, epoch=4) == after


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_usage_with_damaged_checkpoint(tmp_path: Path, damage: str) -> None:
    acct = tmp_path / "a"
    expected = with_account(acct, populate)
    from .layout import index_file

    index = index_file(acct, "Sent")
    if damage == "garbage":
        index.write_bytes(b"\x00" * 200)
    elif damage == "truncated":
        index.write_bytes(index.read_bytes()[:10])
    else:
        index.unlink()
    assert with_account(acct, lambda s: s.quota_usage(), epoch=2) == expected


def test_quota_enforced_over_unloaded_mailboxes(tmp_path: Path) -> None:
    acct = tmp_path / "a"
    _b, count = with_account(acct, populate)

    async def body(store: FileAccountStore) -> None:
        store.set_quota(None, count + 1)
        await store.append("INBOX", [AppendRequest(msg(1))])
        with pytest.raises(QuotaExceeded):
            await store.append("INBOX", [AppendRequest(msg(2))])
        v = await store.select("Sent")
        with pytest.raises(QuotaExceeded):
            await v.copy([1], "INBOX")
        v.close()

    with_account(acct, body, epoch=2)
