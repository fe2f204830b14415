"""Start-up, running and shutdown of one server process.

``build_context`` assembles the services every adapter is handed (directory,
authenticator, admin operations, mail store behind the account locator,
delivery, metrics, listeners, TLS) and performs the first-start work: the
base directory, the settings file, the Main Domain, ``postmaster`` with the
Master right and, when no password was given, ``postmaster.password``
(mode 0600).  ``run`` then opens the listener of every protocol module that
exists (a protocol not built is simply not opened), joins the cluster when
configured, and serves until SIGTERM/SIGINT (clean shutdown: stop accepting,
give sessions a grace period, close stores) while SIGHUP reloads settings.

Ports below 1024 need root: that is checked before anything is bound, so a
non-root user gets one clear line naming ``--port-offset`` instead of a
traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import os
import signal
import ssl
from pathlib import Path
from typing import Any

from dynamail import __version__
from dynamail.filemodes import private_dirs, restrict_umask, warn_exposed, write_private
from dynamail.metrics import Metrics
from dynamail.net import Listeners, ListenerSpec, TlsMode
from dynamail.net.tls import ensure_self_signed, server_context
from dynamail.server import config as config_mod
from dynamail.server.config import ServerConfig
from dynamail.server.context import ServerContext

log = logging.getLogger("dynamail.server")

# Protocol modules whose ``listeners(ctx)`` the server opens, in this order.
ADAPTER_MODULES = (
    "dynamail.smtp.adapter",
    "dynamail.lmtp.adapter",
    "dynamail.imap.adapter",
    "dynamail.pop3.adapter",
    "dynamail.cliproto.adapter",
    "dynamail.managesieve.adapter",
)
HTTP_MODULE = "dynamail.http.app"
CLUSTER_MODULE = "dynamail.cluster.member"
PASSWORD_FILE = "postmaster.password"
ADMIN_URL_FILE = "admin.url"  # the HTTP admin URLs of the running server, for `dynamail admin --dir`
RUNNING_FILE = "server.pid"  # which process serves this base directory now


class StartupError(Exception):
    """The server cannot start; the message is one line for the operator."""


def _optional_module(name: str) -> Any | None:
    """Import a protocol module, or None when it is not built yet.

    A module that exists but fails to import is logged as an error and
    skipped, so one broken protocol does not take the others down with it.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            return None
        log.error("%s cannot be loaded; its listeners are not opened", name, exc_info=True)
        return None
    except Exception:
        log.error("%s cannot be loaded; its listeners are not opened", name, exc_info=True)
        return None


def setup_logging(level: str, fmt: str = "text", worker: str = "") -> None:
    from dynamail.events import configure

    configure(level, fmt, worker)


CAP_NET_BIND_SERVICE = 10  # capability(7) number


def _lowest_unprivileged_port() -> int:
    """Ports below this need privilege (Linux: ``ip_unprivileged_port_start``)."""
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return 1024


def _may_bind_low_ports() -> bool:
    """Whether this process may bind privileged ports: the effective
    CAP_NET_BIND_SERVICE capability on Linux (root normally has it, a root
    process in a restricted container may not), else being root."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_BIND_SERVICE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.name == "posix" and os.geteuid() == 0


def check_privileged_ports(cfg: ServerConfig, names: list[str] | None = None) -> None:
    """Refuse privileged ports (below 1024) before binding anything when this
    process may not bind them, with one line that names ``--port-offset``."""
    if os.name != "posix" or _may_bind_low_ports():
        return
    limit = _lowest_unprivileged_port()
    wanted = names if names is not None else list(cfg.ports)
    low = sorted((cfg.port(n), n) for n in wanted if n in cfg.ports and 0 < cfg.port(n) < limit)
    if low:
        port, name = low[0]
        raise StartupError(
            f"port {port} ({name}) needs root; run as root or use --port-offset N "
            f"(for example --port-offset 10000) so every port is {limit} or above"
        )


def prepare_base(cfg: ServerConfig) -> None:
    """The first-start work of :func:`build_context` alone (the base, the
    settings file, the Main Domain, postmaster, the certificate), for the
    supervisor of ``serve --workers`` before it starts the workers."""
    from dynamail.directory import Directory, passwords

    private_dirs(cfg.base)
    if config_mod.first_start_settings(cfg):
        log.info("first start: base %s, Main Domain %s", cfg.base, cfg.main_domain)
    a = cfg.auth
    hasher = passwords.make_hasher(a.argon2_memory_kib, a.argon2_time_cost, a.argon2_parallelism)
    directory = Directory(cfg.base, main_domain=cfg.main_domain, shared_base=cfg.shared_base,
                          password_hasher=hasher)
    _first_start_password(cfg, directory)
    _tls_context(cfg)


def _first_start_password(cfg: ServerConfig, directory: Any) -> str | None:
    """Create postmaster when missing; write a generated password to the file."""
    password: str | None = directory.ensure_postmaster(cfg.postmaster_password)
    if password is not None and cfg.postmaster_password is None:
        path = cfg.base / PASSWORD_FILE
        write_private(path, (password + "\n").encode("utf-8"))
        log.info("postmaster password written to %s", path)
    return password


def _tls_context(cfg: ServerConfig) -> ssl.SSLContext | None:
    cert, key = cfg.cert_paths()
    if not (cfg.tls.cert and cfg.tls.key):
        ensure_self_signed(cert, key, cfg.main_domain, [cfg.listen])
    try:
        return server_context(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot load TLS certificate {cert}: {exc}") from None


def _link_shared_base(cfg: ServerConfig) -> None:
    """With ``--SharedBase DIR``, make ``BASE/SharedDomains`` a symlink to DIR
    (when it does not exist yet) so the base directory shows where its
    shared domains live.  The server itself always uses DIR directly."""
    link = cfg.base / "SharedDomains"
    if not cfg.cluster.shared_base or link.exists() or link.is_symlink():
        return
    try:
        link.symlink_to(cfg.shared_base, target_is_directory=True)
    except OSError as exc:
        log.warning("cannot link %s to %s: %s", link, cfg.shared_base, exc)


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running dynamail process on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust kill(pid, 0)
    return b"dynamail" in cmdline


def claim_base(base: Path) -> None:
    """Refuse to serve a base directory another running server serves.

    Two servers on one base would open the same accounts; the storage
    fencing keeps the data safe, but the server that opened an account
    first is then refused every write to it.  ``BASE/server.pid`` names the
    process serving the base (no file lock: a server killed with SIGKILL
    leaves the file behind, and a dead or foreign process does not count)."""
    path = Path(base) / RUNNING_FILE
    host = os.uname().nodename
    try:
        held = path.read_text().split()
    except FileNotFoundError:
        held = []
    if len(held) >= 2 and held[1] == host and held[0].isdigit():
        pid = int(held[0])
        if pid != os.getpid() and _process_alive(pid):
            raise StartupError(
                f"another dynamail server (pid {pid}) is serving the base directory {base}; "
                f"stop it first, or remove {path} if that process is not a dynamail server"
            )
    write_private(path, f"{os.getpid()} {host}\n".encode())


def release_base(base: Path) -> None:
    path = Path(base) / RUNNING_FILE
    with contextlib.suppress(OSError):
        if path.read_text().split()[:1] == [str(os.getpid())]:
            path.unlink()


def build_context(cfg: ServerConfig, *, password_hasher: Any = None) -> ServerContext:
    """Create (on first start) and open everything the adapters need.

    ``password_hasher`` (an argon2 ``PasswordHasher``) replaces the hash
    parameters of ``[auth]``; tests pass cheap ones."""
    from dynamail.cluster.locator import StandaloneLocator
    from dynamail.directory import Directory

    private_dirs(cfg.base)
    first = config_mod.first_start_settings(cfg)
    shared = cfg.shared_base
    private_dirs(shared)
    _link_shared_base(cfg)
    if password_hasher is None:
        from dynamail.directory import passwords

        a = cfg.auth
        password_hasher = passwords.make_hasher(a.argon2_memory_kib, a.argon2_time_cost, a.argon2_parallelism)
    if cfg.worker is not None:
        # one of the workers of ``serve --workers``: the server's base, every
        # domain shared among the workers (the supervisor did the first start)
        directory = Directory(cfg.home, main_domain=cfg.main_domain, password_hasher=password_hasher,
                              all_shared=True)
    else:
        directory = Directory(
            cfg.base, main_domain=cfg.main_domain, shared_base=shared, password_hasher=password_hasher
        )
        _first_start_password(cfg, directory)
    if first:
        log.info("first start: base %s, Main Domain %s", cfg.base, cfg.main_domain)

    metrics = Metrics()
    auth = _make_auth(cfg, directory, metrics)
    mailstore = _make_mailstore(cfg)
    locator: Any = None
    if mailstore is not None:
        locator = StandaloneLocator(
            mailstore, directory.account_mail_path, idle_release=cfg.limits.account_idle_release
        )
    admin = _make_admin(directory, auth, locator)
    tls = _tls_context(cfg)
    listeners = Listeners(cfg.listen, cfg.port_offset, tls, metrics,
                          own_host=cfg.worker.address if cfg.worker is not None else "")
    ctx = ServerContext(
        config=cfg,
        hostname=cfg.main_domain,
        directory=directory,
        auth=auth,
        admin=admin,
        accounts=locator,
        delivery=None,  # type: ignore[arg-type]  # set below once built
        metrics=metrics,
        listeners=listeners,
        tls=tls,
    )
    ctx.extras["mailstore"] = mailstore
    ctx.extras["version"] = __version__
    ctx.delivery = _make_delivery(ctx)
    return ctx


def _make_auth(cfg: ServerConfig, directory: Any, metrics: Metrics) -> Any:
    """The authenticator; a cluster member replaces the verifier key by one
    derived from the cluster secret (``dynamail.cluster.member.attach``)."""
    from dynamail.auth import Authenticator
    from dynamail.directory import passwords

    a = cfg.auth
    key = None
    if a.verifier_seconds > 0 and not cfg.clustered:
        key = passwords.ApopKeys(cfg.settings_dir / "verifier.key").key()
    auth = Authenticator(
        directory, metrics=metrics, cache_ttl=a.cache_seconds, hash_concurrency=a.hash_concurrency,
        rehash=a.rehash_on_login, verifier_key=key, verifier_ttl=a.verifier_seconds,
    )
    if hasattr(directory, "verifier_for"):
        # a password set through this server comes with its verifier, so the
        # first login of a new account skips the hash as a returning one does
        directory.verifier_for = auth.verifier_for
    return auth


def _make_admin(directory: Any, auth: Any, locator: Any) -> Any:
    from dynamail.admin import Admin

    return Admin(directory, auth, accounts=locator)


def _make_mailstore(cfg: ServerConfig) -> Any:
    mod = _optional_module("dynamail.storage")
    if mod is None or not hasattr(mod, "FileMailStore"):
        log.warning("dynamail.storage.FileMailStore is not built: mail storage unavailable")
        return None
    return mod.FileMailStore()


def _make_delivery(ctx: ServerContext) -> Any:
    mod = _optional_module("dynamail.delivery")
    if mod is None or not hasattr(mod, "Delivery") or ctx.accounts is None:
        return None
    delivery = mod.Delivery(ctx.directory, ctx.accounts, ctx.metrics)
    _attach_sieve(ctx, delivery)
    return delivery


def _attach_sieve(ctx: ServerContext, delivery: Any) -> None:
    """Sieve at delivery; its redirects and vacation replies leave through the
    outbound queue (local addresses as local copies of the queue entry)."""
    mod = _optional_module("dynamail.sieve.filter")
    if mod is None:
        return
    directory = ctx.directory

    def is_local(address: str) -> bool:
        try:
            domain = address.rsplit("@", 1)[1].lower()
            if not directory.domain_exists(domain):
                return False
            target = directory.resolve_recipient(address)
        except Exception:
            return False
        return bool(target is not None and getattr(target, "accounts", None))

    async def send(sender: str, recipient: str, data: bytes) -> None:
        queue = ctx.extras.get("smtp_queue")
        if queue is None:
            raise RuntimeError("the outbound queue is not running")
        local = await asyncio.get_running_loop().run_in_executor(None, is_local, recipient)
        # signed (DKIM) when the From: domain is ours with keys: vacation answers
        if local:
            await queue.enqueue(sender, [], data, local=[recipient], sign=True)
        else:
            await queue.enqueue(sender, [recipient], data, sign=True)

    def own_addresses(ref: Any) -> list[str]:
        names = [ref.name, *directory.account_aliases(ref)]
        domains = [ref.domain, *directory.domain_aliases(ref.domain)]
        return [f"{n}@{d}" for n in names for d in domains]

    delivery.sieve = mod.SieveFilter(ctx.hostname, send, own_addresses)


def collect_listeners(ctx: ServerContext) -> list[ListenerSpec]:
    """Listener specs of every protocol module that exists, with configured ports."""
    cfg = ctx.config
    specs: list[ListenerSpec] = []
    for name in ADAPTER_MODULES:
        mod = _optional_module(name)
        if mod is None or not hasattr(mod, "listeners"):
            log.info("%s not built; its listeners are not opened", name)
            continue
        try:
            module_specs = list(mod.listeners(ctx))
        except Exception:
            log.error("%s failed to describe its listeners; not opened", name, exc_info=True)
            continue
        for spec in module_specs:
            port = cfg.ports.get(spec.name, spec.port)
            limits = cfg.limits
            spec = dataclasses.replace(
                spec,
                port=port,
                max_connections=min(spec.max_connections, limits.max_connections),
                max_per_address=min(spec.max_per_address, limits.max_per_address),
            )
            if spec.tls is TlsMode.IMPLICIT and ctx.tls is None:
                log.warning("%s needs TLS and no certificate is loaded; not opened", spec.name)
                continue
            specs.append(spec)
    return specs


class Server:
    """One running server: its context, listeners, HTTP app and cluster member."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.ctx: ServerContext | None = None
        self.http: Any = None
        self.member: Any = None
        self._stop = asyncio.Event()

    async def start(self) -> ServerContext:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        try:
            private_dirs(cfg.base)
            claim_base(cfg.base)
        except OSError as exc:
            raise StartupError(f"cannot set up the base directory {cfg.base}: {exc}") from None
        for tree in dict.fromkeys((cfg.base, cfg.shared_base)):  # warn about trees others can read
            await loop.run_in_executor(None, warn_exposed, tree)
        try:
            ctx = await loop.run_in_executor(None, build_context, cfg)
        except OSError as exc:
            release_base(cfg.base)
            raise StartupError(f"cannot set up the base directory {cfg.base}: {exc}") from None
        except BaseException:
            release_base(cfg.base)
            raise
        self.ctx = ctx
        specs = collect_listeners(ctx)
        http_mod = _optional_module(HTTP_MODULE)
        names = [s.name for s in specs] + (["http", "https"] if http_mod is not None else [])
        if cfg.clustered:
            names.append("cluster")
        check_privileged_ports(cfg, names)
        try:
            if cfg.clustered:
                # Join before any session can start, so no account is ever
                # opened through the standalone locator in a cluster member.
                member_mod = _optional_module(CLUSTER_MODULE)
                if member_mod is None or not hasattr(member_mod, "attach"):
                    raise StartupError(
                        f"cluster role {cfg.cluster.role!r} requested but the cluster "
                        f"layer ({CLUSTER_MODULE}) is not available in this build"
                    )
                self.member = await member_mod.attach(ctx)
            ctx.listeners.member = str(getattr(ctx.cluster, "name", "") or cfg.main_domain)
            for spec in specs:
                await ctx.listeners.start(spec)
            if http_mod is not None and hasattr(http_mod, "start"):
                self.http = await http_mod.start(ctx)
                urls = "".join(f"{s}://{h}:{p}\n" for s, h, p in self.http.addresses)
                with contextlib.suppress(OSError):
                    write_private(cfg.base / ADMIN_URL_FILE, urls.encode())
        except PermissionError as exc:
            await self.close()
            raise StartupError(
                f"permission denied binding a port ({exc.strerror}); "
                f"use --port-offset N so every port is 1024 or above"
            ) from None
        except OSError as exc:
            await self.close()
            raise StartupError(f"cannot listen on {cfg.listen}: {exc.strerror or exc}") from None
        log.info(
            "dynamail %s serving %s on %s (port offset %d, role %s)",
            __version__, cfg.main_domain, cfg.listen, cfg.port_offset, cfg.cluster.role,
        )
        return ctx

    def reload(self) -> None:
        """SIGHUP: re-read the settings file and drop cached directory data."""
        ctx = self.ctx
        if ctx is None:
            return
        try:
            worker = self.cfg.worker is not None  # its role and shared base are the supervisor's
            fresh = config_mod.load(
                self.cfg.home,
                config_file=self.cfg.config_file,
                overrides={
                    "listen": self.cfg.listen,
                    "port_offset": self.cfg.port_offset,
                    "role": None if worker else self.cfg.cluster.role,
                    "shared_base": None if worker else self.cfg.cluster.shared_base or None,
                },
            )
        except config_mod.ConfigError as exc:
            log.error("reload refused, keeping the running settings: %s", exc)
            return
        # Values that take effect without rebinding: limits, smtp, logging.
        self.cfg.limits = fresh.limits
        self.cfg.smtp = fresh.smtp
        self.cfg.log_level = fresh.log_level
        logging.getLogger().setLevel(fresh.log_level)
        ctx.directory.reload()
        if ctx.auth is not None and hasattr(ctx.auth, "reload"):
            ctx.auth.reload()
        log.info("settings reloaded")

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def close(self) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        log.info("shutting down")
        ctx.extras["stopping"] = True  # /health answers 503 from now on
        await ctx.listeners.close(grace=self.cfg.limits.shutdown_grace)
        if self.http is not None:
            with contextlib.suppress(Exception):
                await self.http.close()
            self.http = None
        if self.member is not None and hasattr(self.member, "close"):
            with contextlib.suppress(Exception):
                await self.member.close()
            self.member = None
        # background services a protocol module started (e.g. the SMTP queue)
        for closer in ctx.extras.get("closers", []):
            with contextlib.suppress(Exception):
                await closer()
        if ctx.accounts is not None:
            with contextlib.suppress(Exception):
                await ctx.accounts.close()
        store = ctx.extras.get("mailstore")
        if store is not None and hasattr(store, "close"):
            with contextlib.suppress(Exception):
                res = store.close()
                if asyncio.iscoroutine(res):
                    await res
        self.ctx = None
        release_base(self.cfg.base)
        log.info("stopped")


async def serve(cfg: ServerConfig, *, ready: Any = None) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads."""
    server = Server(cfg)
    loop = asyncio.get_running_loop()
    # Handlers first: a signal during start-up must not kill the process
    # half-way (SIGHUP's default action terminates it).
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    try:
        await server.start()
    except BaseException:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        raise
    if ready is not None:
        ready(server)
    try:
        await server.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await server.close()


def run(cfg: ServerConfig) -> None:
    """Blocking entry point: asyncio (uvloop when installed); with more than
    one worker, the supervisor of the worker processes (``workers.py``)."""
    setup_logging(cfg.log_level, cfg.log_format, cfg.worker.name if cfg.worker is not None else "")
    restrict_umask()  # whatever creates a file from here on, it is private (filemodes)
    if cfg.worker is None and config_mod.worker_count(cfg) > 1:
        from dynamail.server import workers

        workers.supervise(cfg)
        return
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(cfg))
        return
    uvloop.run(serve(cfg))


def read_password_file(base: Path) -> str | None:
    path = Path(base) / PASSWORD_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None
