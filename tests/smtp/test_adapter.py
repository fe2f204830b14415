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


def test_shutdown_says_421_to_smtp_and_err_to_pop3_sessions(tmp_path: Path) -> None:
    """RFC 5321 3.8: on shutdown an open session gets 421 rather than a cut
    connection; a session waiting for a command gets it at once, one in the
    middle of a message after the message (within the grace period)."""
    base = tmp_path / "base"
    prepare(base, {ALICE: "pw"})
    host = "127.0.18.2"
    cfg = config_mod.load(base, overrides={"listen": host, "port_offset": 20000})

    async def run() -> tuple[bytes, bytes, list[bytes], bytes, bytes]:
        loop = asyncio.get_running_loop()
        hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        ctx = await loop.run_in_executor(None, lambda: build_context(cfg, password_hasher=hasher))
        for spec in collect_listeners(ctx):
            if spec.name in ("smtp", "pop3", "imap"):
                await ctx.listeners.start(spec)
        smtp, pop3 = ctx.listeners.port_of("smtp"), ctx.listeners.port_of("pop3")
        assert smtp is not None and pop3 is not None
        closing: asyncio.Task[None] | None = None
        try:
            idle_r, idle_w = await asyncio.open_connection(host, smtp)
            await _reply(idle_r)
            idle_w.write(b"EHLO t.example\r\n")
            await _reply(idle_r)
            busy_r, busy_w = await asyncio.open_connection(host, smtp)
            await _reply(busy_r)
            busy_w.write(b"EHLO t.example\r\nMAIL FROM:<s@outside.example>\r\nRCPT TO:<" + ALICE.encode() + b">\r\nDATA\r\n")
            for _ in range(4):
                await _reply(busy_r)
            busy_w.write(b"Subject: x\r\n\r\nfirst half\r\n")
            await busy_w.drain()
            pop_r, pop_w = await asyncio.open_connection(host, pop3)
            await pop_r.readline()
            imap_r, imap_w = await asyncio.open_connection(host, ctx.listeners.port_of("imap") or 0)
            await imap_r.readline()
            # nothing here waits for the grace period (without the goodbye the
            # idle sessions would be cut when it ends)
            closing = loop.create_task(ctx.listeners.close(grace=20.0))
            idle = await _reply(idle_r)
            idle_end = await idle_r.read()
            pop = await pop_r.readline()
            imap = await imap_r.readline()
            busy_w.write(b"second half\r\n.\r\n")
            busy = [await _reply(busy_r), await _reply(busy_r)]
            await closing
            for w in (idle_w, busy_w, pop_w, imap_w):
                w.close()
            return idle, idle_end, busy, pop, imap
        finally:
            if closing is None or not closing.done():
                await ctx.listeners.close(grace=1.0)
            for closer in ctx.extras.get("closers", []):
                await closer()
            await ctx.accounts.close()

    idle, idle_end, busy, pop, imap = asyncio.run(run())
    assert idle.startswith(b"421 4.3.2 ") and b"shutting down" in idle
    assert idle_end == b""  # then the connection is closed
    assert busy[0].startswith(b"250 2.0.0")  # the message in flight was accepted ...
    assert busy[1].startswith(b"421 4.3.2 ")  # ... then the session was ended
    assert pop.startswith(b"-ERR ") and b"shutting down" in pop
    assert imap.startswith(b"* BYE ")
