"""The Controller duty of a backend: election, tenure, Backup naming.

The rules are those of ``election.py`` (read its docstring first); this mixin
of :class:`dynamail.cluster.member.ClusterMember` runs them: every T/8 it
either renews this member's tenure as Controller (every T/4) or observes the
current Controller's heartbeat record and claims the next epoch when the
Controller is dead (record unchanged for T) or cut off from every backend
while this member hears from one.  It also ticks the sans-IO Controller
(lease expiry, Backup naming) and tells members about role changes.

Invariant: ``self.controller`` is set only between a won claim and the
moment the tenure lapses or a newer epoch appears; ``_step_down`` closes
every account this member had open under its own tenure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from dynamail.cluster import limits, wire
from dynamail.cluster.controller import Controller, Role, RolesChanged
from dynamail.cluster.election import (
    ControllerRecord,
    ElectionStore,
    Observer,
    Tenure,
    first_act,
    takeover_reason,
)

if TYPE_CHECKING:
    from dynamail.cluster.member import ClusterSettings
    from dynamail.cluster.ownership import ClusterLocator
    from dynamail.cluster.peer import Peer

log = logging.getLogger("dynamail.cluster")

NO_ADDRESS: tuple[str, int, int] = ("", 0, 0)


class ControllerDuty:
    # state owned by ClusterMember
    ownership_news: Callable[[], None]  # Handoffs (a bare annotation: the MRO finds the method there)
    ctx: Any
    s: ClusterSettings
    name: str
    role: str
    version: str
    ready: bool
    election: ElectionStore | None
    controller: Controller | None
    tenure: Tenure | None
    controller_name: str
    controller_epoch: int
    backup_name: str
    lease_until: float
    lease_epoch: int
    hold_until: float
    hold_epoch: int
    last_controller_contact: float
    resynced_epoch: int
    addresses: dict[str, tuple[str, int, int]]
    peers: dict[str, Peer]
    locator: ClusterLocator
    _observer: Observer
    _hb_seq: int
    _inbound: set[Peer]
    refused: dict[str, float]
    _election_pool: ThreadPoolExecutor | None = None
    _election_failing = ""  # the last storage error of the election loop, said once
    _backend_names: set[str]  # every backend a Controller's record listed
    peer_views: dict[str, tuple[float, int, bool]]  # member -> (answered at, epoch, hears the Controller)

    # provided by ClusterMember
    def is_controller(self) -> bool:
        raise NotImplementedError

    def _check_cut(self) -> None:
        raise NotImplementedError

    def _learn(self, name: str, address: Any) -> None:
        raise NotImplementedError

    def _sessions(self) -> int:
        raise NotImplementedError

    def _send_to(self, member: str, msg: wire.Message) -> None:
        raise NotImplementedError

    def _all_peers(self) -> list[Peer]:
        raise NotImplementedError

    def _controller_changed(self) -> None:
        raise NotImplementedError

    def may_write_now(self, now: float) -> bool:
        return now < self.lease_until or now < self.hold_until

    async def peer_to(self, name: str) -> Peer | None:
        raise NotImplementedError

    def gone(self, name: str, now: float) -> bool:
        """Member ``name``'s cluster port refused a connection within the last
        T: its host is up but the process is not (killed, restarting).  A
        paused or cut-off member is never "gone" (it does not refuse)."""
        return now - self.refused.get(name, float("-inf")) < self.s.lease

    async def _eio(self, fn: Any, *args: Any) -> Any:
        """Election I/O on threads of its own: a default executor busy with
        mail (reads, fsyncs) must never delay a renewal past the tenure."""
        pool = getattr(self, "_election_pool", None)
        if pool is None:
            pool = self._election_pool = ThreadPoolExecutor(2, thread_name_prefix="election")
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def _election_loop(self) -> None:
        assert self.election is not None
        period = self.s.lease / 8
        last_renew = 0.0
        prev = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            if now - prev > period + self.s.lease / 4:
                # this process was paused (SIGSTOP, a VM freeze) or starved:
                # nothing measured across the gap says anything about the
                # others; observe afresh before judging the Controller
                self._observer = Observer()
                self.last_controller_contact = now
            prev = now
            try:
                self._check_cut()
                if self.controller is not None:
                    if time.monotonic() - last_renew >= self.s.lease / 4:
                        last_renew = time.monotonic()
                        await self._renew()
                else:
                    await self._observe()
                self._election_failing = ""
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                # the shared storage refused (full, I/O error, unreachable):
                # said once per kind of failure, not at every step it lasts
                kind = f"{type(exc).__name__}:{exc.errno}"
                if kind != self._election_failing:
                    log.warning("election step failed: %s", exc)
                    self._election_failing = kind
            except Exception:
                log.exception("election step failed")

    async def _observe(self) -> None:
        assert self.election is not None
        rec: ControllerRecord | None = await self._eio(self.election.current)
        now = time.monotonic()
        if rec is None:
            await self._claim(1, None, None, reason="cold start")
            return
        if rec.epoch > self.controller_epoch:
            self._learn_controller(rec)
        hb = await self._eio(self.election.read_heartbeat, rec.epoch)
        now = time.monotonic()
        # every backend a Controller ever listed: a connection this member
        # dialed does not tell the other side's role (only the listener
        # learns the dialer's), so names known as backends count too
        self._backend_names.update(self.election.contacts_of(hb))
        self._observer.observe(rec.epoch, hb, now)
        self._hold_through_election(rec.epoch, now)
        reason = takeover_reason(
            now=now, observer=self._observer, lease=self.s.lease,
            # the Backup's head start is not waited for when the Backup is gone too
            head_start=limits.BACKUP_HEAD_START,
            is_backup=self.backup_name == self.name or self.gone(self.backup_name, now),
            last_contact=self.last_controller_contact, contacts=self.election.contacts_of(hb),
            me=self.name, controller=rec.member,
            hear_other_backend=self._hear_other_backend(rec.member),
            controller_gone=rec.member != self.name and self.gone(rec.member, now))
        if reason is not None:
            await self._claim(rec.epoch + 1, rec, hb, reason=reason)

    def _hold_through_election(self, epoch: int, now: float) -> None:
        """Keep this member's accounts through a change of Controller (the
        rule and its argument: docs/cluster.md, "Members through a change of
        Controller").  Only a member that holds them right now (a valid
        lease, or a hold set by an earlier observation) extends:

        * while the Controller that granted the lease is silent on the
          shared storage (its record unchanged for ``3T/8``, longer than a
          renewal period) and no newer epoch exists, the hold is extended by
          ``T/2`` at each fresh observation, so it ends soon after this
          process stops observing (a pause) or the record moves again (the
          Controller is alive: a partition of this member, whose lease must
          then lapse);
        * once a newer epoch exists, the hold ends ``T - m`` after this member
          first saw it: time to resynchronise and be renewed by the new
          Controller, which grants nothing it does not know before every
          expected member has resynchronised or ``T + m`` has passed.
        """
        if self.role != "backend" or not self.locator.held():
            return
        if not (now < self.lease_until or now < self.hold_until):
            return
        if epoch == self.lease_epoch:
            if self._observer.unchanged_for(now) >= self.s.lease * 3 / 8:
                # T/2 ahead of observations T/8 apart: a few late observations
                # (a loaded machine, a slow storage read) do not end the hold
                self.hold_until = max(self.hold_until, now + self.s.lease / 2)
            else:
                self._hold_while_controller_cut_off(now)
        elif epoch > self.lease_epoch and epoch > self.hold_epoch:
            self.hold_epoch = epoch
            self.hold_until = max(self.hold_until, now + self.s.lease - self.s.margin)

    def _hold_while_controller_cut_off(self, now: float) -> None:
        """The second half of hold rule 2: the Controller is cut off, not
        this member.  This member lost the Controller, and the backends it
        reaches lost it too (their fresh answers, within T/2, all say so):
        the accounts are held until the "cut off" rule has had time to
        replace the Controller (3T after the last contact).  One backend
        that still hears the Controller is enough to refuse: the Controller
        is alive, this member is the one cut off, and the Controller frees
        its accounts at T + m, after its lease has lapsed."""
        if self.role != "backend" or not self.locator.held():
            return
        if not (now < self.lease_until or now < self.hold_until):
            return
        if self.controller_epoch != self.lease_epoch or now - self.last_controller_contact >= 3 * self.s.lease:
            return
        if self._others_lost_controller(now):
            self.hold_until = max(self.hold_until, now + self.s.lease / 2)

    def _others_lost_controller(self, now: float) -> bool:
        """At least one other backend answered within T/2, and none of the
        answers of that time says it hears the Controller (a member of an
        earlier release never says so: it counts as having lost it, the rule
        of that release)."""
        fresh = [leased for name, (at, _epoch, leased) in self.peer_views.items()
                 if name not in (self.name, self.controller_name) and now - at < self.s.lease / 2]
        return bool(fresh) and not any(fresh)

    def _hear_other_backend(self, controller: str) -> bool:
        now = time.monotonic()
        for p in list(self.peers.values()) + list(self._inbound):
            if (not p.closed and p.name != controller
                    and (p.role == "backend" or p.name in self._backend_names)
                    and now - p.last_rx < self.s.lease):
                return True
        return False

    def _learn_controller(self, rec: ControllerRecord) -> None:
        if rec.epoch <= self.controller_epoch:
            return
        log.info("controller is %s (epoch %d)", rec.member, rec.epoch)
        self.controller_epoch = rec.epoch
        self.controller_name = rec.member
        self._learn(rec.member, (rec.host, rec.port_offset, rec.port))
        self._controller_changed()
        if self.controller is not None and self.tenure is not None and rec.epoch > self.tenure.epoch:
            self.tenure.superseded = True

    async def _claim(self, epoch: int, old: ControllerRecord | None, hb: bytes | None,
                     *, reason: str) -> None:
        assert self.election is not None
        t0 = time.monotonic()
        if self.may_write_now(t0):
            # a claim writes and syncs the shared storage, which may take long
            # on a loaded machine: the accounts held now are kept through it
            # (rule 3 of the hold: a newer epoch is appearing)
            self.hold_until = max(self.hold_until, t0 + self.s.lease - self.s.margin)
        record = ControllerRecord(epoch, self.name, self.s.host, self.s.cluster_port, self.s.port_offset)
        if not await self._eio(self.election.claim, record):
            return
        # the old Controller itself is not waited for: dead, paused or gone,
        # it is not acting; cut off, it stops acting before this one starts
        # (first_act) and could not resynchronise anyway, and its accounts,
        # which its own clients can no longer keep, are free from then on
        expected = set(self.election.contacts_of(hb)) - {self.name}
        if old is not None:
            expected.discard(old.member)
        starts = time.monotonic()
        if old is not None:
            current = await self._eio(self.election.read_heartbeat, old.epoch)
            starts = first_act(starts, hb, current, self.s.lease, self.s.margin)
        log.warning("became controller with epoch %d (%s)%s", epoch,
                    reason if old is None else f"controller {reason}",
                    "" if starts <= time.monotonic() else
                    f"; the previous one renewed meanwhile: acting in {starts - time.monotonic():.1f} s")
        files = getattr(getattr(self.ctx, "directory", None), "files", None)
        if files is not None:
            # every cached document is re-read: this member may have cached
            # one before an older Controller's last acknowledged write (on the
            # loop: a short lock, never behind a directory operation's)
            files.forget()
        self.tenure = Tenure(epoch, self.s.lease, self.s.margin, renewed_at=t0, starts_at=starts)
        if old is not None and starts > time.monotonic():
            asyncio.get_running_loop().create_task(self._start_on_resignation(self.tenure, old.epoch))
        c = Controller(self.name, epoch, t0, member_lease=self.s.lease, member_margin=self.s.margin,
                       expected=expected)
        c.resync(self.name, t0, role=Role.BACKEND, ready=self.ready, sessions=self._sessions(),
                 version=f"{self.version}/p{max(wire.supported_versions())}",
                 accounts=self.locator.held())
        self.controller = c
        self.controller_epoch = epoch
        self.controller_name = self.name
        self.backup_name = ""
        await self._renew()
        self._broadcast_roles()
        self.ownership_news()
        for name in expected:
            asyncio.get_running_loop().create_task(self._expect_unless_gone(c, name))

    async def _start_on_resignation(self, tenure: Tenure, previous: int) -> None:
        """While this new Controller waits out its predecessor's last
        renewal (first_act), start the moment the predecessor says it has
        stopped acting (``resigned-<N>``, written after it stepped down and
        closed its accounts)."""
        assert self.election is not None
        while self.tenure is tenure and time.monotonic() < tenure.starts_at:
            with contextlib.suppress(OSError):
                if await self._eio(self.election.resigned, previous):
                    if self.tenure is tenure and time.monotonic() < tenure.starts_at:
                        log.info("controller epoch %d resigned: acting now, %.1f s early", previous,
                                 tenure.starts_at - time.monotonic())
                        tenure.starts_at = time.monotonic()
                        self.ownership_news()
                    return
            await asyncio.sleep(self.s.lease / 16)

    async def _expect_unless_gone(self, c: Controller, name: str) -> None:
        """An expected member whose process is gone will never resynchronise:
        stop waiting for it (its accounts are free at once)."""
        await self.peer_to(name)
        if self.gone(name, time.monotonic()) and c is self.controller:
            c.not_expected(name)

    async def _renew(self) -> None:
        assert self.election is not None and self.tenure is not None and self.controller is not None
        c = self.controller
        t0 = time.monotonic()
        epoch = self.tenure.epoch
        if self.tenure.lapsed(t0):
            await self._step_down("tenure lapsed before renewal")
            return
        if await self._eio(self.election.exists, epoch + 1):
            await self._step_down("a newer controller epoch exists")
            return
        if self.controller is not c:  # stepped down while the check ran: nothing to renew
            return
        self._hb_seq += 1
        contacts = [m.name for m in c.members()
                    if m.alive and m.role is Role.BACKEND and m.name != self.name]
        await self._eio(self.election.write_heartbeat, epoch, self._hb_seq, contacts)
        if await self._eio(self.election.exists, epoch + 1):
            await self._step_down("a newer controller epoch exists")
            return
        if self.tenure is not None:
            self.tenure.renewed(t0)
        if self._hb_seq % 40 == 1:
            await self._eio(self.election.prune, epoch)

    async def _step_down(self, why: str) -> None:
        if self.controller is None:
            return
        log.warning("stepping down as controller: %s", why)
        epoch = self.tenure.epoch if self.tenure is not None else 0
        self.controller = None
        self.tenure = None
        self.lease_until = 0.0
        self.hold_until = 0.0
        self.resynced_epoch = 0
        self._observer = Observer()
        self.last_controller_contact = time.monotonic()
        await self.locator.drop_all()
        if epoch and self.election is not None:
            # no longer acting, accounts closed: a successor waiting out
            # first_act() may start now (best effort; otherwise it waits)
            with contextlib.suppress(OSError):
                await self._eio(self.election.resign, epoch)

    def _tick(self) -> None:
        c = self.controller
        if c is None or not self.is_controller():
            return
        for ev in c.tick(time.monotonic()):
            if isinstance(ev, RolesChanged):
                self.backup_name = ev.backup
                log.info("backup controller is now %s", ev.backup or "(none)")
                self._broadcast_roles()
            else:
                log.warning("member %s declared dead; its accounts are free", ev)
        for member, key, epoch in c.take_revocations():
            self._send_to(member, wire.Release(key, epoch))

    def _broadcast_roles(self) -> None:
        msg = wire.Roles(self.name, self.controller_epoch, self.backup_name,
                         self.addresses.get(self.backup_name, NO_ADDRESS))
        for p in self._all_peers():
            with contextlib.suppress(Exception):
                p.send(msg)

