"""The selected mailbox of one session: sequence numbers and pending updates.

Sequence numbers are positions in ``uids`` (our copy of the storage view's
message list).  The storage view changes its list only when we call
``refresh()`` (or expunge/move ourselves), so we refresh only at moments
when RFC 9051 section 7.5.1 lets us announce expunges: never while a
command that uses sequence numbers (FETCH, STORE, SEARCH, COPY by number)
is being answered.  At a legal moment :meth:`Selected.sync` refreshes and
writes EXPUNGE (or VANISHED with QRESYNC, RFC 7162 3.2.10), EXISTS and
FETCH-of-flags responses; sequence numbers in the EXPUNGEs are computed on
the list before removal, highest first, so each stays valid as written.

Flag changes this session made itself and already reported (STORE) are not
reported again: ``reported`` remembers their modseq until the next sync.

Keywords: the client learns the keywords of the mailbox from FLAGS and
PERMANENTFLAGS at SELECT; a keyword first used later (by STORE here, by
another session, or on a new message) is announced with a new untagged
FLAGS (and PERMANENTFLAGS) before any FETCH carries it (RFC 3501 7.2.6,
RFC 9051 7.3.5): :meth:`Selected.announce_keywords`.

``recent`` is the session's \\Recent record (:mod:`dynamail.imap.recent`)
for IMAP4rev1 sessions, None for IMAP4rev2 ones.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterable, Sequence

from dynamail.imap import response
from dynamail.imap.parser import SequenceSet
from dynamail.imap.recent import SessionRecent
from dynamail.storage.api import MailboxView


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping ranges covering the same numbers (so work on a
    sequence set is bounded by the mailbox, not by how often a client repeats
    a range)."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(a, b) for a, b in out]


def flags_of(view: MailboxView, uids: Sequence[int]) -> list[frozenset[str]]:
    """Flags of many messages; uses the engine's batch accessor when it has
    one (``FileMailboxView.flags_many`` avoids building a MessageInfo each)."""
    many = getattr(view, "flags_many", None)
    if many is not None:
        return list(many(uids))
    return [view.info(u).flags for u in uids]


def modseq_of(view: MailboxView, uid: int) -> int:
    one = getattr(view, "modseq", None)
    if one is not None:
        return int(one(uid))
    return view.info(uid).modseq


SYSTEM_FLAGS = "\\Answered \\Flagged \\Deleted \\Seen \\Draft"


class Selected:
    __slots__ = (
        "exists_sent", "keywords", "name", "read_only", "recent", "recent_sent", "reported", "uids", "view",
    )

    def __init__(
        self, view: MailboxView, name: str, read_only: bool, recent: SessionRecent | None = None
    ) -> None:
        self.view = view
        self.name = name
        self.read_only = read_only
        # 4 bytes per message (an idle session holds this for its mailbox)
        self.uids: array[int] = array("I", view.uids())
        self.exists_sent = len(self.uids)
        self.reported: dict[int, int] = {}
        self.keywords: set[str] = set()  # keywords the client was told of
        self.recent = recent
        self.recent_sent = 0
        if recent is not None:
            recent.see(self.uids)
            self.recent_sent = len(recent)

    def close(self) -> None:
        """Release the view and this session's \\Recent messages."""
        self.view.close()
        if self.recent is not None:
            self.recent.close()

    def announce_recent(self, write: Callable[[bytes], None]) -> None:
        """``* n RECENT`` when the number of \\Recent messages changed (RFC
        3501 7.3.2: new mail, and expunges of \\Recent messages, as Dovecot)."""
        if self.recent is not None and len(self.recent) != self.recent_sent:
            self.recent_sent = len(self.recent)
            write(b"* %d RECENT\r\n" % self.recent_sent)

    # -- flags as the client sees them ------------------------------------
    def flags_out(self, uid: int, fl: frozenset[str]) -> bytes:
        """``(flags)`` of a message, with \\Recent for a rev1 session."""
        if self.recent is not None and uid in self.recent:
            return response.flags(fl | {"\\Recent"})
        return response.flags(fl)

    def flags_lines(self) -> bytes:
        """The untagged FLAGS and PERMANENTFLAGS of the mailbox."""
        kw = "".join(" " + k for k in sorted(self.keywords))
        out = f"* FLAGS ({SYSTEM_FLAGS}{kw})\r\n"
        if self.read_only:
            out += "* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n"
        else:
            out += f"* OK [PERMANENTFLAGS ({SYSTEM_FLAGS}{kw} \\*)] Flags permitted\r\n"
        return out.encode("utf-8")

    def announce_keywords(self, flag_sets: Iterable[frozenset[str]], write: Callable[[bytes], None]) -> None:
        """Write FLAGS/PERMANENTFLAGS again if ``flag_sets`` hold a keyword
        the client has not been told of (RFC 3501 7.2.6)."""
        known = self.keywords
        new: set[str] = set()
        for fl in flag_sets:
            for f in fl:
                if f not in known and not f.startswith("\\"):
                    new.add(f)
        if new:
            known.update(new)
            write(self.flags_lines())

    # -- numbering ------------------------------------------------------
    def seq_of(self, uid: int) -> int:
        """Sequence number of ``uid`` (0 if not in the view)."""
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return 0

    def by_seq(self, seqset: SequenceSet, saved: list[int] | None = None) -> list[int]:
        """UIDs of the messages named by sequence numbers, ascending."""
        if seqset.saved:
            return self._saved(saved)
        n = len(self.uids)
        if n == 0:
            return []
        ranges = seqset.resolve(n)
        if len(ranges) == 1:
            lo, hi = ranges[0]
            return list(self.uids[lo - 1 : min(hi, n)])
        out: list[int] = []
        for lo, hi in merge_ranges(ranges):
            out.extend(self.uids[lo - 1 : min(hi, n)])
        return out

    def by_uid(self, seqset: SequenceSet, saved: list[int] | None = None) -> list[int]:
        """UIDs in the view named by a UID set, ascending (RFC 9051 6.4.9:
        ``n:*`` always includes the highest UID)."""
        if seqset.saved:
            return self._saved(saved)
        if not self.uids:
            return []
        result: list[int] = []
        for lo, hi in merge_ranges(seqset.resolve(self.uids[-1])):
            i = bisect.bisect_left(self.uids, lo)
            j = bisect.bisect_right(self.uids, hi)
            result.extend(self.uids[i:j])
        return result

    def vanished_in(self, ranges: list[tuple[int, int]], limit: int = 1_000_000) -> list[int]:
        """UIDs below UIDNEXT within ``ranges`` that are not in the view
        (QRESYNC VANISHED (EARLIER), RFC 7162 3.2.5/3.2.6).  Work is bounded by
        the mailbox size, whatever the client sends."""
        top = self.view.uidnext() - 1
        merged = merge_ranges((max(1, a), min(b, top)) for a, b in ranges if a <= top and a <= b)
        present = self.uids
        out: list[int] = []
        for lo, hi in merged:
            i = bisect.bisect_left(present, lo)
            cur = lo
            while cur <= hi and len(out) < limit:
                nxt = present[i] if i < len(present) else hi + 1
                if nxt > hi:
                    out.extend(range(cur, min(hi + 1, cur + limit - len(out))))
                    break
                out.extend(range(cur, min(nxt, cur + limit - len(out))))
                cur = nxt + 1
                i += 1
        return out

    def _saved(self, saved: list[int] | None) -> list[int]:
        if not saved:
            return []
        return [u for u in saved if self.seq_of(u)]

    # -- updates -------------------------------------------------------
    async def sync(self, write: Callable[[bytes], None], *, qresync: bool, condstore: bool) -> None:
        """Refresh the view and announce what changed (legal moments only)."""
        changes = await self.view.refresh()
        self.announce_expunged(changes.expunged, write, qresync=qresync)
        if changes.added or len(self.uids) != len(self.view.uids()):
            self.uids = array("I", self.view.uids())
        if changes.added:
            added = [u for u in changes.added if self.seq_of(u)]
            self.announce_keywords(flags_of(self.view, added), write)
        if len(self.uids) != self.exists_sent or changes.added:
            write(b"* %d EXISTS\r\n" % len(self.uids))
            self.exists_sent = len(self.uids)
            if self.recent is not None:  # RFC 3501 7.3.2
                self.recent.see([u for u in changes.added if self.seq_of(u)])
        self.announce_recent(write)
        if changes.flags_changed:
            self.announce_flags(changes.flags_changed, write, qresync=qresync, condstore=condstore)
        self.reported.clear()

    def announce_expunged(
        self, uids: Iterable[int], write: Callable[[bytes], None], *, qresync: bool
    ) -> None:
        """Write EXPUNGE/VANISHED for ``uids`` and drop them from our list."""
        gone = sorted({u for u in uids if self.seq_of(u)})
        if not gone:
            return
        if qresync:
            write(b"* VANISHED " + response.sequence_set(gone).encode() + b"\r\n")
            gone_set = set(gone)
            self.uids = array("I", (u for u in self.uids if u not in gone_set))
        else:
            for u in reversed(gone):
                seq = self.seq_of(u)
                write(b"* %d EXPUNGE\r\n" % seq)
                del self.uids[seq - 1]
        self.exists_sent = len(self.uids)
        if self.recent is not None:
            self.recent.forget(gone)

    def announce_flags(
        self, uids: Iterable[int], write: Callable[[bytes], None], *, qresync: bool, condstore: bool
    ) -> None:
        view = self.view
        todo: list[tuple[int, int, int, frozenset[str]]] = []
        for u in sorted(set(uids)):
            seq = self.seq_of(u)
            if not seq:
                continue
            try:
                modseq = modseq_of(view, u)
                fl = flags_of(view, [u])[0]
            except KeyError:
                continue
            if self.reported.get(u) == modseq:
                continue
            todo.append((u, seq, modseq, fl))
        self.announce_keywords((t[3] for t in todo), write)
        for u, seq, modseq, fl in todo:
            items = [b"FLAGS " + self.flags_out(u, fl)]
            if qresync or condstore:  # RFC 7162 3.2.4: UID and MODSEQ once CONDSTORE is on
                items.insert(0, b"UID %d" % u)
                items.append(b"MODSEQ (%d)" % modseq)
            write(b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n")
