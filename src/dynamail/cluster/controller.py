"""The Cluster Controller's state and decisions, sans-IO.

This module knows which backend has which account open, the members' leases,
load and ready state, and makes every decision the Controller makes: grants
(with their epochs), placement, lease expiry, Backup naming, resynchronisation
after a change of Controller.  It does no I/O and reads no clock: every call
takes ``now`` (seconds on the Controller's monotonic clock), so the tests drive
it with a fake clock and the benchmark runs it a million times a second.

Invariants:

* An account is in ``_open`` with exactly one owner; the owner is an alive
  backend (its lease plus margin has not passed).  A member is declared dead
  only once ``last heartbeat + lease + margin`` has passed on this clock; the
  member itself stops touching account data at ``heartbeat sent + lease -
  margin`` on its clock, so a dead-declared member is no longer writing.
* Every grant's epoch is ``(controller_epoch << 32) | counter`` with the
  counter strictly increasing, and never below ``recorded + 1`` where
  ``recorded`` is the epoch the storage holds for the account.  Controller
  epochs strictly increase with every change of Controller, so a grant is
  above every grant any earlier Controller made: storage fencing refuses the
  older owner whatever the timing.
* A grant whose epoch is below the one the storage records for the account
  (the requester reads it and sends it with every OPEN) is stale: it is
  dropped from the map and its holder is told to close; no grant of an
  older epoch is ever handed out again.
* After a change of Controller the map is rebuilt from the members' Resync
  messages.  Until every expected backend has resynchronised (or the grace
  period, one member lease plus margin, has passed so that any member that
  did not resync has stopped touching its accounts), an account missing from
  the map is not granted.

Memory: member names are interned as small integers; ``_open`` maps the
account key (``domain/name``) to one packed int ``epoch << 16 | member``.
Freeing a dead member's accounts scans the map once (a rare event; about
0.1 s per million open accounts) rather than keeping a second index.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

OWNER_BITS = 16
OWNER_MASK = (1 << OWNER_BITS) - 1


class Refusal(Exception):
    """An OPEN that cannot be granted now.  ``code`` is "unavailable" (retry
    shortly), "not-controller" or "busy" (open elsewhere, local_only)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Role(enum.Enum):
    BACKEND = "backend"
    FRONTEND = "frontend"


@dataclass(slots=True)
class MemberState:
    name: str
    index: int
    role: Role
    alive: bool = False
    ready: bool = True
    last_heard: float = 0.0
    sessions: int = 0
    open_accounts: int = 0
    lag_ms: int = 0
    cpu: int = 0
    placed_since_report: int = 0
    resynced: bool = False
    version: str = ""
    mapped: int = 0  # entries of the open-account map owned by this member

    @property
    def load(self) -> int:
        """One comparable figure: CPU percent, event-loop lag (10 ms = 1),
        sessions (10 = 1), open accounts (100 = 1), plus accounts placed on
        it since its last report."""
        return (self.cpu + min(self.lag_ms, 10_000) // 10 + self.sessions // 10
                + self.open_accounts // 100 + self.placed_since_report)


@dataclass(frozen=True, slots=True)
class GrantDecision:
    account: str
    owner: str
    epoch: int
    new: bool  # False when the account was already open there


@dataclass(frozen=True, slots=True)
class RolesChanged:
    backup: str


class Controller:
    def __init__(self, name: str, controller_epoch: int, now: float, *,
                 member_lease: float = 1.5, member_margin: float = 0.3,
                 expected: Iterable[str] = (), grace: float | None = None) -> None:
        if controller_epoch <= 0 or controller_epoch >= 1 << 31:
            raise ValueError("controller epoch out of range")
        self.name = name
        self.controller_epoch = controller_epoch
        self.member_lease = member_lease
        self.member_margin = member_margin
        self.backup = ""
        self._counter = 0
        self._open: dict[str, int] = {}
        self._members: dict[str, MemberState] = {}
        self._by_index: list[MemberState] = []
        self._expected = set(expected) - {name}
        self._notify_revoked: list[tuple[str, str, int]] = []
        g = member_lease + member_margin if grace is None else grace
        self._grace_until = now + g if self._expected else now
        self.join(name, Role.BACKEND, now)

    # -- members ---------------------------------------------------------
    def member(self, name: str) -> MemberState | None:
        return self._members.get(name)

    def members(self) -> list[MemberState]:
        return list(self._by_index)

    def join(self, name: str, role: Role, now: float) -> MemberState:
        m = self._members.get(name)
        if m is None:
            if len(self._by_index) > OWNER_MASK:
                raise Refusal("busy", "too many members")
            m = MemberState(name, len(self._by_index), role)
            self._members[name] = m
            self._by_index.append(m)
        m.role = role
        m.alive = True
        m.last_heard = now
        return m

    def heartbeat(self, name: str, now: float, *, ready: bool, sessions: int, open_accounts: int,
                  lag_ms: int, cpu: int, role: Role = Role.BACKEND) -> None:
        m = self._members.get(name)
        if m is None or not m.alive:
            m = self.join(name, role, now)
        m.last_heard = now
        m.ready = ready
        m.sessions, m.open_accounts, m.lag_ms, m.cpu = sessions, open_accounts, lag_ms, cpu
        m.placed_since_report = 0

    def set_ready(self, name: str, ready: bool) -> bool:
        m = self._members.get(name)
        if m is None:
            return False
        m.ready = ready
        return True

    def resync(self, name: str, now: float, *, role: Role, ready: bool, sessions: int,
               version: str, accounts: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        """Take a member's open accounts after a change of Controller.
        Returns the (account, epoch) pairs the member must close because a
        higher epoch holds them elsewhere."""
        m = self.join(name, role, now)
        had = m.mapped
        m.ready, m.sessions, m.version, m.resynced = ready, sessions, version, True
        accounts = list(accounts)
        if had:
            # what the member reports replaces what this map believed it had
            # (one scan; skipped for a member this map holds nothing for, as
            # after a change of Controller)
            held = {a for a, _ in accounts}
            stale = [k for k, v in self._open.items() if (v & OWNER_MASK) == m.index and k not in held]
            for k in stale:
                del self._open[k]
            m.mapped -= len(stale)
        revoked: list[tuple[str, int]] = []
        count = 0
        for account, epoch in accounts:
            cur = self._open.get(account)
            if cur is not None:
                owner = self._by_index[cur & OWNER_MASK]
                if owner is not m and owner.alive and (cur >> OWNER_BITS) > epoch:
                    revoked.append((account, epoch))
                    continue
                if owner is not m and owner.alive:
                    self._notify_revoked.append((owner.name, account, cur >> OWNER_BITS))
                if owner is not m:
                    owner.mapped = max(0, owner.mapped - 1)
                    m.mapped += 1
            else:
                m.mapped += 1
            self._open[account] = (epoch << OWNER_BITS) | m.index
            count += 1
            if (epoch >> 32) == self.controller_epoch:
                self._counter = max(self._counter, epoch & 0xFFFFFFFF)
        m.open_accounts = count
        self._expected.discard(name)
        return revoked

    def declare_dead(self, name: str) -> bool:
        """``name``'s process is known gone (its port refuses connections):
        dead now, its accounts free.  False if it was not alive."""
        m = self._members.get(name)
        if m is None or not m.alive or name == self.name:
            return False
        m.alive = False
        m.resynced = False
        self._free({m.index})
        self._expected.discard(name)
        return True

    def not_expected(self, name: str) -> None:
        """Stop waiting for ``name``'s resync (its process is known gone)."""
        self._expected.discard(name)

    def take_revocations(self) -> list[tuple[str, str, int]]:
        """(member, account, epoch) pairs a resync took away from a member."""
        out, self._notify_revoked = self._notify_revoked, []
        return out

    def tick(self, now: float) -> list[object]:
        """Expire leases; name a Backup.  Returns RolesChanged when the
        Backup changed, and the names of members declared dead (strings)."""
        events: list[object] = []
        deadline = self.member_lease + self.member_margin
        dead: set[int] = set()
        for m in self._by_index:
            if m.alive and m.name != self.name and now - m.last_heard > deadline:
                m.alive = False
                m.resynced = False
                dead.add(m.index)
                events.append(m.name)
        if dead:
            self._free(dead)
        if self._grace_until > now and not self._expected:
            self._grace_until = now
        backup = self._choose_backup()
        if backup != self.backup:
            self.backup = backup
            events.append(RolesChanged(backup))
        return events

    def _free(self, indexes: set[int]) -> None:
        gone = [k for k, v in self._open.items() if (v & OWNER_MASK) in indexes]
        for k in gone:
            del self._open[k]
        for i in indexes:
            self._by_index[i].open_accounts = 0
            self._by_index[i].mapped = 0

    def _choose_backup(self) -> str:
        cur = self._members.get(self.backup)
        if cur is not None and cur.alive and cur.role is Role.BACKEND and cur.name != self.name:
            return cur.name
        candidates = [m for m in self._by_index
                      if m.alive and m.role is Role.BACKEND and m.name != self.name]
        if not candidates:
            return ""
        candidates.sort(key=lambda m: (not m.ready, m.load, m.name))
        return candidates[0].name

    # -- accounts -------------------------------------------------------------
    def in_grace(self, now: float) -> bool:
        return now < self._grace_until and bool(self._expected)

    def open(self, account: str, requester: str, now: float, *, recorded: int = 0,
             local_only: bool = False) -> GrantDecision:
        """Where ``account`` may be used; grant it if it is open nowhere."""
        cur = self._open.get(account)
        if cur is not None:
            owner = self._by_index[cur & OWNER_MASK]
            stale = recorded > cur >> OWNER_BITS
            if owner.alive and not stale:
                if local_only and owner.name != requester:
                    raise Refusal("busy", f"open on {owner.name}")
                return GrantDecision(account, owner.name, cur >> OWNER_BITS, False)
            if owner.alive:
                # the storage holds a newer epoch than this grant (a grant of
                # an earlier Controller, reported in a resync after a newer
                # owner had opened the account): storage refuses every write
                # of it, so it is never handed out again; its holder is told
                # to close, and the account is granted afresh above it
                self._notify_revoked.append((owner.name, account, cur >> OWNER_BITS))
            del self._open[account]
            owner.mapped = max(0, owner.mapped - 1)
        if self.in_grace(now):
            raise Refusal("unavailable", "controller is resynchronising")
        if local_only:
            chosen = self._members.get(requester)
            if chosen is None or not chosen.alive or chosen.role is not Role.BACKEND:
                raise Refusal("unavailable", f"{requester} is not an alive backend")
        else:
            chosen = self._place()
        epoch = self.next_epoch(recorded)
        self._open[account] = (epoch << OWNER_BITS) | chosen.index
        chosen.placed_since_report += 1
        chosen.open_accounts += 1
        chosen.mapped += 1
        return GrantDecision(account, chosen.name, epoch, True)

    def _place(self) -> MemberState:
        best: MemberState | None = None
        fallback: MemberState | None = None
        for m in self._by_index:
            if not m.alive or m.role is not Role.BACKEND:
                continue
            if m.ready:
                if best is None or m.load < best.load:
                    best = m
            elif fallback is None or m.load < fallback.load:
                fallback = m
        chosen = best or fallback  # a lone Non-Ready backend keeps serving
        if chosen is None:
            raise Refusal("unavailable", "no backend is alive")
        return chosen

    def next_epoch(self, recorded: int = 0) -> int:
        self._counter += 1
        if self._counter >= 1 << 32:
            raise Refusal("unavailable", "grant counter exhausted; a new controller epoch is needed")
        epoch = (self.controller_epoch << 32) | self._counter
        if epoch <= recorded:
            # storage holds a grant of this (or a later) Controller epoch
            # that this map does not know; go above it
            epoch = recorded + 1
            if epoch >> 32 == self.controller_epoch:
                self._counter = epoch & 0xFFFFFFFF
        return epoch

    def release(self, account: str, member: str, epoch: int) -> bool:
        cur = self._open.get(account)
        m = self._members.get(member)
        if cur is None or m is None:
            return False
        if (cur & OWNER_MASK) == m.index and (cur >> OWNER_BITS) == epoch:
            del self._open[account]
            m.open_accounts = max(0, m.open_accounts - 1)
            m.mapped -= 1
            return True
        return False

    def locate(self, account: str) -> tuple[str, int] | None:
        cur = self._open.get(account)
        if cur is None:
            return None
        owner = self._by_index[cur & OWNER_MASK]
        if not owner.alive:
            return None
        return owner.name, cur >> OWNER_BITS

    def open_count(self) -> int:
        return len(self._open)

    def accounts_of(self, name: str) -> list[tuple[str, int]]:
        m = self._members.get(name)
        if m is None:
            return []
        return [(k, v >> OWNER_BITS) for k, v in self._open.items() if (v & OWNER_MASK) == m.index]
