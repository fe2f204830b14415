from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from tests.imap.memory import Client, MemoryConnection

from dynamail.auth import Authenticator
from dynamail.cluster.locator import StandaloneLocator
from dynamail.directory import Directory
from dynamail.imap.adapter import serve
from dynamail.metrics import Metrics
from dynamail.net import Listeners
from dynamail.server.config import ServerConfig
from dynamail.server.context import ServerContext
from dynamail.storage import FileMailStore

DOMAIN = "example.test"
PASSWORD = "secret-pw"


def make_context(base: Path, *, users: tuple[str, ...] = ("alice", "bob")) -> ServerContext:
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # fast tests
    directory = Directory(base, main_domain=DOMAIN, password_hasher=cheap)
    for u in users:
        directory.create_account(DOMAIN, u, password=PASSWORD)
    metrics = Metrics()
    auth = Authenticator(directory, metrics=metrics)
    locator = StandaloneLocator(FileMailStore(), directory.account_mail_path)
    config = ServerConfig(base=base)
    return ServerContext(
        config=config, hostname=DOMAIN, directory=directory, auth=auth, admin=None,  # type: ignore[arg-type]
        accounts=locator, delivery=None, metrics=metrics,  # type: ignore[arg-type]
        listeners=Listeners("127.0.4.1", 0, None),
    )


class Harness:
    """Sessions over in-memory connections against one real server context."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.tasks: list[asyncio.Task[None]] = []

    async def connect(self, **kw: Any) -> Client:
        conn = MemoryConnection(**kw)

        async def run() -> None:
            try:
                await serve(self.ctx, conn)  # type: ignore[arg-type]
            finally:
                await conn.close()

        self.tasks.append(asyncio.ensure_future(run()))
        client = Client(conn)
        greeting = await client.line()
        assert greeting.startswith("* OK "), greeting
        return client

    async def login(self, user: str = "alice", **kw: Any) -> Client:
        c = await self.connect(**kw)
        await c.ok(f"LOGIN {user} {PASSWORD}")
        return c

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(BaseException):
                await t
        await self.ctx.accounts.close()


@pytest.fixture
def imap(tmp_path: Path) -> Callable[[Callable[[Harness], Coroutine[Any, Any, None]]], None]:
    """``imap(async_fn)`` runs ``async_fn(harness)`` in a fresh event loop."""
    ctx = make_context(tmp_path)

    def run(fn: Callable[[Harness], Coroutine[Any, Any, None]]) -> None:
        async def main() -> None:
            h = Harness(ctx)
            try:
                await fn(h)
            finally:
                await h.close()

        asyncio.run(main())

    return run


@contextlib.asynccontextmanager
async def harness(base: Path) -> AsyncIterator[Harness]:
    h = Harness(make_context(base))
    try:
        yield h
    finally:
        await h.close()
