"""The seeded schedule of faults and the injector that applies it.

The plan is a pure function of the seed: a sequence of :class:`Planned`
faults, each with the quiet gap before it, its kind, the role of its target
("controller", "backup" or "member": resolved to a member name only when it
is injected, from the cluster's status at that moment) and its timing.
Faults do not overlap: one is injected, healed (restarted, resumed), and
the next follows after its gap, so that unavailability can be attributed.

Kinds:

``kill``          kill -9, restart after ``hold`` seconds;
``kill-two``      kill -9 one member, ``second`` seconds later another
                  (at least one backend stays alive), restart both;
``pause``         SIGSTOP for ``hold`` (1.5-4 leases), then SIGCONT;
``isolate``       (with ``--netns``) take the member's network link down for
                  ``hold`` (1.5-4 leases): it loses its peers and its clients,
                  not its storage;
``storage-pause`` arm a storage fault point (``DYNAMAIL_FAULTS_DIR``) of a
                  backend: the member stops itself with SIGSTOP inside its
                  next matching mutation of shared storage; SIGCONT after
                  ``hold``.  When no mutation reaches the point within
                  ``ARM_WAIT`` seconds the fault is disarmed and recorded as
                  not triggered;
``slow-storage``  write ``delay`` seconds (0.05-0.5) to the member's
                  ``DIR/slow``: every fault point of the member sleeps that
                  long, for ``hold`` (1.5-4 leases);
``partition``     (with ``--netns``) cut the link between two members (the
                  second by ``second_role``) for ``hold`` (1.5-4 leases);
                  both still reach every other member and every client;
``clock-step``    step the member's wall clock by ``step`` seconds (30-600
                  either way; its monotonic clock runs on) for ``hold``
                  (1.5-4 leases), then back.  Needs libfaketime
                  (:mod:`dynamail.chaos.clock`); without it the fault is
                  recorded as not available;
``full-fs``       (with ``--small-fs``) fill the shared storage's small file
                  system with a ballast file for ``hold`` (2-4 leases), then
                  remove it: every member's writes meet ENOSPC meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamail.chaos import clock
from dynamail.chaos.history import History
from dynamail.chaos.netns import Topology
from dynamail.chaos.smallfs import SmallFs
from dynamail.cluster import launcher

KINDS = (("kill", 4), ("kill-two", 2), ("pause", 3), ("storage-pause", 2), ("slow-storage", 2),
         ("clock-step", 2))
PARTITIONS = (("isolate", 3), ("partition", 2))  # only with network namespaces (--netns)
FULL = (("full-fs", 2),)  # only with the shared storage on a small file system (--small-fs)
KIND_NAMES = tuple(k for k, _ in (*KINDS, *PARTITIONS, *FULL))
SLOW = (0.05, 0.5)  # seconds every storage fault point sleeps under slow-storage
STEP = (30.0, 600.0)  # seconds a clock-step moves the wall clock, either way
ROLES = (("controller", 3), ("backup", 2), ("member", 4))
STORAGE_POINTS = ("write", "rename", "link", "unlink", "mkdir", "create", "truncate", "dir-write",
                  "dir-rename", "*")
ARM_WAIT = 5.0  # seconds an armed storage fault point may wait for a mutation
GAP = (3.0, 8.0)  # quiet seconds between two faults
FAULTS_ENV = "DYNAMAIL_FAULTS_DIR"


@dataclass(frozen=True, slots=True)
class Planned:
    gap: float
    kind: str
    role: str
    hold: float
    second_role: str = ""
    second: float = 0.0
    point: str = ""
    delay: float = 0.0
    step: float = 0.0


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


def plan(seed: int, lease: float, kinds: tuple[str, ...] = (), partitions: bool = False,
         full: bool = False) -> Any:
    """The endless, reproducible sequence of faults for ``seed`` (optionally
    only of ``kinds``; ``isolate`` and ``partition`` only with ``partitions``,
    ``full-fs`` only with ``full``)."""
    rng = random.Random(seed)
    every = (*KINDS, *(PARTITIONS if partitions else ()), *(FULL if full else ()))
    table = tuple((k, w) for k, w in every if not kinds or k in kinds) or every
    while True:
        kind = _weighted(rng, table)
        role = _weighted(rng, ROLES)
        gap = rng.uniform(*GAP)
        if kind == "kill":
            yield Planned(gap, kind, role, hold=rng.uniform(0.5, 3.0))
        elif kind == "kill-two":
            yield Planned(gap, kind, role, hold=rng.uniform(0.5, 3.0),
                          second_role=rng.choice(("controller", "member")),
                          second=rng.uniform(0.3, 2.0))
        elif kind in ("pause", "isolate"):
            yield Planned(gap, kind, role, hold=lease * rng.uniform(1.5, 4.0))
        elif kind == "partition":
            yield Planned(gap, kind, role, hold=lease * rng.uniform(1.5, 4.0),
                          second_role=rng.choice(("controller", "backup", "member")))
        elif kind == "slow-storage":
            yield Planned(gap, kind, role, hold=lease * rng.uniform(1.5, 4.0), delay=rng.uniform(*SLOW))
        elif kind == "clock-step":
            yield Planned(gap, kind, role, hold=lease * rng.uniform(1.5, 4.0),
                          step=rng.choice((-1.0, 1.0)) * rng.uniform(*STEP))
        elif kind == "full-fs":
            yield Planned(gap, kind, role, hold=lease * rng.uniform(2.0, 4.0))
        else:
            yield Planned(gap, kind, rng.choice(("controller", "member")),
                          hold=lease * rng.uniform(1.5, 3.0), point=rng.choice(STORAGE_POINTS))


def faults_dir(directory: Path, member: str) -> Path:
    return Path(directory) / "faults" / member


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat ('T' when stopped), '' when gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[-1][:1]
    except OSError:
        return ""


class Injector(threading.Thread):
    """Applies the plan of ``seed`` to the cluster in ``directory`` until
    ``duration`` seconds have passed, recording every fault in ``history``."""

    def __init__(self, directory: Path, history: History, seed: int, lease: float,
                 duration: float, accounts: list[str], stop: threading.Event,
                 kinds: tuple[str, ...] = (), warmup: float = 3.0,
                 say: Callable[[str], None] | None = None, topology: Topology | None = None,
                 clock_unavailable: str = "the members run without libfaketime",
                 small_fs: SmallFs | None = None) -> None:
        super().__init__(name="faults", daemon=True)
        self.dir = Path(directory)
        self.history = history
        self.plan = plan(seed, lease, kinds, partitions=topology is not None, full=small_fs is not None)
        self.small_fs = small_fs
        self.topology = topology
        self.rng = random.Random(seed ^ 0x5EED)
        self.lease = lease
        self.duration = duration
        self.accounts = accounts
        self.stop = stop
        self.warmup = warmup
        self.error: BaseException | None = None
        self.log: list[str] = []
        self.say = say or (lambda text: None)
        # why clock-step cannot be injected; empty when the members run under libfaketime
        self.clock_unavailable = clock_unavailable

    # -- the cluster -----------------------------------------------------------
    def _data(self) -> dict[str, Any]:
        return launcher.read_cluster(self.dir)

    def _pid(self, name: str) -> int:
        return int(next(m["pid"] for m in self._data()["members"] if m["name"] == name))

    def _status(self) -> dict[str, Any]:
        try:
            return launcher.status(self.dir, timeout=1.0)
        except launcher.LauncherError:
            return {"controller": "", "backup": "", "members": []}

    def _resolve(self, role: str, exclude: set[str], backend_only: bool = False) -> str:
        st = self._status()
        data = self._data()
        running = [m["name"] for m in data["members"] if launcher.alive(m["pid"])
                   and m["name"] not in exclude and (not backend_only or m["role"] == "backend")]
        if role in ("controller", "backup") and st.get(role) in running:
            return str(st[role])
        return self.rng.choice(running) if running else ""

    def _owners(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for a in self.accounts:
            try:
                out[a] = launcher.locate(self.dir, a)
            except (launcher.LauncherError, OSError):
                out[a] = ""
        return out

    def _affected(self, owners: dict[str, str], hit: list[str], controller: bool) -> list[str]:
        if controller:
            return list(self.accounts)
        return [a for a, o in owners.items() if o in hit]

    # -- running ---------------------------------------------------------------
    def run(self) -> None:
        try:
            end = time.time() + self.duration
            if self.stop.wait(self.warmup):
                return
            for p in self.plan:
                if self.stop.wait(p.gap) or time.time() + p.gap > end:
                    return
                self.inject(p)
                if self.history.faults:
                    f = self.history.faults[-1]
                    self.say(f"fault {f.id}: {f.kind} {','.join(f.members)}"
                             f"{' (controller)' if f.controller else ''} {f.note}"
                             f"{'' if f.triggered else ' - not triggered'}")
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.heal_all()

    def inject(self, p: Planned) -> None:
        backends = [m["name"] for m in self._data()["members"] if m["role"] == "backend"]
        first = self._resolve(p.role, set(), backend_only=p.kind == "storage-pause")
        if not first:
            return
        st = self._status()
        owners = self._owners()
        controller = st.get("controller", "")
        if p.kind == "kill":
            f = self.history.fault("kill", [first], controller=first == controller,
                                   affected=self._affected(owners, [first], first == controller))
            launcher.kill(self.dir, first, "KILL")
            self.stop.wait(p.hold)
            self._start(first)
            self.history.healed(f)
        elif p.kind == "kill-two":
            hit = [first]
            f = self.history.fault("kill-two", hit, controller=first == controller)
            launcher.kill(self.dir, first, "KILL")
            self.stop.wait(p.second)
            alive_backends = [b for b in backends if b != first and launcher.alive(self._pid(b))]
            second = self._resolve(p.second_role, {first})
            if second in alive_backends and len(alive_backends) < 2:
                second = ""  # keep one backend alive
            st2 = self._status()
            by_first = set(self._affected(owners, hit, f.controller))
            if second:
                hit.append(second)
                at = time.time()
                launcher.kill(self.dir, second, "KILL")
                f.controller = f.controller or second == st2.get("controller") or second == controller
            f.members = hit
            f.affected = self._affected(owners, hit, f.controller)
            if second:
                # what only the second kill affects is measured from it
                f.since = {a: at for a in f.affected if a not in by_first}
            self.stop.wait(p.hold)
            for name in self.rng.sample(hit, len(hit)):
                self._start(name)
            self.history.healed(f)
        elif p.kind == "pause":
            f = self.history.fault("pause", [first], controller=first == controller,
                                   affected=self._affected(owners, [first], first == controller),
                                   note=f"{p.hold:.2f} s")
            launcher.kill(self.dir, first, "STOP")
            self.stop.wait(p.hold)
            self._cont(first)
            self.history.healed(f)
        elif p.kind == "isolate" and self.topology is not None:
            f = self.history.fault("isolate", [first], controller=first == controller,
                                   affected=self._affected(owners, [first], first == controller),
                                   note=f"{p.hold:.2f} s")
            self.topology.isolate(first, True)
            try:
                self.stop.wait(p.hold)
            finally:
                self.topology.isolate(first, False)
            self.history.healed(f)
        elif p.kind == "partition" and self.topology is not None:
            second = self._resolve(p.second_role, {first})
            if not second:
                return
            hit = [first, second]
            f = self.history.fault("partition", hit, controller=controller in hit,
                                   affected=self._affected(owners, hit, controller in hit),
                                   note=f"{first} x {second} {p.hold:.2f} s")
            self.topology.cut(first, second, True)
            try:
                self.stop.wait(p.hold)
            finally:
                self.topology.cut(first, second, False)
            self.history.healed(f)
        elif p.kind == "slow-storage":
            f = self.history.fault("slow-storage", [first], controller=first == controller,
                                   affected=self._affected(owners, [first], first == controller),
                                   note=f"{p.delay:.3f} s per point for {p.hold:.2f} s")
            slow = faults_dir(self.dir, first) / "slow"
            tmp = slow.with_name("slow.tmp")
            tmp.write_text(f"{p.delay:.3f}\n")
            os.replace(tmp, slow)
            try:
                self.stop.wait(p.hold)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    slow.unlink()
            self.history.healed(f)
        elif p.kind == "clock-step":
            self.clock_step(p, first, owners, controller)
        elif p.kind == "storage-pause":
            self.storage_pause(p, first, owners, controller)
        elif p.kind == "full-fs" and self.small_fs is not None:
            everyone = [m["name"] for m in self._data()["members"]]
            f = self.history.fault("full-fs", everyone, controller=True, affected=list(self.accounts))
            try:
                ballast = self.small_fs.fill()
                f.note = f"ballast {ballast // 1024**2} MiB, {self.small_fs.free()} bytes left, {p.hold:.2f} s"
                self.stop.wait(p.hold)
            finally:
                self.small_fs.empty()
            self.history.healed(f)

    def clock_step(self, p: Planned, member: str, owners: dict[str, str], controller: str) -> None:
        f = self.history.fault("clock-step", [member], controller=member == controller,
                               affected=self._affected(owners, [member], member == controller),
                               note=f"{clock.spec(p.step)} s for {p.hold:.2f} s", offset=round(p.step))
        if self.clock_unavailable:
            f.triggered = f.available = False
            f.note += f" (not available: {self.clock_unavailable})"
            self.history.healed(f)
            return
        d = faults_dir(self.dir, member)
        clock.step(d, p.step)
        try:
            # libfaketime reads the offset again within CACHE_SECONDS
            self.stop.wait(p.hold + clock.CACHE_SECONDS)
        finally:
            clock.step(d, 0)
        self.stop.wait(clock.CACHE_SECONDS)
        self.history.healed(f)

    def storage_pause(self, p: Planned, member: str, owners: dict[str, str], controller: str) -> None:
        d = faults_dir(self.dir, member)
        pid = self._pid(member)
        tmp = d / "arm.tmp"
        tmp.write_text(p.point)
        os.replace(tmp, d / "arm")
        armed = time.time()
        f = self.history.fault("storage-pause", [member], controller=member == controller,
                               affected=self._affected(owners, [member], member == controller),
                               note=f"point {p.point}")
        while time.time() - armed < ARM_WAIT and process_state(pid) != "T":
            if self.stop.wait(0.02):
                break
        if process_state(pid) != "T":
            try:
                os.unlink(d / "arm")  # disarmed by us: the member cannot stop at it any more
            except FileNotFoundError:  # the member took it and is about to stop
                deadline = time.time() + 2.0
                while time.time() < deadline and process_state(pid) != "T":
                    time.sleep(0.01)
            if process_state(pid) != "T":  # nothing reached the point: not a fault
                f.triggered = False
                f.note += " (not reached)"
                self.history.healed(f)
                return
        f.start = time.time()
        self.stop.wait(p.hold)
        self._cont(member)
        self.history.healed(f)

    def _start(self, name: str) -> None:
        try:
            launcher.start(self.dir, name)
        except launcher.LauncherError as exc:
            self.log.append(f"restart {name}: {exc}")

    def _cont(self, name: str) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid(name), signal.SIGCONT)

    def heal_all(self) -> None:
        """Resume every stopped member, join every cut link, remove the
        ballast, disarm every fault point, remove every slowing, set every
        clock right and start every member that is not running."""
        if self.topology is not None:
            with contextlib.suppress(Exception):
                self.topology.join_all()
        if self.small_fs is not None:
            self.small_fs.empty()
        for m in self._data()["members"]:
            d = faults_dir(self.dir, m["name"])
            if self.topology is not None:
                with contextlib.suppress(Exception):
                    self.topology.isolate(m["name"], False)
            for name in ("arm", "slow"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(d / name)
            if not self.clock_unavailable:
                clock.step(d, 0)
            if launcher.alive(m["pid"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(m["pid"], signal.SIGCONT)
            else:
                self._start(m["name"])
