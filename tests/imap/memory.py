"""An in-memory stand-in for ``dynamail.net.Connection`` and a scripted client.

The server side is the real adapter (``dynamail.imap.adapter.serve``); only
the socket is replaced, so transcripts exercise framing, parsing, the
session, storage and the output batching exactly as in production.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from dynamail.net import IdleTimeout


class MemoryConnection:
    """Implements the part of ``Connection`` the IMAP adapter uses."""

    def __init__(self, *, tls: bool = False, can_tls: bool = True, peer: str = "127.0.0.1") -> None:
        self._in: asyncio.Queue[bytes] = asyncio.Queue()
        self.out = bytearray()
        self.out_event = asyncio.Event()
        self.peer_host = peer
        self.peer_port = 40000
        self.local_host = "127.0.0.1"
        self.local_port = 143
        self.listener = "imap"
        self.idle_timeout = 1800.0
        self.closed = False
        self._tls = tls
        self._can_tls = can_tls
        self._pending = b""
        self.eof = False
        self.session_id = "memory"
        self.facts: dict[str, object] = {}

    def note(self, **facts: object) -> None:
        self.facts.update(facts)

    @property
    def is_tls(self) -> bool:
        return self._tls

    @property
    def can_start_tls(self) -> bool:
        return self._can_tls and not self._tls

    def set_real_peer(self, host: str, port: int) -> None:
        self.peer_host, self.peer_port = host, port

    def feed(self, data: bytes) -> None:
        self._in.put_nowait(data)

    def unread(self, data: bytes) -> None:
        self._pending = data + self._pending

    def feed_eof(self) -> None:
        self._in.put_nowait(b"")

    async def read(self, n: int = 65536, *, timeout: float | None = None) -> bytes:
        if not self._pending:
            try:
                self._pending = await asyncio.wait_for(self._in.get(), timeout if timeout else None)
            except TimeoutError:
                raise IdleTimeout() from None
            if not self._pending:
                self.eof = True
                return b""
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.out += data
            self.out_event.set()

    async def drain(self) -> None:
        await asyncio.sleep(0)

    async def send(self, data: bytes) -> None:
        self.write(data)

    async def sendfile(self, file: Any, offset: int, count: int) -> None:
        file.seek(offset)
        self.write(file.read(count))

    async def start_tls(self) -> None:
        self._tls = True

    async def close(self) -> None:
        self.closed = True
        self.out_event.set()

    def abort(self) -> None:
        self.closed = True


class Client:
    """Scripted client: send commands, collect everything up to the tagged reply."""

    def __init__(self, conn: MemoryConnection) -> None:
        self.conn = conn
        self._seen = 0
        self._tags = (f"t{i}" for i in itertools.count(1))

    async def _take_until(self, pred: Any, timeout: float = 10.0) -> bytes:
        async def wait() -> bytes:
            while True:
                data = bytes(self.conn.out[self._seen :])
                end = pred(data)
                if end is not None:
                    self._seen += end
                    return data[:end]
                if self.conn.closed:
                    self._seen = len(self.conn.out)
                    return data
                self.conn.out_event.clear()
                await self.conn.out_event.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def line(self) -> str:
        """The next complete line (without CRLF)."""

        def pred(data: bytes) -> int | None:
            i = data.find(b"\r\n")
            return None if i < 0 else i + 2

        return (await self._take_until(pred)).decode("utf-8", "replace").rstrip("\r\n")

    async def until_tagged(self, tag: str) -> list[str]:
        marker = f"{tag} ".encode()

        def pred(data: bytes) -> int | None:
            pos = 0
            while True:
                if data.startswith(marker, pos):
                    j = data.find(b"\r\n", pos)
                    return None if j < 0 else j + 2
                j = data.find(b"\r\n", pos)
                if j < 0:
                    return None
                pos = j + 2

        text = (await self._take_until(pred)).decode("utf-8", "replace")
        return text.split("\r\n")[:-1] if text.endswith("\r\n") else text.split("\r\n")

    async def raw(self, data: bytes) -> None:
        self.conn.feed(data)

    async def cmd(self, text: str | bytes, tag: str | None = None) -> list[str]:
        """Send ``tag text`` and return every line up to and including the tagged reply."""
        tag = tag or next(self._tags)
        body = text.encode() if isinstance(text, str) else text
        self.conn.feed(tag.encode() + b" " + body + b"\r\n")
        return await self.until_tagged(tag)

    async def ok(self, text: str | bytes) -> list[str]:
        lines = await self.cmd(text)
        assert lines and lines[-1].split(" ", 2)[1] == "OK", lines
        return lines

