"""A cluster member at run time: connections, election, leases, hand-offs.

``attach(ctx)`` turns a server into a cluster member: it opens the cluster
port, sets ``ctx.cluster`` to the :class:`ClusterMember` and replaces
``ctx.accounts`` with the cluster locator (``ownership.py``) and
``ctx.delivery.remote`` with the hand-off RPC.

Each backend runs three loops:

* **election** (every T/8): reads ``.cluster/controller/`` on the shared
  storage (``election.py``).  It learns the current Controller there; it
  watches the Controller's heartbeat record on its own monotonic clock and
  claims the next epoch when the record stayed unchanged for T (the Backup
  at once, others ``BACKUP_HEAD_START`` later), or when it has lost the
  Controller's network for T while the Controller's record shows it hears
  from no other backend and this member does (a Controller cut off from
  everyone).  While this member is Controller the loop renews the record
  every T/4 and steps down when ``epoch-<N+1>`` exists or its tenure lapsed.
* **heartbeat** (every ~250 ms): renews this member's lease with the
  Controller (after a Resync whenever the Controller changed); it also keeps
  the connection to the Backup alive.
* **watchdog** (every 50 ms): when the lease (or, on the Controller, the
  tenure) no longer has its safety margin left, closes every shared account
  store at once: this member stops touching account data before the
  Controller may give the accounts to another backend.

The Controller's decisions are the sans-IO ``controller.Controller``; this
module only carries messages to and from it.  The election loop and the
Controller duty live in ``candidacy.py`` (:class:`ControllerDuty`), the work
done through owners and the Controller (deliveries, relays, admin
operations, status) in ``handoff.py`` (:class:`Handoffs`); both are mixins
of :class:`ClusterMember`, which owns the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamail import __version__
from dynamail.accounts import AccountRef
from dynamail.cluster import limits, wire
from dynamail.cluster.candidacy import ControllerDuty
from dynamail.cluster.controller import Controller, Refusal, Role
from dynamail.cluster.dirfence import MemberWriter
from dynamail.cluster.election import ElectionStore, Observer, Tenure
from dynamail.cluster.handoff import NEWS, Handoffs
from dynamail.cluster.locator import AccountUnavailable
from dynamail.cluster.ownership import ClusterLocator, GrantInfo, account_key
from dynamail.cluster.peer import Peer, PeerClosed, accept, client_tls, dial, server_tls
from dynamail.cluster.relay import TicketBook
from dynamail.durable import fsync_dir
from dynamail.filemodes import create_private, private_dirs
from dynamail.net.tls import client_context_insecure

log = logging.getLogger("dynamail.cluster")

NO_ADDRESS: tuple[str, int, int] = ("", 0, 0)
ADMIN_LISTENERS = ("http", "https")  # kept open by a Non-Ready frontend
CUT_FILE = "cluster.cut"  # fault injection: while it exists, every cluster connection is cut


class ClusterConfigError(Exception):
    pass


def load_secret(path: Path, create: bool) -> bytes:
    """The cluster secret; created (mode 0600) by the first backend when
    missing.  A secret file readable by group or others is refused."""
    if not path.exists():
        if not create:
            raise ClusterConfigError(f"cluster secret {path} does not exist")
        private_dirs(path.parent)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = create_private(tmp)
        try:
            os.write(fd, secrets.token_hex(32).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # exclusive: a racing backend's secret wins as a whole
        tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ClusterConfigError(f"cluster secret {path} must be mode 0600")
    data = path.read_bytes().strip()
    if len(data) < 16:
        raise ClusterConfigError(f"cluster secret {path} is too short")
    return data


@dataclass
class ClusterSettings:
    name: str
    role: str  # "backend" | "frontend"
    host: str
    port_offset: int
    cluster_port: int
    backends: list[tuple[str, int]]
    secret: bytes
    shared_base: Path
    base: Path
    ports: dict[str, int]
    lease: float = limits.CONTROLLER_LEASE
    margin: float = limits.CONTROLLER_MARGIN
    heartbeat: float = limits.HEARTBEAT_INTERVAL
    idle_release: float = limits.IDLE_RELEASE
    tls: bool = False  # TLS on cluster links and session relays ([cluster] tls, default true)
    cert: str = ""  # this member's certificate and key (the server's) for the cluster port
    key: str = ""

    @property
    def address(self) -> tuple[str, int, int]:
        return (self.host, self.port_offset, self.cluster_port)

    @classmethod
    def from_config(cls, cfg: Any) -> ClusterSettings:
        cc = cfg.cluster
        cport = cfg.ports.get("cluster", 7070) + cfg.port_offset
        backends: list[tuple[str, int]] = []
        for item in cc.backends:
            host, _, port = str(item).rpartition(":") if ":" in str(item) else (str(item), "", "")
            backends.append((host or str(item), int(port) if port else cport))
        secret_path = Path(cc.secret_file) if cc.secret_file else Path(cfg.shared_base) / "cluster.secret"
        secret = load_secret(secret_path, create=cc.role == "backend")
        cert, key = cfg.cert_paths()
        limits.check_timing(cc.lease_seconds, cc.lease_margin, cc.lease_seconds, cc.lease_margin,
                            cc.heartbeat_interval)
        return cls(
            name=cc.name or cfg.listen, role=cc.role, port_offset=cfg.port_offset,
            # a worker of ``serve --workers`` is reached on its own loopback address
            host=cfg.worker.address if getattr(cfg, "worker", None) is not None else cfg.listen,
            cluster_port=cport, backends=backends, secret=secret, shared_base=Path(cfg.shared_base),
            base=Path(cfg.base), ports=dict(cfg.ports), lease=cc.lease_seconds,
            margin=cc.lease_margin, heartbeat=cc.heartbeat_interval,
            idle_release=min(cfg.limits.account_idle_release, limits.IDLE_RELEASE),
            tls=bool(getattr(cc, "tls", True)), cert=str(cert), key=str(key),
        )


def verifier_key(secret: bytes) -> bytes:
    """The credentials-verifier key of the cluster (``dynamail.auth``): one
    key every member derives from the cluster secret, kept apart from the
    keys the secret authenticates members and relay tickets with."""
    return hmac.new(secret, b"dynamail credentials verifier key v1", hashlib.sha256).digest()


class ClusterMember(ControllerDuty, Handoffs):
    """This process as a member of the Dynamic Cluster (``ctx.cluster``)."""

    def __init__(self, ctx: Any, settings: ClusterSettings) -> None:
        self.ctx = ctx
        self.s = settings
        self.name = settings.name
        self.role = settings.role
        self.version = __version__
        self.ready = True
        self.peers: dict[str, Peer] = {}
        self.addresses: dict[str, tuple[str, int, int]] = {self.name: settings.address}
        self.controller_name = ""
        self.controller_epoch = 0
        self.backup_name = ""
        self.controller: Controller | None = None
        self.tenure: Tenure | None = None
        self.lease_until = 0.0  # this member's lease, renewed by the Controller's acks
        self.lease_epoch = 0  # the Controller epoch of the last renewal
        self.hold_until = 0.0  # kept through a change of Controller (candidacy.py)
        self.hold_epoch = 0
        self.last_controller_contact = time.monotonic()
        self.last_ack = float("-inf")  # when the Controller last acknowledged a heartbeat
        # member -> (when it answered, its Controller epoch, whether it hears
        # the Controller): what the others say while this member lost it
        self.peer_views: dict[str, tuple[float, int, bool]] = {}
        self._asking: set[str] = set()
        self._wake_beat: asyncio.Event | None = None
        self._where_cache: dict[str, tuple[float, str | None]] = {}
        self._owner_news = asyncio.Event()
        self.refused: dict[str, float] = {}  # member -> when its cluster port last refused us
        self.resynced_epoch = 0
        self.lag_ms = 0
        self.cut = False
        self.tickets = TicketBook(settings.secret)
        self.election = ElectionStore(settings.shared_base) if self.role == "backend" else None
        self._observer = Observer()
        self._backend_names: set[str] = set()
        self._hb_seq = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._dialing: dict[str, asyncio.Lock] = {}
        self._inbound: set[Peer] = set()
        self._process: Any = None
        self.server_tls = server_tls(settings.cert, settings.key) if settings.tls else None
        self.client_tls = client_tls() if settings.tls else None
        # relays go to the owner's IMAPS/POP3S port; its certificate is the
        # server's own (often self-signed): the relay ticket, not the
        # certificate, is what the owner trusts, and it is single use
        self.relay_tls = client_context_insecure() if settings.tls else None
        standalone = ctx.accounts
        self.locator = ClusterLocator(standalone, self.name, self._request_open, self._release,
                                      self.may_write, settings.idle_release)

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_accept, self.s.host, self.s.cluster_port, reuse_address=True,
            ssl=self.server_tls, ssl_handshake_timeout=5.0 if self.server_tls else None)
        loop = asyncio.get_running_loop()
        if self.election is not None:
            await self._eio(self.election.ensure)
            self._tasks.append(loop.create_task(self._election_loop()))
        self._tasks.append(loop.create_task(self._heartbeat_loop()))
        self._tasks.append(loop.create_task(self._watchdog()))
        if self.role == "backend":
            self._tasks.append(loop.create_task(self._views_loop()))
        self._tasks.append(loop.create_task(self._lag_probe()))
        log.info("cluster member %s (%s) on %s:%d", self.name, self.role, self.s.host,
                 self.s.cluster_port)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._server is not None:
            self._server.close()
        await self.locator.close()
        for p in list(self.peers.values()) + list(self._inbound):
            p.close()
        if self._election_pool is not None:
            self._election_pool.shutdown(wait=False)

    # -- leases ----------------------------------------------------------------
    def is_controller(self) -> bool:
        return self.controller is not None and self.tenure is not None and self.tenure.valid(
            time.monotonic())

    def may_write(self) -> bool:
        """True while this member may touch shared account data."""
        now = time.monotonic()
        if self.controller is not None and self.tenure is not None and self.tenure.valid(now):
            return True
        # a member's lease; on the Controller never past its tenure (see _beat),
        # and while a new Controller waits to act, the lease its predecessor
        # granted; through a change of Controller, the hold
        return now < self.lease_until or now < self.hold_until

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            if self.controller is not None and self.tenure is not None and self.tenure.lapsed(
                    time.monotonic()):
                await self._step_down("tenure lapsed")
            if not self.may_write() and self.locator.held():
                await self.locator.drop_all()

    async def _lag_probe(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.1)
            self.lag_ms = max(0, int((time.monotonic() - t0 - 0.1) * 1000))

    # -- connections -------------------------------------------------------------
    def _check_cut(self) -> None:
        cut = (self.s.base / CUT_FILE).exists()
        if cut and not self.cut:
            log.warning("cluster connections cut (%s exists)", CUT_FILE)
            for p in list(self.peers.values()) + list(self._inbound):
                p.close()
        self.cut = cut

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        peer = await accept(reader, writer, self.name, self.s.secret, self._handle)
        if peer is None:
            return
        peer.conn.address = self.s.address
        if peer.conn.peer_address[0]:
            self.addresses[peer.name] = peer.conn.peer_address
        self._inbound.add(peer)
        peer.on_close.append(self._inbound.discard)
        peer.on_close.append(self._peer_closed)

    async def peer_to(self, name: str) -> Peer | None:
        """An open connection to member ``name`` (dialing it when needed)."""
        if self.cut or name == self.name or not name:
            return None
        p = self.peers.get(name)
        if p is not None and not p.closed:
            return p
        for q in self._inbound:  # reuse a connection the member opened to us
            if q.name == name and not q.closed:
                return q
        addr = self.addresses.get(name)
        if addr is None or not addr[0]:
            return None
        lock = self._dialing.setdefault(name, asyncio.Lock())
        async with lock:
            p = self.peers.get(name)
            if p is not None and not p.closed:
                return p
            try:
                p = await dial(addr[0], addr[2], self.name, self.s.secret, self._handle,
                               role=self.role, address=self.s.address, tls=self.client_tls)
            except (OSError, TimeoutError, wire.ProtocolError, PeerClosed) as exc:
                log.debug("cannot reach %s at %s: %s", name, addr, exc)
                if isinstance(exc, ConnectionRefusedError):
                    # its host answers but nothing listens: the process is gone
                    self.refused[name] = time.monotonic()
                return None
            self.refused.pop(name, None)
            self.peers[name] = p
            p.on_close.append(self._peer_closed)
            return p

    def _peer_closed(self, peer: Peer) -> None:
        """A connection to a member closed.  On the Controller, a backend
        whose cluster port then refuses connections is gone (killed,
        crashed): it is declared dead at once instead of after its lease plus
        the margin, and its accounts are free.  A paused or cut-off member
        does not refuse, and waits for the lease as before."""
        if peer.role != "backend" or not self.is_controller() or self.cut:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(self._declare_if_gone(peer.name))

    async def _declare_if_gone(self, name: str) -> None:
        await asyncio.sleep(0.05)
        if name in self.peers and self.peers[name].closed:
            del self.peers[name]
        await self.peer_to(name)
        c = self.controller
        if c is not None and self.is_controller() and self.gone(name, time.monotonic()) \
                and c.declare_dead(name):
            log.warning("member %s is gone (its cluster port refuses connections); its accounts are free",
                        name)
            self._tick()

    def _learn(self, name: str, address: tuple[str, int, int] | list[Any]) -> None:
        if name and address and address[0]:
            self.addresses[name] = (str(address[0]), int(address[1]), int(address[2]))

    # -- election ------------------------------------------------------------------
    async def _io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)








    # -- controller side -------------------------------------------------------------


    def _all_peers(self) -> list[Peer]:
        seen: dict[str, Peer] = {}
        for p in list(self._inbound) + list(self.peers.values()):
            if not p.closed and p.role != "tool":
                seen[p.name] = p
        return list(seen.values())

    def _send_to(self, member: str, msg: wire.Message) -> None:
        if member == self.name:
            asyncio.get_running_loop().create_task(self._handle_local(msg))
            return
        for p in self._all_peers():
            if p.name == member:
                with contextlib.suppress(Exception):
                    p.send(msg)
                return

    async def _handle_local(self, msg: wire.Message) -> None:
        if isinstance(msg, wire.Release):
            await self.locator.drop_key(msg.account, msg.epoch)
        elif isinstance(msg, wire.SetReady):
            await self.apply_ready(msg.ready)

    def _grant_msg(self, rid: int, d: Any) -> wire.Grant:
        return wire.Grant(rid, d.account, d.owner, d.epoch, self.controller_epoch,
                          self.addresses.get(d.owner, NO_ADDRESS))

    def _status_reply(self, rid: int) -> wire.StatusReply:
        assert self.controller is not None
        rows = []
        for m in self.controller.members():
            host = self.addresses.get(m.name, NO_ADDRESS)[0]
            rows.append((m.name, m.role.value, m.alive, m.ready, m.load, m.open_accounts,
                         m.sessions, m.version, host))
        return wire.StatusReply(rid, self.name, self.backup_name, self.controller_epoch, tuple(rows))

    # -- message handling ----------------------------------------------------------------
    async def _handle(self, peer: Peer, msg: wire.Message) -> wire.Message | None:
        if self.cut:
            peer.close()
            return None
        if peer.conn.peer_address[0]:
            self.addresses.setdefault(peer.name, peer.conn.peer_address)
        c = self.controller if self.is_controller() else None
        now = time.monotonic()
        if isinstance(msg, wire.Heartbeat):
            if c is None:
                return wire.Error(msg.id, "not-controller", self.controller_name)
            c.heartbeat(peer.name, now, ready=msg.ready, sessions=msg.sessions,
                        open_accounts=msg.open_accounts, lag_ms=msg.lag_ms, cpu=msg.cpu,
                        role=Role.FRONTEND if peer.role == "frontend" else Role.BACKEND)
            self._tick()
            return wire.HeartbeatAck(msg.id, self.controller_epoch, self.backup_name,
                                     int(self.s.lease * 1000),
                                     self.addresses.get(self.backup_name, NO_ADDRESS))
        if isinstance(msg, wire.Resync):
            if c is None:
                return wire.Error(msg.id, "not-controller", self.controller_name)
            revoked = c.resync(peer.name, now, role=Role(msg.role) if msg.role in ("backend", "frontend")
                               else Role.BACKEND, ready=msg.ready, sessions=msg.sessions,
                               version=f"{msg.version}/p{peer.version}", accounts=msg.accounts)
            for key, epoch in revoked:
                peer.send(wire.Release(key, epoch))
            self._tick()
            return wire.Ok(msg.id)
        if isinstance(msg, wire.Open):
            if c is None:
                return wire.Error(msg.id, "not-controller", self.controller_name)
            try:
                d = c.open(msg.account, peer.name, now, recorded=msg.recorded, local_only=msg.local_only)
            except Refusal as exc:
                return wire.Error(msg.id, exc.code, exc.text)
            return self._grant_msg(msg.id, d)
        if isinstance(msg, wire.Release):
            if peer.name == self.controller_name:  # the Controller revokes
                await self.locator.drop_key(msg.account, msg.epoch)
            elif c is not None:
                c.release(msg.account, peer.name, msg.epoch)
            return None
        if isinstance(msg, wire.Locate):
            if msg.holder:
                return self._holder_reply(msg)
            if c is None:
                return await self._forward(msg)
            loc = c.locate(msg.account)
            if loc is None and c.in_grace(now):
                # resynchronising: an account may be open on a member not yet heard
                return wire.Error(msg.id, "unavailable", "controller is resynchronising")
            if loc is None:
                return wire.Location(msg.id, msg.account, "", 0, NO_ADDRESS)
            return wire.Location(msg.id, msg.account, loc[0], loc[1],
                                 self.addresses.get(loc[0], NO_ADDRESS))
        if isinstance(msg, wire.Whois):
            return wire.ControllerInfo(msg.id, self.controller_name, self.controller_epoch,
                                       self.backup_name,
                                       self.addresses.get(self.controller_name, NO_ADDRESS),
                                       self.hears_controller(now))
        if isinstance(msg, wire.Roles):
            if msg.controller_epoch > self.controller_epoch:
                if self.tenure is not None:
                    self.tenure.superseded = True
                self.controller_epoch = msg.controller_epoch
                self.controller_name = msg.controller
                self._controller_changed()
            if msg.controller_epoch >= self.controller_epoch:
                self.controller_epoch = msg.controller_epoch
                self.controller_name = msg.controller
                self.backup_name = msg.backup
                self._learn(msg.backup, msg.backup_address)
            return None
        if isinstance(msg, wire.StatusRequest):
            if c is None:
                return await self._forward(msg)
            return self._status_reply(msg.id)
        if isinstance(msg, (wire.SetReady, wire.Drain)):
            return await self._set_ready(msg)
        if isinstance(msg, wire.Changed):
            self._apply_change(msg)
            if c is not None:
                for p in self._all_peers():
                    if p.name not in (msg.origin, peer.name):
                        with contextlib.suppress(Exception):
                            p.send(msg)
            return None
        if isinstance(msg, wire.Deliver):
            return await self._deliver_here(msg)
        if isinstance(msg, wire.AdminCall):
            return await self._admin_call(msg)
        rid = getattr(msg, "id", 0)
        return wire.Error(rid if isinstance(rid, int) else 0, "bad-request", type(msg).__name__)

    async def _forward(self, msg: Any) -> wire.Message:
        peer = await self.peer_to(self.controller_name)
        if peer is None:
            return wire.Error(msg.id, "unavailable", "no controller reachable")
        try:
            reply = await peer.request(dataclasses.replace(msg, id=peer.next_id()))
        except (PeerClosed, TimeoutError):
            return wire.Error(msg.id, "unavailable", "the controller did not answer")
        return dataclasses.replace(reply, id=msg.id)  # type: ignore[type-var]

    async def _set_ready(self, msg: wire.SetReady | wire.Drain) -> wire.Message:
        ready = msg.ready if isinstance(msg, wire.SetReady) else False
        if msg.member == self.name:
            await self.apply_ready(ready, drain=msg.grace_ms / 1000 if isinstance(msg, wire.Drain)
                                   else None)
            return wire.Ok(msg.id)
        if self.is_controller():
            assert self.controller is not None
            if not self.controller.set_ready(msg.member, ready):
                return wire.Error(msg.id, "not-found", f"no member {msg.member!r}")
            peer = await self.peer_to(msg.member)
            if peer is None:
                return wire.Error(msg.id, "unavailable", f"{msg.member} not reachable")
            reply = await peer.request(dataclasses.replace(msg, id=peer.next_id()))
            return dataclasses.replace(reply, id=msg.id)  # type: ignore[type-var]
        return await self._forward(msg)

    async def apply_ready(self, ready: bool, drain: float | None = None) -> None:
        """This member becomes Ready or Non-Ready (SPEC section 2).  A
        Non-Ready backend gets no new placements; with ``drain`` (a grace
        period in seconds) it also releases its open accounts actively.  A
        Non-Ready frontend closes every client port except the HTTP admin
        ports; Make Ready opens them again."""
        changed = ready != self.ready
        self.ready = ready
        if self.controller is not None:
            self.controller.set_ready(self.name, ready)
        if ready:
            self.locator.stop_drain()
        elif drain is not None:
            self.locator.drain(drain)
        if self.role == "frontend":
            await self._frontend_ports(ready)
        if changed or drain is not None:
            log.warning("this member is now %s%s", "Ready" if ready else "Non-Ready",
                        " and draining" if drain is not None else "")

    async def _frontend_ports(self, ready: bool) -> None:
        listeners = getattr(self.ctx, "listeners", None)
        names = getattr(listeners, "listener_names", None)
        if listeners is None or names is None:
            return
        for name in names():
            if name in ADMIN_LISTENERS:
                continue
            with contextlib.suppress(OSError):
                if ready:
                    await listeners.reopen_listener(name)
                else:
                    await listeners.close_listener(name)

    # -- member side: heartbeats and resync --------------------------------------------
    def _sessions(self) -> int:
        with contextlib.suppress(Exception):
            return int(sum(self.ctx.listeners.session_counts().values()))
        return 0

    def _cpu(self) -> int:
        try:
            if self._process is None:
                import psutil

                self._process = psutil.Process()
                self._process.cpu_percent(None)
            return int(self._process.cpu_percent(None))
        except Exception:
            return 0

    def _export_metrics(self) -> None:
        metrics = getattr(self.ctx, "metrics", None)
        if metrics is None:
            return
        with contextlib.suppress(Exception):
            role = ("controller" if self.is_controller() else
                    "backup" if self.backup_name == self.name else self.role)
            for r in ("controller", "backup", "backend", "frontend"):
                metrics.cluster_role.labels(role=r).set(1 if r == role else 0)
            metrics.cluster_ready.set(1 if self.ready else 0)
            metrics.open_accounts.set(len(self.locator.open_accounts()))

    def _controller_changed(self) -> None:
        """A newer Controller epoch became known: resynchronise with it now
        (a beat still waiting for the previous Controller is abandoned)."""
        self.last_controller_contact = time.monotonic()
        if self._wake_beat is not None:
            self._wake_beat.set()
        self.ownership_news()

    async def _heartbeat_loop(self) -> None:
        self._wake_beat = wake = asyncio.Event()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.s.heartbeat)
            wake.clear()
            self._export_metrics()
            beat = asyncio.ensure_future(self._beat_once())
            woken = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait({beat, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
                if not beat.done():
                    beat.cancel()
                await asyncio.gather(beat, woken, return_exceptions=True)

    async def _beat_once(self) -> None:
        try:
            await asyncio.gather(self._beat(), self._keep_backup())
        except asyncio.CancelledError:
            raise
        except (PeerClosed, TimeoutError, ConnectionError, OSError) as exc:
            log.debug("heartbeat failed: %s", exc)
        except Exception:
            log.exception("heartbeat failed")

    async def _beat(self) -> None:
        t0 = time.monotonic()
        c = self.controller
        if c is not None:  # this member is the Controller: renew locally
            if self.tenure is not None and self.tenure.valid(t0):
                c.heartbeat(self.name, t0, ready=self.ready, sessions=self._sessions(),
                            open_accounts=len(self.locator.held()), lag_ms=self.lag_ms, cpu=self._cpu())
                self.lease_until = min(t0 + self.s.lease - self.s.margin, self.tenure.expires_at())
                self._tick()
            return
        if self.cut:
            return
        if self.role == "frontend" and not self.controller_name:
            await self._find_controller()
        if not self.controller_name:
            return
        peer = await self.peer_to(self.controller_name)
        if peer is None:
            return
        if self.resynced_epoch != self.controller_epoch:
            if self.locator.held() and not self.may_write():
                # never report a grant this member may no longer hold (it was
                # paused or cut off past its lease): a newer owner may have it
                await self.locator.drop_all()
            epoch = self.controller_epoch
            reply = await peer.request(wire.Resync(peer.next_id(), self.name, self.role, self.ready,
                                                   self.version, self._sessions(),
                                                   tuple(self.locator.held())))
            if not isinstance(reply, wire.Ok):
                return
            self.resynced_epoch = epoch
        msg = wire.Heartbeat(peer.next_id(), self.name, self.ready, self._sessions(),
                             len(self.locator.held()), self.lag_ms, self._cpu())
        reply = await peer.request(msg, timeout=max(self.s.heartbeat * 2, 0.5))
        if isinstance(reply, wire.HeartbeatAck) and reply.controller_epoch == self.controller_epoch:
            if not self.may_write() and self.locator.held():
                # the lease lapsed before this renewal (a pause, a cut): the
                # Controller may have given our accounts away; never resume them
                await self.locator.drop_all()
                self.resynced_epoch = 0
            self.lease_until = t0 + self.s.lease - self.s.margin
            self.lease_epoch = reply.controller_epoch
            self.last_controller_contact = self.last_ack = time.monotonic()
            if reply.backup != self.backup_name:
                self.backup_name = reply.backup
            self._learn(reply.backup, reply.backup_address)
        elif isinstance(reply, wire.Error) and reply.code == "not-controller":
            self.resynced_epoch = 0

    async def _keep_backup(self) -> None:
        """Keep the connection to the Backup alive, whether or not the
        Controller answers: the Backup judges a Controller cut off from every
        backend by whom it still hears from."""
        if self.cut or not self.backup_name or self.backup_name == self.name or self.controller:
            return
        backup = await self.peer_to(self.backup_name)
        if backup is not None:
            backup.send(wire.Whois(backup.next_id()))

    def hears_controller(self, now: float) -> bool:
        """Whether this member hears the Controller right now: it is the
        Controller, or a renewal was acknowledged within T/4."""
        return self.controller is not None or now - self.last_ack < self.s.lease / 4

    async def _views_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.heartbeat)
            self._ask_whether_others_hear_the_controller()

    def _ask_whether_others_hear_the_controller(self) -> None:
        """While this member has lost the Controller (no acknowledgement for
        two heartbeats), ask every backend it can reach whether they still
        hear it (``Whois``; the answer's ``leased``, protocol version 6).
        One of them does: the Controller is alive and this member is the one
        cut off, so it must not hold its accounts past its lease (hold rule
        2, candidacy.py), for the Controller frees them at T + m.  Each
        question runs on its own: a peer that cannot be dialled delays no
        heartbeat."""
        now = time.monotonic()
        if self.cut or self.controller is not None:
            return
        if now - self.last_ack < 2 * self.s.heartbeat:
            return
        names = (self._backend_names | {p.name for p in self._all_peers() if p.role == "backend"}) \
            - {self.name, self.controller_name} - self._asking
        for name in names:
            self._asking.add(name)
            asyncio.get_running_loop().create_task(self._ask_view(name))

    async def _ask_view(self, name: str) -> None:
        try:
            peer = await self.peer_to(name)
            if peer is None:
                return
            with contextlib.suppress(PeerClosed, TimeoutError, ConnectionError, OSError):
                reply = await peer.request(wire.Whois(peer.next_id()), timeout=self.s.lease / 4)
                if isinstance(reply, wire.ControllerInfo):
                    now = time.monotonic()
                    self.peer_views[name] = (now, reply.controller_epoch, reply.leased)
                    self._hold_while_controller_cut_off(now)
        finally:
            self._asking.discard(name)

    async def _find_controller(self) -> None:
        for host, port in self.s.backends:
            try:
                p = await dial(host, port, self.name, self.s.secret, self._handle, role=self.role,
                               address=self.s.address, tls=self.client_tls)
            except (OSError, TimeoutError, wire.ProtocolError, PeerClosed):
                continue
            try:
                info = await p.request(wire.Whois(p.next_id()))
            finally:
                p.close()
            if isinstance(info, wire.ControllerInfo) and info.controller:
                self.controller_name = info.controller
                self.controller_epoch = info.controller_epoch
                self._learn(info.controller, info.controller_address)
                return

    # -- accounts ----------------------------------------------------------------------
    def _holder_reply(self, msg: wire.Locate) -> wire.Message:
        """``Locate(holder=True)``: whether this member holds the account now
        (open here, and a lease or hold that lets it write)."""
        epoch = dict(self.locator.held()).get(msg.account)
        if epoch is None or not self.may_write() or self.locator.draining:
            return wire.Error(msg.id, "not-held", "")
        return wire.Location(msg.id, msg.account, self.name, epoch, self.s.address)

    async def _ask_holders(self, key: str) -> GrantInfo | None:
        """While no Controller can answer (an election, a Controller cut
        off), ask the other members whether one of them holds ``key``: its
        sessions keep going through every member instead of waiting for the
        next Controller.  Only where to relay is learnt here, never a grant:
        the holder serves only while its own lease or hold lets it, and the
        storage fences it whatever it believes."""
        names = [n for n in self.addresses if n and n != self.name and n != self.controller_name]

        async def ask(name: str) -> GrantInfo | None:
            peer = await self.peer_to(name)
            if peer is None or peer.version < 5:
                return None
            with contextlib.suppress(PeerClosed, TimeoutError):
                reply = await peer.request(wire.Locate(peer.next_id(), key, True), timeout=self.s.lease / 4)
                if isinstance(reply, wire.Location) and reply.owner == name:
                    return GrantInfo(name, reply.epoch, 0, tuple(reply.owner_address))  # type: ignore[arg-type]
            return None

        if not names:
            return None
        tasks = [asyncio.ensure_future(ask(n)) for n in names]
        try:
            for done in asyncio.as_completed(tasks, timeout=self.s.lease / 2):
                with contextlib.suppress(Exception):
                    found = await done
                    if found is not None:
                        return found
        except TimeoutError:
            pass
        finally:
            for t in tasks:
                t.cancel()
        return None

    async def _request_open(self, ref: AccountRef, recorded: int, local_only: bool) -> GrantInfo:
        key = account_key(ref)
        deadline = time.monotonic() + 2 * self.s.lease + 2.0
        asked_holders = 0.0
        while True:
            if self.is_controller():
                assert self.controller is not None
                try:
                    d = self.controller.open(key, self.name, time.monotonic(), recorded=recorded,
                                             local_only=local_only)
                    return GrantInfo(d.owner, d.epoch, self.controller_epoch,
                                     self.addresses.get(d.owner, NO_ADDRESS))
                except Refusal as exc:
                    if exc.code == "busy":
                        raise AccountUnavailable(exc.text) from None
            elif self.controller_name and not self.cut:
                peer = await self.peer_to(self.controller_name)
                if peer is not None:
                    try:
                        # a Controller that does not answer within T/2 is cut off,
                        # paused or overloaded: ask the holders, then it again
                        # (a repeated OPEN of a granted account repeats the grant);
                        # a newer Controller learnt meanwhile is asked at once
                        reply = await self.until_news(peer.request(
                            wire.Open(peer.next_id(), key, recorded, self.name, local_only),
                            timeout=max(self.s.lease / 2, 0.5)))
                    except (PeerClosed, TimeoutError):
                        reply = None
                    if reply is NEWS and time.monotonic() <= deadline:
                        continue
                    if isinstance(reply, wire.Grant) and reply.controller_epoch >= self.controller_epoch:
                        self._learn(reply.owner, reply.owner_address)
                        return GrantInfo(reply.owner, reply.epoch, reply.controller_epoch,
                                         tuple(reply.owner_address))  # type: ignore[arg-type]
                    if isinstance(reply, wire.Error) and reply.code == "busy":
                        raise AccountUnavailable(reply.text)
            now = time.monotonic()
            if not local_only and now - asked_holders >= self.s.lease / 4:
                asked_holders = now
                found = await self._ask_holders(key)
                if found is not None:
                    log.info("%s: no controller answered; %s holds it", key, found.owner)
                    return found
            if time.monotonic() > deadline:
                raise AccountUnavailable("no controller answered")
            await asyncio.sleep(0.05)

    def _release(self, ref: AccountRef, epoch: int) -> None:
        key = account_key(ref)
        if self.controller is not None:
            self.controller.release(key, self.name, epoch)
            return
        p = self.peers.get(self.controller_name)
        if p is not None and not p.closed:
            with contextlib.suppress(Exception):
                p.send(wire.Release(key, epoch))



    # -- relay ---------------------------------------------------------------------------



    # -- single service image ---------------------------------------------------------








    # -- information for Admin, API and the launcher -------------------------------------




async def attach(ctx: Any) -> ClusterMember:
    """Make this server a cluster member (called by the server at start-up)."""
    settings = ClusterSettings.from_config(ctx.config)
    member = ClusterMember(ctx, settings)
    directory = getattr(ctx, "directory", None)
    if directory is not None and hasattr(getattr(directory, "files", None), "writer"):
        # shared documents are written by the current Controller only (dirfence.py)
        directory.files.writer = MemberWriter(member, directory.shared_base, directory.cluster_dir)
    await member.start()
    ctx.cluster = member
    ctx.accounts = member.locator
    auth = getattr(ctx, "auth", None)
    if auth is not None and hasattr(auth, "verifier_key"):
        # every member checks the keyed verifiers the others wrote
        auth.verifier_key = verifier_key(settings.secret)
        # shared account records have one writer, the Controller
        auth.shared_writer = lambda op, args: member.forward_directory_op(op, args, {})
    if getattr(directory, "all_shared", False):
        # the workers of one server: every account is arbitrated, none local
        member.locator.all_shared = True
    admin = getattr(ctx, "admin", None)
    if admin is not None:
        if getattr(directory, "all_shared", False):
            admin.forward_all = True  # server-wide settings are written by the Controller too
        if hasattr(admin, "accounts"):
            admin.accounts = member.locator
        if hasattr(admin, "cluster"):
            admin.cluster = member
    delivery = getattr(ctx, "delivery", None)
    if delivery is not None:
        if hasattr(delivery, "accounts"):
            delivery.accounts = member.locator
        delivery.remote = member.remote_deliver
    return member
