"""Ownership claims and per-epoch manifests: fencing that no pause can break.

The invariant (docs/storage.md, "Fencing"): **no file on shared storage is
ever mutated by two ownership epochs.**  Every name an owner creates carries
its epoch; an owner writes, replaces and removes only names of its own
epoch (and removes names of lower epochs that its own manifest no longer
needs).  So a stale owner — paused for any length of time between a check
and a write — can only ever change files that its successors never read
past the point they sealed.

* **Claims.**  ``owners/<epoch>`` is created with ``O_EXCL`` and linked as
  ``owners/<previous>.next``: the claims form a chain in which every link
  is an exclusive creation, and the end of the chain is the owner.  There
  is no read-compare-replace anywhere.  Checking whether an owner has been
  superseded is one name lookup (``owners/<epoch>.next``), which NFS with
  ``lookupcache=positive`` always answers from the server.
* **Manifests.**  ``manifest.<epoch>`` holds the account's whole state as
  its owner sees it: mailboxes, their chains of log files with the sealed
  length of every file of an older epoch, subscriptions, small blobs.  It is
  replaced atomically by its owner only (temporary name with the epoch in
  it).  A new owner starts from the highest manifest below its own epoch,
  adopts every file it names under names of its own (hard links: atomic and
  cheap on local file systems, NFS and GlusterFS), seals the predecessor's
  open files at their last complete write, and writes its own manifest
  before its first change.
* **Checks after writes.**  After every durable write (before anyone is
  answered) the owner lists the claims.  If a higher claim exists, the
  write's fate is whatever the successor sealed: :func:`resolve` waits for
  the successor's manifest and reports whether the write lies inside the
  sealed part (answer success: it is durable and visible) or not (answer
  failure: no one will ever read it).  *The successor decides; the
  predecessor learns.*
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamail.filemodes import private_mkdir
from dynamail.storage import faults
from dynamail.storage.api import FencedError, StorageError

OWNERS_DIR = "owners"
MANIFEST = "manifest"
MANIFEST_VERSION = 2
# How long a superseded writer waits for its successor's manifest to learn
# whether its last write was sealed in.  Only availability depends on it:
# when the manifest does not come in time, the answer is a temporary failure.
RESOLVE_WAIT = 3.0
RESOLVE_POLL = 0.02


class Superseded(FencedError):
    """A higher claim exists: this owner's epoch has been superseded."""

    def __init__(self, path: Path, epoch: int, higher: int) -> None:
        super().__init__(f"account {path}: epoch {epoch} superseded by {higher}")
        self.higher = higher


def _epoch_of(name: str, prefix: str) -> int | None:
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    return int(rest) if rest.isdigit() else None


# The newest claims stay (with their successor links): a walk to the current
# claim starts from the highest claim a directory listing shows, which on
# NFS may be a little out of date, never by this many ownership changes.
CLAIMS_KEPT = 8


def claims(path: Path) -> list[int]:
    """Every claimed epoch of the account that is still on disk, ascending."""
    try:
        names = os.listdir(path / OWNERS_DIR)
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


def _successor(owners: Path, epoch: int) -> int | None:
    """The epoch that claimed the account after ``epoch`` (``<epoch>.next``),
    None if none did.  A name lookup, not a directory listing: with NFS's
    ``lookupcache=positive`` (or ``none``) it always asks the server."""
    try:
        with open(owners / f"{epoch}.next", "rb") as f:
            return int(f.read().strip() or b"0") or None
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def highest_claim(path: Path) -> int:
    """The current claim: from the highest listed claim, follow the
    successor links to their end (a stale listing only makes the walk
    longer, never wrong)."""
    owners = path / OWNERS_DIR
    got = claims(path)
    top = got[-1] if got else 0
    while (nxt := _successor(owners, top)) is not None:
        top = nxt
    return top


def claim(path: Path, epoch: int) -> None:
    """Claim the account for ``epoch``: create ``owners/<epoch>`` and link
    it as the successor of the current claim (``owners/<top>.next``, created
    by ``link``: exclusive, and complete when visible).  Refused
    (FencedError) when the current claim is higher.  Claiming again with
    the current epoch (a reopen) is allowed."""
    owners = path / OWNERS_DIR
    if not owners.is_dir():
        faults.point("mkdir")
        with contextlib.suppress(FileExistsError):
            private_mkdir(owners)
        fsync_dir(path)
    top = highest_claim(path)
    if top == epoch:
        return
    if top > epoch:
        raise Superseded(path, epoch, top)
    faults.point("create")
    mine = owners / str(epoch)
    try:
        fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.write(fd, str(epoch).encode())
        os.fsync(fd)
        os.close(fd)
    while True:
        # the first claim links as the successor of epoch 0 (never a claim)
        faults.point("link")
        try:
            os.link(mine, owners / f"{top}.next")
        except FileExistsError:
            nxt = _successor(owners, top)
            top = nxt if nxt is not None else highest_claim(path)
            if top == epoch:
                return
            if top > epoch:
                raise Superseded(path, epoch, top) from None
            continue
        fsync_dir(owners)
        return


def check(path: Path, epoch: int) -> None:
    """Raise :class:`Superseded` when a newer owner has claimed the account
    after ``epoch``: one name lookup (``owners/<epoch>.next``)."""
    nxt = _successor(path / OWNERS_DIR, epoch)
    if nxt is not None:
        top = nxt
        while (more := _successor(path / OWNERS_DIR, top)) is not None:
            top = more
        raise Superseded(path, epoch, top)


def collect_claims(path: Path, epoch: int) -> None:
    """Remove claims (and their successor links) older than the newest
    CLAIMS_KEPT, all below ``epoch`` (the current owner's)."""
    owners = path / OWNERS_DIR
    old = [e for e in claims(path) if e < epoch][:-CLAIMS_KEPT]
    for e in old:
        for name in (str(e), f"{e}.next"):  # the claim first: see highest_claim
            faults.point("unlink")
            try:
                os.unlink(owners / name)
            except OSError:
                pass


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- manifests ----------------------------------------------------------------
def manifest_epochs(path: Path) -> list[int]:
    out = []
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return []
    for n in names:
        e = _epoch_of(n, MANIFEST + ".")
        if e is not None:
            out.append(e)
    return sorted(out)


def read_manifest(path: Path, epoch: int) -> dict[str, Any]:
    with open(path / f"{MANIFEST}.{epoch}", "rb") as f:
        doc = json.loads(f.read().decode("utf-8"))
    if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION:
        raise StorageError(f"{path}: manifest.{epoch} has an unknown format")
    return doc


def write_manifest(path: Path, epoch: int, doc: dict[str, Any]) -> None:
    """Replace ``manifest.<epoch>`` atomically and durably (only its owner calls this)."""
    data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")
    target = path / f"{MANIFEST}.{epoch}"
    tmp = path / f".{MANIFEST}.{epoch}.{secrets.token_hex(4)}.tmp"
    faults.point("create")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    faults.point("rename")
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path)


def successor_manifest(path: Path, epoch: int, wait: float = RESOLVE_WAIT) -> dict[str, Any] | None:
    """The manifest of the highest epoch above ``epoch``, waiting up to
    ``wait`` seconds for one to appear (a successor writes it right after
    its claim)."""
    deadline = time.monotonic() + wait
    while True:
        above = [e for e in manifest_epochs(path) if e > epoch]
        for e in reversed(above):
            try:
                return read_manifest(path, e)
            except (OSError, ValueError, StorageError):
                continue  # replaced or removed meanwhile: try the next
        if time.monotonic() >= deadline:
            return None
        time.sleep(RESOLVE_POLL)


@dataclass(frozen=True, slots=True)
class Written:
    """A durable write whose fate a superseded owner must learn: ``end``
    bytes of the log file first created as ``origin`` in mailbox ``mbox``."""

    mbox: int
    origin: str
    end: int


def sealed_in(doc: dict[str, Any], written: Written) -> bool:
    """Whether the successor's manifest ``doc`` holds ``written``."""
    for m in doc.get("mailboxes", {}).values():
        if m.get("id") != written.mbox:
            continue
        for entry in m.get("chain", []):
            if entry.get("origin") == written.origin:
                seal = entry.get("seal")
                return seal is not None and int(seal) >= written.end
    return False


def resolve(path: Path, epoch: int, writes: list[Written]) -> bool:
    """After a write by ``epoch`` was found superseded: True when every one
    of ``writes`` was sealed in by the successor (the writes are durable and
    will be read by every later owner), False when any was not or when the
    successor's decision cannot be learnt in time (then the caller answers a
    temporary failure)."""
    doc = successor_manifest(path, epoch)
    if doc is None:
        return False
    return all(sealed_in(doc, w) for w in writes)


def manifest_included(path: Path, epoch: int, version: int) -> bool:
    """After a manifest change (version ``version``) by ``epoch`` was found
    superseded: whether the successor's state descends from that version or
    a later one of ``epoch``'s manifest."""
    doc = successor_manifest(path, epoch)
    if doc is None:
        return False
    got = (doc.get("lineage") or {}).get(str(epoch))
    return got is not None and int(got) >= version


LINEAGE_KEEP = 32


def lineage(pred: dict[str, Any] | None, pred_epoch: int) -> dict[str, int]:
    """The lineage of a manifest derived from ``pred``: the manifest
    versions of its ancestors it descends from (the newest LINEAGE_KEEP)."""
    out: dict[str, int] = {}
    if pred is not None:
        out.update({k: int(v) for k, v in (pred.get("lineage") or {}).items()})
        out[str(pred_epoch)] = int(pred.get("seq", 0))
    keep = sorted(out, key=int)[-LINEAGE_KEEP:]
    return {k: out[k] for k in keep}
