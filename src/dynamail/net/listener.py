"""Listening sockets and the accept loop for every protocol.

A protocol module describes its listeners as :class:`ListenerSpec` values
(standard port, TLS mode, handler, limits); :class:`Listeners` binds them on
the configured address with the port offset, enforces the total and
per-client-address connection limits (answering a refused client with the
protocol's own "busy" line), applies TLS for implicit-TLS ports, and on
shutdown stops accepting and gives running sessions a grace period.

Every accepted session is counted here, once, under the name of the
listener it came in on (``dynamail_sessions_total{protocol="submission"}``
for port 587, ``"imaps"`` for 993, ...), so the counters add up to what
clients used whatever the protocol adapter does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import enum
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from dynamail import events
from dynamail.metrics import Metrics
from dynamail.net import memtrace
from dynamail.net.connection import Connection, IdleTimeout, _Wire

log = logging.getLogger("dynamail.net")

Handler = Callable[[Connection], Awaitable[None]]

# the client connection of the session running in the current task (set for
# the handler's duration): lets lower layers (the cluster's drain) say goodbye
current_connection: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
    "current_connection", default=None)
_current_listeners: contextvars.ContextVar[Listeners | None] = contextvars.ContextVar(
    "current_listeners", default=None)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Mark the session running in the current task as waiting for its
    client's next command: on shutdown it is cancelled at once (instead of
    after the grace period), so its handler should answer CancelledError
    with the protocol's goodbye (IMAP ``* BYE``, SMTP 421, POP3 ``-ERR``)."""
    listeners = _current_listeners.get()
    task = asyncio.current_task()
    if listeners is None or task is None:
        yield
        return
    if listeners.stopping:
        task.cancel()  # the next await raises CancelledError
    listeners._interruptible.add(task)
    try:
        yield
    finally:
        listeners._interruptible.discard(task)



async def say_goodbye(shutting_down: Callable[[], object], flush: Callable[[], Awaitable[None]]) -> None:
    """On shutdown (the session's CancelledError): queue the protocol's
    goodbye with ``shutting_down`` and send it, giving up after 5 seconds."""
    shutting_down()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(flush(), 5.0)


class TlsMode(enum.Enum):
    PLAIN = "plain"  # cleartext; STARTTLS possible when a TLS context exists
    IMPLICIT = "implicit"  # TLS from the first byte (465, 993, 995, 9010)


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    name: str  # e.g. "imap", "imaps", "smtp", "submission"
    port: int  # standard port; the server adds its port offset
    handler: Handler
    tls: TlsMode = TlsMode.PLAIN
    idle_timeout: float = 1800.0
    max_connections: int = 60000
    max_per_address: int = 1000
    busy_reply: bytes = b""  # sent to a client refused by a connection limit


class Listeners:
    """Owns every listening socket of one server process."""

    def __init__(self, host: str, port_offset: int, tls_context: ssl.SSLContext | None,
                 metrics: Metrics | None = None, *, own_host: str = "") -> None:
        self.host = host
        # a worker of ``serve --workers``: ``host`` is shared with the other
        # workers (SO_REUSEPORT: the kernel spreads the connections) and
        # every listener is also bound on ``own_host``, this worker's own
        # loopback address, where relays reach the owner of an account
        self.own_host = own_host
        self._own: dict[str, asyncio.Server] = {}
        self.metrics = metrics
        self.member = ""  # this server's name in the session log lines (set by the server)
        self.port_offset = port_offset
        self.tls_context = tls_context
        self._servers: dict[str, asyncio.Server] = {}
        self._specs: dict[str, ListenerSpec] = {}  # every listener started, for reopen_listener
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_listener: collections.Counter[str] = collections.Counter()
        self._per_address: collections.Counter[tuple[str, str]] = collections.Counter()
        self.accepting = True
        self.stopping = False  # close() has begun
        self._interruptible: set[asyncio.Task[None]] = set()  # see interruptible()

    def port_of(self, name: str) -> int | None:
        srv = self._servers.get(name)
        if srv is None or not srv.sockets:
            return None
        return int(srv.sockets[0].getsockname()[1])

    def session_counts(self) -> dict[str, int]:
        return dict(self._per_listener)

    async def start(self, spec: ListenerSpec) -> None:
        port = spec.port + self.port_offset
        loop = asyncio.get_running_loop()
        memtrace.install(loop)  # only with DYNAMAIL_TRACEMALLOC set (measurements)
        ctx = self.tls_context if spec.tls is TlsMode.IMPLICIT else None
        if spec.tls is TlsMode.IMPLICIT and ctx is None:
            raise RuntimeError(f"{spec.name}: implicit TLS needs a certificate")

        def made(wire: _Wire) -> None:
            task = loop.create_task(self._run(spec, wire))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        def factory() -> _Wire:
            return _Wire(made)

        server = await loop.create_server(
            factory, self.host, port, ssl=ctx, reuse_address=True, backlog=1024,
            ssl_handshake_timeout=30.0 if ctx else None, reuse_port=bool(self.own_host) or None,
        )
        self._servers[spec.name] = server
        self._specs[spec.name] = spec
        log.info("listening %s on %s:%d", spec.name, self.host, port)
        if self.own_host:
            self._own[spec.name] = await loop.create_server(
                factory, self.own_host, port, ssl=ctx, reuse_address=True, backlog=1024,
                ssl_handshake_timeout=30.0 if ctx else None, reuse_port=True,
            )

    async def _run(self, spec: ListenerSpec, wire: _Wire) -> None:
        conn = Connection(
            wire, listener=spec.name, idle_timeout=spec.idle_timeout,
            tls_context=self.tls_context,
        )
        key = (spec.name, conn.peer_host)
        started = time.monotonic()
        if (
            not self.accepting
            or self._per_listener[spec.name] >= spec.max_connections
            or self._per_address[key] >= spec.max_per_address
        ):
            if spec.busy_reply:
                conn.write(spec.busy_reply)
            await conn.close()
            self._session_line(spec, conn, "busy", started)
            return
        self._per_listener[spec.name] += 1
        self._per_address[key] += 1
        if self.metrics is not None:
            self.metrics.sessions_total.labels(protocol=spec.name).inc()
            self.metrics.sessions.labels(protocol=spec.name).inc()
        current_connection.set(conn)
        _current_listeners.set(self)
        outcome = "closed"
        try:
            await spec.handler(conn)
        except IdleTimeout:
            outcome = "timeout"
        except (ConnectionError, ssl.SSLError):
            outcome = "connection lost"
        except asyncio.CancelledError:
            outcome = "shutdown"
            raise
        except Exception:
            outcome = "error"
            log.exception("%s session from %s failed", spec.name, conn.peer_host)
        finally:
            self._session_line(spec, conn, outcome, started)
            if self.metrics is not None:
                self.metrics.sessions.labels(protocol=spec.name).dec()
            self._per_listener[spec.name] -= 1
            self._per_address[key] -= 1
            if self._per_address[key] <= 0:
                del self._per_address[key]
            await conn.close()

    def _session_line(self, spec: ListenerSpec, conn: Connection, outcome: str, started: float) -> None:
        facts = dict(conn.facts or {})
        events.emit("session", id=conn.session_id, listener=spec.name,
                    client=f"{conn.peer_host}:{conn.peer_port}", account=facts.pop("account", None),
                    member=self.member or None, outcome=facts.pop("outcome", outcome),
                    seconds=round(time.monotonic() - started, 3), **facts)

    async def close_listener(self, name: str) -> None:
        for servers in (self._servers, self._own):
            srv = servers.pop(name, None)
            if srv is not None:
                srv.close()
                await srv.wait_closed()

    def listener_names(self) -> list[str]:
        """Every listener started (open or closed by :meth:`close_listener`)."""
        return list(self._specs)

    def is_open(self, name: str) -> bool:
        return name in self._servers

    async def reopen_listener(self, name: str) -> bool:
        """Open again a listener closed by :meth:`close_listener`; False when
        it was never started or is open already."""
        spec = self._specs.get(name)
        if spec is None or name in self._servers or not self.accepting:
            return False
        await self.start(spec)
        return True

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, end the sessions waiting for a command (see
        :func:`interruptible`), then give the others ``grace`` seconds."""
        self.accepting = False
        self.stopping = True
        for srv in [*self._servers.values(), *self._own.values()]:
            srv.close()
        self._servers.clear()
        self._own.clear()
        for t in list(self._interruptible):
            t.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
