from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from dynamail.storage import FileAccountStore, FileMailStore

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def with_account(path: Path, fn: Callable[[FileAccountStore], Awaitable[T]], epoch: int = 1, crash: bool = False) -> T:
    """Open the account with ``epoch``, run ``fn``, close it — or, with
    ``crash``, release it as a crash would (no checkpoint, nothing sealed)."""

    async def main() -> T:
        store = await FileMailStore().open_account(path, epoch)
        try:
            return await fn(store)
        finally:
            await store.close(checkpoint=not crash)

    return asyncio.run(main())
