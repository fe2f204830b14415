"""Directory and login figures: account listing in a domain of N accounts,
account lookup, and a login with and without the verified-credentials cache.

Run by hand: ``.venv/bin/python bench/directory.py [--accounts 100000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from dynamail.auth import Authenticator
from dynamail.directory import Directory, shard_of


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--dir", default=None, help="where to build the directory (default: a temporary one)")
    opts = ap.parse_args()
    base = Path(tempfile.mkdtemp(dir=opts.dir))
    try:
        d = Directory(base, main_domain="main.example")
        d.create_domain("big.example")
        accounts = d.account_dir(d.ref("big.example", "x")).parent.parent
        t = time.perf_counter()
        for i in range(opts.accounts):  # bulk import: directories only
            name = f"user{i:07d}"
            shard = accounts / shard_of(name)
            shard.mkdir(exist_ok=True)
            os.mkdir(shard / name)
        print(f"bulk-created {opts.accounts} accounts in {time.perf_counter() - t:.1f} s")
        d.invalidate()
        t = time.perf_counter()
        count = d.count_accounts("big.example")
        print(f"first listing ({count} accounts, {d.scans} shard reads): {(time.perf_counter() - t) * 1e3:.0f} ms")
        n = 200
        t = time.perf_counter()
        for i in range(n):
            d.list_accounts("big.example", prefix="user00", offset=i * 10, limit=50)
        print(f"cached page of 50 with prefix and offset: {(time.perf_counter() - t) / n * 1e3:.2f} ms")
        t = time.perf_counter()
        for i in range(1000):
            d.find_account(f"user{i * 7 % max(1, opts.accounts):07d}@big.example")
        print(f"find_account: {(time.perf_counter() - t) / 1000 * 1e6:.0f} us")
        d.create_account("main.example", "u", password="secret")
        auth = Authenticator(d)

        async def logins() -> None:
            t = time.perf_counter()
            await auth.authenticate("u", "secret", protocol="imap", remote="192.0.2.1")
            first = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(n):
                await auth.authenticate("u", "secret", protocol="imap", remote="192.0.2.1")
            cached = (time.perf_counter() - t) / n
            print(f"login with argon2 verification: {first * 1e3:.1f} ms; cached: {cached * 1e3:.2f} ms "
                  f"({auth.verifications} verification)")

        asyncio.run(logins())
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
