"""The ``run`` fixture of the I/O-layer tests: each test runs under the
standard asyncio loop and, where installed, uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
    uvloop = None  # type: ignore[assignment]

LOOPS = ["asyncio"] + (["uvloop"] if uvloop is not None else [])


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    def runner(coro: Awaitable[Any]) -> Any:
        async def wrap() -> Any:
            return await asyncio.wait_for(coro, 30)

        loop = uvloop.new_event_loop() if request.param == "uvloop" else asyncio.new_event_loop()
        try:
            return loop.run_until_complete(wrap())
        finally:
            loop.close()

    return runner
