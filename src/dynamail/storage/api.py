"""The mailbox storage interface that every protocol layer uses.

This module only states *what* the storage engine does; the engine lives
beside it.  Semantics every implementation must keep:

* UIDs are assigned in strictly ascending order per mailbox and never reused
  while UIDVALIDITY stays the same (RFC 9051 section 2.3.1.1).
* A mailbox *view* (``MailboxView``) is a session's snapshot of one mailbox:
  its message list changes only when the session calls ``refresh()``; that
  call returns what changed since the previous one (new UIDs, expunged UIDs,
  UIDs whose flags changed).  IMAP sequence numbers are positions in the
  view, so they never shift under a command that uses them.
* MODSEQ grows by at least one with every change to a mailbox (append, flag
  change, expunge); HIGHESTMODSEQ is the largest (RFC 7162).
* ``append`` returns only after the message and its index entry are durable
  on storage.  Concurrent appends to one account are group-committed.
* Every write checks the account's ownership epoch; a store whose epoch has
  been superseded raises :class:`FencedError` and changes nothing.
* Blocking file I/O never runs on the event loop thread: every coroutine
  here is safe to await from the loop.

Errors: :class:`NoSuchMailbox`, :class:`MailboxExists`, :class:`FencedError`
and :class:`StoreClosed` (both :class:`Unavailable`: a temporary failure),
:class:`QuotaExceeded`, :class:`StorageError` (base class).  Bad names raise
``dynamail.names.BadName``.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol


class StorageError(Exception):
    """Base class of storage failures."""


class NoSuchMailbox(StorageError):
    pass


class MailboxExists(StorageError):
    pass


class Unavailable(StorageError):
    """The account is temporarily unavailable here (its store was closed or
    superseded); the protocols answer with their temporary failure
    (``NO [UNAVAILABLE]``, ``451 4.3.0``, ``-ERR [SYS/TEMP]``) and the
    client retries, reaching the account's new owner."""


class FencedError(Unavailable):
    """The account was opened by a newer owner (higher epoch); this handle may
    no longer write.  The session must be ended (the cluster layer re-routes)."""


class StoreClosed(Unavailable):
    """The account store (or the mailbox) was closed; reads and writes on it
    fail cleanly with this."""


class QuotaExceeded(StorageError):
    pass


class StorageIOError(StorageError):
    """The file system refused a write (full, over its own quota, an I/O
    error): nothing of the operation was acknowledged.  A temporary failure
    (``NO [UNAVAILABLE]``, ``451 4.3.0``, ``-ERR [SYS/TEMP]``) that does not
    end the session: the next attempt may succeed where it is."""


# What ``AccountStore.changes()`` yields when mailboxes were created, deleted
# or renamed, or subscriptions changed: no mailbox is called "".
LIST_CHANGED = ""

SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """Index data of one message: everything FETCH needs without reading it."""

    uid: int
    size: int  # RFC822.SIZE: octets of the canonical (CRLF) form
    internal_date: datetime.datetime  # timezone-aware
    flags: frozenset[str]  # system flags (with backslash) and keywords
    modseq: int


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One message to append.  ``data`` is the message in any line-ending
    convention; the engine stores it canonically with CRLF line ends."""

    data: bytes | BinaryIO
    flags: frozenset[str] = frozenset()
    internal_date: datetime.datetime | None = None
    # exactly-once hand-off: a request whose delivery id is already stored
    # in the mailbox (with one of the last MAX_DELIVERIES messages) is not
    # stored again; append answers the UID of the first copy
    delivery_id: str | None = None


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    name: str
    messages: int
    recent: int
    unseen: int
    uidnext: int
    uidvalidity: int
    highestmodseq: int
    size: int  # total octets
    deleted: int


@dataclass(frozen=True, slots=True)
class MailboxListing:
    name: str  # full name, "/" separated, "INBOX" canonical
    special_use: str | None  # "\\Sent", "\\Trash", "\\Drafts", "\\Junk", "\\Archive" or None
    subscribed: bool
    has_children: bool
    uidvalidity: int = 0  # 0 where the engine does not say (a listing sent by another member)


@dataclass(slots=True)
class Changes:
    """What ``MailboxView.refresh`` found since the previous refresh."""

    added: list[int] = field(default_factory=list)  # new UIDs, ascending
    expunged: list[int] = field(default_factory=list)  # UIDs gone from the view
    flags_changed: list[int] = field(default_factory=list)  # UIDs whose flags changed
    highestmodseq: int = 0

    def __bool__(self) -> bool:
        return bool(self.added or self.expunged or self.flags_changed)


@dataclass(frozen=True, slots=True)
class StoreResult:
    modified: list[int]  # UIDs whose flags actually changed
    failed_unchangedsince: list[int]  # UIDs refused by UNCHANGEDSINCE (RFC 7162 3.1.3)


@dataclass(frozen=True, slots=True)
class CopyResult:
    uidvalidity: int
    source_uids: list[int]
    dest_uids: list[int]  # for COPYUID/MOVE (RFC 4315)


class MailboxView(Protocol):
    """One session's view of one selected mailbox."""

    name: str
    uidvalidity: int
    read_only: bool

    def uids(self) -> Sequence[int]:
        """UIDs of the view, ascending; sequence number n is ``uids()[n-1]``."""

    def info(self, uid: int) -> MessageInfo:
        """Index data of a message in the view (KeyError if not in the view)."""

    def uidnext(self) -> int: ...

    def highestmodseq(self) -> int: ...

    async def refresh(self) -> Changes:
        """Bring the view up to date; report what changed since last time."""

    async def wait_for_change(self, timeout: float) -> bool:
        """Wait until another session changes this mailbox (IDLE); True if it did."""

    async def read(self, uid: int) -> bytes:
        """The whole message, canonical CRLF form."""

    async def read_range(self, uid: int, offset: int, length: int) -> bytes: ...

    async def open_body(self, uid: int) -> tuple[BinaryIO, int, int]:
        """(file, offset, length) of the message for ``Connection.sendfile``.
        The caller must not close the file."""

    async def header(self, uid: int) -> bytes:
        """The header block including the blank line that ends it."""

    async def envelope(self, uid: int) -> object:
        """The precomputed ENVELOPE structure (nested lists/str/None/bytes, ready
        for the IMAP writer; see ``dynamail.mime``)."""

    async def bodystructure(self, uid: int, extensible: bool = True) -> object:
        """The precomputed BODYSTRUCTURE (or BODY when not extensible)."""

    async def part(self, uid: int, section: Sequence[int], what: str = "") -> bytes:
        """A MIME part by section numbers; ``what`` is "", "HEADER", "TEXT" or "MIME"."""

    async def digest(self, uid: int) -> bytes:
        """A digest of the message's canonical bytes (``mime.content_digest``).
        COPY and MOVE keep it: a copy has the same digest as its source,
        whatever mailbox it is in (the ground of EMAILID, RFC 8474 5.1)."""

    async def store(
        self,
        uids: Iterable[int],
        mode: str,  # "set" | "add" | "remove"
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult: ...

    async def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        """Expunge messages flagged \\Deleted (only those in ``uids`` when
        given); returns the expunged UIDs.  The view drops them at once."""

    async def copy(self, uids: Iterable[int], dest: str) -> CopyResult: ...

    async def move(self, uids: Iterable[int], dest: str) -> CopyResult: ...

    async def search_text(self, uids: Iterable[int], where: str, text: str) -> list[int]:
        """UIDs whose ``where`` ("TEXT", "BODY", or a header field name)
        contains ``text`` (case-insensitive substring, RFC 9051 6.4.4)."""

    def close(self) -> None:
        """Release the view (no I/O)."""


class AccountStore(Protocol):
    """An account's mail, opened by one owner with one epoch."""

    epoch: int

    async def list_mailboxes(self) -> list[MailboxListing]: ...

    async def create_mailbox(self, name: str, special_use: str | None = None) -> None: ...

    async def delete_mailbox(self, name: str) -> None: ...

    async def rename_mailbox(self, old: str, new: str) -> None:
        """Renames children too; renaming INBOX moves its messages (RFC 9051 6.3.6)."""

    async def subscribe(self, name: str, subscribed: bool = True) -> None: ...

    async def status(self, name: str) -> MailboxStatus: ...

    async def append(self, mailbox: str, messages: Sequence[AppendRequest]) -> list[int]:
        """Append atomically (all or none); durable on return; returns UIDs."""

    async def select(self, name: str, read_only: bool = False) -> MailboxView: ...

    async def quota_usage(self) -> tuple[int, int]:
        """(bytes used, messages) over all mailboxes."""

    def changes(self) -> AsyncIterator[str]:
        """Names of mailboxes as they change (any session of this account),
        and :data:`LIST_CHANGED` when the set of mailboxes or of
        subscriptions changed (create, delete, rename, subscribe)."""

    async def close(self) -> None: ...


class MailStore(Protocol):
    """Opens account stores.  ``epoch`` comes from the cluster layer."""

    async def open_account(self, path: Path, epoch: int) -> AccountStore:
        """Open (creating when absent) the account whose data lives in
        ``path``, recording ``epoch`` as the current owner's.  Raises
        FencedError if a higher epoch is already recorded."""

    def recorded_epoch(self, path: Path) -> int:
        """The highest epoch recorded for the account (0 if none)."""
