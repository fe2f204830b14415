"""``dynamail serve --workers N``: one server, N processes, every core used.

A Python process computes on one core.  A server with ``workers = N``
(``0``: one per usable core) runs N worker processes under a supervisor,
and the workers are the members of a Dynamic Cluster confined to this
machine, so an account has one writer at a time under exactly the cluster's
ownership rules (grants from the Controller, epoch-fenced storage,
``docs/cluster.md``) and nothing here adds a second mechanism to trust:

* **Listening.**  Every worker binds the server's ports on the server's
  address with ``SO_REUSEPORT``; the kernel spreads new connections over
  the workers.  Each worker also binds the same ports on its own loopback
  address ``127.77.0.<i>`` (:data:`WORKER_PREFIX`), and its cluster port
  there.
* **Sessions.**  A worker that accepts a login for an account another
  worker owns relays the session to the owner's own address, as a cluster
  member does (``cluster/relay.py``, without TLS: the link never leaves the
  machine).  Passing the socket with ``SCM_RIGHTS`` instead would save the
  copy but cannot move a TLS session (its keys live in the accepting
  process), and IMAPS is what clients use; the relay costs one loopback
  copy per byte and keeps one way of handing a session over.
* **Storage.**  The workers share the server's base: every domain under
  ``Domains/`` is, for them, a shared domain (``Directory(all_shared=True)``)
  and ``Settings/`` holds the cluster-wide defaults; every settings change
  is written by the Controller among the workers (directory fencing), every
  mailbox change by the account's owner (storage fencing).  The layout on
  disk is the one server's: the same base serves with ``workers = 1`` again.
* **Per-worker state** (its SMTP queue and spool, ``server.pid``) lives in
  ``BASE/Workers/w<i>/``.  The cluster secret of the workers is
  ``BASE/Settings/workers.secret`` (created on the first start, mode 0600).

The supervisor does the first start (base, Main Domain, postmaster,
certificate), claims the base, starts the workers, starts a worker again
when it dies (after 1 s, longer when it keeps dying), forwards SIGHUP, and
on SIGTERM/SIGINT stops them all.  A worker's parent-death signal is
SIGTERM, so a supervisor killed with SIGKILL leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

from dynamail.server import config as config_mod
from dynamail.server.config import ServerConfig, WorkerSlot

log = logging.getLogger("dynamail.workers")

WORKER_PREFIX = "127.77.0"  # worker i listens on 127.77.0.<i> besides the server's address
WORKERS_DIR = "Workers"
SECRET_FILE = "workers.secret"
RESTART_DELAY = 1.0  # seconds before a dead worker is started again ...
RESTART_DELAY_MAX = 30.0  # ... doubling while it keeps dying young, up to this
YOUNG = 10.0  # a worker that dies within this many seconds of its start died young
_PR_SET_PDEATHSIG = 1


def worker_address(index: int) -> str:
    return f"{WORKER_PREFIX}.{index}"


def worker_config(cfg: ServerConfig, index: int, count: int) -> ServerConfig:
    """The configuration of worker ``index`` (1..count) of the server ``cfg``."""
    home = cfg.base
    slot = WorkerSlot(index=index, count=count, home=home, address=worker_address(index))
    wcfg = dataclasses.replace(cfg, base=home / WORKERS_DIR / slot.name, worker=slot)
    wcfg.cluster = dataclasses.replace(
        cfg.cluster, role="backend", name=slot.name, tls=False, shared_base="", frontends=[],
        backends=[worker_address(i) for i in range(1, count + 1)],
        secret_file=str(home / config_mod.SETTINGS_DIR / SECRET_FILE),
    )
    return wcfg


def _check_base(cfg: ServerConfig) -> None:
    from dynamail.server.app import StartupError

    if cfg.clustered:
        raise StartupError("--workers: a cluster member runs one process (workers = 1)")
    shared = cfg.base / "SharedDomains"
    try:
        found = sorted(e.name for e in os.scandir(shared) if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        found = []
    if found:
        raise StartupError(
            f"--workers serves the domains in {cfg.base / 'Domains'}; {shared} holds {', '.join(found)}: "
            "move them there first (or run one process)")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclasses.dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = RESTART_DELAY
    due: float = 0.0  # when to start it again (0: running or not yet dead)


class Supervisor:
    def __init__(self, cfg: ServerConfig, count: int) -> None:
        self.cfg = cfg
        self.count = count
        self.workers = [_Worker(i) for i in range(1, count + 1)]
        self.stopping = False
        self.hangup = False
        self.url_copied = False

    def argv(self, index: int) -> list[str]:
        cfg = self.cfg
        argv = [sys.executable, "-m", "dynamail", "serve", "--base", str(cfg.base),
                "--worker-slot", f"{index}/{self.count}", "--listen", cfg.listen,
                "--port-offset", str(cfg.port_offset), "--log-level", cfg.log_level]
        if cfg.config_file is not None:
            argv += ["--config", str(cfg.config_file)]
        return argv

    def start(self, w: _Worker) -> None:
        w.proc = subprocess.Popen(self.argv(w.index), preexec_fn=_die_with_parent)
        w.started = time.monotonic()
        w.due = 0.0
        log.info("worker w%d started (pid %d)", w.index, w.proc.pid)

    def _signal(self, sig: int) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)

    def _copy_admin_url(self) -> None:
        from dynamail.filemodes import write_private
        from dynamail.server.app import ADMIN_URL_FILE

        for w in self.workers:
            src = self.cfg.base / WORKERS_DIR / f"w{w.index}" / ADMIN_URL_FILE
            with contextlib.suppress(OSError):
                write_private(self.cfg.base / ADMIN_URL_FILE, src.read_bytes())
                self.url_copied = True
                return

    def step(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.proc is None:
                if w.due and now >= w.due:
                    self.start(w)
                continue
            rc = w.proc.poll()
            if rc is None:
                continue
            w.proc = None
            if self.stopping:
                continue
            young = now - w.started < YOUNG
            w.delay = min(w.delay * 2, RESTART_DELAY_MAX) if young else RESTART_DELAY
            w.due = now + w.delay
            how = f"signal {-rc}" if rc < 0 else f"exit status {rc}"
            log.warning("worker w%d ended (%s); starting it again in %.0f s", w.index, how, w.delay)
        if not self.url_copied:
            self._copy_admin_url()

    def run(self) -> int:
        def stop(signum: int, frame: Any) -> None:
            self.stopping = True

        def hup(signum: int, frame: Any) -> None:
            self.hangup = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)
        for w in self.workers:
            self.start(w)
        log.info("dynamail serving %s on %s with %d workers (port offset %d)",
                 self.cfg.main_domain, self.cfg.listen, self.count, self.cfg.port_offset)
        while not self.stopping:
            if self.hangup:
                self.hangup = False
                self._signal(signal.SIGHUP)
            self.step()
            time.sleep(0.2)
        log.info("stopping %d workers", self.count)
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.limits.shutdown_grace + 10.0
        while any(w.proc is not None and w.proc.poll() is None for w in self.workers):
            if time.monotonic() > deadline:
                log.warning("workers still running after the grace period: killing them")
                self._signal(signal.SIGKILL)
                break
            time.sleep(0.1)
        for w in self.workers:
            if w.proc is not None:
                w.proc.wait()
        return 0


def supervise(cfg: ServerConfig) -> None:
    """Run the server as :func:`config_mod.worker_count` worker processes."""
    from dynamail.cluster.member import load_secret
    from dynamail.server import app

    count = config_mod.worker_count(cfg)
    _check_base(cfg)
    app.prepare_base(cfg)
    app.claim_base(cfg.base)
    try:
        load_secret(cfg.settings_dir / SECRET_FILE, create=True)
        for i in range(1, count + 1):
            (cfg.base / WORKERS_DIR / f"w{i}").mkdir(parents=True, exist_ok=True, mode=0o700)
        Supervisor(cfg, count).run()
    finally:
        app.release_base(cfg.base)


def slot_of(text: str) -> tuple[int, int]:
    """``I/N`` of ``--worker-slot``."""
    index, _, count = text.partition("/")
    i, n = int(index), int(count)
    if not 1 <= i <= n <= config_mod.MAX_WORKERS:
        raise ValueError(text)
    return i, n
