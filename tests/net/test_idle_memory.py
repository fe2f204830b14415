"""What an idle connection holds while it waits for input (SPEC section 3:
50,000 idle connections): no task of its own besides the session's, no
timer of its own for long read timeouts (they share one per slot), and the
shared timers still end idle sessions.  Real loopback sockets (127.0.13.x)
under asyncio and uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dynamail.net import Connection, IdleTimeout, Listeners, ListenerSpec
from dynamail.net import connection as connection_mod

HOST = "127.0.13.1"


Clients = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


async def _idle_clients(n: int, idle_timeout: float, results: list[str]) -> tuple[Listeners, Clients]:
    async def handler(conn: Connection) -> None:
        try:
            data = await conn.read()
            results.append(data.decode())
        except IdleTimeout:
            results.append("timeout")
            raise

    listeners = Listeners(HOST, 0, None)
    await listeners.start(ListenerSpec(name="t", port=0, handler=handler, idle_timeout=idle_timeout))
    port = listeners.port_of("t")
    assert port is not None
    clients = []
    for _ in range(n):
        clients.append(await asyncio.open_connection(HOST, port))
    return listeners, clients


async def _settle(cond: Callable[[], bool]) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)


def test_waiting_connections_hold_no_extra_task_or_own_timer(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def main() -> None:
        results: list[str] = []
        before = len(asyncio.all_tasks())
        listeners, clients = await _idle_clients(20, 600.0, results)
        writers = [w for _, w in clients]
        try:
            await _settle(lambda: listeners.session_counts().get("t", 0) == 20)
            await asyncio.sleep(0.05)
            assert listeners.session_counts()["t"] == 20
            # one task per session (the listener's), none per pending read
            assert len(asyncio.all_tasks()) - before == 20
            # the 600 s read timeouts share slots of the loop's deadline table
            table = connection_mod._deadlines_of(asyncio.get_running_loop())
            waiting = sum(len(s) for s in table.slots.values())
            assert waiting == 20
            assert len(table.slots) <= 3
            # data ends a wait and leaves no entry behind
            for i, w in enumerate(writers):
                w.write(b"hello %d" % i)
            await _settle(lambda: len(results) == 20)
            assert sorted(results) == sorted(f"hello {i}" for i in range(20))
            await _settle(lambda: sum(len(s) for s in table.slots.values()) == 0)
            assert sum(len(s) for s in table.slots.values()) == 0
        finally:
            for w in writers:
                w.close()
            await listeners.close(grace=1.0)

    run(main())


def test_shared_timers_end_idle_sessions(run: Callable[[Awaitable[Any]], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_mod, "COARSE_MIN", 0.2)
    monkeypatch.setattr(connection_mod, "COARSE_GRAIN", 0.1)

    async def main() -> None:
        results: list[str] = []
        listeners, clients = await _idle_clients(5, 0.3, results)
        try:
            await _settle(lambda: len(results) == 5)
            assert results == ["timeout"] * 5
            table = connection_mod._deadlines_of(asyncio.get_running_loop())
            assert sum(len(s) for s in table.slots.values()) == 0
            # the server closed every connection
            for r, _ in clients:
                assert await asyncio.wait_for(r.read(), 5) == b""
        finally:
            for _, w in clients:
                w.close()
            await listeners.close(grace=1.0)

    run(main())


def test_short_timeouts_keep_their_own_precise_timer(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def main() -> None:
        results: list[str] = []
        listeners, clients = await _idle_clients(1, 0.2, results)
        try:
            await _settle(lambda: len(results) == 1)
            assert results == ["timeout"]
            table = connection_mod._deadlines_of(asyncio.get_running_loop())
            assert not table.slots
        finally:
            for _, w in clients:
                w.close()
            await listeners.close(grace=1.0)

    run(main())


def test_wait_input_wakes_on_data_or_on_the_callers_future(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def main() -> None:
        seen: list[object] = []
        wake_box: list[asyncio.Future[object]] = []
        ready = asyncio.Event()

        async def handler(conn: Connection) -> None:
            loop = asyncio.get_running_loop()
            wake: asyncio.Future[object] = loop.create_future()
            wake_box.append(wake)
            ready.set()
            # woken by the other source: no input consumed
            seen.append(await conn.wait_input(600.0, wake))
            # woken by data: it stays buffered for read()
            seen.append(await conn.wait_input(600.0, loop.create_future()))
            seen.append(await conn.read())
            # no input and no wake-up: the timeout ends the wait
            try:
                await conn.wait_input(0.1)
            except IdleTimeout:
                seen.append("timeout")

        listeners = Listeners(HOST, 0, None)
        await listeners.start(ListenerSpec(name="w", port=0, handler=handler))
        port = listeners.port_of("w")
        assert port is not None
        _, w = await asyncio.open_connection(HOST, port)
        try:
            await asyncio.wait_for(ready.wait(), 5)
            wake_box[0].set_result("changed")
            await _settle(lambda: len(seen) == 1)
            w.write(b"DONE\r\n")
            await _settle(lambda: len(seen) == 4)
            assert seen == [False, True, b"DONE\r\n", "timeout"]
        finally:
            w.close()
            await listeners.close(grace=1.0)

    run(main())
