"""A session's view of one selected mailbox (``MailboxView``).

The view keeps its own snapshot of the mailbox's UIDs; sequence number n is
``uids()[n - 1]`` and the snapshot changes only in ``refresh()`` (and when
this view itself expunges or moves messages, which IMAP reports at once).
Flags and other index data are read live from the shared in-memory index.
A message expunged by another session stays readable through this view
until it refreshes (the index keeps a *ghost* of it, and its bytes stay in
the data file until compaction).  Data is read on reader threads with
``os.pread``; parse results are read from the data file, never recomputed
(only the digest of one stored without it is computed, see ``digest``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import msgpack

from dynamail import mime
from dynamail.storage.api import (
    Changes,
    CopyResult,
    MessageInfo,
    NoSuchMailbox,
    StorageError,
    StoreResult,
)
from dynamail.storage.mailbox import MailboxState
from dynamail.storage.search import matches

if TYPE_CHECKING:
    from dynamail.storage.account import FileAccountStore

PARSE_CACHE = 256  # parse results kept per view
SEARCH_CHUNK = 512  # messages scanned per reader-thread trip


def read_parsed(fd: int, off: int, blen: int, mlen: int) -> mime.Parsed:
    """The stored parse result of a message (reader thread); a damaged one is
    recomputed from the message."""
    raw = os.pread(fd, mlen, off + blen) if mlen else b""
    try:
        return mime.Parsed.from_list(msgpack.unpackb(raw, raw=False))
    except Exception:
        return mime.parse(os.pread(fd, blen, off))


def file_digest(fd: int, off: int, blen: int) -> bytes:
    """``mime.content_digest`` of a message in a data file, read in
    ``mime.CHUNK`` pieces (reader thread): for parse results stored without
    a digest."""
    h = hashlib.blake2b(digest_size=mime.DIGEST_SIZE)
    pos, end = off, off + blen
    while pos < end:
        got = os.pread(fd, min(mime.CHUNK, end - pos), pos)
        if not got:
            raise StorageError(f"message data ended {end - pos} bytes early")
        h.update(got)
        pos += len(got)
    return h.digest()


def read_section(fd: int, off: int, blen: int, mlen: int, section: list[int], what: str) -> tuple[mime.Parsed, bytes]:
    parsed = read_parsed(fd, off, blen, mlen)
    rng = mime.section_range(parsed.tree, section, what)
    data = b"" if rng is None else os.pread(fd, rng[1] - rng[0], off + rng[0])
    return parsed, data


def search_many(todo: list[tuple[int, int, int, int, int, mime.Parsed | None]], where: str, text: str) -> list[int]:
    """UIDs among ``todo`` (uid, fd, offset, size, parse-result size, cached
    parse result) whose ``where`` contains ``text`` (reader thread)."""
    out = []
    header_only = where.upper() not in ("BODY", "TEXT")
    for uid, fd, off, blen, mlen, parsed in todo:
        p = parsed or read_parsed(fd, off, blen, mlen)
        # a header field search reads only the header, whatever the message's size
        data = os.pread(fd, min(blen, p.header_end) if header_only else blen, off)
        if matches(data, p, where, text):
            out.append(uid)
    return out


class FileMailboxView:
    """``MailboxView`` on a ``FileAccountStore``."""

    def __init__(self, account: FileAccountStore, name: str, mbox_id: int, state: MailboxState, read_only: bool, view_id: int) -> None:
        self.name = name
        self.uidvalidity = state.uidvalidity
        self.read_only = read_only
        self._account = account
        self._mbox = mbox_id
        self._state = state
        self._id = view_id
        self._feed = account.feed(mbox_id)
        self._feed.views += 1
        self._uids = array("I", state.uids)
        self._top = self._uids[-1] if self._uids else 0
        self._pos = self._feed.end
        self._file: BinaryIO | None = None
        self._old_files: dict[int, BinaryIO] = {}  # descriptor of a replaced generation -> file
        self._file_gen = 0
        self._parsed: OrderedDict[int, mime.Parsed] = OrderedDict()
        self._closed = False

    # -- the snapshot ----------------------------------------------------------
    def uids(self) -> Sequence[int]:
        return self._uids

    def _in_view(self, uid: int) -> bool:
        i = bisect_left(self._uids, uid)
        return i < len(self._uids) and self._uids[i] == uid

    def seq(self, uid: int) -> int:
        """Sequence number of a UID in the view (0 if absent)."""
        i = bisect_left(self._uids, uid)
        return i + 1 if i < len(self._uids) and self._uids[i] == uid else 0

    def info(self, uid: int) -> MessageInfo:
        if not self._in_view(uid):
            raise KeyError(uid)
        st = self._state
        i = st.pos(uid)
        if i >= 0:
            return st.info_at(i)
        ghost = st.ghosts.get(uid)
        if ghost is None:
            raise KeyError(uid)
        return ghost.info

    def flags(self, uid: int) -> frozenset[str]:
        """Flags of one message (cheaper than ``info``)."""
        st = self._state
        i = st.pos(uid)
        if i >= 0:
            return st.flags_of_bits(st.cols["flags"][i])
        return self.info(uid).flags

    def _positions(self, uids: Sequence[int]) -> list[int] | None:
        """Index positions of ascending ``uids`` by one merge walk (None when
        a UID is not live, e.g. a ghost: the caller then goes one by one)."""
        col = self._state.cols["uid"]
        out: list[int] = []
        n = len(col)
        if not uids:
            return out
        if uids[-1] > self._top:
            return None  # not in the view yet (a live UID up to _top always is)
        i = bisect_left(col, uids[0])
        for uid in uids:
            while i < n and col[i] < uid:
                i += 1
            if i >= n or col[i] != uid:
                return None
            out.append(i)
        return out

    def flags_many(self, uids: Sequence[int]) -> list[frozenset[str]]:
        """Flags of many messages at once (FETCH 1:* FLAGS); ``uids`` must be
        in the view.  Much cheaper than ``info`` per message."""
        st = self._state
        ordered = all(uids[k] < uids[k + 1] for k in range(len(uids) - 1))
        pos = self._positions(uids) if ordered else None
        if pos is None:
            return [self.flags(u) for u in uids]
        col = st.cols["flags"]
        of = st.flags_of_bits
        return [of(col[i]) for i in pos]

    def infos(self, uids: Sequence[int]) -> list[MessageInfo]:
        """``info`` of many messages at once."""
        ordered = all(uids[k] < uids[k + 1] for k in range(len(uids) - 1))
        pos = self._positions(uids) if ordered else None
        if pos is None:
            return [self.info(u) for u in uids]
        info_at = self._state.info_at
        return [info_at(i) for i in pos]

    def modseq(self, uid: int) -> int:
        st = self._state
        i = st.pos(uid)
        return st.cols["modseq"][i] if i >= 0 else self.info(uid).modseq

    def uidnext(self) -> int:
        return self._state.uidnext

    def highestmodseq(self) -> int:
        return self._state.highestmodseq

    def _check_live(self) -> None:
        if self._closed:
            raise StorageError("view is closed")
        if self._feed.deleted:
            raise NoSuchMailbox(f"mailbox {self.name!r} was deleted")

    async def refresh(self) -> Changes:
        self._check_live()
        st = self._state
        entries = self._feed.since(self._pos)
        self._pos = self._feed.end
        changes = Changes(highestmodseq=st.highestmodseq)
        if entries is None:  # fell behind the journal: compare with the index
            gone = [u for u in self._uids if st.pos(u) < 0]
            flagged = list(self._uids)
        else:
            xs: set[int] = set()
            fs: set[int] = set()
            for e in entries:
                if e.kind == "x":
                    xs.update(e.uids)
                elif e.kind == "f" and e.origin != self._id:
                    fs.update(e.uids)
            gone = sorted(u for u in xs if self._in_view(u))
            flagged = sorted(u for u in fs if u not in xs and self._in_view(u))
        if gone:
            drop = set(gone)
            self._uids = array("I", (u for u in self._uids if u not in drop))
        changes.expunged = gone
        changes.flags_changed = flagged
        uids = st.uids
        start = bisect_right(uids, self._top)
        added = list(uids[start:])
        if added:
            self._uids.extend(added)
            self._top = added[-1]
        changes.added = added
        return changes

    async def wait_for_change(self, timeout: float) -> bool:
        if self._feed.deleted:
            return True
        return await self._feed.wait(self._id, self._pos, timeout)

    # -- reading ---------------------------------------------------------------
    def _location(self, uid: int) -> tuple[int, int, int, int]:
        self._check_live()
        if not self._in_view(uid):
            raise KeyError(uid)
        loc = self._state.locate(uid)
        if loc is None:
            raise KeyError(uid)
        return loc

    async def _on_reader(self, fn: Any, *args: Any) -> Any:
        """Run a read on a reader thread.  The mailbox's descriptors stay
        open until it is over, even if the store is closed meanwhile (then
        later reads fail with StoreClosed, never on a reused descriptor)."""
        st = self._state
        st.begin_read()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._account.read_pool(), fn, *args)
        finally:
            st.end_read()

    async def _pread(self, fd: int, length: int, offset: int) -> bytes:
        if length <= 0:
            return b""
        data: bytes = await self._on_reader(os.pread, fd, length, offset)
        return data

    async def read(self, uid: int) -> bytes:
        fd, off, blen, _mlen = self._location(uid)
        return await self._pread(fd, blen, off)

    async def read_range(self, uid: int, offset: int, length: int) -> bytes:
        fd, off, blen, _mlen = self._location(uid)
        offset = max(0, min(offset, blen))
        length = max(0, min(length, blen - offset))
        return await self._pread(fd, length, off + offset)

    async def open_body(self, uid: int) -> tuple[BinaryIO, int, int]:
        fd, off, blen, _mlen = self._location(uid)
        # a duplicate of the log file's descriptor, one per file of the
        # chain: no path lookup on the loop thread, and it stays valid
        # whatever the store closes; the shared file offset is harmless,
        # the engine only uses pread/pwrite
        f = self._old_files.get(fd)
        if f is None:
            f = self._old_files[fd] = open(os.dup(fd), "rb")
        return f, off, blen

    def _remember(self, uid: int, parsed: mime.Parsed) -> None:
        self._parsed[uid] = parsed
        if len(self._parsed) > PARSE_CACHE:
            self._parsed.popitem(last=False)

    def _cached(self, uid: int) -> mime.Parsed | None:
        got = self._parsed.get(uid)
        if got is not None:
            self._parsed.move_to_end(uid)
        return got

    async def parsed(self, uid: int) -> mime.Parsed:
        """The parse result stored with the message."""
        got = self._cached(uid)
        if got is None:
            fd, off, blen, mlen = self._location(uid)
            got = await self._on_reader(read_parsed, fd, off, blen, mlen)
            self._remember(uid, got)
        return got

    async def digest(self, uid: int) -> bytes:
        """The message's content digest (``mime.content_digest``): stored in
        its parse result, which COPY and MOVE carry along; computed from the
        message when it was stored without one."""
        got = await self.parsed(uid)
        if got.digest:
            return got.digest
        fd, off, blen, _mlen = self._location(uid)
        digest: bytes = await self._on_reader(file_digest, fd, off, blen)
        self._remember(uid, dataclasses.replace(got, digest=digest))
        return digest

    async def _section(self, uid: int, section: Sequence[int], what: str) -> bytes:
        """A section's bytes with one trip to a reader thread (parse result
        and bytes read there together when the parse result is not cached)."""
        fd, off, blen, mlen = self._location(uid)
        cached = self._cached(uid)
        if cached is not None:
            rng = mime.section_range(cached.tree, list(section), what)
            return b"" if rng is None else await self._pread(fd, rng[1] - rng[0], off + rng[0])
        parsed, data = await self._on_reader(read_section, fd, off, blen, mlen, list(section), what)
        self._remember(uid, parsed)
        return data

    async def header(self, uid: int) -> bytes:
        return await self._section(uid, [], "HEADER")

    async def envelope(self, uid: int) -> object:
        return (await self.parsed(uid)).envelope

    async def bodystructure(self, uid: int, extensible: bool = True) -> object:
        p = await self.parsed(uid)
        return p.bodystructure if extensible else p.body

    async def part(self, uid: int, section: Sequence[int], what: str = "") -> bytes:
        return await self._section(uid, section, what)

    async def search_text(self, uids: Iterable[int], where: str, text: str) -> list[int]:
        """Scan the messages on a reader thread, SEARCH_CHUNK messages per trip."""
        self._check_live()
        todo: list[tuple[int, int, int, int, int, mime.Parsed | None]] = []
        for uid in uids:
            if not self._in_view(uid):
                continue
            loc = self._state.locate(uid)
            if loc is not None:
                todo.append((uid, *loc, self._parsed.get(uid)))
        out: list[int] = []
        for i in range(0, len(todo), SEARCH_CHUNK):
            out += await self._on_reader(search_many, todo[i : i + SEARCH_CHUNK], where, text)
        return out

    # -- changing --------------------------------------------------------------
    def _writable(self) -> None:
        self._check_live()
        if self.read_only:
            raise StorageError("mailbox is open read-only")

    async def store(self, uids: Iterable[int], mode: str, flags: frozenset[str], unchanged_since: int | None = None) -> StoreResult:
        self._writable()
        if mode not in ("set", "add", "remove"):
            raise ValueError(f"bad store mode {mode!r}")
        mine = [u for u in uids if self._in_view(u)]
        result: StoreResult = await self._account._submit_op(
            "store", self._mbox, uids=mine, mode=mode, flags=flags, unchanged_since=unchanged_since, origin=self._id
        )
        return result

    def _drop(self, gone: Iterable[int]) -> None:
        drop = set(gone)
        if drop:
            self._uids = array("I", (u for u in self._uids if u not in drop))

    async def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        self._writable()
        mine = list(self._uids) if uids is None else [u for u in uids if self._in_view(u)]
        gone: list[int] = await self._account._submit_op("expunge", self._mbox, uids=mine, origin=self._id)
        self._drop(gone)
        return sorted(gone)

    async def copy(self, uids: Iterable[int], dest: str) -> CopyResult:
        self._check_live()
        mine = [u for u in uids if self._in_view(u)]
        return await self._account.copy_uids(self._state, mine, dest)

    async def move(self, uids: Iterable[int], dest: str) -> CopyResult:
        self._writable()
        mine = [u for u in uids if self._in_view(u)]
        result = await self._account.copy_uids(self._state, mine, dest)
        gone: list[int] = await self._account._submit_op(
            "expunge", self._mbox, uids=result.source_uids, force=True, origin=self._id
        )
        self._drop(gone)
        return result

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._feed.views -= 1
        if self._feed.views == 0:
            self._state.ghosts.clear()
        if self._file is not None:
            self._file.close()
            self._file = None
        for f in self._old_files.values():
            f.close()
        self._old_files.clear()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def _debug(self) -> dict[str, Any]:
        return {"uids": list(self._uids), "pos": self._pos}
