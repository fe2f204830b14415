"""Import Maildir or mbox mail into an open account store.

The reader (``source``) runs on a worker thread, a batch at a time, so the
event loop never blocks on the file system; each batch is one
``AccountStore.append`` per mailbox (all messages of the batch durable with
one commit).  Memory is bounded by one batch (``BATCH_MESSAGES`` messages
or ``BATCH_BYTES`` bytes, plus one message).

Idempotence: a *ledger* file records a digest of every imported message
(mailbox name and content with line ends normalised, the mbox bookkeeping
fields removed).  A re-run skips a message whose digest the ledger already
holds as often as the source holds it, so re-importing the same tree — or a
tree that has grown — adds only what is new, and two identical messages in
one folder are both kept.  The ledger is appended to after each batch is
durable; a crash between the two can at worst import that one batch again
on the next run, never lose it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamail.migrate import source
from dynamail.migrate.source import Found, Item, Skipped, SourceError
from dynamail.storage.api import (
    AccountStore,
    AppendRequest,
    FencedError,
    MailboxExists,
    QuotaExceeded,
    StorageError,
)

BATCH_MESSAGES = 200
BATCH_BYTES = 8 * 1024 * 1024
MAX_REPORTED = 100  # skipped entries listed in a report (all are counted)
LEDGER_MAGIC = b"dynamail-import-ledger 1\n"
DIGEST_SIZE = 16
FORMATS = ("maildir", "mbox", "auto")

SPECIAL_USE_NAMES = {
    "sent": "\\Sent", "sent messages": "\\Sent", "sent items": "\\Sent", "sent mail": "\\Sent",
    "drafts": "\\Drafts",
    "trash": "\\Trash", "deleted messages": "\\Trash", "deleted items": "\\Trash",
    "junk": "\\Junk", "spam": "\\Junk",
    "archive": "\\Archive", "archives": "\\Archive",
}


# What a store may raise for one message it cannot take (a storage refusal,
# or a parse failure on hostile content): that message is skipped.
REFUSALS = (StorageError, ValueError, LookupError, TypeError)


class ImportFailed(Exception):
    """The import cannot start (bad path or format); nothing was imported."""


@dataclass
class ImportReport:
    format: str = ""
    imported: int = 0
    duplicates: int = 0  # already imported by an earlier run
    skipped: int = 0
    bytes: int = 0
    mailboxes: dict[str, int] = field(default_factory=dict)  # imported per mailbox
    created: list[str] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)  # the first MAX_REPORTED problems
    stopped: str = ""  # why the import stopped early ("" when it completed)

    def skip(self, where: str, reason: str) -> None:
        self.skipped += 1
        self.note(where, reason)

    def note(self, where: str, reason: str) -> None:
        if len(self.problems) < MAX_REPORTED:
            self.problems.append({"where": where, "reason": reason})

    def as_json(self) -> dict[str, Any]:
        return {
            "format": self.format, "imported": self.imported, "duplicates": self.duplicates,
            "skipped": self.skipped, "bytes": self.bytes, "mailboxes": dict(self.mailboxes),
            "created": list(self.created), "problems": list(self.problems),
            "complete": not self.stopped, "stopped": self.stopped,
        }


def digest(mailbox: str, data: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    h.update(mailbox.encode("utf-8"))
    h.update(b"\0")
    h.update(data.replace(b"\r\n", b"\n"))
    return h.digest()


class Ledger:
    """Digests of imported messages: an append-only file of hex lines."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.counts: Counter[bytes] = Counter()

    def load(self) -> None:
        if self.path is None:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ImportFailed(f"cannot read the import ledger {self.path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ImportFailed(f"the import ledger {self.path} is not a regular file")
        with os.fdopen(fd, "rb") as f:
            if f.readline(len(LEDGER_MAGIC)) != LEDGER_MAGIC:
                return
            while line := f.readline(2 * DIGEST_SIZE + 2):  # bounded, whatever the file holds
                if len(line) == 2 * DIGEST_SIZE + 1 and line.endswith(b"\n"):
                    try:
                        self.counts[bytes.fromhex(line[:-1].decode("ascii"))] += 1
                    except ValueError:
                        continue  # a torn line

    def record(self, digests: list[bytes]) -> None:
        for d in digests:
            self.counts[d] += 1
        if self.path is None or not digests:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            if os.fstat(fd).st_size == 0:
                os.write(fd, LEDGER_MAGIC)
            payload = b"".join(d.hex().encode("ascii") + b"\n" for d in digests)
            # a torn earlier tail would glue onto our first line: start a fresh line
            os.write(fd, b"\n" + payload)
            os.fsync(fd)
        finally:
            os.close(fd)


def detect(fd: int, is_dir: bool) -> str:
    if not is_dir:
        return "mbox"
    return "maildir" if source.is_maildir(fd) else "mbox"


def open_source(path: str, fmt: str, limit: int) -> tuple[str, Iterator[Item], int]:
    """(format, items, root descriptor the caller closes)."""
    if fmt not in FORMATS:
        raise ImportFailed(f"format must be one of {', '.join(FORMATS)}")
    try:
        fd, is_dir = source.open_root(path)
    except SourceError as exc:
        raise ImportFailed(str(exc)) from None
    try:
        if fmt == "auto":
            fmt = detect(fd, is_dir)
        if fmt == "maildir":
            if not is_dir or not source.is_maildir(fd):
                raise ImportFailed(f"{path} is not a Maildir (no cur/ or new/ directory)")
            items = source.read_maildir(fd, limit)
        elif is_dir:
            items = source.read_mbox_tree(fd, limit)
        else:
            items = source.read_mbox(fd, "INBOX", os.path.basename(path) or "mbox", limit)
    except BaseException:
        os.close(fd)
        raise
    return fmt, items, fd


def _next_batch(items: Iterator[Item], ledger: Ledger, seen: Counter[bytes], report: ImportReport,
                ) -> tuple[list[tuple[Found, bytes]], bool]:
    """Pull items until a batch is full (worker thread).  Skipped entries and
    duplicates are counted here.  Returns (batch, more)."""
    batch: list[tuple[Found, bytes]] = []
    size = 0
    for item in items:
        if isinstance(item, Skipped):
            report.skip(item.where, item.reason)
            continue
        d = digest(item.mailbox, item.data)
        seen[d] += 1
        if seen[d] <= ledger.counts[d]:
            report.duplicates += 1
            continue
        batch.append((item, d))
        size += len(item.data)
        if len(batch) >= BATCH_MESSAGES or size >= BATCH_BYTES:
            return batch, True
    return batch, False


async def _ensure_mailboxes(store: AccountStore, wanted: list[str], known: set[str], used_special: set[str],
                            report: ImportReport) -> None:
    for name in wanted:
        if name in known:
            continue
        special = SPECIAL_USE_NAMES.get(name.lower()) if "/" not in name else None
        if special in used_special:
            special = None
        try:
            await store.create_mailbox(name, special)
            report.created.append(name)
        except MailboxExists:
            pass
        known.add(name)
        if special:
            used_special.add(special)


async def _append(store: AccountStore, mailbox: str, group: list[tuple[Found, bytes]],
                  report: ImportReport) -> list[tuple[Found, bytes]]:
    """Append one mailbox's share of a batch; a batch the store refuses is
    retried message by message so one bad message does not sink the rest.
    Returns what was appended."""
    reqs = [AppendRequest(f.data, f.flags, f.internal_date) for f, _ in group]
    try:
        await store.append(mailbox, reqs)
        return group
    except (FencedError, QuotaExceeded):
        raise
    except REFUSALS as exc:
        if len(group) == 1:
            found = group[0][0]
            system = frozenset(f for f in found.flags if f.startswith("\\"))
            if system != found.flags:
                # e.g. a mailbox's keyword table is full: keep the message,
                # drop its keywords, and say so
                try:
                    await store.append(mailbox, [AppendRequest(found.data, system, found.internal_date)])
                except (FencedError, QuotaExceeded):
                    raise
                except REFUSALS:
                    pass
                else:
                    report.note(found.where, f"imported without its keywords: {exc}")
                    return group
            report.skip(found.where, f"refused by the store: {exc}")
            return []
    done: list[tuple[Found, bytes]] = []
    for one in group:
        done.extend(await _append(store, mailbox, [one], report))
    return done


async def import_into(store: AccountStore, path: str, fmt: str = "auto", *, ledger_path: Path | None = None,
                      limit: int = source.DEFAULT_MAX_MESSAGE) -> ImportReport:
    """Import the mail at ``path`` (a Maildir, an mbox file or a directory
    of mbox files) into ``store``.  Raises ImportFailed before importing
    anything when the path or format is unusable; FencedError propagates
    (the account changed owner: stop)."""
    fmt_used, items, root_fd = await asyncio.to_thread(open_source, path, fmt, limit)
    report = ImportReport(format=fmt_used)
    ledger = Ledger(ledger_path)
    seen: Counter[bytes] = Counter()
    # The reader runs on worker threads; if this task is cancelled while one
    # is pulling a batch, closing the reader waits for it (the lock).
    reading = threading.Lock()

    def pull() -> tuple[list[tuple[Found, bytes]], bool]:
        with reading:
            return _next_batch(items, ledger, seen, report)

    def finish() -> None:
        with reading:
            try:
                items.close()  # type: ignore[attr-defined]
            finally:
                os.close(root_fd)

    try:
        await asyncio.to_thread(ledger.load)
        listing = await store.list_mailboxes()
        known = {m.name for m in listing}
        used_special = {m.special_use for m in listing if m.special_use}
        more = True
        while more:
            batch, more = await asyncio.to_thread(pull)
            if not batch:
                continue
            groups: dict[str, list[tuple[Found, bytes]]] = {}
            for found, d in batch:
                groups.setdefault(found.mailbox, []).append((found, d))
            try:
                await _ensure_mailboxes(store, list(groups), known, used_special, report)
            except FencedError:
                raise
            except StorageError as exc:
                report.stopped = f"{type(exc).__name__}: {exc}"
                return report
            for mailbox, group in groups.items():
                try:
                    done = await _append(store, mailbox, group, report)
                except FencedError:
                    raise
                except StorageError as exc:
                    report.stopped = f"{type(exc).__name__}: {exc}"
                    return report
                report.imported += len(done)
                report.mailboxes[mailbox] = report.mailboxes.get(mailbox, 0) + len(done)
                report.bytes += sum(len(f.data) for f, _ in done)
                try:
                    await asyncio.to_thread(ledger.record, [d for _, d in done])
                except OSError as exc:
                    report.stopped = (f"cannot write the import ledger ({exc.strerror or exc}); "
                                      f"a re-run may import the last {len(done)} messages again")
                    return report
        return report
    finally:
        await asyncio.to_thread(finish)
