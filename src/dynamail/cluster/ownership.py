"""The cluster locator: account ownership as a cluster member sees it.

``use(ref)`` for an account of a shared domain asks the Controller for a
grant.  If this member is the owner, it opens the account's store with the
grant's epoch and answers :class:`Local`; otherwise :class:`Relay` to the
owner.  Accounts of local domains are served by the standalone locator.

Invariants:

* A store is open here only under a grant whose lease this member holds:
  every write through the store first checks ``may_write()`` (the member's
  lease, measured on its monotonic clock, has at least the safety margin
  left) and raises FencedError otherwise; below that, the storage engine
  refuses any write carrying an epoch lower than the recorded one.
* When the lease is lost, :meth:`ClusterLocator.drop_all` closes every
  store at once (sessions then end on FencedError and clients reconnect to
  wherever the account moves).
* One store per account at a time: a store being closed (which finishes
  its pending writes and seals its files) is waited for before the account
  is opened here again — under the same grant epoch, which the storage
  fence cannot tell apart, two stores would write the same files.
* An account unused for ``idle_release`` seconds is closed and released to
  the Controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dynamail.accounts import AccountRef
from dynamail.cluster.locator import AccountUnavailable, Local, Placement, Relay, fenced_cause
from dynamail.net.listener import current_connection
from dynamail.storage.api import FencedError, StorageIOError

log = logging.getLogger("dynamail.cluster")

#: Set while serving a hand-off from another member: never relay again.
LOCAL_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("dynamail_local_only", default=False)

_STORE_WRITES = frozenset({"append", "create_mailbox", "delete_mailbox", "rename_mailbox", "subscribe"})
_VIEW_WRITES = frozenset({"store", "expunge", "copy", "move"})
_UNGUARDED = frozenset({"close", "wait_for_change"})  # closing, and IDLE's wait, always work


def account_key(ref: AccountRef) -> str:
    return f"{ref.domain}/{ref.name}"


MOVED = "the account is no longer open on this member (it is moving to another server)"


class _GuardedView:
    def __init__(self, view: Any, store: GuardedStore) -> None:
        self._view = view
        self._guard = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._view, name)
        if name in _VIEW_WRITES:
            async def guarded(*a: Any, **kw: Any) -> Any:
                self._guard.check(write=True)
                return await attr(*a, **kw)
            return guarded
        if name not in _UNGUARDED and inspect.iscoroutinefunction(attr):
            async def read(*a: Any, **kw: Any) -> Any:
                self._guard.check(write=False)
                return await attr(*a, **kw)
            return read
        return attr


class GuardedStore:
    """An AccountStore that refuses writes once the member's lease is not
    safely valid, and every operation (reads too) once the member dropped
    the account: a session still holding it gets the temporary failure of
    a moving account (FencedError), never an error of a closed store."""

    def __init__(self, store: Any, may_write: Callable[[], bool]) -> None:
        self._store = store
        self._may_write = may_write
        self.epoch = store.epoch
        self.dropped = False

    def check(self, *, write: bool) -> None:
        if self.dropped:
            raise FencedError(MOVED)
        if write and not self._may_write():
            raise FencedError("this member's ownership lease has lapsed")

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name in _STORE_WRITES:
            async def guarded(*a: Any, **kw: Any) -> Any:
                self.check(write=True)
                return await attr(*a, **kw)
            return guarded
        if name == "select":
            async def select(*a: Any, **kw: Any) -> Any:
                self.check(write=False)
                return _GuardedView(await attr(*a, **kw), self)
            return select
        if name not in _UNGUARDED and inspect.iscoroutinefunction(attr):
            async def read(*a: Any, **kw: Any) -> Any:
                self.check(write=False)
                return await attr(*a, **kw)
            return read
        return attr


@dataclass(frozen=True, slots=True)
class GrantInfo:
    owner: str
    epoch: int
    controller_epoch: int
    address: tuple[str, int, int]


@dataclass
class _Open:
    store: Any
    raw: Any
    epoch: int
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    # (task, client connection) of every session using it: a drain past its
    # grace period says goodbye to them and ends them
    sessions: list[tuple[Any, Any]] = field(default_factory=list)


IMAP_GOODBYE = b"* BYE [UNAVAILABLE] account moving to another server, please reconnect\r\n"
POP3_GOODBYE = b"-ERR [SYS/TEMP] account moving to another server, please reconnect\r\n"


def goodbye_for(listener: str) -> bytes:
    if listener.startswith("imap"):
        return IMAP_GOODBYE
    if listener.startswith("pop3"):
        return POP3_GOODBYE
    return b""


RequestOpen = Callable[[AccountRef, int, bool], Awaitable[GrantInfo]]


class ClusterLocator:
    def __init__(self, standalone: Any, me: str, request_open: RequestOpen,
                 release: Callable[[AccountRef, int], None], may_write: Callable[[], bool],
                 idle_release: float) -> None:
        self.standalone = standalone
        self.me = me
        self._request_open = request_open
        self._release = release
        self._may_write = may_write
        self._idle_release = idle_release
        self._open: dict[AccountRef, _Open] = {}
        self._locks: dict[AccountRef, asyncio.Lock] = {}
        self._closing: dict[AccountRef, asyncio.Future[None]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.draining = False
        self.all_shared = False  # the workers of one server: no account is local
        self._drain_task: asyncio.Task[None] | None = None

    # -- what the member reports -----------------------------------------
    def open_accounts(self) -> list[AccountRef]:
        return list(self._open) + list(self.standalone.open_accounts())

    def held(self) -> list[tuple[str, int]]:
        return [(account_key(r), e.epoch) for r, e in self._open.items()]

    # -- use ---------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def use(self, ref: AccountRef, *, relay_ok: bool = True) -> AsyncIterator[Placement]:
        if not ref.shared and self.all_shared:
            ref = AccountRef(ref.domain, ref.name, True)
        if not ref.shared:
            async with self.standalone.use(ref, relay_ok=relay_ok) as p:
                yield p
            return
        relay_ok = relay_ok and not LOCAL_ONLY.get()
        placement = await self._acquire(ref, relay_ok)
        if isinstance(placement, Relay):
            yield placement
            return
        entry = self._open.get(ref)
        token = (asyncio.current_task(), current_connection.get())
        if entry is not None:
            entry.sessions.append(token)
        try:
            yield placement
        except BaseException as exc:
            if entry is not None and fenced_cause(exc) and self._may_write() and self._open.get(ref) is entry:
                # the storage refused this member's epoch: a newer owner has
                # the account (this grant is stale); close it here and tell
                # the Controller, so the next use goes to the newer owner
                log.warning("%s: fenced by a newer owner; closing it here", ref)
                await self.drop(ref, release=True)
            raise
        finally:
            if entry is not None:
                entry.users -= 1
                entry.last_used = time.monotonic()
                with contextlib.suppress(ValueError):
                    entry.sessions.remove(token)
                if self.draining and entry.users <= 0 and self._open.get(ref) is entry:
                    await self.drop(ref, release=True)  # draining: released as its last session ends

    async def _acquire(self, ref: AccountRef, relay_ok: bool) -> Placement:
        entry = self._open.get(ref)
        if entry is not None and self._may_write():
            entry.users += 1
            entry.last_used = time.monotonic()
            return Local(ref=ref, store=entry.store, epoch=entry.epoch)
        lock = self._locks.setdefault(ref, asyncio.Lock())
        async with lock:
            entry = self._open.get(ref)
            if entry is not None and self._may_write():
                entry.users += 1
                entry.last_used = time.monotonic()
                return Local(ref=ref, store=entry.store, epoch=entry.epoch)
            closing = self._closing.get(ref)
            if closing is not None:  # the previous store here finishes its writes first
                await asyncio.wait([closing])
            path = self.standalone.account_path(ref)
            loop = asyncio.get_running_loop()
            recorded = await loop.run_in_executor(None, self.standalone.mailstore.recorded_epoch, path)
            grant = await self._request_open(ref, recorded, not relay_ok)
            if grant.owner != self.me:
                if not relay_ok:
                    raise AccountUnavailable(f"{ref} is open on {grant.owner}")
                host, offset, _cport = grant.address
                return Relay(ref=ref, member=grant.owner, host=host, port_offset=offset)
            if not self._may_write():
                raise AccountUnavailable("this member holds no valid lease")
            try:
                raw = await self.standalone.mailstore.open_account(path, grant.epoch)
            except (FencedError, StorageIOError) as exc:
                raise AccountUnavailable(f"{ref}: {exc}") from None
            entry = _Open(store=GuardedStore(raw, self._may_write), raw=raw, epoch=grant.epoch)
            self._open[ref] = entry
            self._start_reaper()
            entry.users += 1
            return Local(ref=ref, store=entry.store, epoch=entry.epoch)

    # -- releasing -----------------------------------------------------------
    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while self._open:
            await asyncio.sleep(min(self._idle_release / 2, 5.0))
            now = time.monotonic()
            for ref, entry in list(self._open.items()):
                if entry.users <= 0 and now - entry.last_used >= self._idle_release:
                    await self.drop(ref, release=True)

    # -- active drain ------------------------------------------------------------
    def drain(self, grace: float) -> None:
        """Release every open account: idle ones at once, busy ones as their
        last session ends; after ``grace`` seconds the remaining sessions are
        told goodbye (IMAP ``* BYE [UNAVAILABLE]``, POP3 ``-ERR [SYS/TEMP]``)
        and ended, and their accounts released, so clients reconnect and the
        Controller places the accounts on another backend."""
        self.stop_drain()
        self.draining = True
        self._drain_task = asyncio.get_running_loop().create_task(self._drain(grace))

    def stop_drain(self) -> None:
        self.draining = False
        if self._drain_task is not None and not self._drain_task.done():
            self._drain_task.cancel()
        self._drain_task = None

    async def _drain(self, grace: float) -> None:
        n = len(self._open)
        for ref, entry in list(self._open.items()):
            if entry.users <= 0:
                await self.drop(ref, release=True)
        log.warning("draining: released %d idle accounts, %d busy remain",
                    n - len(self._open), len(self._open))
        deadline = time.monotonic() + grace
        while self._open and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for ref, entry in list(self._open.items()):
            ending = set()
            for task, conn in list(entry.sessions):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        data = goodbye_for(str(getattr(conn, "listener", "")))
                        if data:
                            conn.write(data)
                            await asyncio.wait_for(conn.drain(), 1.0)
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
                    ending.add(task)
            if ending:  # let them unwind (a write in flight finishes) before the store closes
                await asyncio.wait(ending, timeout=2.0)
            await self.drop(ref, release=True)
        log.warning("drained: no account open here")

    async def drop(self, ref: AccountRef, *, release: bool) -> None:
        entry = self._open.pop(ref, None)
        if entry is None:
            return
        if isinstance(entry.store, GuardedStore):
            entry.store.dropped = True  # sessions still using it get FencedError
        closing = asyncio.ensure_future(entry.raw.close())
        self._closing[ref] = closing
        closing.add_done_callback(lambda done: self._closed(ref, done))
        with contextlib.suppress(Exception):
            await asyncio.shield(closing)  # a cancelled drop leaves the close running
        if release:
            self._release(ref, entry.epoch)

    def _closed(self, ref: AccountRef, done: asyncio.Future[None]) -> None:
        if self._closing.get(ref) is done:
            del self._closing[ref]
        if not done.cancelled():
            done.exception()  # retrieved: drop() ignores a failed close, as before

    async def drop_key(self, key: str, epoch: int) -> None:
        """The Controller revoked ``key`` (a newer owner holds it)."""
        for ref, entry in list(self._open.items()):
            if account_key(ref) == key and entry.epoch <= epoch:
                await self.drop(ref, release=False)

    async def drop_all(self) -> None:
        """The lease is lost: stop touching every shared account now."""
        if self._open:
            log.warning("lease lost: closing %d shared accounts", len(self._open))
        for ref in list(self._open):
            await self.drop(ref, release=False)

    async def close(self) -> None:
        self.stop_drain()
        if self._reaper is not None:
            self._reaper.cancel()
        for ref in list(self._open):
            await self.drop(ref, release=True)
        await self.standalone.close()
