"""Choosing the Controller through the shared storage, without any lock.

Every backend mounts the shared storage, so the storage is the arbiter that
lets a two-backend cluster survive the loss of either (no majority is needed).
The directory ``<SharedBase>/.cluster/controller/`` holds:

``epoch-<N>``
    Created once, atomically, by the backend that became Controller with
    epoch N: its content is written to a temporary file which is then
    hard-linked to ``epoch-<N>``.  ``link`` fails with EEXIST when the name
    exists (atomic on local file systems, NFSv3+ and GlusterFS, the
    classic lock-free exclusive create), so among any number of candidates
    for N exactly one wins, and the file is complete the moment it exists.
``heartbeat-<N>``
    Rewritten by Controller N every ~T/4 (write temporary, rename: readers
    see the old or the new record, never a torn one).  The record holds a
    sequence number and the members the Controller hears from.
``resigned-<N>``
    Created by Controller N once it has stopped acting (it stepped down and
    closed its accounts): its successor, which waits ``T - m`` when N
    renewed after the successor's last look (:func:`first_act`), acts as
    soon as it sees this file.  Only an optimisation: a Controller that
    cannot write it is waited out.

Rules (T = controller lease, m = margin; every duration is measured on the
monotonic clock of the process that measures it, never on wall clocks):

* An observer declares Controller N dead when it has seen ``heartbeat-<N>``
  unchanged for T, measured from the moment it first saw the current
  content.  It then tries to create ``epoch-<N+1>``.  The Backup tries at
  once; other backends wait ``BACKUP_HEAD_START`` longer and re-check.
* Controller N acts only while less than T - m has passed since the start of
  its last successful renewal, and only while ``epoch-<N+1>`` does not exist
  (checked at every renewal).  Since a renewal's content was written after
  its start and the observer's T starts no earlier than it saw that content,
  the Controller has stopped acting m before any observer can claim N+1.
  A SIGSTOPped Controller wakes with its monotonic clock far past T - m and
  refuses everything before it can even try to renew.
* Grants carry the Controller epoch; members refuse grants from an epoch
  older than the newest they know, and storage refuses writes below the
  recorded account epoch: even a Controller that misjudged its lease cannot
  cause two writers.

The file operations here are blocking; the member runs them in a thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from dynamail.durable import atomic_write, fsync_dir
from dynamail.filemodes import create_private, private_dirs

_EPOCH_RE = re.compile(r"^epoch-(\d+)$")
KEEP_EPOCHS = 8  # older epoch files are removed by the Controller


@dataclass(frozen=True, slots=True)
class ControllerRecord:
    epoch: int
    member: str
    host: str
    port: int  # cluster port
    port_offset: int = 0  # of the Controller's service ports

    def encode(self) -> bytes:
        return msgpack.packb([self.epoch, self.member, self.host, self.port, self.port_offset])

    @classmethod
    def decode(cls, data: bytes) -> ControllerRecord | None:
        try:
            epoch, member, host, port, offset = msgpack.unpackb(data)
            return cls(int(epoch), str(member), str(host), int(port), int(offset))
        except Exception:
            return None


class ElectionStore:
    """The election files of one cluster (blocking I/O)."""

    def __init__(self, shared_base: Path) -> None:
        self.dir = Path(shared_base) / ".cluster" / "controller"

    def ensure(self) -> None:
        private_dirs(self.dir)

    def highest_epoch(self) -> int:
        best = 0
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.dir):
                m = _EPOCH_RE.match(name)
                if m:
                    best = max(best, int(m.group(1)))
        return best

    def current(self) -> ControllerRecord | None:
        """The record of the newest Controller epoch (None before the first)."""
        n = self.highest_epoch()
        if n == 0:
            return None
        try:
            data = (self.dir / f"epoch-{n}").read_bytes()
        except FileNotFoundError:
            return None
        return ControllerRecord.decode(data)

    def exists(self, epoch: int) -> bool:
        return (self.dir / f"epoch-{epoch}").exists()

    def claim(self, record: ControllerRecord) -> bool:
        """Try to become Controller with ``record.epoch``; True if this call won."""
        self.ensure()
        tmp = self.dir / f".claim-{record.epoch}-{secrets.token_hex(6)}.tmp"
        fd = create_private(tmp)
        try:
            os.write(fd, record.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, self.dir / f"epoch-{record.epoch}")
            won = True
        except FileExistsError:
            won = False
        finally:
            tmp.unlink(missing_ok=True)
        if won:
            fsync_dir(self.dir)
        return won

    def write_heartbeat(self, epoch: int, seq: int, contacts: list[str]) -> None:
        atomic_write(self.dir / f"heartbeat-{epoch}", msgpack.packb([epoch, seq, contacts]))

    def read_heartbeat(self, epoch: int) -> bytes | None:
        try:
            return (self.dir / f"heartbeat-{epoch}").read_bytes()
        except FileNotFoundError:
            return None

    def resign(self, epoch: int) -> None:
        """Controller ``epoch`` has stopped acting (stepped down, its
        accounts closed): ``resigned-<N>`` tells a successor waiting out
        :func:`first_act` that it may act now."""
        path = self.dir / f"resigned-{epoch}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        fsync_dir(self.dir)

    def resigned(self, epoch: int) -> bool:
        return (self.dir / f"resigned-{epoch}").exists()

    @staticmethod
    def contacts_of(record: bytes | None) -> list[str]:
        if not record:
            return []
        try:
            return [str(c) for c in msgpack.unpackb(record)[2]]
        except Exception:
            return []

    def prune(self, current: int) -> None:
        """Remove election files of epochs long superseded."""
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.dir):
                m = _EPOCH_RE.match(name)
                if m and int(m.group(1)) < current - KEEP_EPOCHS:
                    (self.dir / name).unlink(missing_ok=True)
                hb = re.match(r"^(?:heartbeat|resigned)-(\d+)$", name)
                if hb and int(hb.group(1)) < current:
                    (self.dir / name).unlink(missing_ok=True)


@dataclass
class Observer:
    """Watches Controller N's heartbeat record on this process's clock."""

    epoch: int = 0
    seen: bytes | None = None
    since: float = 0.0  # when the current content of the record was first seen
    epoch_since: float = 0.0  # when this epoch was first seen
    extra: dict[str, Any] = field(default_factory=dict)

    def observe(self, epoch: int, record: bytes | None, now: float) -> None:
        if epoch != self.epoch:
            self.epoch_since = now
        if epoch != self.epoch or record != self.seen:
            self.epoch, self.seen, self.since = epoch, record, now

    def unchanged_for(self, now: float) -> float:
        return now - self.since

    def epoch_age(self, now: float) -> float:
        return now - self.epoch_since


@dataclass
class Tenure:
    """The Controller's own view of its right to act."""

    epoch: int
    lease: float
    margin: float
    renewed_at: float  # start of the last successful renewal
    superseded: bool = False
    starts_at: float = 0.0  # see first_act()

    def lapsed(self, now: float) -> bool:
        return self.superseded or now - self.renewed_at >= self.lease - self.margin

    def valid(self, now: float) -> bool:
        """May the Controller act now?"""
        return now >= self.starts_at and not self.lapsed(now)

    def expires_at(self) -> float:
        return self.renewed_at + self.lease - self.margin

    def renewed(self, started: float) -> None:
        self.renewed_at = max(self.renewed_at, started)


def first_act(claimed_at: float, seen: bytes | None, current: bytes | None,
              lease: float, margin: float) -> float:
    """When the winner of epoch N+1 may start acting.

    The claim was decided on the previous Controller's record as ``seen``.
    If the record is unchanged after the claim, the previous Controller has
    not renewed since the observer started counting, so its tenure ended
    before the claim: act at once.  If it changed, the previous Controller
    renewed between the observer's last read and the claim (it was paused or
    slow at the wrong moment); a renewal that started before the claim keeps
    it believing in its tenure for at most T - m past the claim, so wait that
    long.  (It will also see ``epoch-<N+1>`` at its next renewal and step
    down, and then write ``resigned-<N>``, which ends the wait early.)
    """
    return claimed_at if current == seen else claimed_at + lease - margin


def takeover_reason(*, now: float, observer: Observer, lease: float, head_start: float,
                    is_backup: bool, last_contact: float, contacts: list[str], me: str,
                    controller: str, hear_other_backend: bool,
                    controller_gone: bool = False) -> str | None:
    """Why this backend should claim the next epoch now, or None.

    "stale": the Controller's record stayed unchanged for T (+ the head start
    the Backup does not wait).  "cut off": this backend lost the Controller's
    network for T/2 longer than that, the record lists no other backend as
    reachable by the Controller, and this backend hears from another backend.
    The extra T/2 lets a dead Controller be replaced by the "stale" rule,
    whose successor need not wait for the old Controller's resync.  A
    Controller is judged cut off only once this backend has known its epoch
    for that whole window: a Controller that has just taken over lists
    nobody yet (members are still resynchronising), which is no evidence of
    a partition.  The caller resets ``observer`` and ``last_contact`` when
    its own process was paused, so a pause of the observer is never taken
    for silence of the Controller.

    "gone": the Controller's cluster port refuses connections (its host is up
    but its process is not: killed, crashed, restarting), so it is not
    acting; the Backup (or anyone, when the Backup is gone too) claims at
    once instead of waiting T.  A paused or cut-off Controller never
    refuses a connection, so this never replaces a live one.
    """
    wait = lease + (0.0 if is_backup else head_start)
    if observer.unchanged_for(now) >= wait:
        return "stale"
    if controller_gone and is_backup:
        return "gone"
    window = wait + lease / 2
    if (now - last_contact >= window and observer.epoch_age(now) >= window
            and not (set(contacts) - {me, controller}) and hear_other_backend):
        return "cut off"
    return None
