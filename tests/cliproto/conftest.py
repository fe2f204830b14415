"""Transcript tests of the admin CLI: a real core, executor and Admin on a
temporary base directory, with no socket (an in-memory transport)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dynamail.cliproto.adapter import CliExecutor, make_token
from dynamail.cliproto.core import CliCore, State
from dynamail.server import config as config_mod
from dynamail.server.app import build_context
from dynamail.server.context import ServerContext

POSTMASTER_PASSWORD = "pm-secret"


def make_ctx(base: Path) -> ServerContext:
    cfg = config_mod.load(
        base,
        overrides={"main_domain": "main.test", "postmaster_password": POSTMASTER_PASSWORD},
    )
    from argon2 import PasswordHasher

    return build_context(cfg, password_hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ServerContext]:
    yield make_ctx(tmp_path / "base")


class Transcript:
    """One CLI session driven line by line; ``send`` returns the full reply
    text (the data line included in ordinary mode)."""

    def __init__(self, ctx: ServerContext, remote: str = "127.0.0.1") -> None:
        self.ctx = ctx
        self.core = CliCore(ctx.hostname, make_token(ctx.hostname), version="test")
        self.executor = CliExecutor(ctx, self.core, remote)
        self.greeting = self.core.greeting().decode()
        self.closed = False
        self.log: list[tuple[str, str]] = []

    async def send(self, line: str | bytes) -> str:
        raw = line.encode() if isinstance(line, str) else line
        action = self.core.receive(raw + b"\r\n")
        reply = await self.executor.perform(action)
        if reply.close:
            self.closed = True
        text = reply.data.decode("utf-8")
        self.log.append((raw.decode("utf-8", "replace"), text))
        return text

    async def expect(self, line: str | bytes, pattern: str) -> str:
        text = await self.send(line)
        assert re.match(pattern, text, re.S), f"{line!r} -> {text!r}, expected {pattern!r}"
        return text

    async def login(self, user: str = "postmaster", password: str = POSTMASTER_PASSWORD) -> None:
        await self.expect(f"USER {user}", r"300 ")
        await self.expect(f'PASS {password}', r"200 OK\r\n\Z")
        assert self.core.state is State.READY

    def apop_digest(self, password: str) -> str:
        token = self.core.token
        return hashlib.md5((token + password).encode()).hexdigest()

    async def data(self, line: str) -> Any:
        """Send a command and parse its answer data (either mode)."""
        from dynamail.cliproto.datafmt import parse

        text = await self.send(line)
        if text.startswith("201 "):
            return parse(text[4:].rstrip("\r\n"))
        assert text.startswith("200 data follow\r\n"), f"{line!r} -> {text!r}"
        body = text[len("200 data follow\r\n"):]
        assert body.endswith("\r\n") and body.count("\r\n") == 1
        return parse(body[:-2])


def run(ctx: ServerContext, scenario: Callable[[Transcript], Awaitable[None]]) -> None:
    async def main() -> None:
        t = Transcript(ctx)
        try:
            await scenario(t)
        finally:
            if ctx.accounts is not None:
                await ctx.accounts.close()

    asyncio.run(main())


@pytest.fixture
def play(ctx: ServerContext) -> Callable[[Callable[[Transcript], Awaitable[None]]], None]:
    """``play(scenario)`` runs an async scenario on a fresh Transcript."""

    def _play(scenario: Callable[[Transcript], Awaitable[None]]) -> None:
        run(ctx, scenario)

    return _play
