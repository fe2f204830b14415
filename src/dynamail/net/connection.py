"""A client connection as the protocol adapters see it.

This is the only object through which a protocol adapter touches a socket.
It owns buffering, read timeouts, back-pressure in both directions, STARTTLS,
file sends and the peer address (which a cluster relay may replace with the
real client address it was handed).  Protocol cores stay sans-IO: the
adapter reads bytes here, feeds them to the core, and writes what it produces.

It is an ``asyncio.Protocol`` of our own rather than a StreamReader so that
the receive buffer is ours: STARTTLS can discard pipelined plaintext
(RFC 3207 section 4.2, RFC 2595 section 3.1), pipelined input is visible to
the adapter, and an idle connection costs one small object and an empty
bytearray.  Reading pauses when the buffer passes ``MAX_BUFFER`` so a client
that sends faster than we consume cannot grow our memory.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO, cast

READ_CHUNK = 65536
MAX_BUFFER = 256 * 1024
CLOSE_DRAIN_TIMEOUT = 10.0  # seconds close() waits for unsent output to leave
SENDFILE_CHUNK = 256 * 1024  # chunk size when the loop cannot sendfile (uvloop)
# Read timeouts of at least COARSE_MIN seconds share one loop timer per
# COARSE_GRAIN-second slot (they may fire up to COARSE_GRAIN late) instead
# of one timer each: an idle connection then holds no timer of its own.
COARSE_MIN = 30.0
COARSE_GRAIN = 1.0


class _Deadlines:
    """Shared timers for long read timeouts on one event loop.

    Waiting wires are kept in per-slot sets; one ``call_at`` per slot expires
    them all.  Removing a wire that got its data leaves the slot's timer in
    place (it fires on an empty or smaller set)."""

    __slots__ = ("loop", "slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, set[_Wire]] = {}

    def add(self, wire: _Wire, delay: float) -> int:
        key = math.ceil((self.loop.time() + delay) / COARSE_GRAIN)
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = set()
            self.loop.call_at(key * COARSE_GRAIN, self._fire, key)
        slot.add(wire)
        return key

    def remove(self, wire: _Wire, key: int) -> None:
        slot = self.slots.get(key)
        if slot is not None:
            slot.discard(wire)

    def _fire(self, key: int) -> None:
        for wire in self.slots.pop(key, ()):
            wire.expire()


_deadlines: dict[int, _Deadlines] = {}


def _deadlines_of(loop: asyncio.AbstractEventLoop) -> _Deadlines:
    d = _deadlines.get(id(loop))
    if d is None or d.loop is not loop:
        for k in [k for k, v in _deadlines.items() if v.loop.is_closed()]:
            del _deadlines[k]
        d = _deadlines[id(loop)] = _Deadlines(loop)
    return d


class IdleTimeout(Exception):
    """No data arrived from the client within the connection's idle timeout."""


class LineTooLong(Exception):
    """A line exceeded the limit given to :meth:`Connection.readline`.

    The rest of the offending line has been consumed, so the protocol can
    answer with its error and keep reading the next command.
    """


class _Wire(asyncio.Protocol):
    """The asyncio side: collects bytes and signals the Connection."""

    __slots__ = (
        "_data_waiter", "_drain_waiters", "_on_made", "arrivals", "buffer", "eof", "lost",
        "reading_paused", "transport", "write_paused",
    )

    def __init__(self, on_made: Callable[[_Wire], None] | None = None) -> None:
        self._on_made = on_made
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.reading_paused = False
        self._data_waiter: asyncio.Future[bool] | None = None
        self._drain_waiters: list[asyncio.Future[None]] | None = None  # created when needed
        self.write_paused = False
        self.lost = False
        self.arrivals = 0  # incremented on every data, EOF or loss event

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without
        # subclassing asyncio.Transport, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        on_made, self._on_made = self._on_made, None
        if on_made is not None:
            on_made(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()
        if len(self.buffer) > MAX_BUFFER and self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        # Keep the transport open (half-close): a client may shut down its
        # sending side after its last command and still read the answers.
        # Returning a false value would make asyncio close the transport at
        # once and drop everything the session writes afterwards.
        self.eof = True
        self._wake()
        if self.transport is not None and self.transport.get_extra_info("sslcontext") is not None:
            return None  # TLS cannot half-close; asyncio ignores (and warns about) True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.lost = True
        self._wake()
        self._release_drain()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._release_drain()

    def _release_drain(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        for w in waiters or ():
            if not w.done():
                w.set_result(None)

    def _wake(self) -> None:
        self.arrivals += 1
        w = self._data_waiter
        if w is not None and not w.done():
            w.set_result(True)

    def interrupt(self) -> None:
        """End the current wait as if data had arrived (it returns True)."""
        w = self._data_waiter
        if w is not None and not w.done():
            w.set_result(True)

    def expire(self) -> None:
        """The read timeout passed: end the current wait (it returns False)."""
        w = self._data_waiter
        if w is not None and not w.done():
            w.set_result(False)

    async def wait_data(self, since: int | None = None, timeout: float | None = None) -> bool:
        """Wait for data (or end of stream); False if ``timeout`` seconds
        passed first.  With ``since`` (a value of ``arrivals`` taken before
        this coroutine was scheduled) return at once when something arrived
        in between, so no wake-up is lost.

        No task or ``wait_for`` wrapper: a waiting connection holds one
        future, and a long timeout only a place in a shared timer slot."""
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        if since is not None and since != self.arrivals:
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._data_waiter = fut
        handle: asyncio.TimerHandle | None = None
        slot: int | None = None
        deadlines: _Deadlines | None = None
        if timeout is not None:
            if timeout >= COARSE_MIN:
                deadlines = _deadlines_of(loop)
                slot = deadlines.add(self, timeout)
            else:
                handle = loop.call_later(max(0.0, timeout), self.expire)
        try:
            return await fut
        finally:
            self._data_waiter = None
            if handle is not None:
                handle.cancel()
            if deadlines is not None and slot is not None:
                deadlines.remove(self, slot)

    async def drain(self) -> None:
        if self.lost:
            return
        if self.write_paused:
            fut = asyncio.get_running_loop().create_future()
            if self._drain_waiters is None:
                self._drain_waiters = []
            self._drain_waiters.append(fut)
            await fut


class Connection:
    """One accepted TCP connection (plain or TLS)."""

    __slots__ = (
        "__weakref__", "_tls_context", "_transport", "_wire", "closed", "facts", "idle_timeout", "listener",
        "local_host", "local_port", "peer_host", "peer_port", "session_id",
    )

    def __init__(
        self,
        wire: _Wire,
        *,
        listener: str,
        idle_timeout: float,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        assert wire.transport is not None
        self._wire = wire
        self._transport: asyncio.Transport = wire.transport
        self.listener = listener
        self.idle_timeout = idle_timeout
        self._tls_context = tls_context
        peer = self._transport.get_extra_info("peername") or ("", 0)
        sock = self._transport.get_extra_info("sockname") or ("", 0)
        # interned: many connections share a client address and all of a
        # listener's share the local one
        self.peer_host: str = sys.intern(str(peer[0]))
        self.peer_port: int = int(peer[1])
        self.local_host: str = sys.intern(str(sock[0]))
        self.local_port: int = int(sock[1])
        self.closed = False
        self.session_id = secrets.token_hex(6)  # in the session's log line, SMTP replies, Received:
        self.facts: dict[str, Any] | None = None  # what the adapter tells the session's log line

    def note(self, **facts: Any) -> None:
        """Record facts for the session's log line (``account``, ``outcome``, ...)."""
        if self.facts is None:
            self.facts = {}
        self.facts.update(facts)

    # -- properties -----------------------------------------------------
    @property
    def is_tls(self) -> bool:
        return self._transport.get_extra_info("sslcontext") is not None

    @property
    def can_start_tls(self) -> bool:
        return self._tls_context is not None and not self.is_tls

    def set_real_peer(self, host: str, port: int) -> None:
        """Record the real client address handed over by a cluster relay."""
        self.peer_host = host
        self.peer_port = port

    def buffered(self) -> int:
        """Bytes received but not yet read (pipelined input)."""
        return len(self._wire.buffer)

    def at_eof(self) -> bool:
        return self._wire.eof and not self._wire.buffer

    def unread(self, data: bytes) -> None:
        """Put back bytes a protocol read ahead, so the next read returns them
        first (e.g. pipelined commands handed on with a relayed session)."""
        if data:
            self._wire.buffer[0:0] = data

    # -- reading --------------------------------------------------------
    async def _fill(self, timeout: float | None) -> bool:
        """Wait for more data; False at end of stream."""
        if self._wire.eof:
            return False
        t = self.idle_timeout if timeout is None else timeout
        if not await self._wire.wait_data(self._wire.arrivals, t):
            raise IdleTimeout()
        return bool(self._wire.buffer) or not self._wire.eof

    async def wait_input(self, timeout: float | None = None, wake: asyncio.Future[object] | None = None) -> bool:
        """Wait until input is buffered or the stream ended (True), or until
        ``wake`` is done (False); raises :class:`IdleTimeout` after
        ``timeout`` (default: the idle timeout) seconds of neither.

        For waiting on the client and on something else at once (IMAP IDLE:
        the client's DONE or a mailbox change) without a task per source:
        the caller owns ``wake`` and completes it from elsewhere; this
        coroutine holds one future and a place in a shared timer slot.
        Input that arrived is left in the buffer for ``read``/``readline``."""
        wire = self._wire
        if wire.buffer or wire.eof:
            return True
        if wake is not None and wake.done():
            return False
        t = self.idle_timeout if timeout is None else timeout
        since = wire.arrivals

        def woken(_f: asyncio.Future[object]) -> None:
            wire.interrupt()

        if wake is not None:
            wake.add_done_callback(woken)
        try:
            in_time = await wire.wait_data(since, t)
        finally:
            if wake is not None:
                wake.remove_done_callback(woken)
        if wire.buffer or wire.eof:
            return True
        if wake is not None and wake.done():
            return False
        if not in_time:
            raise IdleTimeout()
        return True

    def _take(self, n: int) -> bytes:
        buf = self._wire.buffer
        data = bytes(buf[:n])
        del buf[:n]
        return data

    async def read(self, n: int = READ_CHUNK, *, timeout: float | None = None) -> bytes:
        """Return up to ``n`` bytes; ``b""`` at end of stream."""
        while not self._wire.buffer:
            if not await self._fill(timeout):
                return b""
        return self._take(n)

    async def readexactly(self, n: int, *, timeout: float | None = None) -> bytes:
        """Return exactly ``n`` bytes, or fewer if the stream ends first."""
        while len(self._wire.buffer) < n:
            if not await self._fill(timeout):
                break
        return self._take(n)

    async def readline(self, limit: int, *, timeout: float | None = None, deadline: float | None = None) -> bytes:
        """Return one line including its LF; ``b""`` at end of stream.

        A line longer than ``limit`` raises :class:`LineTooLong` after the
        rest of it has been read and discarded (in bounded memory).  A final
        line without LF is returned as is at end of stream.  ``timeout``
        bounds each wait for more data; ``deadline`` (``time.monotonic()``)
        bounds the whole line, so one trickled in a byte at a time still
        raises :class:`IdleTimeout` when it passes.
        """
        if deadline is not None:
            return await self._readline_by(limit, deadline)
        start = 0
        while True:
            buf = self._wire.buffer
            idx = buf.find(b"\n", start)
            if idx >= 0:
                if idx + 1 > limit:
                    del buf[: idx + 1]
                    raise LineTooLong()
                return self._take(idx + 1)
            if len(buf) > limit:
                # too long: discard everything up to and including the LF
                while True:
                    idx = self._wire.buffer.find(b"\n")
                    if idx >= 0:
                        del self._wire.buffer[: idx + 1]
                        raise LineTooLong()
                    self._wire.buffer.clear()
                    if not await self._fill(timeout):
                        raise LineTooLong()
            start = len(buf)
            if not await self._fill(timeout):
                return self._take(len(self._wire.buffer))

    async def _readline_by(self, limit: int, deadline: float) -> bytes:
        start = 0
        too_long = False
        while True:
            buf = self._wire.buffer
            idx = buf.find(b"\n", start)
            if idx >= 0:
                if too_long or idx + 1 > limit:
                    del buf[: idx + 1]
                    raise LineTooLong()
                return self._take(idx + 1)
            if len(buf) > limit:  # too long: keep discarding up to the LF, in bounded memory
                too_long = True
                buf.clear()
            start = len(buf)
            if not await self._fill(max(0.0, deadline - time.monotonic())):
                if too_long:
                    raise LineTooLong()
                return self._take(len(self._wire.buffer))

    # -- writing --------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.closed and data and not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark.

        A client that stops reading cannot hold the session forever: after
        ``idle_timeout`` seconds without progress the connection is aborted
        and :class:`IdleTimeout` is raised."""
        if self._wire.write_paused and not self._wire.lost:
            try:
                await asyncio.wait_for(self._wire.drain(), self.idle_timeout)
            except TimeoutError:
                self.abort()
                raise IdleTimeout() from None
        if self._wire.lost:
            self.closed = True

    async def send(self, data: bytes) -> None:
        self.write(data)
        await self.drain()

    async def sendfile(self, file: BinaryIO, offset: int, count: int) -> None:
        """Send ``count`` bytes of ``file`` from ``offset`` with little copying
        (``os.sendfile`` on plain sockets, chunked reads under TLS)."""
        await self.drain()
        if count <= 0 or self.closed:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.sendfile(self._transport, file, offset, count, fallback=True)
        except NotImplementedError:
            # uvloop has no loop.sendfile: copy in chunks read off the loop.
            await self._copy_file(file, offset, count)
        except (ConnectionError, ssl.SSLError):
            self.closed = True

    async def _copy_file(self, file: BinaryIO, offset: int, count: int) -> None:
        loop = asyncio.get_running_loop()
        fd = file.fileno()
        while count > 0 and not self.closed:
            chunk = await loop.run_in_executor(None, os.pread, fd, min(count, SENDFILE_CHUNK), offset)
            if not chunk:
                raise EOFError("file ended before the requested range")
            self.write(chunk)
            offset += len(chunk)
            count -= len(chunk)
            await self.drain()

    # -- TLS and closing -------------------------------------------------
    async def start_tls(self) -> None:
        """Upgrade to TLS after STARTTLS/STLS.  Plaintext the client sent
        after the command is discarded (RFC 3207 section 4.2)."""
        if self._tls_context is None:
            raise RuntimeError("TLS is not configured")
        self._wire.buffer.clear()
        await self.drain()
        loop = asyncio.get_running_loop()
        new = await loop.start_tls(self._transport, self._wire, self._tls_context, server_side=True)
        if new is None:
            raise ConnectionError("TLS handshake failed")
        self._transport = new
        self._wire.transport = new

    async def close(self) -> None:
        if self._transport.is_closing():
            self.closed = True
            return
        self.closed = True
        try:
            await asyncio.wait_for(self._wire.drain(), min(self.idle_timeout, CLOSE_DRAIN_TIMEOUT))
        except TimeoutError:
            self._transport.abort()  # the client does not read: drop what is unsent
            return
        except Exception:
            pass
        self._transport.close()

    def abort(self) -> None:
        self.closed = True
        self._transport.abort()
