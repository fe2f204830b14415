"""One authenticated cluster connection over asyncio: the thin adapter
around the sans-IO :class:`dynamail.cluster.wire.Connection`.

A :class:`Peer` is symmetric once open: either side may send requests
(answered through a future keyed by the request id), responses and events.
Incoming requests and events go to the ``handler`` coroutine, each in its own
task so that a slow request (a delivery being made durable) never holds up a
heartbeat behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

from dynamail.cluster import limits, wire

log = logging.getLogger("dynamail.cluster")

RESPONSES = (wire.Ok, wire.Error, wire.HeartbeatAck, wire.ControllerInfo, wire.StatusReply,
             wire.Grant, wire.Location, wire.Delivered, wire.AdminResult)

Handler = Callable[["Peer", wire.Message], Awaitable[wire.Message | None]]


class PeerClosed(ConnectionError):
    pass


class Peer:
    def __init__(self, conn: wire.Connection, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, handler: Handler) -> None:
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.handler = handler
        self.name = conn.peer
        self.role = conn.peer_role
        self.version = conn.version
        self.last_rx = time.monotonic()
        self.closed = False
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[wire.Message]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader_task: asyncio.Task[None] | None = None
        self.on_close: list[Callable[[Peer], None]] = []

    def start(self) -> None:
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, msg: wire.Message) -> None:
        if self.closed:
            raise PeerClosed(self.name)
        self.conn.send(msg)
        self.writer.write(self.conn.outgoing())

    async def request(self, msg: wire.Message, timeout: float = limits.REQUEST_TIMEOUT) -> wire.Message:
        rid = getattr(msg, "id", None)
        if not isinstance(rid, int):
            raise TypeError("not a request")
        fut: asyncio.Future[wire.Message] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self.send(msg)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.last_rx = time.monotonic()
                for msg in self.conn.receive(data):
                    self._dispatch(msg)
        except (ConnectionError, wire.ProtocolError, OSError) as exc:
            log.debug("cluster connection %s ended: %s", self.name, exc)
        finally:
            self.close()

    def _dispatch(self, msg: wire.Message) -> None:
        if isinstance(msg, RESPONSES):
            fut = self._pending.get(getattr(msg, "id", -1))
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        task = asyncio.get_running_loop().create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: wire.Message) -> None:
        try:
            reply = await self.handler(self, msg)
        except Exception as exc:
            log.exception("cluster request %s from %s failed", type(msg).__name__, self.name)
            rid = getattr(msg, "id", None)
            reply = wire.Error(rid, "failed", str(exc)[:200]) if isinstance(rid, int) else None
        if reply is not None and not self.closed:
            with contextlib.suppress(Exception):
                self.send(reply)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(PeerClosed(self.name))
        with contextlib.suppress(Exception):
            self.writer.close()
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()
        for cb in self.on_close:
            with contextlib.suppress(Exception):
                cb(self)


async def _handshake(conn: wire.Connection, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, timeout: float) -> None:
    async def run() -> None:
        if conn.side == "dialer":
            conn.start()
        while True:
            out = conn.outgoing()
            if out:
                writer.write(out)
                await writer.drain()
            if conn.is_open:
                return
            data = await reader.read(4096)
            if not data:
                raise PeerClosed("closed during handshake")
            extra = conn.receive(data)
            if extra:
                raise wire.ProtocolError("data before the handshake completed")

    await asyncio.wait_for(run(), timeout)


def channel_binding(writer: asyncio.StreamWriter) -> bytes:
    """The ``tls-unique`` channel binding of a TLS connection (TLS 1.2; the
    cluster contexts never negotiate 1.3, which has none); b"" without TLS."""
    obj = writer.get_extra_info("ssl_object")
    if obj is None:
        return b""
    return obj.get_channel_binding("tls-unique") or b""


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    """TLS for the cluster port: the member's certificate, TLS 1.2 only
    (ECDHE with AEAD ciphers) so that the handshake proofs can be bound to
    the channel with ``tls-unique``; Python's ssl module offers no exporter
    for TLS 1.3.  Members are authenticated by the proofs, not the certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def client_tls() -> ssl.SSLContext:
    """TLS for dialing a cluster port (see :func:`server_tls`); the peer's
    certificate is not checked: the handshake proofs, bound to this TLS
    channel, authenticate it."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def dial(host: str, port: int, member: str, secret: bytes, handler: Handler, *,
               role: str = "backend", timeout: float = limits.CONNECT_TIMEOUT,
               address: tuple[str, int, int] = ("", 0, 0),
               tls: ssl.SSLContext | None = None) -> Peer:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=tls), timeout)
    conn = wire.Connection("dialer", member, secret, role=role, address=address,
                           binding=channel_binding(writer))
    try:
        await _handshake(conn, reader, writer, timeout * 2)
    except BaseException:
        writer.close()
        raise
    peer = Peer(conn, reader, writer, handler)
    peer.start()
    return peer


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, member: str,
                 secret: bytes, handler: Handler, timeout: float = 5.0) -> Peer | None:
    conn = wire.Connection("listener", member, secret, binding=channel_binding(writer))
    try:
        await _handshake(conn, reader, writer, timeout)
    except (wire.ProtocolError, PeerClosed, TimeoutError, ConnectionError, OSError) as exc:
        log.warning("cluster connection from %s refused: %s",
                    writer.get_extra_info("peername"), exc)
        with contextlib.suppress(Exception):
            out = conn.outgoing()
            if out:
                writer.write(out)
        writer.close()
        return None
    peer = Peer(conn, reader, writer, handler)
    peer.start()
    return peer
