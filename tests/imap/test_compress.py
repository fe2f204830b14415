"""COMPRESS=DEFLATE (RFC 4978) over the in-memory transport: a client that
deflates its commands and inflates the answers, as real clients do."""

from __future__ import annotations

import asyncio
import zlib

import pytest
from tests.imap.conftest import Harness
from tests.imap.memory import Client
from tests.imap.test_commands import MSG1, append, tagged

from dynamail.imap import limits
from dynamail.imap.compress import CompressError, Deflate


class Compressed:
    """The client half of a deflated session."""

    def __init__(self, c: Client) -> None:
        self.c = c
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)
        self.start = len(c.conn.out)
        self.text = b""

    async def cmd(self, tag: str, line: bytes) -> list[bytes]:
        self.c.conn.feed(self.out.compress(tag.encode() + b" " + line + b"\r\n") + self.out.flush(zlib.Z_SYNC_FLUSH))
        marker = tag.encode() + b" "
        for _ in range(500):
            data = bytes(self.c.conn.out[self.start :])
            self.start += len(data)
            self.text += self.inflate.decompress(data)
            lines = self.text.split(b"\r\n")
            done = [i for i, x in enumerate(lines) if x.startswith(marker)]
            if done:
                got = lines[: done[0] + 1]
                self.text = b"\r\n".join(lines[done[0] + 1 :])
                return got
            self.c.conn.out_event.clear()
            await asyncio.wait_for(self.c.conn.out_event.wait(), 10)
        raise AssertionError("no tagged reply")


def test_compress_deflate_session(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        assert "COMPRESS=DEFLATE" in (await c.ok("CAPABILITY"))[0].split()
        big = MSG1 + b"line of text that compresses well\r\n" * 4000
        await append(c, big)
        assert (await c.cmd("COMPRESS BOGUS"))[-1].split(" ", 1)[1].startswith("BAD")
        # the OK is the last plain response (RFC 4978 section 3)
        assert (await c.cmd("COMPRESS DEFLATE"))[-1].endswith(" OK DEFLATE active")
        z = Compressed(c)
        lines = await z.cmd("z1", b"SELECT INBOX")
        assert lines[-1] == b"z1 OK [READ-WRITE] SELECT completed"
        before = len(c.conn.out)
        lines = await z.cmd("z2", b"FETCH 1 BODY.PEEK[]")  # large: sendfile is replaced by deflate
        assert lines[0] == b"* 1 FETCH (BODY[] {%d}" % len(big)
        assert b"\r\n".join(lines[1:-1]).startswith(big.rstrip(b"\r\n")[:2000])
        assert len(c.conn.out) - before < len(big) // 10  # it was compressed
        assert (await z.cmd("z3", b"COMPRESS DEFLATE"))[-1].startswith(b"z3 NO [COMPRESSIONACTIVE]")
        assert (await z.cmd("z4", b"NOOP"))[-1] == b"z4 OK NOOP completed"
    imap(go)


def test_compress_needs_login_and_corrupt_input_ends_the_session(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.connect()
        assert tagged(await c.cmd("COMPRESS DEFLATE")).startswith("BAD")
        c = await h.login()
        await c.ok("COMPRESS DEFLATE")
        start = len(c.conn.out)
        c.conn.feed(b"\xff\xff\xff this is not deflate data\r\n")
        for _ in range(100):
            if c.conn.closed:
                break
            await asyncio.sleep(0.02)
        assert c.conn.closed
        text = zlib.decompressobj(-15).decompress(bytes(c.conn.out[start:]))
        assert text == b"* BYE Corrupt compressed data\r\n"
    imap(go)


def test_inflate_is_bounded_per_step() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = bomb.compress(b"a" * (20 * limits.INFLATE_CHUNK)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    assert len(data) < 2000
    pieces = list(Deflate().decompress(data))
    assert all(len(p) <= limits.INFLATE_CHUNK for p in pieces)
    assert sum(len(p) for p in pieces) == 20 * limits.INFLATE_CHUNK
    with pytest.raises(CompressError):
        list(Deflate().decompress(b"\xff\xff garbage"))
    # our output inflates with a standard 32 KiB window
    d = Deflate()
    assert zlib.decompressobj(-15).decompress(d.compress(b"x" * 100000)) == b"x" * 100000
