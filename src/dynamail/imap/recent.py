"""The ``\\Recent`` flag of IMAP4rev1 (RFC 3501 sections 2.3.2, 6.3.1,
6.3.2, 6.4.4, 7.3.2), kept in the memory of the process that owns the
account.

RFC 3501 2.3.2: a message is \\Recent in the first session to be told about
it, and in no later one.  UIDs only grow, so one number per mailbox says
which messages have already been shown to a session: those with a UID up to
the mailbox's *claimed* mark.  A read-write SELECT (and every later refresh
of that session) claims the messages above the mark; EXAMINE and other
read-only views see them as \\Recent without claiming them (RFC 3501 6.3.2:
EXAMINE must not make messages lose \\Recent).  STATUS RECENT counts the
messages above the mark.

The record is per owner process: it is not stored, so after a restart, or
when the account moves to another cluster member, the first session there
sees every message as \\Recent again (as a fresh Dovecot index does).  Its
size is bounded by :data:`MAX_MAILBOXES` (least recently used mailboxes are
forgotten first, with the same effect).  Sessions that ENABLE IMAP4rev2 do
not use it (RFC 9051 removed \\Recent).
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Iterable, Sequence

# Mailboxes remembered per process (an entry is a few dozen bytes).
MAX_MAILBOXES = 200_000

Key = tuple[str, str, int]  # (account, mailbox, UIDVALIDITY)


class RecentBook:
    """Per-process claimed marks; see the module docstring."""

    def __init__(self, max_mailboxes: int = MAX_MAILBOXES) -> None:
        self._claimed: collections.OrderedDict[Key, int] = collections.OrderedDict()
        self._max = max_mailboxes
        # the sessions that have the mailbox selected now (for STATUS RECENT)
        self._live: dict[Key, weakref.WeakSet[SessionRecent]] = {}

    def attach(self, s: SessionRecent) -> None:
        self._live.setdefault(s.key, weakref.WeakSet()).add(s)

    def detach(self, s: SessionRecent) -> None:
        live = self._live.get(s.key)
        if live is not None:
            live.discard(s)
            if not live:
                del self._live[s.key]

    def count(self, key: Key, uids: Sequence[int]) -> int:
        """How many of ``uids`` (the mailbox now) are \\Recent: unclaimed, or
        \\Recent in a session that has the mailbox selected (RFC 3501 6.3.10
        STATUS RECENT; the same count Dovecot gives)."""
        mark = self.mark(key)
        n = sum(1 for u in uids if u > mark)
        live = self._live.get(key)
        if live:
            present = set(uids)
            for s in list(live):
                n += sum(1 for u in s.uids if u <= mark and u in present)
        return n

    def mark(self, key: Key) -> int:
        """The highest UID already shown to a session (0: none yet)."""
        mark = self._claimed.get(key)
        if mark is None:
            return 0
        self._claimed.move_to_end(key)
        return mark

    def claim(self, key: Key, uids: Sequence[int]) -> list[int]:
        """The UIDs of ``uids`` (ascending) that nobody has seen as \\Recent
        yet; they are this caller's from now on."""
        mark = self.mark(key)
        fresh = [u for u in uids if u > mark]
        if fresh:
            self._claimed[key] = fresh[-1]
            self._claimed.move_to_end(key)
            while len(self._claimed) > self._max:
                self._claimed.popitem(last=False)
        return fresh

    def unclaimed(self, key: Key, uids: Sequence[int]) -> list[int]:
        mark = self.mark(key)
        return [u for u in uids if u > mark]


class SessionRecent:
    """The \\Recent messages of one rev1 session's selected mailbox."""

    __slots__ = ("__weakref__", "book", "key", "take", "uids")

    def __init__(self, book: RecentBook, key: Key, *, take: bool) -> None:
        self.book = book
        self.key = key
        self.take = take  # read-write: claims what it sees
        self.uids: set[int] = set()
        if take:
            book.attach(self)

    def close(self) -> None:
        """The session leaves the mailbox: its messages are \\Recent nowhere now."""
        self.book.detach(self)
        self.uids.clear()

    def see(self, uids: Sequence[int]) -> None:
        """Messages this session is being told about (ascending UIDs)."""
        fresh = self.book.claim(self.key, uids) if self.take else self.book.unclaimed(self.key, uids)
        self.uids.update(fresh)

    def forget(self, uids: Iterable[int]) -> None:
        self.uids.difference_update(uids)

    def __contains__(self, uid: int) -> bool:
        return uid in self.uids

    def __len__(self) -> int:
        return len(self.uids)


def book_of(extras: dict[str, object]) -> RecentBook:
    """The process's book, kept in the server context's extras."""
    book = extras.get("imap.recent")
    if not isinstance(book, RecentBook):
        book = RecentBook()
        extras["imap.recent"] = book
    return book
