"""An account's store: mailbox list, group commit, fencing.

Layout of an account directory::

    epoch            the owner's epoch (decimal), replaced atomically
    mailboxes.json   mailbox names → id, UIDVALIDITY, special use; subscriptions
    mail/<id>/       one directory per mailbox (``mailbox.py``): data.g, index.g

Mailbox directories are named by a number, never by the mailbox name, so a
rename (with all its children) is one atomic replacement of
``mailboxes.json``.

**Group commit.**  Every change (append, flag store, expunge, copy, move,
compaction) becomes an operation in a queue.  One committer task takes all
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
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from dynamail import mime, names
from dynamail.durable import atomic_write, fsync_dir, make_dirs, remove_stale_temporaries
from dynamail.storage import records as R
from dynamail.storage.api import (
    AppendRequest,
    CopyResult,
    FencedError,
    MailboxExists,
    MailboxListing,
    MailboxStatus,
    NoSuchMailbox,
    QuotaExceeded,
    StorageError,
    StoreResult,
)
from dynamail.storage.feed import MailboxFeed
from dynamail.storage.mailbox import (
    DELETED,
    SEEN,
    MailboxState,
    create_generation,
    data_path,
    index_path,
)

META_FILE = "mailboxes.json"
EPOCH_FILE = "epoch"
MAIL_DIR = "mail"
SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
SEPARATOR = "/"

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
    try:
        return int((path / EPOCH_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


@dataclass(slots=True)
class MailboxMeta:
    id: int
    uidvalidity: int
    special_use: str | None = None


@dataclass
class _Op:
    kind: str  # "append" | "store" | "expunge" | "copy" | "compact"
    mbox: int
    fut: asyncio.Future[Any]
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Plan:
    """What one batch writes to one mailbox."""

    state: MailboxState
    items: list[tuple[Any, ...]] = field(default_factory=list)
    kw_target: int = 0
    owner: bool = False


def _now_parts(when: datetime.datetime | None) -> tuple[int, int]:
    if when is None:
        when = datetime.datetime.now(datetime.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    off = when.utcoffset() or datetime.timedelta(0)
    return int(when.timestamp()), int(off.total_seconds() // 60)


def encode_message(data: bytes | BinaryIO) -> tuple[bytes, bytes]:
    """(canonical body, packed parse result) of a message to append."""
    raw = data if isinstance(data, bytes | bytearray | memoryview) else data.read()
    body = mime.canonical(bytes(raw))
    parsed = mime.parse(body)
    meta = msgpack.packb(parsed.to_list(), use_bin_type=True)
    return body, meta


def _encode_all(items: list[bytes | BinaryIO]) -> list[tuple[bytes, bytes]]:
    return [encode_message(d) for d in items]


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
        self._pending: list[_Op] = []
        self._committer: asyncio.Task[None] | None = None
        self._meta_lock = asyncio.Lock()
        self._listeners: list[asyncio.Queue[str]] = []
        self._fenced = False
        self._closed = False
        self._retired_fds: list[int] = []
        self._canon_cache: dict[str, str] = {}

    # -- opening ---------------------------------------------------------------
    def open_sync(self) -> None:
        """Record the epoch and load the mailbox list (I/O thread)."""
        make_dirs(self.path)
        remove_stale_temporaries(self.path)
        recorded = read_epoch(self.path)
        if recorded > self.epoch:
            raise FencedError(f"account {self.path} is owned by epoch {recorded} > {self.epoch}")
        if recorded < self.epoch:
            atomic_write(self.path / EPOCH_FILE, f"{self.epoch}\n".encode())
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
        st = MailboxState(self._dir(meta.id), meta.uidvalidity, writable=True)
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
    async def _submit(self, op: _Op) -> Any:
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
            batch: list[_Op] = []
            # compaction runs alone; everything else shares one batch
            if self._pending[0].kind == "compact":
                batch = [self._pending.pop(0)]
            else:
                while self._pending and self._pending[0].kind != "compact":
                    batch.append(self._pending.pop(0))
            try:
                if batch[0].kind == "compact":
                    await self._do_compact(batch[0])
                else:
                    await self._commit(batch)
            except BaseException as exc:  # answer every caller, whatever happened
                if isinstance(exc, FencedError):
                    self._fenced = True
                for op in batch:
                    if not op.fut.done():
                        op.fut.set_exception(exc if isinstance(exc, Exception) else StorageError(str(exc)))
                if not isinstance(exc, Exception):
                    raise

    async def _commit(self, batch: list[_Op]) -> None:
        plans: dict[int, _Plan] = {}
        overlay: dict[tuple[int, int], tuple[int, int]] = {}  # (mbox, uid) -> (flags, modseq)
        gone: set[tuple[int, int]] = set()
        effects: list[tuple[_Op, Any]] = []
        quota_bytes = quota_msgs = 0
        for op in batch:
            try:
                st = self._states[op.mbox]
                plan = plans.get(op.mbox)
                if plan is None:
                    plan = plans[op.mbox] = _Plan(st)
                    plan.owner = st.max_epoch < self.epoch
                if op.kind in ("append", "copy"):
                    entries = op.args["entries"]  # (source, flags names, date, tz)
                    qb, qm = self.quota
                    if qm is not None or qb is not None:
                        used_b, used_m = self._usage()
                        add_b = sum(e[4] for e in entries)
                        if (qm is not None and used_m + quota_msgs + len(entries) > qm) or (
                            qb is not None and used_b + quota_bytes + add_b > qb
                        ):
                            raise QuotaExceeded("quota exceeded")
                        quota_bytes += add_b
                        quota_msgs += len(entries)
                    uids = []
                    st.res_modseq += 1
                    for source, flagnames, date, tz, _size in entries:
                        bits = st.keyword_bits(flagnames, create=True)
                        uid = st.res_uidnext
                        st.res_uidnext += 1
                        plan.items.append(("msg", uid, st.res_modseq, date, tz, bits, source))
                        uids.append(uid)
                    effects.append((op, uids))
                elif op.kind == "store":
                    mode, flagnames, unchanged = op.args["mode"], op.args["flags"], op.args["unchanged_since"]
                    bits = st.keyword_bits(flagnames, create=mode != "remove")
                    modseq = st.res_modseq + 1
                    changed: list[tuple[int, int]] = []
                    failed: list[int] = []
                    for uid in op.args["uids"]:
                        if (op.mbox, uid) in gone:
                            continue
                        cur = overlay.get((op.mbox, uid))
                        if cur is None:
                            i = st.pos(uid)
                            if i < 0:
                                continue
                            cur = (st.cols["flags"][i], st.cols["modseq"][i])
                        if unchanged is not None and cur[1] > unchanged:
                            failed.append(uid)
                            continue
                        old = cur[0]
                        new = bits if mode == "set" else (old | bits if mode == "add" else old & ~bits)
                        if new != old:
                            changed.append((uid, new))
                            overlay[(op.mbox, uid)] = (new, modseq)
                    if changed:
                        st.res_modseq = modseq
                        plan.items.append(("flags", modseq, changed, op.args.get("origin", 0)))
                    effects.append((op, StoreResult([u for u, _ in changed], failed)))
                elif op.kind == "expunge":
                    force = op.args.get("force", False)
                    victims = []
                    for uid in op.args["uids"]:
                        if (op.mbox, uid) in gone:
                            continue
                        cur = overlay.get((op.mbox, uid))
                        if cur is None:
                            i = st.pos(uid)
                            if i < 0:
                                continue
                            cur = (st.cols["flags"][i], st.cols["modseq"][i])
                        if force or cur[0] & DELETED:
                            victims.append(uid)
                            gone.add((op.mbox, uid))
                    if victims:
                        st.res_modseq += 1
                        plan.items.append(("expunge", st.res_modseq, victims, op.args.get("origin", 0)))
                    effects.append((op, victims))
                plan.kw_target = len(st.keywords)
            except Exception as exc:
                op.fut.set_exception(exc)
        plans = {k: p for k, p in plans.items() if p.items}
        results: dict[int, Any] = {}
        if plans:
            results = await self._run_io(self._write_sync, plans)
        # apply to the in-memory index, then tell everyone
        for mbox_id, plan in plans.items():
            st = plan.state
            start, length, last_rel, last_crc, nrec, placed = results[mbox_id]
            st.committed(start, length, last_rel, last_crc, nrec)
            st.kw_durable = max(st.kw_durable, plan.kw_target)
            if plan.owner:
                st.max_epoch = self.epoch
            feed = self.feed(mbox_id)
            for item, place in zip(plan.items, placed, strict=True):
                if item[0] == "msg":
                    _k, uid, modseq, date, tz, bits, _src = item
                    body_off, blen, mlen = place
                    st.add_message(uid, modseq, date, tz, bits, start + body_off, blen, mlen)
                    feed.publish("a", [uid])
                elif item[0] == "flags":
                    for uid, bits in item[2]:
                        st.set_flags(uid, bits, item[1])
                    feed.publish("f", [u for u, _ in item[2]], item[3])
                elif item[0] == "expunge":
                    gone_uids = st.expunge(item[2], item[1], keep_ghosts=feed.views > 0)
                    feed.publish("x", gone_uids, item[3])
            self._notify(mbox_id)
        for op, value in effects:
            if not op.fut.done():
                op.fut.set_result(value)
        # checkpoints are written off the commit path, between batches
        for plan in plans.values():
            if plan.state.needs_checkpoint():
                blob = plan.state.checkpoint_bytes()
                await self._run_io(self._checkpoint_sync, plan.state, blob)

    def _usage(self) -> tuple[int, int]:
        b = m = 0
        for st in self._states.values():
            b += st.total_size
            m += len(st.cols["uid"])
        return b, m

    def _write_sync(self, plans: dict[int, _Plan]) -> dict[int, Any]:
        """Encode, write and fdatasync every touched data file (I/O thread)."""
        self._check_epoch()
        encoded: dict[int, tuple[R.RecordBuffer, list[Any]]] = {}
        for mbox_id, plan in plans.items():
            st = plan.state
            buf = R.RecordBuffer()
            placed: list[Any] = []
            if plan.owner:
                buf.add(R.frame_parts(R.OWNER, self.epoch, R.OWNER_BODY.pack(st.data_size)))
            for k in range(st.kw_durable, plan.kw_target):
                buf.add(R.frame_parts(R.KEYWORD, self.epoch, R.KEYWORD_FIXED.pack(k), st.keywords[k].encode("utf-8")))
            for item in plan.items:
                if item[0] == "msg":
                    _k, uid, modseq, date, tz, bits, source = item
                    if source[0] == "ready":
                        body, meta = source[1], source[2]
                    else:  # ("copy", fd, off, blen, mlen)
                        _tag, fd, off, blen, mlen = source
                        raw = os.pread(fd, blen + mlen, off)
                        if len(raw) != blen + mlen:
                            raise StorageError("source message is damaged")
                        body, meta = raw[:blen], raw[blen:]
                    fixed = R.MESSAGE_FIXED.pack(uid, modseq, date, tz, 0, bits, len(body), len(meta))
                    at = buf.add(R.frame_parts(R.MESSAGE, self.epoch, fixed, body, meta))
                    placed.append((at + R.HEADER_SIZE + R.MESSAGE_FIXED.size, len(body), len(meta)))
                elif item[0] == "flags":
                    modseq, changed = item[1], item[2]
                    payload = R.COUNTED.pack(modseq, len(changed)) + b"".join(R.FLAG_ITEM.pack(u, f) for u, f in changed)
                    buf.add(R.frame_parts(R.FLAGS, self.epoch, payload))
                    placed.append(None)
                elif item[0] == "expunge":
                    modseq, uids = item[1], item[2]
                    payload = R.COUNTED.pack(modseq, len(uids)) + b"".join(R.UID_ITEM.pack(u) for u in uids)
                    buf.add(R.frame_parts(R.EXPUNGE, self.epoch, payload))
                    placed.append(None)
            encoded[mbox_id] = (buf, placed)
        self._check_epoch()
        out: dict[int, Any] = {}
        for mbox_id, (buf, placed) in encoded.items():
            start = plans[mbox_id].state.write(buf.bufs)
            out[mbox_id] = (start, buf.length, buf.last_rel, buf.last_crc, buf.records, placed)
        self._check_epoch()  # before anyone is told the change is durable
        return out

    # -- compaction ----------------------------------------------------------
    async def compact(self, name: str) -> int:
        """Rewrite a mailbox without its expunged messages as a new generation;
        returns the bytes reclaimed."""
        _canon, meta = self._lookup(name)
        await self._state(meta)
        return int(await self._submit(_Op("compact", meta.id, asyncio.get_running_loop().create_future())))

    async def _do_compact(self, op: _Op) -> None:
        st = self._states[op.mbox]
        snapshot = {k: v[:] for k, v in st.cols.items()}
        before = st.data_size
        result = await self._run_io(self._compact_sync, st, snapshot)
        new_gen, new_fd, offsets, size, last_off, last_crc, blob = result
        old_fd = st.fd
        st.gen, st.fd = new_gen, new_fd
        st.cols["off"] = offsets
        st.data_size, st.last_rec_off, st.last_crc = size, last_off, last_crc
        st.tail_records = st.tail_bytes = 0
        st.kw_durable = len(st.keywords)
        st.max_epoch = self.epoch
        st.ghosts.clear()
        self._retired_fds.append(old_fd)
        op.fut.set_result(before - size)
        del blob

    def _compact_sync(self, st: MailboxState, cols: dict[str, Any]) -> tuple[Any, ...]:
        from array import array

        self._check_epoch()
        d = st.directory
        gen = st.gen + 1
        tmp = d / f".data.{gen}.tmp"
        offsets = array("Q")
        with open(tmp, "wb") as f:
            pos = 0
            last_off = last_crc = 0

            def put(rec: bytes) -> None:
                nonlocal pos, last_off, last_crc
                hdr = R.parse_header(rec)
                assert hdr is not None
                last_off, last_crc = pos, hdr.crc
                f.write(rec)
                pos += len(rec)

            put(R.frame(R.MAILBOX, self.epoch, R.MAILBOX_BODY.pack(st.uidvalidity, st.uidnext, st.highestmodseq, gen)))
            for k, kw in enumerate(st.keywords):
                put(R.frame(R.KEYWORD, self.epoch, R.KEYWORD_FIXED.pack(k), kw.encode("utf-8")))
            for i in range(len(cols["uid"])):
                blen, mlen = cols["blen"][i], cols["mlen"][i]
                raw = os.pread(st.fd, blen + mlen, cols["off"][i])
                fixed = R.MESSAGE_FIXED.pack(cols["uid"][i], cols["modseq"][i], cols["date"][i], cols["tz"][i], 0, cols["flags"][i], blen, mlen)
                offsets.append(pos + R.HEADER_SIZE + R.MESSAGE_FIXED.size)
                put(R.frame(R.MESSAGE, self.epoch, fixed, raw))
            f.flush()
            os.fsync(f.fileno())
        # the checkpoint of the new generation goes first; the rename of the
        # data file is the atomic switch
        shadow = MailboxState(d, st.uidvalidity, writable=True)
        shadow.gen, shadow.cols = gen, dict(cols, off=offsets)
        shadow.keywords = st.keywords
        shadow.uidnext, shadow.highestmodseq, shadow.max_epoch = st.uidnext, st.highestmodseq, self.epoch
        shadow.data_size, shadow.last_rec_off, shadow.last_crc = pos, last_off, last_crc
        blob = shadow.checkpoint_bytes()
        shadow.write_checkpoint(blob)
        self._check_epoch()
        os.replace(tmp, data_path(d, gen))
        fsync_dir(d)
        data_path(d, st.gen).unlink(missing_ok=True)
        index_path(d, st.gen).unlink(missing_ok=True)
        fsync_dir(d)
        fd = os.open(data_path(d, gen), os.O_RDWR)
        return gen, fd, offsets, pos, last_off, last_crc, blob

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
            if dst == src or dst.startswith(src + SEPARATOR):
                raise StorageError("cannot rename a mailbox into itself")
            saved = (dict(self._meta), set(self._subscribed), self._next_id, self._last_uidvalidity)

            def work() -> None:
                self._check_epoch()
                if src == "INBOX":
                    # RFC 9051 §6.3.6: the messages move to the new name, INBOX
                    # stays (empty, new UIDVALIDITY); its children stay put
                    fresh = self._new_meta(None)
                    create_generation(self._dir(fresh.id), 1, fresh.uidvalidity, 1, 0, self.epoch)
                    fsync_dir(self.path / MAIL_DIR)
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
                try:
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
        flags = st.cols["flags"]
        unseen = sum(1 for f in flags if not f & SEEN)
        deleted = sum(1 for f in flags if f & DELETED)
        return MailboxStatus(
            name=canon,
            messages=len(flags),
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
        # parsing runs on reader threads, overlapping the I/O thread's fsyncs
        loop = asyncio.get_running_loop()
        encoded = await loop.run_in_executor(read_pool(), _encode_all, [req.data for req in messages])
        entries = []
        for req, (body, packed) in zip(messages, encoded, strict=True):
            date, tz = _now_parts(req.internal_date)
            entries.append((("ready", body, packed), req.flags, date, tz, len(body)))
        fut = asyncio.get_running_loop().create_future()
        return list(await self._submit(_Op("append", meta.id, fut, {"entries": entries})))

    async def select(self, name: str, read_only: bool = False) -> Any:
        from dynamail.storage.view import FileMailboxView

        canon, meta = self._lookup(name)
        st = await self._state(meta)
        return FileMailboxView(self, canon, meta.id, st, read_only, next(_view_ids))

    async def quota_usage(self) -> tuple[int, int]:
        for meta in list(self._meta.values()):
            await self._state(meta)
        return self._usage()

    def set_quota(self, max_bytes: int | None, max_messages: int | None) -> None:
        """Limits checked by append and copy (QuotaExceeded); None: unlimited.
        Usage counts the mailboxes loaded so far; call quota_usage() to load all."""
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
        if self._committer is not None:
            with contextlib.suppress(Exception):
                await self._committer
        loop = asyncio.get_running_loop()
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
            for fd in self._retired_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

        await loop.run_in_executor(self._io, shut)
        for feed in self._feeds.values():
            feed.wake_all()
        self._io.shutdown(wait=False)

    # -- helpers for views -----------------------------------------------------
    async def _submit_op(self, kind: str, mbox_id: int, **args: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        return await self._submit(_Op(kind, mbox_id, fut, args))

    async def copy_uids(self, src: MailboxState, uids: Iterable[int], dest: str) -> CopyResult:
        _canon, meta = self._lookup(dest)
        await self._state(meta)
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
