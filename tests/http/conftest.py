"""Fixtures of the HTTP admin port tests.

Coroutine tests run on a fresh event loop each (``asyncio.run``), so no
plugin is needed.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest
from http_support import make_context

from dynamail.server.context import ServerContext


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**args))
        return True
    return None


@pytest.fixture
def ctx(tmp_path: Path) -> ServerContext:
    return make_context(tmp_path / "server")
