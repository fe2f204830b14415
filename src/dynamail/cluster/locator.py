"""Where does this account live, and may I open it?

Session code (IMAP, POP3, delivery, admin) asks exactly one question of the
cluster layer: ``async with locator.use(ref) as placement``.  The answer is
either :class:`Local` — this server owns the account, here is its open store
with the ownership epoch that fences its writes — or :class:`Relay` — another
member owns it; relay the session (or hand the delivery) to that member.
Session code never talks to the Controller itself.

The standalone locator below owns every account: it opens an account's store
on first use with an epoch one higher than the one recorded in storage, keeps
it open while sessions use it, and closes it after ``idle_release`` seconds
without users.  The cluster locator (``dynamail.cluster.member``) replaces it
in a cluster member, getting grants and epochs from the Controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dynamail.accounts import AccountRef
from dynamail.storage.api import AccountStore, FencedError, MailStore, StorageIOError


@dataclass(frozen=True, slots=True)
class Local:
    """This server owns the account: use ``store`` (opened with ``epoch``)."""

    ref: AccountRef
    store: AccountStore
    epoch: int


@dataclass(frozen=True, slots=True)
class Relay:
    """Member ``member`` owns the account; relay to ``host`` (its ports are
    its standard ports plus ``port_offset``)."""

    ref: AccountRef
    member: str
    host: str
    port_offset: int = 0


Placement = Local | Relay


class AccountUnavailable(Exception):
    """The account cannot be opened now (its owner failed and its lease has
    not yet expired, or no backend is ready).  Protocols answer with a
    temporary failure (IMAP ``NO [UNAVAILABLE]``, POP3 ``-ERR [SYS/TEMP]``,
    SMTP 451)."""


class AccountLocator(Protocol):
    def use(self, ref: AccountRef, *, relay_ok: bool = True) -> contextlib.AbstractAsyncContextManager[Placement]:
        """Hold the account for the duration of the ``async with`` block.
        With ``relay_ok=False`` the caller insists on a local open (used by
        the owner side of a relay); raises AccountUnavailable otherwise."""

    def open_accounts(self) -> list[AccountRef]:
        """Accounts this server has open now."""

    async def close(self) -> None: ...


@dataclass
class _Open:
    store: AccountStore
    epoch: int
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    fenced: bool = False


def fenced_cause(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, a FencedError (a
    session may turn it into its own end-of-session exception)."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 16:
        if isinstance(cur, FencedError):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


class StandaloneLocator:
    """Owns every account; a local epoch counter kept in storage."""

    def __init__(
        self,
        mailstore: MailStore,
        account_path: Callable[[AccountRef], Path],
        idle_release: float = 300.0,
    ) -> None:
        self._mailstore = mailstore
        self._account_path = account_path
        self._idle_release = idle_release
        self._open: dict[AccountRef, _Open] = {}
        self._locks: dict[AccountRef, asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None

    @property
    def mailstore(self) -> MailStore:
        return self._mailstore

    def account_path(self, ref: AccountRef) -> Path:
        """Where the account's mail lives (its domain's directory)."""
        return self._account_path(ref)

    def open_accounts(self) -> list[AccountRef]:
        return list(self._open)

    async def _acquire(self, ref: AccountRef) -> _Open:
        lock = self._locks.setdefault(ref, asyncio.Lock())
        async with lock:
            entry = self._open.get(ref)
            if entry is None:
                path = self._account_path(ref)
                loop = asyncio.get_running_loop()
                epoch = await loop.run_in_executor(None, self._mailstore.recorded_epoch, path) + 1
                try:
                    store = await self._mailstore.open_account(path, epoch)
                except StorageIOError as exc:  # a full file system, say: try later
                    raise AccountUnavailable(f"{ref}: {exc}") from None
                entry = _Open(store=store, epoch=epoch)
                self._open[ref] = entry
                self._start_reaper()
            entry.users += 1
            entry.last_used = time.monotonic()
            return entry

    @contextlib.asynccontextmanager
    async def use(self, ref: AccountRef, *, relay_ok: bool = True) -> AsyncIterator[Placement]:
        entry = await self._acquire(ref)
        try:
            yield Local(ref=ref, store=entry.store, epoch=entry.epoch)
        except BaseException as exc:
            if fenced_cause(exc):
                # another writer took the account: forget this handle so the
                # next use re-opens the account with a fresh epoch
                entry.fenced = True
                if self._open.get(ref) is entry:
                    del self._open[ref]
            raise
        finally:
            entry.users -= 1
            entry.last_used = time.monotonic()
            if entry.fenced and entry.users == 0:
                with contextlib.suppress(Exception):
                    await entry.store.close()

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while self._open:
            await asyncio.sleep(min(self._idle_release, 30.0))
            now = time.monotonic()
            for ref, entry in list(self._open.items()):
                if entry.users == 0 and now - entry.last_used >= self._idle_release:
                    lock = self._locks.setdefault(ref, asyncio.Lock())
                    async with lock:
                        if entry.users == 0 and self._open.get(ref) is entry:
                            del self._open[ref]
                            await entry.store.close()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for ref, entry in list(self._open.items()):
            del self._open[ref]
            await entry.store.close()
