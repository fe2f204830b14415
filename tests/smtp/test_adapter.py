"""The SMTP adapter in process, on a real ServerContext: the 451 path."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from dynamail.server import config as config_mod
from dynamail.server.app import build_context, collect_listeners
from dynamail.storage import FileMailStore

from .live import in_process, next_host, prepare

ALICE = "alice@example.org"


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if line[3:4] != b"-":
            return line


async def _send(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    await _reply(reader)
    writer.write(b"EHLO t.example\r\nMAIL FROM:<s@outside.example>\r\nRCPT TO:<" + ALICE.encode() + b">\r\nDATA\r\n")
    for _ in range(4):
        await _reply(reader)
    writer.write(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    final = await _reply(reader)
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()
    return final


def test_451_when_a_local_copy_cannot_be_stored(tmp_path: Path) -> None:
    base = tmp_path / "base"
    prepare(base, {ALICE: "pw"})
    host = next_host()
    cfg = config_mod.load(base, overrides={"listen": host, "port_offset": 20000})

    async def run() -> tuple[bytes, bytes, bytes]:
        loop = asyncio.get_running_loop()
        hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        ctx = await loop.run_in_executor(None, lambda: build_context(cfg, password_hasher=hasher))
        spec = next(s for s in collect_listeners(ctx) if s.name == "smtp")
        await ctx.listeners.start(spec)
        port = ctx.listeners.port_of("smtp")
        assert port is not None
        try:
            first = await _send(host, port)
            # another owner takes the account over (a higher epoch): our store is fenced
            alice = ctx.directory.find_account(ALICE)
            other = await FileMailStore().open_account(ctx.directory.account_mail_path(alice), 10**6)
            await other.close()
            second = await _send(host, port)
            await ctx.accounts.close()  # released: the next delivery reopens with a newer epoch
            third = await _send(host, port)
            return first, second, third
        finally:
            await ctx.listeners.close(grace=1.0)
            for closer in ctx.extras.get("closers", []):
                await closer()
            await ctx.accounts.close()

    first, second, third = asyncio.run(run())
    assert first.startswith(b"250 2.0.0")
    assert second.startswith(b"451 4.2.1")  # the client keeps the message and retries
    assert third.startswith(b"250 2.0.0")


async def _ehlo(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    await _reply(reader)
    writer.write(b"EHLO t.example\r\n")
    await writer.drain()
    lines = b""
    while True:
        line = await reader.readline()
        lines += line
        if line[3:4] != b"-":
            break
    writer.write(b"AUTH PLAIN " + base64.b64encode(b"\0" + ALICE.encode() + b"\0pw") + b"\r\n")
    await writer.drain()
    lines += await _reply(reader)
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()
    return lines


@pytest.mark.parametrize("allowed", [False, True])
def test_plaintext_auth_on_submission_follows_the_setting(tmp_path: Path, allowed: bool) -> None:
    base = tmp_path / "base"
    prepare(base, {ALICE: "pw"}, "[smtp]\nallow_plaintext_auth = true\n" if allowed else "")
    host = next_host()

    async def run() -> tuple[bytes, bytes]:
        async with in_process(base, host, ("smtp", "submission")) as (_, ports):
            return await _ehlo(host, ports["submission"]), await _ehlo(host, ports["smtp"])

    submission, inbound = asyncio.run(run())
    assert b"STARTTLS" in submission
    if allowed:
        assert b"250-AUTH PLAIN LOGIN" in submission or b"250 AUTH PLAIN LOGIN" in submission
        assert submission.endswith(b"235 2.7.0 Authentication successful\r\n")
    else:
        assert b"AUTH PLAIN" not in submission
        assert submission.endswith(b"\r\n538 5.7.11 Encryption required for requested authentication mechanism\r\n")
    assert b"AUTH PLAIN" not in inbound  # never on port 25
