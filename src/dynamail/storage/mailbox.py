"""One mailbox on disk: its chain of log files, its index checkpoint, its in-memory index.

A mailbox's data is a *chain* of append-only record logs (``records.py``),
listed in order by the account's manifest (``fence.py``).  Every file of the
chain was written by exactly one ownership epoch:

* ``log.<epoch>.<slot>`` — a log file.  The files of older epochs are
  *sealed*: the manifest records the length up to which they count, and
  nothing past it is ever read (a stale owner may still append there; no
  one looks).  The last file is the current owner's own when it has written
  to the mailbox in its tenure; only it is appended to.
* ``index.<epoch>`` — a checkpoint of the in-memory index (columns of
  fixed-size values, one entry per live message) covering the chain up to a
  position.  It is a cache: written atomically by its epoch's owner, and
  when it is missing, damaged, or does not match the chain, it is ignored
  and the index is rebuilt by replaying the chain.

Positions in the chain are *virtual offsets*: the file's place in the chain
times 2**40 plus the offset in the file, so the index keeps one 64-bit
offset per message whatever file it is in.

Opening replays the chain after the checkpoint's position, cuts a torn tail
of the owner's own file, and applies records in order.  Invariants: the
in-memory columns hold the live messages in ascending UID order;
``data_size`` is the virtual offset just past the last valid record;
every record up to ``data_size`` has been applied.  All file work here runs
on the account's I/O thread.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import struct
import sys
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dynamail.durable import fsync_dir
from dynamail.filemodes import private_dirs
from dynamail.storage import faults
from dynamail.storage import records as R
from dynamail.storage.api import SYSTEM_FLAGS, MessageInfo, StorageError, StoreClosed

SYSTEM_BITS = {name: 1 << i for i, name in enumerate(SYSTEM_FLAGS)}
SEEN, DELETED = SYSTEM_BITS["\\Seen"], SYSTEM_BITS["\\Deleted"]
KEYWORD_BASE = len(SYSTEM_FLAGS)
MAX_KEYWORDS = 64 - KEYWORD_BASE  # keywords per mailbox (bits of the flags bitmap)

# A checkpoint is written when the tail that an open would replay grows past
# either bound, so an open never replays more than this.
CHECKPOINT_RECORDS = 2048
CHECKPOINT_BYTES = 32 << 20

INDEX_MAGIC = b"DMIX"
INDEX_VERSION = 2
# magic, version, generation, count, covered (virtual), last record
# (virtual), its CRC, uidvalidity, uidnext, highest modseq, highest epoch,
# total message bytes, keyword-list length, delivery-list length
INDEX_HEAD = struct.Struct("<4sIIIQQIIIQQQII")
# A chain position is the file's place in the chain times 2**40 plus the
# offset in that file (files of up to 1 TiB, 2**24 files per chain).
SEG_SHIFT = 40
SEG_MASK = (1 << SEG_SHIFT) - 1
# Delivery ids remembered per mailbox (exactly-once hand-off): the newest
# ones; a hand-off retried after this many later deliveries is not recognised.
MAX_DELIVERIES = 20000
# column name, array type code; every column has one entry per live message
COLUMNS = (
    ("uid", "I"),
    ("modseq", "Q"),
    ("date", "q"),
    ("tz", "h"),
    ("flags", "Q"),
    ("off", "Q"),  # offset of the message body in the data file
    ("blen", "I"),  # message size (canonical form)
    ("mlen", "I"),  # parse-result size; it follows the body
)
for _name, _code in COLUMNS:
    assert array(_code).itemsize == struct.calcsize("<" + _code), _code
BIG_ENDIAN = sys.byteorder == "big"

SCAN_CHUNK = 4 << 20
# fdatasync flushes the data and the size, which is all an append needs;
# where the platform lacks it (macOS), fsync does the same and more.
_fdatasync = getattr(os, "fdatasync", os.fsync)
INFO_CACHE = 200_000  # MessageInfo objects kept per mailbox (about 200 bytes each)


class FileLayoutError(StorageError):
    """A mailbox directory without a usable data file."""


@dataclass(slots=True)
class Ghost:
    """An expunged message that views may still hold until they refresh."""

    info: MessageInfo
    off: int
    blen: int
    mlen: int
    fd: int = -1  # the data file it is in, when not the current one (compacted since)


def log_name(epoch: int, slot: int) -> str:
    return f"log.{epoch}.{slot}"


def index_name(epoch: int) -> str:
    return f"index.{epoch}"


def name_epoch(name: str) -> int | None:
    """The epoch a file name carries (``log.<e>.<s>``, ``index.<e>``, and
    their ``.``-prefixed temporaries), None for other names."""
    parts = name.lstrip(".").split(".")
    if len(parts) >= 2 and parts[0] in ("log", "index", "spool") and parts[1].isdigit():
        return int(parts[1])
    return None


def generations(directory: Path) -> list[int]:
    """Generations of a data file of the 0.1 layout (``data.<g>``)."""
    gens = []
    for entry in directory.iterdir():
        name = entry.name
        if name.startswith("data.") and name[5:].isdigit():
            gens.append(int(name[5:]))
    return sorted(gens)


@dataclass(slots=True)
class Segment:
    """One file of a mailbox's chain, open."""

    entry: dict  # type: ignore[type-arg]  # the manifest's entry: name, origin, seal
    fd: int
    own: bool  # the current owner's own file (appended to)

    @property
    def limit(self) -> int | None:
        seal = self.entry.get("seal")
        return None if seal is None else int(seal)


def flag_names(bits: int, keywords: list[str]) -> frozenset[str]:
    out = [name for name, bit in SYSTEM_BITS.items() if bits & bit]
    kbits = bits >> KEYWORD_BASE
    i = 0
    while kbits:
        if kbits & 1 and i < len(keywords):
            out.append(keywords[i])
        kbits >>= 1
        i += 1
    return frozenset(out)


_ZONES: dict[int, datetime.timezone] = {}


def to_datetime(seconds: int, tz_minutes: int) -> datetime.datetime:
    tz = _ZONES.get(tz_minutes)
    if tz is None:
        tz = _ZONES[tz_minutes] = datetime.timezone(datetime.timedelta(minutes=tz_minutes))
    return datetime.datetime.fromtimestamp(seconds, tz)


class MailboxState:
    """The in-memory index of one mailbox and its open data file."""

    def __init__(
        self,
        directory: Path,
        uidvalidity: int,
        writable: bool,
        fence: Callable[[], None] | None = None,
        *,
        epoch: int = 0,
        chain: list[dict] | None = None,  # type: ignore[type-arg]
        gen: int = 1,
    ) -> None:
        self.directory = directory
        self.writable = writable
        # called after a change to the files, before it is relied on
        # (raises FencedError when the account has a newer owner)
        self.fence = fence or (lambda: None)
        self.uidvalidity = uidvalidity
        self.epoch = epoch
        # the manifest's entries of this mailbox's chain (shared with the
        # account's manifest: changed here when the chain changes)
        self.chain: list[dict] = chain if chain is not None else []  # type: ignore[type-arg]
        self.gen = gen
        self.segs: list[Segment] = []
        self.delivered: dict[str, int] = {}  # delivery id -> UID, oldest first
        self.closed = False
        self.readers = 0  # reads in flight on reader threads (see close())
        self._retired_fds: list[int] = []
        self._file_max_epoch = 0
        self._legacy_file = False
        self.cols: dict[str, array] = {name: array(code) for name, code in COLUMNS}
        self.keywords: list[str] = []
        self.kwmap: dict[str, int] = {}
        self.kw_durable = 0  # keywords whose KEYWORD record is in the log
        self.uidnext = 1
        self.highestmodseq = 0
        self.max_epoch = 0
        self.data_size = 0
        self.last_rec_off = 0
        self.last_crc = 0
        self.tail_records = 0
        self.tail_bytes = 0
        self.total_size = 0
        self.ghosts: dict[int, Ghost] = {}
        self.rebuilt = False
        self.cut_bytes = 0  # torn tail bytes removed at open
        self._flagcache: dict[int, frozenset[str]] = {}
        # reservations made by the committer (loop thread) ahead of the log
        self.res_uidnext = 1
        self.res_modseq = 0
        self._counts: list[int] | None = None  # [unseen, deleted], once asked for
        self._infos: dict[int, MessageInfo] = {}

    # -- lookups (any thread; the columns change only on the loop thread) --
    @property
    def uids(self) -> array:
        return self.cols["uid"]

    def pos(self, uid: int) -> int:
        uids = self.cols["uid"]
        i = bisect_left(uids, uid)
        if i < len(uids) and uids[i] == uid:
            return i
        return -1

    def flags_of_bits(self, bits: int) -> frozenset[str]:
        got = self._flagcache.get(bits)
        if got is None:
            got = flag_names(bits, self.keywords)
            if len(self._flagcache) < 4096:
                self._flagcache[bits] = got
        return got

    def info_at(self, i: int) -> MessageInfo:
        c = self.cols
        uid = c["uid"][i]
        modseq = c["modseq"][i]
        got = self._infos.get(uid)
        # every flag change raises the MODSEQ, so an entry with the current
        # MODSEQ is current
        if got is not None and got.modseq == modseq:
            return got
        got = MessageInfo(
            uid=uid,
            size=c["blen"][i],
            internal_date=to_datetime(c["date"][i], c["tz"][i]),
            flags=self.flags_of_bits(c["flags"][i]),
            modseq=modseq,
        )
        if len(self._infos) >= INFO_CACHE:
            self._infos.clear()
        self._infos[uid] = got
        return got

    @property
    def fd(self) -> int:
        """The descriptor of the last file of the chain."""
        return self.segs[-1].fd if self.segs else -1

    def fd_at(self, voff: int) -> tuple[int, int]:
        """(descriptor, offset in that file) of a chain position."""
        return self.segs[voff >> SEG_SHIFT].fd, voff & SEG_MASK

    def locate(self, uid: int) -> tuple[int, int, int, int] | None:
        """(data file descriptor, body offset in it, body length,
        parse-result length) of a live or ghost message."""
        if self.closed:
            raise StoreClosed("the mailbox has been closed")
        i = self.pos(uid)
        if i >= 0:
            c = self.cols
            fd, off = self.fd_at(c["off"][i])
            return fd, off, c["blen"][i], c["mlen"][i]
        g = self.ghosts.get(uid)
        if g is not None:
            if g.fd >= 0:
                return g.fd, g.off, g.blen, g.mlen
            fd, off = self.fd_at(g.off)
            return fd, off, g.blen, g.mlen
        return None

    def location(self, uid: int) -> tuple[int, int, int] | None:
        """(body offset, body length, parse-result length) of a live or ghost message."""
        i = self.pos(uid)
        if i >= 0:
            c = self.cols
            return c["off"][i], c["blen"][i], c["mlen"][i]
        g = self.ghosts.get(uid)
        if g is not None:
            return g.off, g.blen, g.mlen
        return None

    def keyword_bits(self, names: Iterable[str], create: bool) -> int:
        bits = 0
        for name in names:
            bit = SYSTEM_BITS.get(name)
            if bit is None:
                for sysname, sbit in SYSTEM_BITS.items():
                    if sysname.lower() == name.lower():
                        bit = sbit
                        break
            if bit is not None:
                bits |= bit
                continue
            if name.startswith("\\"):
                continue  # \Recent and unknown system flags are not stored
            k = self.kwmap.get(name)
            if k is None:
                if not create:
                    continue
                if len(self.keywords) >= MAX_KEYWORDS:
                    raise StorageError(f"too many keywords in this mailbox (limit {MAX_KEYWORDS})")
                k = len(self.keywords)
                self.keywords.append(name)
                self.kwmap[name] = k
                self._flagcache.clear()
            bits |= 1 << (KEYWORD_BASE + k)
        return bits

    def counts(self) -> tuple[int, int]:
        """(unseen, deleted) messages; counted once, then kept up to date."""
        if self._counts is None:
            flags = self.cols["flags"]
            self._counts = [sum(1 for f in flags if not f & SEEN), sum(1 for f in flags if f & DELETED)]
        return self._counts[0], self._counts[1]

    def live_bytes(self) -> int:
        n = len(self.cols["uid"])
        return self.total_size + sum(self.cols["mlen"]) + n * (R.HEADER_SIZE + R.MESSAGE_FIXED.size)

    # -- applying records (replay, and after a commit) ---------------------
    def add_message(self, uid: int, modseq: int, date: int, tz: int, flags: int, off: int, blen: int, mlen: int) -> None:
        c = self.cols
        uids = c["uid"]
        if uids and uid <= uids[-1]:
            return
        uids.append(uid)
        c["modseq"].append(modseq)
        c["date"].append(date)
        c["tz"].append(tz)
        c["flags"].append(flags)
        if self._counts is not None:
            self._counts[0] += not flags & SEEN
            self._counts[1] += bool(flags & DELETED)
        c["off"].append(off)
        c["blen"].append(blen)
        c["mlen"].append(mlen)
        self.total_size += blen
        self.uidnext = max(self.uidnext, uid + 1)
        self.highestmodseq = max(self.highestmodseq, modseq)

    def set_flags(self, uid: int, flags: int, modseq: int) -> bool:
        i = self.pos(uid)
        self.highestmodseq = max(self.highestmodseq, modseq)
        if i < 0:
            return False
        if self._counts is not None:
            old = self.cols["flags"][i]
            self._counts[0] += (not flags & SEEN) - (not old & SEEN)
            self._counts[1] += bool(flags & DELETED) - bool(old & DELETED)
        self.cols["flags"][i] = flags
        self.cols["modseq"][i] = modseq
        return True

    def expunge(self, uids: Iterable[int], modseq: int, keep_ghosts: bool) -> list[int]:
        self.highestmodseq = max(self.highestmodseq, modseq)
        positions = sorted({p for p in (self.pos(u) for u in uids) if p >= 0})
        if not positions:
            return []
        c = self.cols
        gone = [c["uid"][p] for p in positions]
        for p in positions:
            self.total_size -= c["blen"][p]
            if self._counts is not None:
                self._counts[0] -= not c["flags"][p] & SEEN
                self._counts[1] -= bool(c["flags"][p] & DELETED)
            if keep_ghosts:
                self.ghosts[c["uid"][p]] = Ghost(self.info_at(p), c["off"][p], c["blen"][p], c["mlen"][p])
        if len(positions) <= 64:
            for p in reversed(positions):
                for col in c.values():
                    del col[p]
        else:
            drop = set(positions)
            mask = [i not in drop for i in range(len(c["uid"]))]
            for name, code in COLUMNS:
                c[name] = array(code, itertools.compress(c[name], mask))
        return gone

    def remember_delivery(self, delivery_id: str, uid: int) -> None:
        self.delivered[delivery_id] = uid
        if len(self.delivered) > MAX_DELIVERIES:
            del self.delivered[next(iter(self.delivered))]

    def apply(self, hdr: R.Header, off: int, payload: bytes | memoryview, keep_ghosts: bool = False) -> None:
        """Apply one record found at chain position ``off``."""
        if self._legacy_file and hdr.epoch < self._file_max_epoch:
            # a 0.1 log: written by a fenced-out owner after the new one's
            # OWNER record (files of this layout have one writer each)
            return
        self._file_max_epoch = hdr.epoch
        self.max_epoch = max(self.max_epoch, hdr.epoch)
        t = hdr.rtype
        if t == R.MESSAGE:
            uid, modseq, date, tz, _r, flags, blen, mlen = R.MESSAGE_FIXED.unpack_from(payload)
            body_off = off + R.HEADER_SIZE + R.MESSAGE_FIXED.size
            self.add_message(uid, modseq, date, tz, flags, body_off, blen, mlen)
        elif t == R.FLAGS:
            modseq, count = R.COUNTED.unpack_from(payload)
            for j in range(count):
                uid, flags = R.FLAG_ITEM.unpack_from(payload, R.COUNTED.size + j * R.FLAG_ITEM.size)
                self.set_flags(uid, flags, modseq)
        elif t == R.EXPUNGE:
            modseq, count = R.COUNTED.unpack_from(payload)
            uids = struct.unpack_from(f"<{count}I", payload, R.COUNTED.size)
            self.expunge(uids, modseq, keep_ghosts)
        elif t == R.KEYWORD:
            (k,) = R.KEYWORD_FIXED.unpack_from(payload)
            name = bytes(payload[R.KEYWORD_FIXED.size :]).decode("utf-8", "replace")
            while len(self.keywords) < k:
                self.keywords.append(f"$unknown{len(self.keywords)}")
            if k == len(self.keywords):
                self.keywords.append(name)
            else:
                self.keywords[k] = name
            self.kwmap = {n: i for i, n in enumerate(self.keywords)}
            self.kw_durable = len(self.keywords)
            self._flagcache.clear()
        elif t == R.MAILBOX:
            _uv, uidnext, hms, _gen = R.MAILBOX_BODY.unpack_from(payload)
            self.uidnext = max(self.uidnext, uidnext)
            self.highestmodseq = max(self.highestmodseq, hms)
        elif t == R.DELIVERY:
            (uid,) = R.UID_ITEM.unpack_from(payload)
            self.remember_delivery(bytes(payload[R.UID_ITEM.size :]).decode("utf-8", "replace"), uid)

    # -- opening -------------------------------------------------------------
    def open(self, seal_foreign: bool = False) -> None:
        """Open the chain, load the checkpoint, replay the rest.

        Every file of an older epoch must be sealed, except with
        ``seal_foreign`` (a new owner adopting its predecessor's files): then
        an unsealed file of another epoch is read up to its last complete
        write, and that length becomes its seal in ``chain``."""
        if not self.chain:
            raise FileLayoutError(f"no log file in {self.directory}")
        for entry in self.chain:
            name = entry["name"]
            # own: created by this epoch (adopted files carry our name, not our origin)
            own = entry.get("seal") is None and name_epoch(entry["origin"]) == self.epoch and self.writable
            if entry.get("seal") is None and not own and not seal_foreign:
                raise FileLayoutError(f"{self.directory}/{name} is not sealed")
            flags = os.O_RDWR if own else os.O_RDONLY
            try:
                fd = os.open(self.directory / name, flags | getattr(os, "O_BINARY", 0))
            except BaseException:
                self.close()
                raise
            self.segs.append(Segment(entry, fd, own))
        for seg in self.segs[:-1]:
            if seg.own:
                raise FileLayoutError(f"{self.directory}: own file {seg.entry['name']} is not the last")
        start = self._load_checkpoint()
        if start == 0:
            self.rebuilt = True
        first = start >> SEG_SHIFT
        end = start
        for i in range(first, len(self.segs)):
            seg = self.segs[i]
            base = i << SEG_SHIFT
            size = os.fstat(seg.fd).st_size
            limit = seg.limit
            upto = size if limit is None else min(limit, size)
            if limit is not None and size < limit:
                raise StorageError(f"{self.directory}/{seg.entry['name']} is shorter than its seal")
            self._file_max_epoch = 0
            self._legacy_file = str(seg.entry["origin"]).startswith("data.")
            from_off = (start & SEG_MASK) if i == first else 0
            got = self._scan(seg.fd, base, from_off, upto)
            if seg.own and got < size:
                self.cut_bytes = size - got
                faults.point("truncate")
                os.ftruncate(seg.fd, got)
                os.fsync(seg.fd)
            elif limit is None and not seg.own:
                seg.entry["seal"] = got  # adopting: the predecessor's last complete write
            elif limit is not None and got < limit:
                raise StorageError(f"{self.directory}/{seg.entry['name']}: damaged before its seal at {got}")
            end = base | got
        last = self.segs[-1]
        if last.own and (end & SEG_MASK) == 0:
            # even the MAILBOX record was lost (the file was cut): start it again
            buf = R.frame(R.MAILBOX, self.epoch, R.MAILBOX_BODY.pack(self.uidvalidity, self.uidnext, self.highestmodseq, self.gen))
            faults.point("write")
            os.pwrite(last.fd, buf, 0)
            os.fsync(last.fd)
            self.last_rec_off, self.last_crc = end, R.parse_header(buf).crc  # type: ignore[union-attr]
            end += len(buf)
        self.data_size = end
        self.res_uidnext = self.uidnext
        self.res_modseq = self.highestmodseq

    def _reset(self) -> None:
        self._counts = None
        self.cols = {name: array(code) for name, code in COLUMNS}
        self.keywords, self.kwmap, self.kw_durable = [], {}, 0
        self.uidnext, self.highestmodseq, self.max_epoch, self.total_size = 1, 0, 0, 0
        self.last_rec_off = self.last_crc = 0
        self.delivered = {}
        self._flagcache.clear()

    def _load_checkpoint(self) -> int:
        """Load ``index.<epoch>`` if it matches the chain; return the chain
        position to replay from (0: rebuild from the whole chain)."""
        try:
            blob = (self.directory / index_name(self.epoch)).read_bytes()
        except OSError:
            return 0
        try:
            if len(blob) < INDEX_HEAD.size + 4 or zlib.crc32(blob[:-4]) != struct.unpack_from("<I", blob, len(blob) - 4)[0]:
                return 0
            (magic, version, gen, count, covered, last_off, last_crc, uidvalidity, uidnext, hms, max_epoch, total, kwlen, dlen) = (
                INDEX_HEAD.unpack_from(blob)
            )
            if magic != INDEX_MAGIC or version != INDEX_VERSION or gen != self.gen:
                return 0
            seg_i = covered >> SEG_SHIFT
            if seg_i >= len(self.segs) or last_off >> SEG_SHIFT != seg_i:
                return 0
            seg = self.segs[seg_i]
            limit = seg.limit
            if limit is None:
                limit = os.fstat(seg.fd).st_size
            if (covered & SEG_MASK) > limit:
                return 0
            head = os.pread(seg.fd, R.HEADER_SIZE, last_off & SEG_MASK)
            hdr = R.parse_header(head)
            if hdr is None or hdr.crc != last_crc or last_off + R.HEADER_SIZE + hdr.length != covered:
                return 0
            pos = INDEX_HEAD.size
            keywords = json.loads(blob[pos : pos + kwlen].decode("utf-8"))
            pos += kwlen
            delivered = json.loads(blob[pos : pos + dlen].decode("utf-8"))
            pos += dlen
            cols: dict[str, array] = {}
            view = memoryview(blob)
            for name, code in COLUMNS:
                col = array(code)
                nbytes = col.itemsize * count
                if pos + nbytes > len(blob) - 4:
                    return 0
                col.frombytes(view[pos : pos + nbytes])
                if BIG_ENDIAN:
                    col.byteswap()
                pos += nbytes
                cols[name] = col
            if pos != len(blob) - 4:
                return 0
        except (ValueError, struct.error, UnicodeDecodeError, OSError):
            self._reset()
            return 0
        self.cols = cols
        self._counts = None
        self.keywords = list(keywords)
        self.kwmap = {n: i for i, n in enumerate(self.keywords)}
        self.kw_durable = len(self.keywords)
        self.delivered = {str(k): int(v) for k, v in delivered}
        self.uidvalidity = uidvalidity or self.uidvalidity
        self.uidnext, self.highestmodseq, self.max_epoch = uidnext, hms, max_epoch
        self.last_rec_off, self.last_crc = last_off, last_crc
        self.total_size = total
        return int(covered)

    def _scan(self, fd: int, base: int, start: int, size: int) -> int:
        """Replay the records of one file of the chain (at chain position
        ``base``) from ``start`` up to ``size``; returns the end of the last
        committed write (records after it are a torn or unfinished write)."""
        pos = start
        committed = start
        buf = b""
        buf_off = start
        records = 0
        pending: list[tuple[R.Header, int, memoryview]] = []
        while pos < size:
            rel = pos - buf_off
            if rel + R.HEADER_SIZE > len(buf):
                buf = os.pread(fd, max(SCAN_CHUNK, R.HEADER_SIZE), pos)
                buf_off, rel = pos, 0
            hdr = R.parse_header(memoryview(buf)[rel : rel + R.HEADER_SIZE])
            if hdr is None:
                break
            end = pos + R.HEADER_SIZE + hdr.length
            if end > size:
                break
            if rel + R.HEADER_SIZE + hdr.length > len(buf):
                buf = os.pread(fd, max(SCAN_CHUNK, R.HEADER_SIZE + hdr.length), pos)
                buf_off, rel = pos, 0
                if len(buf) < R.HEADER_SIZE + hdr.length:
                    break
            view = memoryview(buf)
            payload = view[rel + R.HEADER_SIZE : rel + R.HEADER_SIZE + hdr.length]
            if not R.check(view[rel:], hdr, payload):
                break
            if pos == 0:
                if hdr.rtype != R.MAILBOX:
                    break
                committed = end  # the first record stands alone
                self.apply(hdr, base | pos, payload)
                self.last_rec_off, self.last_crc = base | pos, hdr.crc
            elif hdr.rtype == R.COMMIT:
                for phdr, poff, ppayload in pending:
                    self.apply(phdr, base | poff, ppayload)
                pending.clear()
                if hdr.epoch >= self._file_max_epoch:
                    self._file_max_epoch = hdr.epoch
                committed = end
                self.last_rec_off, self.last_crc = base | pos, hdr.crc
            else:
                pending.append((hdr, pos, payload))
            records += 1
            pos = end
        self.tail_records += records
        self.tail_bytes += committed - start
        return committed

    # -- writing (I/O thread) ------------------------------------------------
    def own_file(self) -> Segment | None:
        return self.segs[-1] if self.segs and self.segs[-1].own else None

    def start_own_file(self, slot: int) -> dict:  # type: ignore[type-arg]
        """Create this owner's own log file at the end of the chain (durably,
        before the manifest names it); returns its chain entry (the caller
        records it in the manifest before writing to it)."""
        name = log_name(self.epoch, slot)
        create_log(self.directory, name, self.uidvalidity, self.uidnext, self.highestmodseq, self.gen, self.epoch)
        fd = os.open(self.directory / name, os.O_RDWR | getattr(os, "O_BINARY", 0))
        entry = {"name": name, "origin": name, "seal": None}
        size = os.fstat(fd).st_size
        self.chain.append(entry)
        self.segs.append(Segment(entry, fd, True))
        self.data_size = ((len(self.segs) - 1) << SEG_SHIFT) | size
        return entry

    def seal_own(self) -> None:
        """Stop appending to the own file: seal it at the last complete
        write (after a failed write; the next write starts a new file)."""
        seg = self.own_file()
        if seg is not None:
            seg.entry["seal"] = self.data_size & SEG_MASK
            seg.own = False

    def write(self, bufs: list[R.Piece]) -> int:
        """Append ``bufs`` (whole records) durably at the end of the owner's
        own file; returns the chain position where they start.  A failed
        write leaves bytes after ``data_size`` that no reader looks at; the
        owner never cuts its file under a successor that may have sealed
        it, so such a store stops writing (the caller fences it)."""
        seg = self.own_file()
        if seg is None:
            raise StorageError("no own log file to write to")
        start = self.data_size
        off = start & SEG_MASK
        cur = os.fstat(seg.fd).st_size
        if cur != off:
            self.seal_own()
            raise StorageError(f"log file {seg.entry['name']} in {self.directory} is {cur} bytes, expected {off}")
        faults.point("write")
        try:
            write_pieces(seg.fd, bufs, off)
            _fdatasync(seg.fd)
        except OSError:
            self.seal_own()
            raise
        return start

    def committed(self, start: int, length: int, last_off_rel: int, last_crc: int, records: int) -> None:
        self.data_size = start + length
        self.last_rec_off = start + last_off_rel
        self.last_crc = last_crc
        self.tail_records += records
        self.tail_bytes += length

    def log_bytes(self) -> int:
        """Bytes of all files of the chain (what compaction would rewrite)."""
        total = 0
        for i, seg in enumerate(self.segs):
            if i == len(self.segs) - 1:
                total += self.data_size & SEG_MASK
            else:
                total += seg.limit or 0
        return total

    def needs_checkpoint(self) -> bool:
        return self.tail_records > CHECKPOINT_RECORDS or self.tail_bytes > CHECKPOINT_BYTES

    def checkpoint_bytes(self) -> bytes:
        """The checkpoint of the current state (call on the loop thread or
        while the loop does not change the state)."""
        kw = json.dumps(self.keywords).encode("utf-8")
        dl = json.dumps(list(self.delivered.items())).encode("utf-8")
        count = len(self.cols["uid"])
        head = INDEX_HEAD.pack(
            INDEX_MAGIC, INDEX_VERSION, self.gen, count, self.data_size, self.last_rec_off,
            self.last_crc, self.uidvalidity, self.uidnext, self.highestmodseq, self.max_epoch, self.total_size, len(kw), len(dl),
        )
        parts = [head, kw, dl]
        for name, _code in COLUMNS:
            col = self.cols[name]
            if BIG_ENDIAN:
                col = array(col.typecode, col)
                col.byteswap()
            parts.append(col.tobytes())
        blob = b"".join(parts)
        return blob + struct.pack("<I", zlib.crc32(blob))

    def write_checkpoint(self, blob: bytes) -> None:
        """Replace ``index.<epoch>`` (this owner's own name) atomically."""
        target = self.directory / index_name(self.epoch)
        tmp = self.directory / f".{target.name}.tmp"
        faults.point("create")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            pwrite_all(fd, blob, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        faults.point("rename")
        os.replace(tmp, target)
        fsync_dir(self.directory)

    def close(self) -> None:
        """Release the files.  Reads in flight on reader threads keep the
        descriptors until they finish (``readers``); later reads fail with
        StoreClosed, never on a reused descriptor."""
        self.closed = True
        if self.readers == 0:
            self._close_fds()

    def _close_fds(self) -> None:
        for seg in self.segs:
            if seg.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(seg.fd)
                seg.fd = -1
        for fd in self._retired_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._retired_fds = []

    def begin_read(self) -> None:
        """Called on the loop thread before a read is handed to a reader thread."""
        if self.closed:
            raise StoreClosed("the mailbox has been closed")
        self.readers += 1

    def end_read(self) -> None:
        """Called on the loop thread when that read is over."""
        self.readers -= 1
        if self.closed and self.readers == 0:
            self._close_fds()


def create_log(directory: Path, name: str, uidvalidity: int, uidnext: int, modseq: int, gen: int, epoch: int) -> None:
    """Create the log file ``name`` holding only its MAILBOX record,
    durably (the directory too, when this creates it).  Exclusive: an
    existing name is an error, never overwritten."""
    if not directory.is_dir():
        faults.point("mkdir")
        private_dirs(directory)
    faults.point("create")
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        pwrite_all(fd, R.frame(R.MAILBOX, epoch, R.MAILBOX_BODY.pack(uidvalidity, uidnext, modseq, gen)), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(directory)


def pwrite_all(fd: int, data: bytes, off: int) -> int:
    """Write all of ``data`` at ``off``; returns the offset after it."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, off)
        view = view[n:]
        off += n
    return off


_pwritev = getattr(os, "pwritev", None)
IOV_MAX = 512  # buffers per pwritev call (the platform allows at least 1024)


def write_pieces(fd: int, bufs: list[R.Piece], off: int) -> int:
    """Write buffers and file ranges one after the other at ``off``; returns
    the offset after them.  Runs of buffers go out with one ``pwritev``
    (no joined copy) where the platform has it."""
    run: list[bytes] = []
    for piece in bufs:
        if isinstance(piece, R.FileRange):
            off = write_run(fd, run, off)
            run = []
            off = copy_range(piece, fd, off)
        else:
            run.append(piece)
    return write_run(fd, run, off)


def write_run(fd: int, run: list[bytes], off: int) -> int:
    if len(run) == 1 or (_pwritev is None and run):
        return pwrite_all(fd, run[0] if len(run) == 1 else b"".join(run), off)
    while run:
        chunk = run[:IOV_MAX]
        total = sum(len(b) for b in chunk)
        n = _pwritev(fd, chunk, off) if _pwritev is not None else 0
        if n == total:
            run = run[IOV_MAX:]
            off += n
            continue
        # a short write (rare): finish this chunk with plain writes
        rest = b"".join(chunk)[n:]
        off = pwrite_all(fd, rest, off + n)
        run = run[IOV_MAX:]
    return off


def copy_range(src: R.FileRange, fd: int, off: int) -> int:
    """Copy a file range to ``fd`` at ``off`` in bounded pieces (in the
    kernel where the platform can); returns the offset after it."""
    pos, end = src.offset, src.offset + src.length
    copy_file_range = getattr(os, "copy_file_range", None)
    while pos < end and copy_file_range is not None:
        try:
            n = copy_file_range(src.fd, fd, min(R.COPY_CHUNK, end - pos), pos, off)
        except OSError:
            break  # not across these file systems: copy through user space
        if n <= 0:
            break
        pos += n
        off += n
    if pos < end:
        for chunk in R.FileRange(src.fd, pos, end - pos).chunks():
            off = pwrite_all(fd, chunk, off)
    return off


def read_summary(directory: Path, chain: list[dict], epoch: int, gen: int) -> tuple[int, int] | None:  # type: ignore[type-arg]
    """(message bytes, messages) of a mailbox that is not loaded, from the
    header of its index checkpoint, or None when that header does not cover
    the whole chain (the caller loads the mailbox).  Every file of the chain
    must be sealed.  Reads 80 bytes of the checkpoint and one record header
    of the last file; the checkpoint's own CRC is not checked here (loading
    does)."""
    if not chain or any(e.get("seal") is None for e in chain):
        return None
    last = len(chain) - 1
    seal = int(chain[last]["seal"])
    try:
        fd = os.open(directory / chain[last]["name"], os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        try:
            with open(directory / index_name(epoch), "rb") as f:
                head = f.read(INDEX_HEAD.size)
        except FileNotFoundError:
            # a mailbox that never got a checkpoint: empty if its one file
            # holds only its MAILBOX record
            first = R.parse_header(os.pread(fd, R.HEADER_SIZE, 0))
            if last == 0 and first is not None and first.rtype == R.MAILBOX and R.HEADER_SIZE + first.length == seal:
                return 0, 0
            return None
        if len(head) < INDEX_HEAD.size:
            return None
        (magic, version, g, count, covered, last_off, last_crc, _uv, _un, _hms, _ep, total, _kw, _dl) = INDEX_HEAD.unpack(head)
        if magic != INDEX_MAGIC or version != INDEX_VERSION or g != gen or covered != (last << SEG_SHIFT) | seal:
            return None
        if last_off >> SEG_SHIFT != last:
            return None
        hdr = R.parse_header(os.pread(fd, R.HEADER_SIZE, last_off & SEG_MASK))
        if hdr is None or hdr.crc != last_crc or last_off + R.HEADER_SIZE + hdr.length != covered:
            return None
        return total, count
    except OSError:
        return None
    finally:
        os.close(fd)
