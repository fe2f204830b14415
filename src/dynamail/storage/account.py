"""An account's store: mailbox list, group commit, fencing.

Layout of an account directory::

    epoch            the owner's epoch (decimal), replaced atomically
    mailboxes.json   mailbox names → id, UIDVALIDITY, special use; subscriptions
    mail/<id>/       one directory per mailbox (``mailbox.py``): data.g, index.g

Mailbox directories are named by a number, never by the mailbox name, so a
rename (with all its children) is one atomic replacement of
``mailboxes.json``.

**Group commit** (``commit.py``).  Every change (append, flag store,
expunge, copy, move, compaction) becomes an operation in a queue.  One committer task takes all
queued operations at once, decides their effects on the loop thread (UIDs,
MODSEQs, resulting flags, against the index plus the earlier operations of
the same batch), then runs one job on the account's I/O thread that encodes
the records, re-checks the epoch, writes each touched data file once,
fdatasyncs each once, and re-checks the epoch.  Only then are the effects
applied to the in-memory index, the change feed told, and the callers
answered.  Operations arriving meanwhile form the next batch: with N
concurrent writers one fsync serves up to N messages.

**Fencing.**  ``epoch`` holds the highest epoch that opened the account.
Every write job reads it before writing and again after the fsync, and fails
with FencedError when it is no longer this store's epoch; every record
written carries the writer's epoch.  See docs/storage.md for the remaining
race and how it is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamail import names
from dynamail.durable import atomic_write, fsync_dir, make_dirs, remove_stale_temporaries
from dynamail.storage.api import (
    AppendRequest,
    CopyResult,
    FencedError,
    MailboxExists,
    MailboxListing,
    MailboxStatus,
    NoSuchMailbox,
    StorageError,
)
from dynamail.storage.commit import (
    Op,
    apply_plans,
    close_spooled,
    encode_all,
    plan_batch,
    write_plans,
)
from dynamail.storage.compaction import (
    CATCH_UP_HOLD,
    Abort,
    CompactionAborted,
    Job,
    bulk,
    catch_up,
    switch,
    take_snapshot,
)
from dynamail.storage.feed import MailboxFeed
from dynamail.storage.mailbox import (
    MailboxState,
    create_generation,
    read_summary,
)

log = logging.getLogger(__name__)

META_FILE = "mailboxes.json"
EPOCH_FILE = "epoch"
MAIL_DIR = "mail"
SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
SEPARATOR = "/"
# Messages up to this total size are parsed on the loop thread when appended
# (about 30 µs for 4 KiB, 0.2 ms for 100 KiB on an idle core: less than the
# two thread hand-offs a reader thread costs, and parsing holds the GIL on
# any thread); larger ones on a reader thread.
INLINE_PARSE = 128 * 1024
# Closing an account compacts a mailbox whose log is more than half dead
# bytes (and at least COMPACT_MIN_DEAD), if the log is not too big to
# rewrite while the account is being released.
COMPACT_MIN_DEAD = 1 << 20
# While an account is open, a mailbox is compacted in the background when
# expunged bytes exceed this share of its log (and COMPACT_MIN_DEAD).
COMPACT_SHARE = 0.25
# A data file replaced by compaction is closed this long after the switch
# (reads already handed to a reader thread finish first) once no ghost uses it.
RETIRED_GRACE = 30.0
COMPACT_AT_CLOSE_MAX = 256 << 20

# Reads of message data run here (several at once); writes run on the
# account's own single I/O thread.
_read_pool: ThreadPoolExecutor | None = None


def read_pool() -> ThreadPoolExecutor:
    global _read_pool
    if _read_pool is None:
        _read_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dynamail-read")
    return _read_pool


def _forget_pool_in_child() -> None:
    # a forked child has none of the parent's threads: start afresh
    global _read_pool
    _read_pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)
_view_ids = itertools.count(1)


def read_epoch(path: Path) -> int:
    """The recorded epoch (0 if none).  Read on every write, twice: plain
    open/read/close (no file object; a tenth of the cost), and deliberately
    not cached by a stat() check — on NFS open() revalidates the file
    (close-to-open consistency) where stat() may answer from the attribute
    cache for seconds."""
    try:
        fd = os.open(os.path.join(path, EPOCH_FILE), os.O_RDONLY)
    except OSError:
        return 0
    try:
        return int(os.read(fd, 64).strip() or 0)
    except (OSError, ValueError):
        return 0
    finally:
        os.close(fd)


@dataclass(slots=True)
class MailboxMeta:
    id: int
    uidvalidity: int
    special_use: str | None = None


def _now_parts(when: datetime.datetime | None) -> tuple[int, int]:
    if when is None:
        when = datetime.datetime.now(datetime.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    off = when.utcoffset() or datetime.timedelta(0)
    return int(when.timestamp()), int(off.total_seconds() // 60)


class FileAccountStore:
    """``AccountStore`` on files; see the module docstring."""

    def __init__(self, path: Path, epoch: int) -> None:
        self.path = path
        self.epoch = epoch
        self.quota: tuple[int | None, int | None] = (None, None)  # (bytes, messages)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dynamail-store")
        self._meta: dict[str, MailboxMeta] = {}
        self._subscribed: set[str] = set()
        self._next_id = 1
        self._last_uidvalidity = 0
        self._states: dict[int, MailboxState] = {}
        self._feeds: dict[int, MailboxFeed] = {}
        self._loading: dict[int, asyncio.Future[MailboxState]] = {}
        self._pending: list[Op] = []
        self._committer: asyncio.Task[None] | None = None
        self._meta_lock = asyncio.Lock()
        self._listeners: list[asyncio.Queue[str]] = []
        self._fenced = False
        self._closed = False
        # descriptors of replaced generations (reads in flight, ghosts) and
        # when they were replaced; closed by _reap_retired
        self._retired: list[tuple[int, float]] = []
        self._compactions: dict[int, asyncio.Task[None]] = {}  # scheduled in the background
        self._compact_locks: dict[int, asyncio.Lock] = {}
        self._jobs: list[list[Job]] = []  # compactions in progress (to abort at close)
        self._bg: ThreadPoolExecutor | None = None  # compaction's bulk copies
        self._closing = False
        # tests: awaited by a compaction after its bulk phase ("bulk") and
        # before its switch ("switch")
        self._compact_hook: Callable[[str], Awaitable[None]] | None = None
        self._canon_cache: dict[str, str] = {}
        # (message bytes, messages) of mailboxes not loaded, from their
        # checkpoint headers; they cannot change while not loaded
        self._summaries: dict[int, tuple[int, int]] = {}

    # -- opening ---------------------------------------------------------------
    def open_sync(self) -> None:
        """Record the epoch and load the mailbox list (I/O thread)."""
        make_dirs(self.path)
        recorded = read_epoch(self.path)
        if recorded > self.epoch:
            raise FencedError(f"account {self.path} is owned by epoch {recorded} > {self.epoch}")
        if recorded < self.epoch:
            atomic_write(self.path / EPOCH_FILE, f"{self.epoch}\n".encode())
        # only the owner may clean up (a temporary may be the owner's write in progress)
        remove_stale_temporaries(self.path)
        mail = self.path / MAIL_DIR
        if not mail.is_dir():
            make_dirs(mail)
        meta_file = self.path / META_FILE
        if meta_file.exists():
            doc = json.loads(meta_file.read_text("utf-8"))
            self._meta = {n: MailboxMeta(m["id"], m["uidvalidity"], m.get("special_use")) for n, m in doc["mailboxes"].items()}
            self._subscribed = set(doc.get("subscribed", []))
            self._next_id = int(doc.get("next_id", 1))
            self._last_uidvalidity = int(doc.get("last_uidvalidity", 0))
        if "INBOX" not in self._meta:
            meta = self._new_meta(None)
            create_generation(self._dir(meta.id), 1, meta.uidvalidity, 1, 0, self.epoch)
            fsync_dir(mail)
            self._meta["INBOX"] = meta
            self._subscribed.add("INBOX")
            self._save_meta()
        live = {str(m.id) for m in self._meta.values()}
        removed = False
        for entry in mail.iterdir():
            if entry.name not in live:
                shutil.rmtree(entry, ignore_errors=True)
                removed = True
        if removed:
            fsync_dir(mail)

    def _dir(self, mbox_id: int) -> Path:
        return self.path / MAIL_DIR / str(mbox_id)

    def _new_meta(self, special_use: str | None) -> MailboxMeta:
        uv = max(int(time.time()), self._last_uidvalidity + 1) & 0xFFFFFFFF
        self._last_uidvalidity = uv
        meta = MailboxMeta(self._next_id, uv, special_use)
        self._next_id += 1
        return meta

    def _save_meta(self) -> None:
        self._check_epoch()
        doc = {
            "version": 1,
            "next_id": self._next_id,
            "last_uidvalidity": self._last_uidvalidity,
            "mailboxes": {n: {"id": m.id, "uidvalidity": m.uidvalidity, "special_use": m.special_use} for n, m in sorted(self._meta.items())},
            "subscribed": sorted(self._subscribed),
        }
        atomic_write(self.path / META_FILE, json.dumps(doc, indent=1).encode("utf-8"))
        self._check_epoch()

    def _check_epoch(self) -> None:
        recorded = read_epoch(self.path)
        if recorded != self.epoch:
            self._fenced = True
            raise FencedError(f"account {self.path}: epoch {self.epoch} superseded by {recorded}")

    async def _run_io(self, fn: Any, *args: Any) -> Any:
        if self._closed:
            raise StorageError("account store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    # -- mailbox states --------------------------------------------------------
    def _canon(self, name: str) -> str:
        got = self._canon_cache.get(name)
        if got is None:
            got = names.mailbox_name(name, SEPARATOR)
            if len(self._canon_cache) < 10000:
                self._canon_cache[name] = got
        return got

    def _lookup(self, name: str) -> tuple[str, MailboxMeta]:
        canon = self._canon(name)
        meta = self._meta.get(canon)
        if meta is None:
            raise NoSuchMailbox(f"no mailbox {name!r}")
        return canon, meta

    async def _state(self, meta: MailboxMeta) -> MailboxState:
        st = self._states.get(meta.id)
        if st is not None:
            return st
        fut = self._loading.get(meta.id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._loading[meta.id] = fut
            try:
                st = await self._run_io(self._load_sync, meta)
                self._states[meta.id] = st
                self._feeds.setdefault(meta.id, MailboxFeed())
                fut.set_result(st)
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()
                raise
            finally:
                del self._loading[meta.id]
            return st
        return await fut

    def _load_sync(self, meta: MailboxMeta) -> MailboxState:
        st = MailboxState(self._dir(meta.id), meta.uidvalidity, writable=True, fence=self._check_epoch)
        st.open()
        if st.rebuilt or st.tail_records > 64:
            self._checkpoint_sync(st, st.checkpoint_bytes())
        return st

    def _checkpoint_sync(self, st: MailboxState, blob: bytes) -> None:
        st.write_checkpoint(blob)
        st.tail_records = 0
        st.tail_bytes = 0

    def feed(self, mbox_id: int) -> MailboxFeed:
        return self._feeds.setdefault(mbox_id, MailboxFeed())

    def _notify(self, name_of_id: int) -> None:
        for name, meta in self._meta.items():
            if meta.id == name_of_id:
                for q in self._listeners:
                    q.put_nowait(name)
                break

    # -- group commit ------------------------------------------------------
    async def _submit(self, op: Op) -> Any:
        if self._fenced:
            raise FencedError(f"account {self.path}: epoch {self.epoch} has been superseded")
        if self._closed:
            raise StorageError("account store is closed")
        self._pending.append(op)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(self._commit_loop())
        return await op.fut

    async def _commit_loop(self) -> None:
        while self._pending:
            batch: list[Op] = []
            # compaction runs alone; everything else shares one batch
            if self._pending[0].kind == "compact":
                batch = [self._pending.pop(0)]
            else:
                while self._pending and self._pending[0].kind != "compact":
                    batch.append(self._pending.pop(0))
            for op in batch:
                op.taken = True
            try:
                if batch[0].kind == "compact":
                    await self._do_compact(batch[0])
                else:
                    await self._commit(batch)
            except BaseException as exc:  # answer every caller, whatever happened
                if isinstance(exc, FencedError):
                    self._fenced = True
                answer: Exception
                if isinstance(exc, StorageError):
                    answer = exc
                else:  # OSError (disk full, I/O error) and anything unexpected
                    answer = StorageError(f"storage write failed: {exc!r}")
                    answer.__cause__ = exc
                for op in batch:
                    if not op.fut.done():
                        op.fut.set_exception(answer)
                if not isinstance(exc, Exception):
                    raise
            for op in batch:  # the batch's I/O is over (not so when cancelled above)
                if op.cleanup is not None:
                    op.cleanup()

    async def _commit(self, batch: list[Op]) -> None:
        plans, effects = plan_batch(batch, self._states, self.epoch, self.quota, self._usage)
        if plans:
            results = await self._run_io(write_plans, plans, self.epoch, self._check_epoch)
            apply_plans(plans, results, self.epoch, self.feed)
            for mbox_id, plan in plans.items():
                self._notify(mbox_id)
                if any(item[0] == "expunge" for item in plan.items):
                    self._maybe_compact(mbox_id, plan.state)
        for op, value in effects:
            if not op.fut.done():
                op.fut.set_result(value)
        self._reap_retired()
        # checkpoints are written between batches, after the callers are answered
        for plan in plans.values():
            if plan.state.needs_checkpoint():
                blob = plan.state.checkpoint_bytes()
                await self._run_io(self._checkpoint_sync, plan.state, blob)

    def _usage(self) -> tuple[int, int]:
        """(bytes, messages) over the loaded mailboxes and the known summaries
        of the others (exact once ``_complete_usage`` has run)."""
        b = m = 0
        for st in self._states.values():
            b += st.total_size
            m += len(st.cols["uid"])
        for mbox_id, (sb, sm) in self._summaries.items():
            if mbox_id not in self._states:
                b += sb
                m += sm
        return b, m

    async def _complete_usage(self) -> None:
        """Make ``_usage`` exact: read the checkpoint header of every mailbox
        neither loaded nor summarised yet; load those whose checkpoint does
        not cover their whole log (after a crash)."""
        missing = [m for m in self._meta.values() if m.id not in self._states and m.id not in self._summaries]
        if not missing:
            return

        def work() -> list[tuple[int, tuple[int, int] | None]]:
            return [(m.id, read_summary(self._dir(m.id))) for m in missing]

        for (mbox_id, got), meta in zip(await self._run_io(work), missing, strict=True):
            if got is not None:
                self._summaries[mbox_id] = got
            elif mbox_id not in self._states:
                await self._state(meta)

    # -- compaction ----------------------------------------------------------
    async def compact(self, name: str) -> int:
        """Rewrite a mailbox without its expunged messages as a new generation;
        returns the bytes reclaimed."""
        _canon, meta = self._lookup(name)
        await self._state(meta)
        return await self._compact_mailbox(meta.id)

    def _maybe_compact(self, mbox_id: int, st: MailboxState) -> None:
        """Schedule a background compaction when expunged bytes exceed
        COMPACT_SHARE of the log and COMPACT_MIN_DEAD (after a batch that
        expunged something)."""
        lock = self._compact_locks.get(mbox_id)
        if mbox_id in self._compactions or self._closing or self._fenced or (lock is not None and lock.locked()):
            return
        dead = st.data_size - st.live_bytes()
        if dead > COMPACT_MIN_DEAD and dead > st.data_size * COMPACT_SHARE:
            task = asyncio.get_running_loop().create_task(self._background_compact(mbox_id))
            self._compactions[mbox_id] = task

    async def _background_compact(self, mbox_id: int) -> None:
        try:
            await self._compact_mailbox(mbox_id)
        except CompactionAborted:
            log.debug("compaction of %s/%s stopped (account closing or mailbox gone)", self.path, mbox_id)
        except (StorageError, OSError) as exc:
            log.warning("compaction of %s/%s failed: %r", self.path, mbox_id, exc)
        finally:
            if self._compactions.get(mbox_id) is asyncio.current_task():
                del self._compactions[mbox_id]

    async def _compact_mailbox(self, mbox_id: int) -> int:
        """Bulk and catch-up in the background, then the switch as an
        exclusive batch of the committer (``compaction.py``); one at a time
        per mailbox."""
        lock = self._compact_locks.setdefault(mbox_id, asyncio.Lock())
        async with lock:
            return await self._compact_locked(mbox_id)

    async def _compact_locked(self, mbox_id: int) -> int:
        st = self._states.get(mbox_id)
        if st is None:
            raise NoSuchMailbox("the mailbox was deleted")
        if self._closed or self._fenced:
            raise StorageError("account store is closed")
        loop = asyncio.get_running_loop()
        if self._bg is None:
            self._bg = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dynamail-compact")
        snap = take_snapshot(st)
        src_fd = os.dup(st.fd)  # the job's from here on
        box: list[Job] = []
        abort = Abort()
        self._jobs.append(box)
        op: Op | None = None
        try:
            job = await asyncio.wrap_future(self._bg.submit(bulk, st.directory, src_fd, snap, self.epoch, self._check_epoch, box, abort))
            if self._compact_hook is not None:
                await self._compact_hook("bulk")
            for _round in range(8):
                if self._states.get(mbox_id) is not st:
                    raise CompactionAborted
                if st.data_size - job.copied_to <= CATCH_UP_HOLD:
                    break
                await asyncio.wrap_future(self._bg.submit(catch_up, job, st.data_size))
            if self._compact_hook is not None:
                await self._compact_hook("switch")
            op = Op("compact", mbox_id, loop.create_future(), {"job": job, "state": st})
            return int(await self._submit(op))
        except BaseException:
            abort.requested = True
            if op is None or op in self._pending or not op.taken:
                # the committer never got it: remove it, and discard the job
                # on the compaction thread, after whatever it still runs
                # (a cancelled caller does not stop the thread)
                if op is not None and op in self._pending:
                    self._pending.remove(op)
                self._discard_later(box)
            raise
        finally:
            self._jobs.remove(box)

    def _discard_later(self, box: list[Job]) -> None:
        def discard() -> None:
            for job in box:
                job.discard()

        try:
            if self._bg is None:
                raise RuntimeError
            self._bg.submit(discard)
        except RuntimeError:  # the thread is shut down: nothing runs there any more
            discard()

    async def _compact_wasteful(self) -> None:
        """Compact mailboxes whose logs are mostly dead bytes (expunged
        messages, flag history) and that no view has open."""
        for name, meta in list(self._meta.items()):
            st = self._states.get(meta.id)
            if st is None or self.feed(meta.id).views or st.data_size > COMPACT_AT_CLOSE_MAX:
                continue
            dead = st.data_size - st.live_bytes()
            if dead > COMPACT_MIN_DEAD and dead > st.data_size // 2:
                with contextlib.suppress(StorageError, CompactionAborted):
                    await self.compact(name)

    def _reap_retired(self) -> None:
        """Close replaced data files that no ghost refers to, once reads that
        started before the switch are surely over (the unlinked file's space
        is freed then)."""
        if not self._retired:
            return
        now = time.monotonic()
        used = {g.fd for st in self._states.values() for g in st.ghosts.values()}
        keep = []
        for fd, when in self._retired:
            if fd not in used and now - when > RETIRED_GRACE:
                with contextlib.suppress(OSError):
                    os.close(fd)
            else:
                keep.append((fd, when))
        self._retired = keep

    async def _do_compact(self, op: Op) -> None:
        """The switch: the committer runs nothing else meanwhile."""
        job: Job = op.args["job"]
        st = self._states.get(op.mbox)
        if st is None or st is not op.args["state"] or self._closed:
            job.discard()  # no thread uses it: only the switch would
            raise NoSuchMailbox("the mailbox was deleted")
        # switch() discards the job itself if it fails before the switch
        new_fd, offsets, size, last_off, last_crc = await self._run_io(switch, job, st, self.epoch, self._check_epoch)
        old_fd, old_size = st.fd, st.data_size
        for ghost in st.ghosts.values():  # readable through the old file until views refresh
            if ghost.fd < 0:
                ghost.fd = old_fd
        st.gen, st.fd = job.gen, new_fd
        st.cols["off"] = offsets
        st.data_size, st.last_rec_off, st.last_crc = size, last_off, last_crc
        st.tail_records = st.tail_bytes = 0
        st.max_epoch = self.epoch
        self._retired.append((old_fd, time.monotonic()))
        self._reap_retired()
        op.fut.set_result(old_size - size)

    # -- AccountStore ----------------------------------------------------------
    async def list_mailboxes(self) -> list[MailboxListing]:
        out = []
        for name in sorted(self._meta, key=lambda n: (n != "INBOX", n)):
            prefix = name + SEPARATOR
            children = any(other.startswith(prefix) for other in self._meta)
            out.append(MailboxListing(name, self._meta[name].special_use, name in self._subscribed, children))
        return out

    def subscriptions(self) -> list[str]:
        """Subscribed names, existing or not (RFC 9051 §6.3.9)."""
        return sorted(self._subscribed)

    async def create_mailbox(self, name: str, special_use: str | None = None) -> None:
        canon = self._canon(name)
        if special_use is not None and special_use not in SPECIAL_USES:
            raise StorageError(f"unknown special use {special_use}")
        async with self._meta_lock:
            if canon in self._meta:
                raise MailboxExists(f"mailbox {canon!r} exists")
            meta = self._new_meta(special_use)

            def work() -> None:
                self._check_epoch()
                create_generation(self._dir(meta.id), 1, meta.uidvalidity, 1, 0, self.epoch)
                fsync_dir(self.path / MAIL_DIR)
                self._meta[canon] = meta
                try:
                    self._save_meta()
                except BaseException:
                    del self._meta[canon]
                    raise

            await self._run_io(work)

    async def delete_mailbox(self, name: str) -> None:
        async with self._meta_lock:
            canon, meta = self._lookup(name)
            if canon == "INBOX":
                raise StorageError("INBOX cannot be deleted")
            st = self._states.pop(meta.id, None)

            def work() -> None:
                del self._meta[canon]
                try:
                    self._save_meta()
                except BaseException:
                    self._meta[canon] = meta
                    raise
                if st is not None:
                    st.close()
                shutil.rmtree(self._dir(meta.id), ignore_errors=True)
                fsync_dir(self.path / MAIL_DIR)

            try:
                await self._run_io(work)
            except BaseException:
                if st is not None and canon in self._meta:
                    self._states[meta.id] = st
                raise
            self._summaries.pop(meta.id, None)
            feed = self._feeds.pop(meta.id, None)
            if feed is not None:
                feed.deleted = True
                feed.wake_all()
            for q in self._listeners:
                q.put_nowait(canon)

    async def rename_mailbox(self, old: str, new: str) -> None:
        async with self._meta_lock:
            src, meta = self._lookup(old)
            dst = self._canon(new)
            if dst in self._meta:
                raise MailboxExists(f"mailbox {dst!r} exists")
            if dst == src or (src != "INBOX" and dst.startswith(src + SEPARATOR)):
                raise StorageError("cannot rename a mailbox into itself")
            saved = (dict(self._meta), set(self._subscribed), self._next_id, self._last_uidvalidity)

            def work() -> None:
                try:
                    self._check_epoch()
                    if src == "INBOX":
                        # RFC 9051 §6.3.6: the messages move to the new name, INBOX
                        # stays (empty, new UIDVALIDITY); its children stay put
                        fresh = self._new_meta(None)
                        create_generation(self._dir(fresh.id), 1, fresh.uidvalidity, 1, 0, self.epoch)
                        self._meta[dst] = meta
                        self._meta["INBOX"] = fresh
                    else:
                        prefix = src + SEPARATOR
                        for n in sorted(self._meta):
                            if n == src or n.startswith(prefix):
                                moved = dst + n[len(src) :]
                                self._meta[moved] = self._meta.pop(n)
                                if n in self._subscribed:
                                    self._subscribed.discard(n)
                                    self._subscribed.add(moved)
                    # RFC 9051 §6.3.6: create the superior names the new name needs
                    parts = dst.split(SEPARATOR)
                    for i in range(1, len(parts)):
                        parent = SEPARATOR.join(parts[:i])
                        if parent not in self._meta:
                            pmeta = self._new_meta(None)
                            create_generation(self._dir(pmeta.id), 1, pmeta.uidvalidity, 1, 0, self.epoch)
                            self._meta[parent] = pmeta
                    fsync_dir(self.path / MAIL_DIR)
                    self._save_meta()
                except BaseException:
                    self._meta, self._subscribed, self._next_id, self._last_uidvalidity = saved
                    raise

            await self._run_io(work)
            for q in self._listeners:
                q.put_nowait(src)
                q.put_nowait(dst)

    async def subscribe(self, name: str, subscribed: bool = True) -> None:
        canon = self._canon(name)
        async with self._meta_lock:
            if (canon in self._subscribed) == subscribed:
                return
            before = set(self._subscribed)
            if subscribed:
                self._subscribed.add(canon)
            else:
                self._subscribed.discard(canon)
            try:
                await self._run_io(self._save_meta)
            except BaseException:
                self._subscribed = before
                raise

    async def status(self, name: str) -> MailboxStatus:
        canon, meta = self._lookup(name)
        st = await self._state(meta)
        unseen, deleted = st.counts()
        return MailboxStatus(
            name=canon,
            messages=len(st.cols["uid"]),
            recent=0,
            unseen=unseen,
            uidnext=st.uidnext,
            uidvalidity=st.uidvalidity,
            highestmodseq=st.highestmodseq,
            size=st.total_size,
            deleted=deleted,
        )

    async def append(self, mailbox: str, messages: Sequence[AppendRequest]) -> list[int]:
        _canon, meta = self._lookup(mailbox)
        await self._state(meta)
        if not messages:
            return []
        if self.quota != (None, None):
            await self._complete_usage()
        datas = [req.data for req in messages]
        small = sum(len(d) if isinstance(d, bytes) else INLINE_PARSE + 1 for d in datas) <= INLINE_PARSE
        if small:
            encoded = encode_all(datas)  # tens of microseconds: cheaper than a thread hop
        else:
            # parsing runs on reader threads, overlapping the I/O thread's fsyncs;
            # large files are spooled beside the account's data (streaming)
            loop = asyncio.get_running_loop()
            encoded = await loop.run_in_executor(read_pool(), encode_all, datas, self.path)
        try:
            entries = []
            for req, (body, packed) in zip(messages, encoded, strict=True):
                date, tz = _now_parts(req.internal_date)
                entries.append((("ready", body, packed), req.flags, date, tz, len(body)))
            op = Op("append", meta.id, asyncio.get_running_loop().create_future(), {"entries": entries})
            if len(encoded) > 0 and not small:
                op.cleanup = lambda: close_spooled(encoded)
        except BaseException:
            close_spooled(encoded)
            raise
        try:
            return list(await self._submit(op))
        finally:
            # the committer closes the spool files of an operation it took
            # (the I/O thread may still be reading them if this caller was
            # cancelled); otherwise they are closed here
            if op.cleanup is not None and not op.taken and op not in self._pending:
                op.cleanup()

    async def select(self, name: str, read_only: bool = False) -> Any:
        from dynamail.storage.view import FileMailboxView

        canon, meta = self._lookup(name)
        st = await self._state(meta)
        return FileMailboxView(self, canon, meta.id, st, read_only, next(_view_ids))

    async def quota_usage(self) -> tuple[int, int]:
        await self._complete_usage()
        return self._usage()

    def set_quota(self, max_bytes: int | None, max_messages: int | None) -> None:
        """Limits checked by append and copy (QuotaExceeded); None: unlimited.
        Usage is exact over all mailboxes of the account."""
        self.quota = (max_bytes, max_messages)

    async def changes(self) -> AsyncIterator[str]:  # type: ignore[override]
        q: asyncio.Queue[str] = asyncio.Queue()
        self._listeners.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._listeners.remove(q)

    async def close(self, *, checkpoint: bool = True) -> None:
        """Finish pending writes, write index checkpoints (unless told not
        to: then the next open replays the logs, as after a crash), release
        the files."""
        if self._closed:
            return
        self._closing = True
        for box in self._jobs:  # background compactions stop at their next message
            for job in box:
                job.aborted = True
        for task in list(self._compactions.values()):
            with contextlib.suppress(Exception):
                await task
        if self._committer is not None:
            with contextlib.suppress(Exception):
                await self._committer
        loop = asyncio.get_running_loop()
        if checkpoint and not self._fenced:
            await self._compact_wasteful()
        for st in list(self._states.values()):
            if self._fenced or not checkpoint:
                break
            if st.tail_records:
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(self._io, self._checkpoint_sync, st, st.checkpoint_bytes())
        self._closed = True

        def shut() -> None:
            for st in self._states.values():
                st.close()
            for fd, _when in self._retired:
                with contextlib.suppress(OSError):
                    os.close(fd)

        await loop.run_in_executor(self._io, shut)
        for feed in self._feeds.values():
            feed.wake_all()
        self._io.shutdown(wait=False)
        if self._bg is not None:
            self._bg.shutdown(wait=False)

    # -- helpers for views -----------------------------------------------------
    async def _submit_op(self, kind: str, mbox_id: int, **args: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        return await self._submit(Op(kind, mbox_id, fut, args))

    async def copy_uids(self, src: MailboxState, uids: Iterable[int], dest: str) -> CopyResult:
        _canon, meta = self._lookup(dest)
        await self._state(meta)
        if self.quota != (None, None):
            await self._complete_usage()
        entries = []
        source_uids = []
        for uid in uids:
            i = src.pos(uid)
            if i < 0:
                continue
            c = src.cols
            flags = src.flags_of_bits(c["flags"][i])
            entries.append((("copy", src.fd, c["off"][i], c["blen"][i], c["mlen"][i]), flags, c["date"][i], c["tz"][i], c["blen"][i]))
            source_uids.append(uid)
        if not entries:
            return CopyResult(meta.uidvalidity, [], [])
        dest_uids = await self._submit_op("append", meta.id, entries=entries)
        return CopyResult(meta.uidvalidity, source_uids, list(dest_uids))

    @staticmethod
    def read_pool() -> ThreadPoolExecutor:
        return read_pool()
