"""The I/O layer on real loopback sockets (127.0.1.x), under both the
standard asyncio loop and uvloop: line limits, exact reads, end of stream,
idle timeout, back-pressure, STARTTLS (with pipelined plaintext discarded),
implicit TLS, sendfile, and the connection limits' busy reply."""

from __future__ import annotations

import asyncio
import io
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from dynamail.net import Connection, IdleTimeout, LineTooLong, Listeners, ListenerSpec, TlsMode
from dynamail.net import connection as connection_mod
from dynamail.net.tls import client_context_insecure, ensure_self_signed, server_context

HOST = "127.0.1.1"
OTHER_HOST = "127.0.1.2"


@pytest.fixture(scope="module")
def tls_ctx() -> ssl.SSLContext:
    d = Path(tempfile.mkdtemp())
    ensure_self_signed(d / "cert.pem", d / "key.pem", "mail.test")
    assert (d / "key.pem").stat().st_mode & 0o077 == 0
    return server_context(d / "cert.pem", d / "key.pem")


Handler = Callable[[Connection], Awaitable[None]]


@asynccontextmanager
async def serving(
    handler: Handler, tls_ctx: ssl.SSLContext | None = None, **spec: Any
) -> AsyncIterator[tuple[Listeners, int]]:
    listeners = Listeners(HOST, 0, tls_ctx)
    await listeners.start(ListenerSpec(name="test", port=0, handler=handler, **spec))
    port = listeners.port_of("test")
    assert port is not None
    try:
        yield listeners, port
    finally:
        await listeners.close(grace=1.0)


async def connect(port: int, *, local: str | None = None, tls: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        HOST, port, local_addr=(local, 0) if local else None,
        ssl=client_context_insecure() if tls else None,
    )


def test_readline_limits_and_recovery(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def handler(conn: Connection) -> None:
        while True:
            try:
                line = await conn.readline(50)
            except LineTooLong:
                conn.write(b"TOO LONG\r\n")
                continue
            if not line:
                return
            conn.write(b"GOT " + line)

    async def main() -> list[bytes]:
        async with serving(handler) as (_, port):
            r, w = await connect(port)
            w.write(b"hello\r\n" + b"x" * 100 + b"\r\nafter\r\n")
            w.write(b"y" * 49 + b"\n")  # exactly the limit (LF included): accepted
            w.write(b"z" * 50 + b"\n")  # one over
            w.write(b"q" * 2_000_000 + b"\nlast\n")  # far beyond every buffer
            out = [await r.readline() for _ in range(6)]
            w.write(b"tail-without-newline")
            w.write_eof()
            out.append(await r.read())
            w.close()
            return out

    out = run(main())
    assert out == [
        b"GOT hello\r\n", b"TOO LONG\r\n", b"GOT after\r\n", b"GOT " + b"y" * 49 + b"\n",
        b"TOO LONG\r\n", b"TOO LONG\r\n",
        # the answer to the last line still arrives after the client's EOF (half-close)
        b"GOT last\nGOT tail-without-newline",
    ]


def test_readexactly_and_eof(run: Callable[[Awaitable[Any]], Any]) -> None:
    got: list[bytes] = []
    blob = bytes(range(256)) * 1200

    async def handler(conn: Connection) -> None:
        got.append(await conn.readexactly(5))
        got.append(await conn.readexactly(300_000))
        got.append(await conn.read(3))
        got.append(await conn.readexactly(10_000))  # the stream ends first
        got.append(await conn.read())
        got.append(await conn.readline(100))
        assert conn.at_eof()
        conn.write(b"done")

    async def main() -> bytes:
        async with serving(handler) as (_, port):
            r, w = await connect(port)
            for chunk in (b"ab", b"cde", blob, b"tail"):
                w.write(chunk)
                await w.drain()
            w.write_eof()
            answer = await r.read()
            w.close()
            return answer

    assert run(main()) == b"done"
    assert got[0] == b"abcde"
    assert got[1] == blob[:300_000]
    assert len(got[2]) == 3
    assert b"".join(got[1:4]) == blob + b"tail"
    assert got[4:] == [b"", b""]


def test_idle_timeout(run: Callable[[Awaitable[Any]], Any]) -> None:
    seen: list[str] = []

    async def handler(conn: Connection) -> None:
        try:
            await conn.readline(100)
        except IdleTimeout:
            seen.append("idle")
            conn.write(b"BYE idle\r\n")
            raise

    async def main() -> bytes:
        async with serving(handler, idle_timeout=0.2) as (_, port):
            r, w = await connect(port)
            data = await r.read()  # server closes after the timeout
            w.close()
            return data

    assert run(main()) == b"BYE idle\r\n"
    assert seen == ["idle"]


def test_back_pressure_bounds_the_receive_buffer(run: Callable[[Awaitable[Any]], Any]) -> None:
    total = 4 * 1024 * 1024
    peak: list[int] = []

    async def handler(conn: Connection) -> None:
        # Do not read until the sender has stalled: the buffer must stay bounded.
        stable = 0
        last = -1
        while stable < 30:
            await asyncio.sleep(0.01)
            size = conn.buffered()
            stable = stable + 1 if size == last else 0
            last = size
        peak.append(conn.buffered())
        received = 0
        while received < total:
            chunk = await conn.read()
            assert chunk
            received += len(chunk)
        conn.write(b"%d\n" % received)

    async def main() -> bytes:
        async with serving(handler) as (_, port):
            r, w = await connect(port)
            w.write(b"m" * total)
            line = await r.readline()
            w.close()
            return line

    assert run(main()) == b"%d\n" % total
    assert peak[0] <= connection_mod.MAX_BUFFER + 256 * 1024


def test_starttls_discards_pipelined_plaintext(run: Callable[[Awaitable[Any]], Any], tls_ctx: ssl.SSLContext) -> None:
    async def handler(conn: Connection) -> None:
        assert not conn.is_tls and conn.can_start_tls
        line = await conn.readline(100)
        assert line == b"STARTTLS\r\n"
        conn.write(b"GO\r\n")
        await conn.start_tls()
        assert conn.is_tls and not conn.can_start_tls
        line = await conn.readline(100)
        conn.write(b"tls=%d %s" % (conn.is_tls, line))

    async def main() -> bytes:
        async with serving(handler, tls_ctx) as (_, port):
            r, w = await connect(port)
            w.write(b"STARTTLS\r\nINJECTED\r\n")  # RFC 3207 section 4.2: must be ignored
            assert await r.readline() == b"GO\r\n"
            await w.start_tls(client_context_insecure())
            w.write(b"hello\r\n")
            line = await r.readline()
            w.close()
            return line

    assert run(main()) == b"tls=1 hello\r\n"


def test_implicit_tls_and_sendfile(run: Callable[[Awaitable[Any]], Any], tls_ctx: ssl.SSLContext) -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB

    async def handler(conn: Connection) -> None:
        await conn.readline(100)
        f = io.BytesIO(b"junk" + blob + b"junk")
        tmp = Path(tempfile.mkstemp()[1])
        tmp.write_bytes(f.getvalue())
        with open(tmp, "rb") as fh:
            await conn.sendfile(fh, 4, len(blob))
        tmp.unlink()
        conn.write(b"END")

    async def fetch(tls: bool) -> bytes:
        spec = {"tls": TlsMode.IMPLICIT} if tls else {}
        async with serving(handler, tls_ctx, **spec) as (_, port):
            r, w = await connect(port, tls=tls)
            w.write(b"go\r\n")
            data = await r.readexactly(len(blob) + 3)
            w.close()
            return data

    assert run(fetch(False)) == blob + b"END"
    assert run(fetch(True)) == blob + b"END"


def test_implicit_tls_needs_a_certificate(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def handler(conn: Connection) -> None:
        return None

    async def main() -> None:
        listeners = Listeners(HOST, 0, None)
        with pytest.raises(RuntimeError):
            await listeners.start(ListenerSpec("x", 0, handler, tls=TlsMode.IMPLICIT))

    run(main())


def test_per_address_limit_busy_reply(run: Callable[[Awaitable[Any]], Any]) -> None:
    release = asyncio.Event
    state: dict[str, Any] = {}

    async def handler(conn: Connection) -> None:
        state["started"] += 1
        conn.write(b"HELLO\r\n")
        await state["release"].wait()

    async def main() -> list[bytes]:
        state["started"] = 0
        state["release"] = release()
        async with serving(handler, max_per_address=2, busy_reply=b"BUSY try later\r\n") as (listeners, port):
            held = [await connect(port) for _ in range(2)]
            for r, _ in held:
                assert await r.readline() == b"HELLO\r\n"
            r3, w3 = await connect(port)
            busy = await r3.read()  # busy line, then closed
            r4, w4 = await connect(port, local=OTHER_HOST)  # another address is fine
            other = await r4.readline()
            counts = listeners.session_counts()
            state["release"].set()
            for _, w in held:
                w.close()
            w3.close()
            w4.close()
            return [busy, other, str(counts["test"]).encode(), str(state["started"]).encode()]

    assert run(main()) == [b"BUSY try later\r\n", b"HELLO\r\n", b"3", b"3"]


def test_total_limit_and_shutdown(run: Callable[[Awaitable[Any]], Any]) -> None:
    cancelled: list[bool] = []

    async def handler(conn: Connection) -> None:
        conn.write(b"HI\r\n")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> bytes:
        listeners = Listeners(HOST, 0, None)
        await listeners.start(ListenerSpec("t", 0, handler, max_connections=1, busy_reply=b"FULL\r\n"))
        port = listeners.port_of("t")
        assert port is not None
        r1, w1 = await connect(port)
        assert await r1.readline() == b"HI\r\n"
        r2, w2 = await connect(port, local=OTHER_HOST)
        full = await r2.read()
        await listeners.close(grace=0.1)  # the sleeping session is cancelled
        assert await r1.read() == b""
        w1.close()
        w2.close()
        return full

    assert run(main()) == b"FULL\r\n"
    assert cancelled == [True]


def test_slow_reader_does_not_hang_the_session(run: Callable[[Awaitable[Any]], Any]) -> None:
    outcome: list[str] = []

    async def handler(conn: Connection) -> None:
        try:
            for _ in range(1000):
                await conn.send(b"x" * 65536)  # the client never reads
        except (IdleTimeout, ConnectionError):
            outcome.append("gave up")
            raise
        outcome.append("sent everything")

    async def main() -> None:
        async with serving(handler, idle_timeout=0.3) as (_, port):
            _r, w = await connect(port)
            while not outcome:
                await asyncio.sleep(0.05)
            w.close()

    run(main())
    assert outcome == ["gave up"]
