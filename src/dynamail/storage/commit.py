"""Group commit: turning a batch of queued operations into one write per
touched data file.

Three steps, split by thread:

1. :func:`plan_batch` (event loop thread) decides every effect: UIDs and
   MODSEQs are taken from the mailbox's reservation counters, flag changes
   and expunges are computed against the in-memory index plus an overlay of
   the earlier operations of the same batch, so a batch behaves exactly as
   its operations run one after the other.  Nothing is applied yet.
2. :func:`write_plans` (the account's I/O thread) frames the records,
   writes and fdatasyncs each touched mailbox's own log file once, and after
   each one checks that no newer owner has claimed the account.  A write
   found superseded is reported, not answered: its fate is what the
   successor sealed (``fence.resolve``).
3. :func:`apply_plans` (event loop thread) applies the effects to the
   in-memory index and publishes them on the change feed.

If step 2 fails nothing is applied and every operation of the batch fails;
the reserved UIDs are skipped (UIDs only need to ascend).  The bytes a
failed write may have left after the end of the log are never read: the
store stops writing, and the next owner seals the file at its last
complete write.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from dynamail import mime
from dynamail.storage import records as R
from dynamail.storage.api import NoSuchMailbox, QuotaExceeded, StorageError, StoreResult
from dynamail.storage.feed import MailboxFeed
from dynamail.storage.mailbox import DELETED, SEG_MASK, MailboxState


@dataclass
class Op:
    """One queued change.  ``kind`` is "append", "store", "expunge" or "compact"."""

    kind: str
    mbox: int
    fut: asyncio.Future[Any]
    args: dict[str, Any] = field(default_factory=dict)
    # called once the committer is done with the operation (closes spool files)
    cleanup: Callable[[], None] | None = None
    taken: bool = False  # the committer has taken it into a batch


@dataclass
class Plan:
    """What one batch writes to one mailbox."""

    state: MailboxState
    items: list[tuple[Any, ...]] = field(default_factory=list)
    kw_target: int = 0


# A message given as a file and larger than this is spooled (canonical form,
# in bounded chunks) to an unnamed temporary file beside the account's data,
# parsed through a memory map and copied into the log piece by piece; a
# smaller one is read into memory.
STREAM_AT = 1 << 20
# Copies of messages larger than this go from log to log piece by piece.
COPY_IN_MEMORY = 256 << 10


class Spooled:
    """The canonical form of a large message in an unnamed temporary file."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self.file = f
        self.length = length

    def __len__(self) -> int:
        return self.length

    def piece(self) -> R.FileRange:
        return R.FileRange(self.file.fileno(), 0, self.length)

    def close(self) -> None:
        self.file.close()


def _file_size(f: BinaryIO) -> int | None:
    """Bytes left to read in ``f`` (None when it cannot tell)."""
    try:
        pos = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(pos)
        return end - pos
    except (OSError, ValueError, AttributeError):
        return None


def encode_message(data: bytes | BinaryIO, spool_dir: Path | None = None) -> tuple[bytes | Spooled, bytes]:
    """(canonical message, packed parse result) of a message to append; the
    message is a :class:`Spooled` file when it came as a large file."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        size = _file_size(data)
        if size is None or size > STREAM_AT:
            return spool_message(data, spool_dir)
        raw = data.read()
    body = mime.canonical(raw)
    parsed = mime.parse(body)
    meta = msgpack.packb(parsed.to_list(), use_bin_type=True)
    return body, meta


def spool_message(data: BinaryIO, spool_dir: Path | None) -> tuple[Spooled, bytes]:
    """Canonicalise a message file into an unnamed temporary file (bounded
    chunks) and parse it through a memory map: no copy of it in memory."""
    # unnamed where the platform can (O_TMPFILE); else a ".*.tmp" name that
    # the next open of the account removes should a crash leave it behind
    f = tempfile.TemporaryFile(dir=spool_dir, prefix=".spool-", suffix=".tmp")
    try:
        length, _crc = mime.canonical_copy(data, f)  # type: ignore[arg-type]
        f.flush()
        with mime.MappedMessage(f.fileno(), length) as mapped:
            parsed = mime.parse(mapped)
        meta = msgpack.packb(parsed.to_list(), use_bin_type=True)
    except BaseException:
        f.close()
        raise
    return Spooled(f, length), meta  # type: ignore[arg-type]


def encode_all(items: list[bytes | BinaryIO], spool_dir: Path | None = None) -> list[tuple[bytes | Spooled, bytes]]:
    out: list[tuple[bytes | Spooled, bytes]] = []
    try:
        for d in items:
            out.append(encode_message(d, spool_dir))
    except BaseException:
        close_spooled(out)
        raise
    return out


def close_spooled(encoded: list[tuple[bytes | Spooled, bytes]]) -> None:
    for body, _meta in encoded:
        if isinstance(body, Spooled):
            with contextlib.suppress(OSError):
                body.close()


def plan_batch(
    batch: list[Op],
    states: dict[int, MailboxState],
    epoch: int,
    quota: tuple[int | None, int | None],
    usage: Callable[[], tuple[int, int]],
) -> tuple[dict[int, Plan], list[tuple[Op, Any]]]:
    """Decide the effects of a batch (loop thread).  Operations that cannot
    run get their exception at once; the others appear in the result with
    the value to answer once the batch is durable."""
    plans: dict[int, Plan] = {}
    overlay: dict[tuple[int, int], tuple[int, int]] = {}  # (mbox, uid) -> (flags, modseq)
    gone: set[tuple[int, int]] = set()
    effects: list[tuple[Op, Any]] = []
    added_bytes = added_msgs = 0
    batch_ids: dict[tuple[int, str], int] = {}  # delivery ids given UIDs in this batch

    def current(st: MailboxState, mbox: int, uid: int) -> tuple[int, int] | None:
        if (mbox, uid) in gone:
            return None
        cur = overlay.get((mbox, uid))
        if cur is None:
            i = st.pos(uid)
            if i < 0:
                return None
            cur = (st.cols["flags"][i], st.cols["modseq"][i])
        return cur

    for op in batch:
        try:
            st = states.get(op.mbox)
            if st is None:
                raise NoSuchMailbox("the mailbox was deleted")
            plan = plans.get(op.mbox)
            if plan is None:
                plan = plans[op.mbox] = Plan(st)
            origin = op.args.get("origin", 0)
            if op.kind == "append":
                entries = op.args["entries"]  # (source, flag names, date, tz, size[, delivery id])
                ids = [e[5] if len(e) > 5 else None for e in entries]
                known: list[int | None] = [None] * len(entries)
                if any(ids):
                    for j, did in enumerate(ids):
                        if did:
                            known[j] = st.delivered.get(did, batch_ids.get((op.mbox, did)))
                    # copies stored before are not stored again; they answer their first UID
                    entries = [e for e, k in zip(entries, known, strict=True) if k is None]
                    ids = [i for i, k in zip(ids, known, strict=True) if k is None]
                    if not entries:
                        effects.append((op, known))
                        continue
                max_bytes, max_msgs = quota
                if max_bytes is not None or max_msgs is not None:
                    used_bytes, used_msgs = usage()
                    more = sum(e[4] for e in entries)
                    if (max_msgs is not None and used_msgs + added_msgs + len(entries) > max_msgs) or (
                        max_bytes is not None and used_bytes + added_bytes + more > max_bytes
                    ):
                        raise QuotaExceeded("quota exceeded")
                    added_bytes += more
                    added_msgs += len(entries)
                bits_list = [st.keyword_bits(e[1], create=True) for e in entries]
                st.res_modseq += 1
                uids = []
                for entry, bits, did in zip(entries, bits_list, ids, strict=True):
                    source, _flags, date, tz = entry[0], entry[1], entry[2], entry[3]
                    uid = st.res_uidnext
                    st.res_uidnext += 1
                    plan.items.append(("msg", uid, st.res_modseq, date, tz, bits, source, did))
                    if did:
                        batch_ids[(op.mbox, did)] = uid
                    uids.append(uid)
                fresh = iter(uids)
                effects.append((op, [k if k is not None else next(fresh) for k in known]))
            elif op.kind == "store":
                mode, unchanged = op.args["mode"], op.args["unchanged_since"]
                bits = st.keyword_bits(op.args["flags"], create=mode != "remove")
                modseq = st.res_modseq + 1
                changed: list[tuple[int, int]] = []
                failed: list[int] = []
                for uid in op.args["uids"]:
                    cur = current(st, op.mbox, uid)
                    if cur is None:
                        continue
                    if unchanged is not None and cur[1] > unchanged:
                        failed.append(uid)  # RFC 7162 §3.1.3
                        continue
                    old = cur[0]
                    new = bits if mode == "set" else (old | bits if mode == "add" else old & ~bits)
                    if new != old:
                        changed.append((uid, new))
                        overlay[(op.mbox, uid)] = (new, modseq)
                if changed:
                    st.res_modseq = modseq
                    plan.items.append(("flags", modseq, changed, origin))
                effects.append((op, StoreResult([u for u, _ in changed], failed)))
            elif op.kind == "expunge":
                force = op.args.get("force", False)
                victims = []
                for uid in op.args["uids"]:
                    cur = current(st, op.mbox, uid)
                    if cur is not None and (force or cur[0] & DELETED):
                        victims.append(uid)
                        gone.add((op.mbox, uid))
                if victims:
                    st.res_modseq += 1
                    plan.items.append(("expunge", st.res_modseq, victims, origin))
                effects.append((op, victims))
            else:
                raise StorageError(f"unknown operation {op.kind}")
            plan.kw_target = len(st.keywords)
        except Exception as exc:
            op.fut.set_exception(exc)
    return {k: p for k, p in plans.items() if p.items}, effects


@dataclass
class Written:
    """What :func:`write_plans` wrote: the results of the mailboxes whose
    writes are known to count, and the one write (if any) found superseded
    after it was durable, whose fate the successor decides."""

    results: dict[int, Any] = field(default_factory=dict)
    superseded: Exception | None = None
    error: BaseException | None = None  # a write that failed (disk full, I/O error)
    undecided: tuple[int, str, int, Any] | None = None  # (mailbox, file origin, end, result)


def encode_plan(plan: Plan, epoch: int) -> tuple[R.RecordBuffer, list[Any]]:
    st = plan.state
    buf = R.RecordBuffer()
    placed: list[Any] = []
    for k in range(st.kw_durable, plan.kw_target):
        buf.add(R.frame_parts(R.KEYWORD, epoch, R.KEYWORD_FIXED.pack(k), st.keywords[k].encode("utf-8")))
    for item in plan.items:
        if item[0] == "msg":
            _k, uid, modseq, date, tz, bits, source, did = item
            pieces: tuple[R.Piece, ...]
            if source[0] == "ready":
                body = source[1]
                blen, mlen = len(body), len(source[2])
                pieces = (body.piece() if isinstance(body, Spooled) else body, source[2])
            else:  # ("copy", fd, off, blen, mlen): bytes of another mailbox
                _tag, fd, off, blen, mlen = source
                if blen + mlen > COPY_IN_MEMORY:
                    pieces = (R.FileRange(fd, off, blen + mlen),)
                else:
                    raw = os.pread(fd, blen + mlen, off)
                    if len(raw) != blen + mlen:
                        raise StorageError("source message is damaged")
                    pieces = (raw,)
            fixed = R.MESSAGE_FIXED.pack(uid, modseq, date, tz, 0, bits, blen, mlen)
            at = buf.add(R.frame_parts(R.MESSAGE, epoch, fixed, *pieces))
            placed.append((at + R.HEADER_SIZE + R.MESSAGE_FIXED.size, blen, mlen))
            if did:
                buf.add(R.frame_parts(R.DELIVERY, epoch, R.UID_ITEM.pack(uid), did.encode("utf-8")))
        elif item[0] == "flags":
            modseq, changed = item[1], item[2]
            payload = R.COUNTED.pack(modseq, len(changed)) + b"".join(R.FLAG_ITEM.pack(u, f) for u, f in changed)
            buf.add(R.frame_parts(R.FLAGS, epoch, payload))
            placed.append(None)
        elif item[0] == "expunge":
            modseq, uids = item[1], item[2]
            payload = R.COUNTED.pack(modseq, len(uids)) + b"".join(R.UID_ITEM.pack(u) for u in uids)
            buf.add(R.frame_parts(R.EXPUNGE, epoch, payload))
            placed.append(None)
    buf.add(R.frame_parts(R.COMMIT, epoch))
    return buf, placed


def write_plans(
    plans: dict[int, Plan], epoch: int, prepare: Callable[[MailboxState], None], check: Callable[[], None]
) -> Written:
    """Frame, write and fdatasync each touched mailbox's own log file (I/O
    thread).  ``prepare`` gives a mailbox its own file when it has none yet
    (recorded in the manifest first); ``check`` raises when a newer owner has
    claimed the account.  It runs after every mailbox's write: a mailbox
    written before a check that passed is durable for every later owner (a
    successor's claim comes after the check, and it seals after its claim);
    writing stops at the first check that fails."""
    out = Written()
    for mbox_id, plan in plans.items():
        st = plan.state
        try:
            prepare(st)
            buf, placed = encode_plan(plan, epoch)
            start = st.write(buf.bufs)
        except StorageError as exc:
            if not out.results:
                raise
            out.error = exc
            return out
        except OSError as exc:
            # what the failed write left after the file's known end is never
            # read: the file is sealed there and the next write starts a new one
            st.seal_own()
            if not out.results:
                raise
            out.error = exc
            return out
        result = (start, buf.length, buf.last_rel, buf.last_crc, buf.records, placed)
        try:
            check()  # before anyone is told the change is durable
        except StorageError as exc:
            own = st.own_file()
            assert own is not None
            out.superseded = exc
            out.undecided = (mbox_id, str(own.entry["origin"]), (start + buf.length) & SEG_MASK, result)
            return out
        out.results[mbox_id] = result
    return out


def apply_plans(plans: dict[int, Plan], results: dict[int, Any], epoch: int, feed_of: Callable[[int], MailboxFeed]) -> None:
    """Apply a durable batch to the in-memory index and the change feed (loop thread)."""
    for mbox_id, plan in plans.items():
        if mbox_id not in results:
            continue  # not written (a newer owner took over first)
        st = plan.state
        start, length, last_rel, last_crc, nrec, placed = results[mbox_id]
        st.committed(start, length, last_rel, last_crc, nrec)
        st.kw_durable = max(st.kw_durable, plan.kw_target)
        st.max_epoch = max(st.max_epoch, epoch)
        feed = feed_of(mbox_id)
        for item, place in zip(plan.items, placed, strict=True):
            if item[0] == "msg":
                _k, uid, modseq, date, tz, bits, _src, did = item
                body_off, blen, mlen = place
                st.add_message(uid, modseq, date, tz, bits, start + body_off, blen, mlen)
                if did:
                    st.remember_delivery(did, uid)
                feed.publish("a", [uid])
            elif item[0] == "flags":
                for uid, bits in item[2]:
                    st.set_flags(uid, bits, item[1])
                feed.publish("f", [u for u, _ in item[2]], item[3])
            elif item[0] == "expunge":
                gone_uids = st.expunge(item[2], item[1], keep_ghosts=feed.views > 0)
                feed.publish("x", gone_uids, item[3])
