"""The asyncio side of IMAP: read bytes, frame and parse them, run the
session, write its output.

This module is deliberately thin: protocol decisions live in the sans-IO
core (:mod:`framer`, :mod:`parser`, :mod:`session`, :mod:`commands`); here
are only the things that need an event loop — waiting for input with the
right timeout, batching output until the client's pipelined input is
consumed, IDLE (waiting on the client and on the mailbox at once), STARTTLS,
sendfile, and handing a session to the cluster relay.

Output is collected and written when the session has no more complete
commands to run (or past ``limits.OUTPUT_FLUSH``), so a pipelining client
gets one write per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from typing import TYPE_CHECKING, Any, TypeVar

from dynamail.imap import limits
from dynamail.imap.commands import REGISTRY
from dynamail.imap.compress import CompressError, Deflate
from dynamail.imap.errors import CommandBad, SessionEnd
from dynamail.imap.framer import NEED_DATA, Continue, Frame, FrameError, Framer
from dynamail.imap.notify import deliver as deliver_notifications
from dynamail.imap.parser import ParseError, parse_command, tag_of
from dynamail.imap.session import Session
from dynamail.imap.state import State
from dynamail.net import Connection, IdleTimeout, ListenerSpec, TlsMode
from dynamail.net.listener import interruptible

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from dynamail.cluster.locator import Relay
    from dynamail.server.context import ServerContext

log = logging.getLogger("dynamail.imap")
T = TypeVar("T")
READ_SIZE = 65536


class ConnectionIo:
    """The session's view of its connection (implements ``session.Io``)."""

    def __init__(self, ctx: ServerContext, conn: Connection, framer: Framer) -> None:
        self.ctx = ctx
        self.conn = conn
        self.note = conn.note
        self.framer = framer
        self._out = bytearray()
        self.deflate: Deflate | None = None  # COMPRESS=DEFLATE active (RFC 4978)
        self.notified = asyncio.Event()  # NOTIFY: a watched mailbox changed
        self._watch: asyncio.Task[None] | None = None
        # RFC 9051 5.4: the time to log in counts from the connection, and
        # nothing the client sends (NOOP, a trickled line, an unfinished
        # literal) extends it
        self.login_deadline = time.monotonic() + limits.NOT_AUTHENTICATED_TIMEOUT

    @property
    def peer_host(self) -> str:
        return self.conn.peer_host

    @property
    def local_host(self) -> str:
        return str(getattr(self.conn, "local_host", "") or "")

    @property
    def is_tls(self) -> bool:
        return self.conn.is_tls

    @property
    def can_start_tls(self) -> bool:
        return self.conn.can_start_tls

    def write(self, data: bytes) -> None:
        self._out += data

    def pending(self) -> int:
        return len(self._out)

    def watch_changes(self, session: Session, on: bool) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        store = session.store
        if on and store is not None:
            self._watch = asyncio.ensure_future(self._follow(session, store))

    async def _follow(self, session: Session, store: Any) -> None:
        async for name in store.changes():
            session.notify_pending.add(name)
            self.notified.set()

    def stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    @property
    def compressed(self) -> bool:
        return self.deflate is not None

    async def start_compress(self) -> None:
        """From now on both directions are deflated (RFC 4978 section 3);
        input read ahead after the COMPRESS command is compressed already."""
        await self.flush()
        self.deflate = Deflate()
        left = self.framer.take_buffered()
        if left:
            self._feed(left)

    def _feed(self, data: bytes) -> None:
        if self.deflate is None:
            self.framer.feed(data)
            return
        try:
            for piece in self.deflate.decompress(data):
                self.framer.feed(piece)
        except CompressError:
            raise SessionEnd("Corrupt compressed data") from None

    async def flush(self) -> None:
        if self._out:
            data = bytes(self._out)
            self._out.clear()
            self.conn.write(data if self.deflate is None else self.deflate.compress(data))
        await self.conn.drain()
        if self.conn.closed:
            raise ConnectionError("client went away")

    async def send_file(self, file: Any, offset: int, length: int) -> None:
        await self.flush()
        if self.deflate is None:
            await self.conn.sendfile(file, offset, length)
            return
        fd = file.fileno()
        end = offset + length
        while offset < end:  # compressed: read and deflate in bounded pieces
            n = min(limits.APPEND_CHUNK, end - offset)
            chunk = await self.run_blocking(os.pread, fd, n, offset)
            if not chunk:
                raise ConnectionError("message file shorter than its index entry")
            offset += len(chunk)
            self.write(chunk)
            await self.flush()

    async def read_more(self, timeout: float) -> None:
        if timeout <= 0:
            raise SessionEnd("Autologout; idle for too long")
        try:
            data = await self.conn.read(READ_SIZE, timeout=timeout)
        except IdleTimeout:
            raise SessionEnd("Autologout; idle for too long") from None
        if not data:
            raise ConnectionError("client closed the connection")
        self._feed(data)

    async def read_line(self) -> bytes:
        while True:
            ev = self.framer.next_event()
            if isinstance(ev, Frame):
                return ev.raw
            if ev is NEED_DATA:
                await self.read_more(self.login_deadline - time.monotonic())
                continue
            raise CommandBad("Unexpected data in authentication exchange")

    async def start_tls(self) -> None:
        self.framer.discard_buffered()
        await self.conn.start_tls()

    def set_peer(self, host: str, port: int) -> None:
        self.conn.set_real_peer(host, port)

    async def relay(self, placement: Relay, client_reply: bytes) -> bool:
        cluster = self.ctx.cluster
        if cluster is None:
            return False
        await self.flush()
        unread = getattr(self.conn, "unread", None)
        if unread is not None:  # commands pipelined after LOGIN go to the owner
            unread(self.framer.take_buffered())
        ok = await cluster.relay_session(
            self.conn, placement, protocol="imap", client_reply=client_reply
        )
        return ok is not False

    async def gather(self, aws: list[Awaitable[T]]) -> list[T]:
        return list(await asyncio.gather(*aws))

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args))

    async def idle(self, session: Session) -> None:
        """RFC 2177: report changes as they happen until the client says DONE."""
        framer = self.framer
        read_task: asyncio.Task[bytes] | None = None
        try:
            while True:
                ev = framer.next_event()
                if isinstance(ev, Frame):
                    if ev.raw.strip().upper() == b"DONE":
                        return
                    raise CommandBad("Expected DONE")
                if ev is not NEED_DATA:
                    raise CommandBad("Expected DONE")
                read_task = asyncio.ensure_future(
                    self.conn.read(READ_SIZE, timeout=limits.IDLE_TIMEOUT)
                )
                while not read_task.done():
                    sel = session.selected
                    waits: set[asyncio.Future[Any]] = {read_task}
                    change: asyncio.Future[bool] | None = None
                    if sel is not None:
                        change = asyncio.ensure_future(sel.view.wait_for_change(limits.IDLE_POLL))
                        waits.add(change)
                    notified: asyncio.Future[Any] | None = None
                    if session.notify is not None:  # NOTIFY (RFC 5465)
                        notified = asyncio.ensure_future(self.notified.wait())
                        waits.add(notified)
                    if len(waits) == 1:
                        await asyncio.wait(waits)
                        break
                    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    if change is not None and change in done and change.result():
                        await session.sync_selected()
                    if notified is not None and notified in done:
                        self.notified.clear()
                        await deliver_notifications(session)
                    await self.flush()
                    for f in (change, notified):
                        if f is not None and not f.done():
                            f.cancel()
                            with contextlib.suppress(asyncio.CancelledError, Exception):
                                await f
                try:
                    data = read_task.result()
                except IdleTimeout:
                    raise SessionEnd("Autologout; idle for too long") from None
                read_task = None
                if not data:
                    raise ConnectionError("client closed the connection")
                self._feed(data)
        finally:
            if read_task is not None and not read_task.done():
                read_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await read_task


class _Counters:
    """Per-command metric children, looked up once per command name."""

    def __init__(self, ctx: ServerContext) -> None:
        self.metrics = getattr(ctx, "metrics", None)
        self.children: dict[str, Any] = {}

    def count(self, name: str) -> None:
        if self.metrics is None:
            return
        if name not in REGISTRY:  # client-chosen words must not create label values
            name = "UNKNOWN"
        child = self.children.get(name)
        if child is None:
            child = self.metrics.commands.labels(protocol="imap", command=name)
            self.children[name] = child
        child.inc()


async def serve(ctx: ServerContext, conn: Connection) -> None:
    """Run one IMAP session on ``conn`` until LOGOUT, BYE or disconnect."""
    session_counters = _counters(ctx)
    framer = Framer()
    io = ConnectionIo(ctx, conn, framer)
    session = Session(ctx, io)
    framer.append_limit = session.settings.append_limit
    idle_timeout = getattr(getattr(ctx.config, "limits", None), "idle_timeout", limits.IDLE_TIMEOUT)
    login_timeout = getattr(getattr(ctx.config, "limits", None), "login_timeout", limits.NOT_AUTHENTICATED_TIMEOUT)
    io.login_deadline = time.monotonic() + login_timeout
    command_deadline: float | None = None  # an unfinished command must end by then
    io.write(
        b"* OK [CAPABILITY " + " ".join(session.capabilities()).encode() + b"] "
        + ctx.hostname.encode("ascii", "replace") + b" dynamail IMAP ready\r\n"
    )
    try:
        while session.state is not State.LOGOUT:
            framer.authenticated = session.state is not State.NOT_AUTHENTICATED
            ev = framer.next_event()
            if ev is NEED_DATA:
                await io.flush()
                now = time.monotonic()
                if session.state is State.NOT_AUTHENTICATED:
                    timeout = io.login_deadline - now
                elif framer.in_command:
                    # a trickled line or literal cannot hold the session past
                    # one idle timeout, however slowly it arrives
                    if command_deadline is None:
                        command_deadline = now + idle_timeout
                    timeout = command_deadline - now
                else:
                    timeout = idle_timeout
                if framer.in_command:
                    await io.read_more(timeout)
                else:
                    with interruptible():  # between commands: shutdown says BYE at once
                        await io.read_more(timeout)
                continue
            if isinstance(ev, Continue):
                io.write(b"+ Ready for literal data\r\n")
                await io.flush()
                continue
            if isinstance(ev, FrameError):
                command_deadline = None
                session.bad_frame(ev.tag, ev.reply)
                continue
            assert isinstance(ev, Frame)
            command_deadline = None
            try:
                cmd = parse_command(ev.raw)
            except ParseError as exc:
                session.bad_frame(tag_of(ev.raw), "BAD " + (str(exc) or "Syntax error"))
                continue
            session_counters.count(cmd.name)
            await session.execute(cmd)
            if io.pending() >= limits.OUTPUT_FLUSH:
                await io.flush()
    except SessionEnd as exc:
        if exc.text:
            io.write(b"* BYE " + exc.text.encode() + b"\r\n")
    except asyncio.CancelledError:  # server shutdown after the grace period
        io.write(b"* BYE Server shutting down\r\n")
        raise
    except (ConnectionError, OSError):
        pass
    finally:
        io.stop_watch()
        with contextlib.suppress(Exception):
            await io.flush()
        await session.close()


def _counters(ctx: ServerContext) -> _Counters:
    c = ctx.extras.get("imap.counters") if hasattr(ctx, "extras") else None
    if not isinstance(c, _Counters):
        c = _Counters(ctx)
        if hasattr(ctx, "extras"):
            ctx.extras["imap.counters"] = c
    return c


def listeners(ctx: ServerContext) -> list[ListenerSpec]:
    """IMAP on 143 (STARTTLS when a certificate exists) and IMAPS on 993."""

    async def handler(conn: Connection) -> None:
        await serve(ctx, conn)

    ports = getattr(ctx.config, "ports", {}) or {}
    lim = getattr(ctx.config, "limits", None)
    common: dict[str, Any] = {
        "idle_timeout": float(getattr(lim, "idle_timeout", limits.IDLE_TIMEOUT)),
        "busy_reply": b"* BYE Too many connections, try again later\r\n",
    }
    if lim is not None:
        common["max_connections"] = lim.max_connections
        common["max_per_address"] = lim.max_per_address
    specs = [ListenerSpec("imap", int(ports.get("imap", 143)), handler, TlsMode.PLAIN, **common)]
    if ctx.tls is not None:
        specs.append(
            ListenerSpec("imaps", int(ports.get("imaps", 993)), handler, TlsMode.IMPLICIT, **common)
        )
    return specs
