"""Compaction: rewriting a mailbox's chain as one file, without its expunged messages.

It runs in three phases so that writers wait only for the last, short one:

1. **Bulk** (a background thread, writers keep going): from a snapshot of
   the index taken on the loop thread — the live messages, their flags and
   MODSEQs, the durable keywords, the delivery ids, and the chain's end
   ``E`` at that instant (in the owner's own file) — write
   ``.log.<epoch>.<slot>.tmp``: a MAILBOX record carrying UIDNEXT and
   HIGHESTMODSEQ (so neither can go back), the KEYWORD records, every live
   message byte for byte with its parse result, the DELIVERY records, and a
   COMMIT; fsync it.
2. **Catch-up** (background, repeated while the own file grew by more than
   ``CATCH_UP_HOLD`` meanwhile): copy the records written to it after ``E``
   verbatim to the end of the temporary file.  Records hold no file
   offsets, and each was a complete, committed write, so replaying the new
   file gives the same state as replaying the old chain.
3. **Switch** (an exclusive batch of the committer, on the account's I/O
   thread): copy the last few records, fsync, write the checkpoint of the
   current state with remapped offsets, check the claims, rename the
   temporary file to ``log.<epoch>.<slot>`` (a name of this owner's, never
   seen before), and the account then makes it the whole chain in its
   manifest and removes the old chain's names (all of this epoch: adopted
   files were linked under its names).

A crash before the manifest names the new file leaves the old chain
current; the next owner removes the orphan (a name of a lower epoch that
its manifest does not name).  The new file is a file of this epoch only,
so a stale owner's compaction can never replace what a newer owner reads.
"""

from __future__ import annotations

import contextlib
import os
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamail.durable import fsync_dir
from dynamail.storage import faults
from dynamail.storage import records as R
from dynamail.storage.api import StorageError
from dynamail.storage.mailbox import (
    COLUMNS,
    SEG_MASK,
    SEG_SHIFT,
    MailboxState,
    Segment,
    copy_range,
    log_name,
    write_pieces,
)

# The switch copies at most about this much of the log while writers wait;
# more than that is copied by another background round first.
CATCH_UP_HOLD = 1 << 20
# Messages up to this size are read and rewritten in memory; larger ones
# are checksummed and copied in pieces.
IN_MEMORY = 256 << 10
FLUSH_AT = 1 << 20


class CompactionAborted(StorageError):
    """The account is closing, or the mailbox went away."""


@dataclass
class Snapshot:
    """What the bulk phase copies (taken on the loop thread)."""

    gen: int  # the generation being replaced
    slot: int  # the new file's slot
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    keywords: list[str]
    cols: dict[str, array]
    end: int  # the chain's end when the snapshot was taken (in the own file)
    total_size: int
    delivered: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Job:
    """A compaction in progress: the temporary file and where things landed."""

    directory: Path
    gen: int  # the new generation
    name: str  # the new file's name
    src_fd: int  # our own duplicate of the own file's descriptor (the catch-up's source)
    fd: int  # the temporary file
    snap_end: int  # old offset where the copied tail begins
    tail_base: int  # where that old offset lands in the new file
    pos: int = 0  # end of the temporary file
    copied_to: int = 0  # old offset up to which the log has been copied
    last_off: int = 0  # last record of the bulk (the COMMIT)
    last_crc: int = 0
    offsets: dict[int, int] = field(default_factory=dict)  # uid -> new body offset (bulk)
    aborted: bool = False
    switched: bool = False  # the new file is the current generation: its descriptor is the state's

    @property
    def tmp(self) -> Path:
        return self.directory / f".{self.name}.tmp"

    def new_offset(self, uid: int, old_off: int) -> int:
        if old_off >= self.snap_end:  # in the own file, after the snapshot
            return old_off - self.snap_end + self.tail_base
        return self.offsets[uid]

    def discard(self) -> None:
        """Close the job's descriptors and remove its temporary file (never
        the new generation once switched).  Call only when no thread uses the
        job any more."""
        fds = [self.src_fd] if self.switched else [self.fd, self.src_fd]
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.src_fd = -1
        if not self.switched:
            self.fd = -1
            with contextlib.suppress(OSError):
                self.tmp.unlink()


@dataclass
class Abort:
    """Set by the account to stop a bulk phase that has not produced its job yet."""

    requested: bool = False


def take_snapshot(st: MailboxState, slot: int) -> Snapshot:
    return Snapshot(
        gen=st.gen,
        slot=slot,
        uidvalidity=st.uidvalidity,
        uidnext=st.uidnext,
        highestmodseq=st.highestmodseq,
        keywords=st.keywords[: st.kw_durable],
        cols={k: v[:] for k, v in st.cols.items()},
        end=st.data_size,
        total_size=st.total_size,
        delivered=list(st.delivered.items()),
    )


def bulk(
    directory: Path, fds: list[int], snap: Snapshot, epoch: int, check_epoch: Callable[[], None], job_box: list[Job], abort: Abort
) -> Job:
    """Phase 1 (background thread): write and fsync the live messages of the
    snapshot to ``.log.<epoch>.<slot>.tmp``.  ``fds`` are the job's own
    duplicates of the chain's descriptors (closed here; the last one, the
    own file's, is kept for the catch-up).  ``job_box`` receives the job at
    once, so the caller can abort it."""
    src_fd = fds[-1]
    try:
        try:
            if abort.requested:
                raise CompactionAborted
            check_epoch()
            gen = snap.gen + 1
            name = log_name(epoch, snap.slot)
            tmp = directory / f".{name}.tmp"
            faults.point("create")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
        except BaseException:
            os.close(src_fd)
            raise
        job = Job(directory, gen, name, src_fd, fd, snap_end=snap.end, tail_base=0)
        job_box.append(job)
        _bulk(job, fds, snap, epoch, abort)
        return job
    finally:
        for other in fds[:-1]:
            with contextlib.suppress(OSError):
                os.close(other)


def _bulk(job: Job, fds: list[int], snap: Snapshot, epoch: int, abort: Abort) -> None:
    buf = R.RecordBuffer()

    def flush() -> None:
        if buf.bufs:
            write_pieces(job.fd, buf.bufs, job.pos)
            job.pos += buf.length
        job.last_off, job.last_crc = job.pos - buf.length + buf.last_rel, buf.last_crc
        buf.__init__()  # type: ignore[misc]

    try:
        buf.add(R.frame_parts(R.MAILBOX, epoch, R.MAILBOX_BODY.pack(snap.uidvalidity, snap.uidnext, snap.highestmodseq, job.gen)))
        for k, kw in enumerate(snap.keywords):
            buf.add(R.frame_parts(R.KEYWORD, epoch, R.KEYWORD_FIXED.pack(k), kw.encode("utf-8")))
        c = snap.cols
        for i in range(len(c["uid"])):
            if job.aborted or abort.requested:
                raise CompactionAborted
            uid, blen, mlen = c["uid"][i], c["blen"][i], c["mlen"][i]
            voff = c["off"][i]
            sfd, off = fds[voff >> SEG_SHIFT], voff & SEG_MASK
            piece: R.Piece
            if blen + mlen > IN_MEMORY:
                piece = R.FileRange(sfd, off, blen + mlen)
            else:
                piece = os.pread(sfd, blen + mlen, off)
                if len(piece) != blen + mlen:
                    raise OSError("data file ended early")
            fixed = R.MESSAGE_FIXED.pack(uid, c["modseq"][i], c["date"][i], c["tz"][i], 0, c["flags"][i], blen, mlen)
            at = buf.add(R.frame_parts(R.MESSAGE, epoch, fixed, piece))
            job.offsets[uid] = job.pos + at + R.HEADER_SIZE + R.MESSAGE_FIXED.size
            if buf.length >= FLUSH_AT:
                flush()
        for did, uid in snap.delivered:
            buf.add(R.frame_parts(R.DELIVERY, epoch, R.UID_ITEM.pack(uid), did.encode("utf-8")))
        buf.add(R.frame_parts(R.COMMIT, epoch))
        flush()
        os.fsync(job.fd)
    except BaseException:
        job.discard()
        raise
    job.tail_base = job.pos
    job.copied_to = snap.end


def catch_up(job: Job, end: int) -> None:
    """Phase 2: copy the committed records of the old log from where the
    last copy stopped up to ``end`` (a committed end of that log)."""
    if job.aborted:
        raise CompactionAborted
    if end > job.copied_to:
        # both in the own file: its records after the snapshot
        if end >> SEG_SHIFT != job.copied_to >> SEG_SHIFT:
            raise CompactionAborted  # the own file was sealed meanwhile (a failed write)
        job.pos = copy_range(R.FileRange(job.src_fd, job.copied_to & SEG_MASK, end - job.copied_to), job.fd, job.pos)
        job.copied_to = end


def switch(job: Job, st: MailboxState, epoch: int, check_epoch: Callable[[], None]) -> tuple[Any, ...]:
    """Phase 3 (I/O thread, the committer waiting): copy the rest, fsync,
    write the new checkpoint, give the new file its name.  Returns (fd of
    the new file, new offset column, new size, last record offset, last
    record CRC); the caller makes it the chain."""
    try:
        catch_up(job, st.data_size)
        os.fsync(job.fd)
        if st.data_size > job.snap_end:  # the last record is the old chain's last
            last_off, last_crc = st.last_rec_off - job.snap_end + job.tail_base, st.last_crc
        else:
            last_off, last_crc = job.last_off, job.last_crc
        offsets = array("Q", (job.new_offset(u, o) for u, o in zip(st.cols["uid"], st.cols["off"], strict=True)))
        entry = {"name": job.name, "origin": job.name, "seal": None}
        shadow = MailboxState(job.directory, st.uidvalidity, writable=True, fence=check_epoch, epoch=epoch, chain=[entry], gen=job.gen)
        shadow.cols = {name: (offsets if name == "off" else st.cols[name]) for name, _code in COLUMNS}
        shadow.keywords = st.keywords[: st.kw_durable]
        shadow.delivered = dict(st.delivered)
        shadow.total_size = st.total_size
        shadow.uidnext, shadow.highestmodseq, shadow.max_epoch = st.uidnext, st.highestmodseq, epoch
        shadow.data_size, shadow.last_rec_off, shadow.last_crc = job.pos, last_off, last_crc
        shadow.write_checkpoint(shadow.checkpoint_bytes())
        check_epoch()
        faults.point("rename")
        os.replace(job.tmp, job.directory / job.name)
        job.switched = True
    except BaseException:
        job.discard()
        raise
    with contextlib.suppress(OSError):
        fsync_dir(job.directory)
    with contextlib.suppress(OSError):
        os.close(job.src_fd)
    job.src_fd = -1
    return job.fd, offsets, job.pos, last_off, last_crc


def adopt_new_file(st: MailboxState, job: Job, new_fd: int) -> list[Segment]:
    """Make the compacted file the whole chain of ``st`` (in place: the
    manifest's entry list is shared); returns the old files, whose
    descriptors the caller retires."""
    old = st.segs
    entry = {"name": job.name, "origin": job.name, "seal": None}
    st.chain[:] = [entry]
    st.segs = [Segment(entry, new_fd, True)]
    st.gen = job.gen
    return old


# -- folding the small files of a chain -----------------------------------


@dataclass
class Fold:
    """The sealed files after the first one folded into one new file: their
    committed records copied verbatim (records hold no offsets), each
    file's leading MAILBOX record left out.  Cheap where a full compaction
    would rewrite a large first file for a few small ones."""

    directory: Path
    name: str
    first: int  # chain position of the first folded file
    count: int  # files folded
    shifts: list[int]  # per folded file: new offset - old offset
    fd: int = -1
    size: int = 0


def fold_range(st: MailboxState) -> tuple[int, int] | None:
    """(first position, count) of the sealed files after the first one,
    when there are at least two of them."""
    last = len(st.segs) - 1
    end = last if st.segs[last].own else last + 1  # the own file stays
    first = 1
    return (first, end - first) if end - first >= 2 else None


def fold(st: MailboxState, epoch: int, slot: int, check_epoch: Callable[[], None]) -> Fold:
    """Write the folded file (I/O thread, the committer waiting) and give
    it its name; the caller makes it part of the chain."""
    got = fold_range(st)
    assert got is not None
    first, count = got
    name = log_name(epoch, slot)
    tmp = st.directory / f".{name}.tmp"
    faults.point("create")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
    job = Fold(st.directory, name, first, count, [], fd)
    try:
        lead_epoch = 0
        head = R.parse_header(os.pread(st.segs[first].fd, R.HEADER_SIZE, 0))
        if head is not None:
            lead_epoch = head.epoch  # so the file's writers still read in ascending order
        mailbox = R.frame(R.MAILBOX, lead_epoch, R.MAILBOX_BODY.pack(st.uidvalidity, 0, 0, st.gen + 1))
        pos = write_pieces(fd, [mailbox], 0)
        for seg in st.segs[first : first + count]:
            hdr = R.parse_header(os.pread(seg.fd, R.HEADER_SIZE, 0))
            seal = seg.limit
            if hdr is None or seal is None:
                raise StorageError(f"{st.directory}/{seg.entry['name']} cannot be folded")
            start = R.HEADER_SIZE + hdr.length
            job.shifts.append(pos - start)
            if seal > start:
                pos = copy_range(R.FileRange(seg.fd, start, seal - start), fd, pos)
        os.fsync(fd)
        job.size = pos
        check_epoch()
        faults.point("rename")
        os.replace(tmp, st.directory / name)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        fsync_dir(st.directory)
    return job


def remap(voff: int, job: Fold) -> int:
    """A chain position before the fold, after it."""
    pos, off = voff >> SEG_SHIFT, voff & SEG_MASK
    if pos < job.first:
        return voff
    if pos < job.first + job.count:
        return (job.first << SEG_SHIFT) | (off + job.shifts[pos - job.first])
    return ((pos - job.count + 1) << SEG_SHIFT) | off


def adopt_fold(st: MailboxState, job: Fold) -> list[Segment]:
    """Put the folded file in the chain (in place) and remap every chain
    position of the state; returns the replaced files (the caller retires
    their descriptors; ghosts keep reading them)."""
    for ghost in st.ghosts.values():
        if ghost.fd < 0:
            ghost.fd, ghost.off = st.fd_at(ghost.off)
    old = st.segs[job.first : job.first + job.count]
    entry = {"name": job.name, "origin": job.name, "seal": job.size}
    st.chain[job.first : job.first + job.count] = [entry]
    st.segs[job.first : job.first + job.count] = [Segment(entry, job.fd, False)]
    st.cols["off"] = array("Q", (remap(o, job) for o in st.cols["off"]))
    st.data_size = remap(st.data_size, job)
    st.last_rec_off = remap(st.last_rec_off, job)
    st.gen += 1
    return old
