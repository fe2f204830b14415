"""Account listing of a domain with 100,000 accounts: sharded directories and
an in-memory sorted list revalidated by shard identity, so repeated listings
(with prefix, offset, limit) read no directory again."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamail.directory import Directory, shard_of

from .conftest import FAST_HASHER


@pytest.fixture
def big(tmp_path: Path) -> Iterator[Directory]:
    """A Directory on tmpfs when there is one: this test is about how many
    directories are read, and 100,000 mkdirs on a busy disk only add time."""
    root = Path(tempfile.mkdtemp(dir="/dev/shm")) if os.access("/dev/shm", os.W_OK) else tmp_path
    try:
        yield Directory(root / "base", main_domain="main.example", password_hasher=FAST_HASHER)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _bulk_create(directory: Directory, domain: str, names: list[str]) -> None:
    """Accounts made the cheap way (directories only, as a bulk import would)."""
    ref0 = directory.ref(domain, "x")
    accounts_dir = directory.account_dir(ref0).parent.parent
    made: set[str] = set()
    for name in names:
        shard = shard_of(name)
        if shard not in made:
            os.makedirs(accounts_dir / shard, exist_ok=True)
            made.add(shard)
        os.mkdir(accounts_dir / shard / name)


def test_hundred_thousand_accounts(big: Directory) -> None:
    directory = big
    directory.create_domain("big.example")
    names = [f"user{i:06d}" for i in range(100_000)]
    _bulk_create(directory, "big.example", names)
    assert directory.count_accounts("big.example") == 100_000
    shards = directory.scans
    assert shards <= 256  # one scan per shard directory, not per account
    # Repeated listings are served from memory.
    assert directory.list_accounts("big.example", limit=3) == ["user000000", "user000001", "user000002"]
    assert directory.list_accounts("big.example", offset=99_998) == ["user099998", "user099999"]
    assert directory.list_accounts("big.example", prefix="user05", offset=10, limit=2) == [
        "user050010",
        "user050011",
    ]
    assert len(directory.list_accounts("big.example", prefix="user0999")) == 100
    assert directory.list_accounts("big.example", prefix="nobody") == []
    assert directory.list_accounts("big.example", offset=200_000) == []
    assert directory.scans == shards
    # Creating one account rescans exactly its shard.
    ref = directory.create_account("big.example", "aaa")
    assert directory.list_accounts("big.example", limit=1) == ["aaa"]
    assert directory.scans == shards + 1
    assert directory.find_account("user077777@big.example") is not None
    directory.delete_account(ref)
    assert directory.count_accounts("big.example") == 100_000
    assert directory.scans == shards + 2
    # The largest shard holds a small fraction of the accounts.
    sizes = [len(os.listdir(p)) for p in directory.account_dir(ref).parent.parent.iterdir()]
    assert len(sizes) == 256 and max(sizes) < 600
