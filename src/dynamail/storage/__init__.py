"""The mailbox storage engine (interface in ``api.py``, format in docs/storage.md).

``FileMailStore`` opens accounts: ``await store.open_account(path, epoch)``
returns a :class:`FileAccountStore`.  Pieces: ``records`` (the framing of
the data log), ``mailbox`` (one mailbox's log, index checkpoint and
in-memory index), ``account`` (mailbox list, fencing, the committer),
``commit`` (group commit), ``compaction``, ``view`` (a session's snapshot), ``feed`` (in-process change
notification), ``search`` (text search).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from dynamail.storage import fence
from dynamail.storage import records as R
from dynamail.storage.account import MAIL_DIR, FileAccountStore, read_epoch
from dynamail.storage.api import (
    AccountStore,
    AppendRequest,
    Changes,
    CopyResult,
    FencedError,
    MailboxExists,
    MailboxListing,
    MailboxStatus,
    MailboxView,
    MailStore,
    MessageInfo,
    NoSuchMailbox,
    QuotaExceeded,
    StorageError,
    StorageIOError,
    StoreClosed,
    StoreResult,
    Unavailable,
)
from dynamail.storage.view import FileMailboxView

__all__ = [
    "AccountStore",
    "AppendRequest",
    "Changes",
    "CopyResult",
    "FencedError",
    "FileAccountStore",
    "FileMailStore",
    "FileMailboxView",
    "MailStore",
    "MailboxExists",
    "MailboxListing",
    "MailboxStatus",
    "MailboxView",
    "MessageInfo",
    "NoSuchMailbox",
    "QuotaExceeded",
    "StorageError",
    "StorageIOError",
    "StoreClosed",
    "StoreResult",
    "Unavailable",
    "writer_epochs",
]


class FileMailStore:
    """``MailStore`` on a (possibly shared) file system, without OS locks."""

    async def open_account(self, path: Path, epoch: int) -> FileAccountStore:
        store = FileAccountStore(Path(path), epoch)
        try:
            await asyncio.get_running_loop().run_in_executor(store._io, store.open_sync)
        except OSError as exc:
            # the claim or the adoption could not be written (a full file
            # system, an I/O error): a temporary failure, nothing was opened
            store._io.shutdown(wait=False)
            raise StorageIOError(f"storage write failed: {exc!r}") from exc
        except BaseException:
            store._io.shutdown(wait=False)
            raise
        return store

    def recorded_epoch(self, path: Path) -> int:
        return read_epoch(Path(path))


def writer_epochs(path: Path) -> dict[str, list[int]]:
    """For each mailbox of an account, the epochs of the writers of the
    records its current owner reads (its chain, each file up to its seal),
    in order, consecutive repeats collapsed (``[3, 5]``: written by epoch 3,
    then by epoch 5).  Records of two owners interleaved would show a lower
    epoch after a higher one (``[3, 5, 3]``).  Reads only record headers;
    safe while the account is open elsewhere."""
    path = Path(path)
    mans = fence.manifest_epochs(path)
    doc = None
    for e in reversed(mans):
        try:
            doc = fence.read_manifest(path, e)
            break
        except (OSError, ValueError, StorageError):
            continue
    if doc is None:
        return {}
    out: dict[str, list[int]] = {}
    for name, m in doc.get("mailboxes", {}).items():
        d = path / MAIL_DIR / str(m["id"])
        seq: list[int] = []
        for entry in m.get("chain", []):
            try:
                fd = os.open(d / entry["name"], os.O_RDONLY)
            except OSError:
                continue
            try:
                size = os.fstat(fd).st_size
                if entry.get("seal") is not None:
                    size = min(size, int(entry["seal"]))
                pos = 0
                while pos + R.HEADER_SIZE <= size:
                    hdr = R.parse_header(os.pread(fd, R.HEADER_SIZE, pos))
                    if hdr is None:
                        break
                    if not seq or seq[-1] != hdr.epoch:
                        seq.append(hdr.epoch)
                    pos += R.HEADER_SIZE + hdr.length
            finally:
                os.close(fd)
        out[name] = seq
    return out


def epochs_monotonic(path: Path) -> bool:
    """Whether no mailbox chain of the account shows an older writer after a newer one."""
    return all(seq == sorted(seq) for seq in writer_epochs(path).values())
