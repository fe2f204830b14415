"""The in-process change feed of one mailbox.

Every committed change is appended to a journal as ``(kind, uids, origin)``
(``kind`` is ``"a"`` added, ``"f"`` flags changed, ``"x"`` expunged;
``origin`` is the id of the view that made it, 0 for none).  Views remember
their position in the journal and read what came after it on ``refresh``;
``wait_for_change`` waiters are futures woken at once on the loop thread.
The journal is trimmed when it grows; a view that fell behind the trimmed
part compares its snapshot with the index instead.  Everything here runs on
the event loop thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

MAX_JOURNAL = 20000


@dataclass(slots=True)
class Entry:
    kind: str
    uids: list[int]
    origin: int


@dataclass
class MailboxFeed:
    journal: list[Entry] = field(default_factory=list)
    base: int = 0  # absolute position of journal[0]
    waiters: list[tuple[int, asyncio.Future[bool]]] = field(default_factory=list)
    views: int = 0
    deleted: bool = False

    @property
    def end(self) -> int:
        return self.base + len(self.journal)

    def publish(self, kind: str, uids: list[int], origin: int = 0) -> None:
        if not uids:
            return
        self.journal.append(Entry(kind, uids, origin))
        if len(self.journal) > MAX_JOURNAL:
            drop = len(self.journal) // 2
            del self.journal[:drop]
            self.base += drop
        still: list[tuple[int, asyncio.Future[bool]]] = []
        for viewer, fut in self.waiters:
            if fut.done():
                continue
            if viewer != origin:
                fut.set_result(True)
            else:
                still.append((viewer, fut))
        self.waiters = still

    def since(self, pos: int) -> list[Entry] | None:
        """Entries from absolute position ``pos``; None if already trimmed."""
        if pos < self.base:
            return None
        return self.journal[pos - self.base :]

    def pending_for(self, pos: int, viewer: int) -> bool:
        entries = self.since(pos)
        if entries is None:
            return True
        return any(e.origin != viewer for e in entries)

    async def wait(self, viewer: int, pos: int, timeout: float) -> bool:
        if self.pending_for(pos, viewer):
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiters.append((viewer, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        finally:
            self.waiters = [(v, f) for v, f in self.waiters if f is not fut]

    def wake_all(self) -> None:
        for _viewer, fut in self.waiters:
            if not fut.done():
                fut.set_result(True)
        self.waiters = []
