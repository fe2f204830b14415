"""An account's store: mailbox list, group commit, fencing.

Layout of an account directory::

    owners/<epoch>      one empty file per ownership claim (created exclusively)
    manifest.<epoch>    the account as that epoch's owner sees it: mailboxes
                        (name, id, UIDVALIDITY, special use, chain of log
                        files with seals), subscriptions, small blobs
    mail/<id>/          one directory per mailbox (``mailbox.py``):
                        log.<epoch>.<slot>, index.<epoch>

Mailbox directories are named by a number, never by the mailbox name, so a
rename (with all its children) is one change of the manifest.

**Fencing** (``fence.py``, docs/storage.md).  No file is mutated by two
ownership epochs.  Opening claims the account (``owners/<epoch>``, created
exclusively), adopts the predecessor's manifest — every file it names is
hard-linked under a name of this epoch, its open log files are sealed at
their last complete write — and writes this epoch's manifest before
anything else changes.  Every change is followed by a check of the claims
before anyone is answered; a change found superseded counts exactly when
the successor sealed it in.

**Group commit** (``commit.py``).  Every change (append, flag store,
expunge, copy, move, compaction) becomes an operation in a queue.  One
committer task takes all queued operations at once, decides their effects
on the loop thread (UIDs, MODSEQs, resulting flags, against the index plus
the earlier operations of the same batch), then runs one job on the
account's I/O thread that encodes the records, writes each touched
mailbox's own log file once, fdatasyncs each once, and checks the claims.
Only then are the effects applied to the in-memory index, the change feed
told, and the callers answered.  Operations arriving meanwhile form the
next batch: with N concurrent writers one fsync serves up to N messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import itertools
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamail import names
from dynamail.durable import fsync_dir
from dynamail.filemodes import private_dirs
from dynamail.storage import faults, fence
from dynamail.storage.api import (
    LIST_CHANGED,
    AppendRequest,
    CopyResult,
    FencedError,
    MailboxExists,
    MailboxListing,
    MailboxStatus,
    NoSuchMailbox,
    StorageError,
    StorageIOError,
    StoreClosed,
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
    adopt_fold,
    adopt_new_file,
    bulk,
    catch_up,
    fold,
    fold_range,
    switch,
    take_snapshot,
)
from dynamail.storage.feed import MailboxFeed
from dynamail.storage.mailbox import (
    MailboxState,
    create_log,
    generations,
    index_name,
    log_name,
    name_epoch,
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
# A mailbox whose chain has more files than this (one per owner that wrote
# to it) is compacted into one file, so an account's file count stays
# bounded however often it changes owner.
MAX_CHAIN = 6
ALONE = ("compact", "fold")  # operations the committer runs in a batch of their own

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
    """The highest epoch that claimed the account (0 if none); for an
    account of the 0.1 layout not yet converted, its ``epoch`` file."""
    top = fence.highest_claim(path)
    if top:
        return top
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
    gen: int = 1
    next_slot: int = 1
    chain: list[dict[str, Any]] = field(default_factory=list)

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id, "uidvalidity": self.uidvalidity, "special_use": self.special_use,
            "gen": self.gen, "next_slot": self.next_slot, "chain": self.chain,
        }


def _slot_of(name: str) -> int:
    parts = name.split(".")
    return int(parts[2]) if len(parts) == 3 and parts[0] == "log" and parts[2].isdigit() else 0


def legacy_doc(path: Path) -> dict[str, Any] | None:
    """The manifest equivalent of an account in the 0.1 layout
    (``mailboxes.json``, ``mail/<id>/data.<g>``): each mailbox's chain is its
    current data file, unsealed (the converting owner seals it)."""
    try:
        doc = json.loads((path / META_FILE).read_text("utf-8"))
    except FileNotFoundError:
        return None
    boxes: dict[str, Any] = {}
    for name, m in doc.get("mailboxes", {}).items():
        d = path / MAIL_DIR / str(m["id"])
        try:
            gens = generations(d)
        except OSError:
            gens = []
        if not gens:
            continue  # created but never given a file: it comes back empty
        g = gens[-1]
        boxes[name] = {
            "id": m["id"], "uidvalidity": m["uidvalidity"], "special_use": m.get("special_use"),
            "gen": g, "next_slot": 1, "chain": [{"name": f"data.{g}", "origin": f"data.{g}", "seal": None}],
        }
    return {
        "version": fence.MANIFEST_VERSION, "seq": 0, "next_id": int(doc.get("next_id", 1)),
        "last_uidvalidity": int(doc.get("last_uidvalidity", 0)), "mailboxes": boxes,
        "subscribed": doc.get("subscribed", []), "meta": {},
    }


META_KEY = re.compile(r"[A-Za-z0-9._-]{1,64}")
# All blobs of an account together (base64 form), in its manifest.
MAX_BLOBS = 1 << 20


def _check_meta_key(key: str) -> None:
    if not META_KEY.fullmatch(key):
        raise StorageError(f"bad per-account data key {key!r}")


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
        self._seq = 0  # version of this epoch's manifest
        self._lineage: dict[str, int] = {}
        self._blobs: dict[str, str] = {}  # get_meta / put_meta (base64)
        self._own_seq = 0
        self._closed_clean = False

    # -- opening ---------------------------------------------------------------
    def open_sync(self) -> None:
        """Claim the account, adopt the predecessor's manifest, write our own
        (I/O thread)."""
        private_dirs(self.path)
        fence.claim(self.path, self.epoch)
        for _attempt in range(50):
            mine = [e for e in fence.manifest_epochs(self.path) if e <= self.epoch]
            if mine and mine[-1] == self.epoch:
                self._load_doc(fence.read_manifest(self.path, self.epoch))
                self._seq = self._own_seq
                break
            pred = mine[-1] if mine else 0
            try:
                doc = fence.read_manifest(self.path, pred) if pred else legacy_doc(self.path)
                self._adopt(doc, pred)
            except FileNotFoundError:
                # the predecessor (a stale owner, still running) replaced a
                # file meanwhile: start again from its newer manifest
                self._states.clear()
                continue
            break
        else:
            raise StorageError(f"account {self.path}: the previous owner's files keep changing")
        if "INBOX" not in self._meta:
            self._create_box("INBOX", None)
            self._subscribed.add("INBOX")
            self._save_manifest()
        self._collect_garbage()

    def _load_doc(self, doc: dict[str, Any]) -> None:
        self._meta = {
            n: MailboxMeta(m["id"], m["uidvalidity"], m.get("special_use"), int(m.get("gen", 1)), int(m.get("next_slot", 1)), list(m["chain"]))
            for n, m in doc.get("mailboxes", {}).items()
        }
        self._subscribed = set(doc.get("subscribed", []))
        self._next_id = int(doc.get("next_id", 1))
        self._last_uidvalidity = int(doc.get("last_uidvalidity", 0))
        self._blobs = dict(doc.get("meta", {}))
        self._own_seq = int(doc.get("seq", 0))
        self._lineage = dict(doc.get("lineage", {}))

    def _adopt(self, doc: dict[str, Any] | None, pred: int) -> None:
        """Take the predecessor's state over under names of our own: link
        every file its manifest names, seal its open files, write our
        manifest.  FileNotFoundError: a file was gone (retry)."""
        self._lineage = fence.lineage(doc, pred) if pred else {}
        if doc is None:
            self._meta, self._subscribed, self._blobs = {}, set(), {}
        else:
            self._load_doc(doc)
            self._lineage = fence.lineage(doc, pred) if pred else {}
        for meta in self._meta.values():
            d = self._dir(meta.id)
            adopted = []
            for entry in meta.chain:
                slot = _slot_of(entry["name"])
                mine = log_name(self.epoch, slot)
                self._link(d / entry["name"], d / mine)
                adopted.append({"name": mine, "origin": entry["origin"], "seal": entry["seal"]})
            meta.chain = adopted
            meta.next_slot = max(meta.next_slot, 1 + max((_slot_of(e["name"]) for e in adopted), default=0))
            if pred:
                with contextlib.suppress(FileNotFoundError):
                    self._link(d / index_name(pred), d / index_name(self.epoch))
        # seal the predecessor's open files at their last complete write
        for meta in self._meta.values():
            if any(e["seal"] is None for e in meta.chain):
                st = MailboxState(
                    self._dir(meta.id), meta.uidvalidity, writable=True, epoch=self.epoch, chain=meta.chain, gen=meta.gen
                )
                st.open(seal_foreign=True)
                self._states[meta.id] = st
                self._feeds.setdefault(meta.id, MailboxFeed())
        self._seq = 0
        self._save_manifest(resolve=False)

    def _link(self, src: Path, dst: Path) -> None:
        faults.point("link")
        try:
            os.link(src, dst)
        except FileExistsError:
            # ours, from an earlier attempt of this open: link afresh
            faults.point("unlink")
            os.unlink(dst)
            os.link(src, dst)

    def _collect_garbage(self) -> None:
        """Remove what no manifest of this epoch names: files of lower
        epochs, mailbox directories no mailbox uses, older manifests and
        claims, the files of the 0.1 layout.  Never a name of a higher
        epoch (a newer owner's)."""
        mail = self.path / MAIL_DIR
        if not mail.is_dir():
            faults.point("mkdir")
            private_dirs(mail)
        live = {str(m.id) for m in self._meta.values()}
        for entry in os.listdir(mail):
            d = mail / entry
            try:
                names = os.listdir(d)
            except OSError:
                continue
            changed = False
            for name in names:
                e = name_epoch(name)
                legacy = name.lstrip(".").split(".")[0] in ("data", "index") and e is None
                if (e is not None and e < self.epoch) or legacy:
                    faults.point("unlink")
                    with contextlib.suppress(OSError):
                        os.unlink(d / name)
                    changed = True
            if entry not in live:
                with contextlib.suppress(OSError):
                    faults.point("unlink")
                    os.rmdir(d)
                    changed = False
                    fsync_dir(mail)
            if changed:
                with contextlib.suppress(OSError):
                    fsync_dir(d)
        for name in os.listdir(self.path):
            e = name_epoch(name)
            old_manifest = name.lstrip(".").split(".")[0] == fence.MANIFEST and any(
                p.isdigit() and int(p) < self.epoch for p in name.lstrip(".").split(".")[1:2]
            )
            legacy = name in (EPOCH_FILE, META_FILE) or (name.startswith(f".{META_FILE}.") or name.startswith(f".{EPOCH_FILE}."))
            if (e is not None and e < self.epoch) or old_manifest or legacy:
                faults.point("unlink")
                with contextlib.suppress(OSError):
                    os.unlink(self.path / name)
        fence.collect_claims(self.path, self.epoch)

    def _dir(self, mbox_id: int) -> Path:
        return self.path / MAIL_DIR / str(mbox_id)

    def _meta_of(self, mbox_id: int) -> MailboxMeta:
        for meta in self._meta.values():
            if meta.id == mbox_id:
                return meta
        raise NoSuchMailbox("the mailbox was deleted")

    def _new_meta(self, special_use: str | None) -> MailboxMeta:
        uv = max(int(time.time()), self._last_uidvalidity + 1) & 0xFFFFFFFF
        self._last_uidvalidity = uv
        meta = MailboxMeta(self._next_id, uv, special_use)
        self._next_id += 1
        return meta

    def _create_box(self, name: str, special_use: str | None) -> MailboxMeta:
        """A new mailbox with its first log file (I/O thread); the caller
        saves the manifest."""
        meta = self._new_meta(special_use)
        fname = log_name(self.epoch, 1)
        create_log(self._dir(meta.id), fname, meta.uidvalidity, 1, 0, 1, self.epoch)
        meta.next_slot = 2
        meta.chain = [{"name": fname, "origin": fname, "seal": None}]
        self._meta[name] = meta
        return meta

    def _manifest_doc(self) -> dict[str, Any]:
        return {
            "version": fence.MANIFEST_VERSION,
            "epoch": self.epoch,
            "seq": self._seq,
            "lineage": self._lineage,
            "next_id": self._next_id,
            "last_uidvalidity": self._last_uidvalidity,
            "mailboxes": {n: m.to_doc() for n, m in sorted(self._meta.items())},
            "subscribed": sorted(self._subscribed),
            "meta": self._blobs,
            "closed": self._closed_clean,
        }

    def _save_manifest(self, resolve: bool = True) -> None:
        """Write this epoch's manifest, then check the claims.  Superseded:
        the change counts if the successor started from it (``resolve``),
        and this store writes nothing more either way."""
        self._seq += 1
        fence.write_manifest(self.path, self.epoch, self._manifest_doc())
        try:
            self._check_epoch()
        except fence.Superseded:
            if resolve and fence.manifest_included(self.path, self.epoch, self._seq):
                return
            raise

    def _check_epoch(self) -> None:
        try:
            fence.check(self.path, self.epoch)
        except fence.Superseded:
            self._fenced = True
            raise

    async def _run_io(self, fn: Any, *args: Any) -> Any:
        if self._closed:
            raise StoreClosed("account store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)
        except OSError as exc:
            # a newer owner may have removed what a stale one was working on
            if self._fenced or fence.highest_claim(self.path) > self.epoch:
                self._fenced = True
                raise FencedError(f"account {self.path}: epoch {self.epoch} superseded") from exc
            raise

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
        st = MailboxState(
            self._dir(meta.id), meta.uidvalidity, writable=not self._fenced, fence=self._check_epoch,
            epoch=self.epoch, chain=meta.chain, gen=meta.gen,
        )
        try:
            st.open()
        except FileNotFoundError as exc:
            if self._fenced:
                raise FencedError(f"account {self.path}: superseded") from exc
            raise
        if (st.rebuilt or st.tail_records > 64) and not self._fenced:
            with contextlib.suppress(FencedError):
                self._checkpoint_sync(st, st.checkpoint_bytes())
        return st

    def _checkpoint_sync(self, st: MailboxState, blob: bytes) -> None:
        if self._fenced:
            return
        st.write_checkpoint(blob)
        st.tail_records = 0
        st.tail_bytes = 0

    def _prepare_write(self, st: MailboxState) -> None:
        """Give a mailbox its own log file before this owner's first write
        to it: created, then named in the manifest (I/O thread)."""
        if st.own_file() is not None:
            return
        for meta in self._meta.values():
            if meta.chain is st.chain:
                break
        else:
            raise NoSuchMailbox("the mailbox was deleted")
        slot = meta.next_slot
        meta.next_slot += 1
        st.start_own_file(slot)
        self._save_manifest(resolve=False)

    def feed(self, mbox_id: int) -> MailboxFeed:
        return self._feeds.setdefault(mbox_id, MailboxFeed())

    def _notify(self, name_of_id: int) -> None:
        for name, meta in self._meta.items():
            if meta.id == name_of_id:
                self._announce(name)
                break

    def _announce(self, *names: str) -> None:
        """Tell the followers of ``changes()``."""
        for q in self._listeners:
            for name in names:
                q.put_nowait(name)

    # -- group commit ------------------------------------------------------
    async def _submit(self, op: Op) -> Any:
        if self._fenced:
            raise FencedError(f"account {self.path}: epoch {self.epoch} has been superseded")
        if self._closed:
            raise StoreClosed("account store is closed")
        self._pending.append(op)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(self._commit_loop())
        return await op.fut

    async def _commit_loop(self) -> None:
        while self._pending:
            batch: list[Op] = []
            # compaction and folding run alone; everything else shares one batch
            if self._pending[0].kind in ALONE:
                batch = [self._pending.pop(0)]
            else:
                while self._pending and self._pending[0].kind not in ALONE:
                    batch.append(self._pending.pop(0))
            for op in batch:
                op.taken = True
            try:
                if batch[0].kind == "compact":
                    await self._do_compact(batch[0])
                elif batch[0].kind == "fold":
                    await self._do_fold(batch[0])
                else:
                    await self._commit(batch)
            except BaseException as exc:  # answer every caller, whatever happened
                if isinstance(exc, FencedError):
                    self._fenced = True
                answer: Exception
                if isinstance(exc, StorageError):
                    answer = exc
                elif isinstance(exc, OSError):  # disk full, I/O error
                    answer = StorageIOError(f"storage write failed: {exc!r}")
                    answer.__cause__ = exc
                else:  # anything unexpected
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
        failed: Exception | None = None
        if plans:
            written = await self._run_io(write_plans, plans, self.epoch, self._prepare_write, self._check_epoch)
            results = written.results
            if written.error is not None:
                failed = (StorageIOError if isinstance(written.error, OSError) else StorageError)(
                    f"storage write failed: {written.error!r}")
            if written.superseded is not None:
                self._fenced = True
                failed = written.superseded
                assert written.undecided is not None
                mbox_id, origin, end, result = written.undecided
                if await self._run_io(fence.resolve, self.path, self.epoch, [fence.Written(mbox_id, origin, end)]):
                    results[mbox_id] = result  # the successor sealed it in: it counts
            apply_plans(plans, results, self.epoch, self.feed)
            for mbox_id, plan in plans.items():
                if mbox_id not in results:
                    continue
                self._notify(mbox_id)
                if (any(item[0] == "expunge" for item in plan.items) or len(plan.state.segs) > MAX_CHAIN) and not self._fenced:
                    self._maybe_compact(mbox_id, plan.state)
            if failed is not None:
                for op, _value in effects:
                    if op.mbox in plans and op.mbox not in results and not op.fut.done():
                        op.fut.set_exception(failed)
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
            return [(m.id, read_summary(self._dir(m.id), m.chain, self.epoch, m.gen)) for m in missing]

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
        size = st.log_bytes()
        dead = size - st.live_bytes()
        if (dead > COMPACT_MIN_DEAD and dead > size * COMPACT_SHARE) or len(st.segs) > MAX_CHAIN:
            task = asyncio.get_running_loop().create_task(self._background_compact(mbox_id))
            self._compactions[mbox_id] = task

    def _fold_is_cheaper(self, st: MailboxState) -> bool:
        """Whether folding the small files of a long chain beats rewriting
        the whole mailbox: the files to fold hold less than the first one
        and few dead bytes are to be reclaimed."""
        got = fold_range(st)
        if got is None:
            return False
        first, count = got
        folded = sum(seg.limit or 0 for seg in st.segs[first : first + count])
        size = st.log_bytes()
        dead = size - st.live_bytes()
        return folded < (st.segs[0].limit or 0) and not (dead > COMPACT_MIN_DEAD and dead > size * COMPACT_SHARE)

    async def _fold(self, mbox_id: int) -> None:
        loop = asyncio.get_running_loop()
        op = Op("fold", mbox_id, loop.create_future(), {"state": self._states.get(mbox_id)})
        await self._submit(op)

    async def _do_fold(self, op: Op) -> None:
        """Fold the small files of a chain (the committer runs nothing else meanwhile)."""
        st = self._states.get(op.mbox)
        if st is None or st is not op.args["state"] or self._closed or fold_range(st) is None:
            op.fut.set_result(0)
            return
        meta = self._meta_of(op.mbox)
        slot = meta.next_slot
        meta.next_slot += 1
        job = await self._run_io(fold, st, self.epoch, slot, self._check_epoch)
        old = adopt_fold(st, job)
        meta.gen = st.gen
        now = time.monotonic()
        for seg in old:
            self._retired.append((seg.fd, now))
        names = [seg.entry["name"] for seg in old]
        blob = st.checkpoint_bytes()

        def commit_fold() -> None:
            self._save_manifest(resolve=False)
            self._checkpoint_sync(st, blob)
            for name in names:  # all names of this epoch (adopted ones too)
                faults.point("unlink")
                with contextlib.suppress(OSError):
                    os.unlink(st.directory / name)
            with contextlib.suppress(OSError):
                fsync_dir(st.directory)

        await self._run_io(commit_fold)
        self._reap_retired()
        op.fut.set_result(len(old))

    async def _background_compact(self, mbox_id: int) -> None:
        try:
            st = self._states.get(mbox_id)
            if st is not None and len(st.segs) > MAX_CHAIN and self._fold_is_cheaper(st):
                await self._fold(mbox_id)
                return
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
        if st.own_file() is None:
            # the catch-up copies from the own file: have one first
            await self._run_io(self._prepare_write, st)
        meta = self._meta_of(mbox_id)
        slot = meta.next_slot
        meta.next_slot += 1
        snap = take_snapshot(st, slot)
        fds = [os.dup(seg.fd) for seg in st.segs]  # the job's from here on
        box: list[Job] = []
        abort = Abort()
        self._jobs.append(box)
        op: Op | None = None
        try:
            job = await asyncio.wrap_future(self._bg.submit(bulk, st.directory, fds, snap, self.epoch, self._check_epoch, box, abort))
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
            if st is None or self.feed(meta.id).views or st.log_bytes() > COMPACT_AT_CLOSE_MAX:
                continue
            size = st.log_bytes()
            dead = size - st.live_bytes()
            if len(st.segs) > MAX_CHAIN and self._fold_is_cheaper(st):
                with contextlib.suppress(StorageError):
                    await self._fold(meta.id)
            elif (dead > COMPACT_MIN_DEAD and dead > size // 2) or len(st.segs) > MAX_CHAIN:
                with contextlib.suppress(StorageError, CompactionAborted):
                    await self.compact(name)

    def _reap_retired(self) -> None:
        """Close replaced data files that no ghost refers to, once reads that
        started before the switch are surely over (the unlinked file's space
        is freed then)."""
        if not self._retired or any(st.readers for st in self._states.values()):
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
        old_size = st.log_bytes()
        for ghost in st.ghosts.values():  # readable through the old files until views refresh
            if ghost.fd < 0:
                ghost.fd, ghost.off = st.fd_at(ghost.off)
        old_names = [seg.entry["name"] for seg in st.segs]
        old = adopt_new_file(st, job, new_fd)
        st.cols["off"] = offsets
        st.data_size, st.last_rec_off, st.last_crc = size, last_off, last_crc
        st.tail_records = st.tail_bytes = 0
        st.max_epoch = self.epoch
        self._meta_of(op.mbox).gen = job.gen
        now = time.monotonic()
        for seg in old:
            self._retired.append((seg.fd, now))
        self._reap_retired()

        def commit_switch() -> None:
            self._save_manifest(resolve=False)
            for name in old_names:  # all names of this epoch (adopted ones too)
                faults.point("unlink")
                with contextlib.suppress(OSError):
                    os.unlink(st.directory / name)
            with contextlib.suppress(OSError):
                fsync_dir(st.directory)

        await self._run_io(commit_switch)
        op.fut.set_result(old_size - size)

    # -- AccountStore ----------------------------------------------------------
    async def list_mailboxes(self) -> list[MailboxListing]:
        # every proper superior name of every mailbox: one pass, not one per pair
        parents = {n[:i] for n in self._meta for i, ch in enumerate(n) if ch == SEPARATOR}
        out = []
        for name in sorted(self._meta, key=lambda n: (n != "INBOX", n)):
            meta = self._meta[name]
            out.append(MailboxListing(name, meta.special_use, name in self._subscribed, name in parents, meta.uidvalidity))
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
            self._writable()

            def work() -> None:
                saved = (self._next_id, self._last_uidvalidity)
                self._create_box(canon, special_use)
                try:
                    self._save_manifest()
                except BaseException:
                    del self._meta[canon]
                    if not self._fenced:
                        self._next_id, self._last_uidvalidity = saved
                    raise

            await self._run_io(work)
        self._announce(LIST_CHANGED)

    async def delete_mailbox(self, name: str) -> None:
        async with self._meta_lock:
            canon, meta = self._lookup(name)
            if canon == "INBOX":
                raise StorageError("INBOX cannot be deleted")
            self._writable()
            st = self._states.pop(meta.id, None)

            def work() -> None:
                del self._meta[canon]
                try:
                    self._save_manifest()
                except BaseException:
                    self._meta[canon] = meta
                    raise
                if st is not None:
                    st.close()
                # only names of this epoch: a newer owner's are not ours to touch
                d = self._dir(meta.id)
                for entry in meta.chain:
                    faults.point("unlink")
                    with contextlib.suppress(OSError):
                        os.unlink(d / entry["name"])
                faults.point("unlink")
                with contextlib.suppress(OSError):
                    os.unlink(d / index_name(self.epoch))
                with contextlib.suppress(OSError):
                    faults.point("unlink")
                    os.rmdir(d)
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
            self._announce(canon, LIST_CHANGED)

    async def rename_mailbox(self, old: str, new: str) -> None:
        async with self._meta_lock:
            src, meta = self._lookup(old)
            self._writable()
            dst = self._canon(new)
            if dst in self._meta:
                raise MailboxExists(f"mailbox {dst!r} exists")
            if dst == src or (src != "INBOX" and dst.startswith(src + SEPARATOR)):
                raise StorageError("cannot rename a mailbox into itself")
            saved = (dict(self._meta), set(self._subscribed), self._next_id, self._last_uidvalidity)

            def work() -> None:
                try:
                    if src == "INBOX":
                        # RFC 9051 §6.3.6: the messages move to the new name, INBOX
                        # stays (empty, new UIDVALIDITY); its children stay put
                        self._meta[dst] = meta
                        self._create_box("INBOX", None)
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
                            self._create_box(parent, None)
                    self._save_manifest()
                except BaseException:
                    self._meta, self._subscribed, self._next_id, self._last_uidvalidity = saved
                    raise

            await self._run_io(work)
            self._announce(src, dst, LIST_CHANGED)

    async def subscribe(self, name: str, subscribed: bool = True) -> None:
        canon = self._canon(name)
        async with self._meta_lock:
            if (canon in self._subscribed) == subscribed:
                return
            self._writable()
            before = set(self._subscribed)
            if subscribed:
                self._subscribed.add(canon)
            else:
                self._subscribed.discard(canon)
            try:
                await self._run_io(self._save_manifest)
            except BaseException:
                self._subscribed = before
                raise
        self._announce(LIST_CHANGED)

    async def get_meta(self, key: str) -> bytes | None:
        """A small per-account blob (Sieve scripts, …) stored with the
        account's manifest, under the same ownership and fencing as its mail."""
        _check_meta_key(key)
        got = self._blobs.get(key)
        return None if got is None else base64.b64decode(got)

    async def put_meta(self, key: str, value: bytes | None) -> None:
        """Store (or remove, with None) a blob; durable on return."""
        _check_meta_key(key)
        async with self._meta_lock:
            self._writable()
            before = dict(self._blobs)
            if value is None:
                self._blobs.pop(key, None)
            else:
                self._blobs[key] = base64.b64encode(value).decode("ascii")
            if sum(len(v) for v in self._blobs.values()) > MAX_BLOBS:
                self._blobs = before
                raise StorageError(f"per-account data over {MAX_BLOBS * 3 // 4} bytes")
            try:
                await self._run_io(self._save_manifest)
            except BaseException:
                self._blobs = before
                raise

    def _writable(self) -> None:
        if self._fenced:
            raise FencedError(f"account {self.path}: epoch {self.epoch} has been superseded")
        if self._closed:
            raise StoreClosed("account store is closed")

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
                entries.append((("ready", body, packed), req.flags, date, tz, len(body), req.delivery_id))
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
        if checkpoint and not self._fenced:
            # seal our own files: the next owner then needs no scan to adopt them
            def seal() -> None:
                for st in self._states.values():
                    st.seal_own()
                self._closed_clean = True
                self._save_manifest(resolve=False)

            with contextlib.suppress(Exception):
                await loop.run_in_executor(self._io, seal)
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
            sfd, soff = src.fd_at(c["off"][i])
            entries.append((("copy", sfd, soff, c["blen"][i], c["mlen"][i]), flags, c["date"][i], c["tz"][i], c["blen"][i]))
            source_uids.append(uid)
        if not entries:
            return CopyResult(meta.uidvalidity, [], [])
        dest_uids = await self._submit_op("append", meta.id, entries=entries)
        return CopyResult(meta.uidvalidity, source_uids, list(dest_uids))

    @staticmethod
    def read_pool() -> ThreadPoolExecutor:
        return read_pool()
