"""The asyncio side of ManageSieve (RFC 5804): listener 4190 with STARTTLS.

After AUTHENTICATE the session asks the locator where the account lives
(``ctx.accounts.use``).  When this member owns it, each script operation
runs on the account's :class:`~dynamail.sieve.scripts.ScriptStore` while
the account is held; when another member owns it, the session is relayed
there (``ctx.cluster.relay_session``) and the owner accepts
``XDYNAMAIL-RELAY "<ticket>"`` in place of a login, as IMAP and POP3 do,
the ticket bound to the nonce its ``XDYNAMAIL-CHALLENGE`` issued on the
connection (cluster/challenge.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from typing import Any

from dynamail.accounts import AccountRef
from dynamail.cluster.locator import AccountUnavailable, Relay
from dynamail.managesieve.core import (
    NEED_DATA,
    Closing,
    ConnectionClosed,
    Event,
    Login,
    ManageSieveConfig,
    ManageSieveServer,
    ScriptOp,
    Sentinel,
    StartTls,
    State,
)
from dynamail.managesieve.limits import (
    AUTH_FAILURE_DELAY,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS_PER_ADDRESS,
)
from dynamail.net import Connection, IdleTimeout, ListenerSpec, TlsMode
from dynamail.net.listener import interruptible, say_goodbye
from dynamail.server.context import ServerContext
from dynamail.sieve.scripts import ScriptError, ScriptStore, blobs_of
from dynamail.storage.api import StorageError, Unavailable

log = logging.getLogger("dynamail.managesieve")

BUSY = b'BYE (TRYLATER) "Too many connections from your address"\r\n'
PORT = 4190


def listeners(ctx: ServerContext) -> list[ListenerSpec]:
    idle = max(IDLE_TIMEOUT, float(getattr(ctx.config.limits, "idle_timeout", IDLE_TIMEOUT)))
    handler = functools.partial(session, ctx)
    return [ListenerSpec("managesieve", PORT, handler, TlsMode.PLAIN, idle_timeout=idle,
                         max_per_address=MAX_CONNECTIONS_PER_ADDRESS, busy_reply=BUSY)]


async def session(ctx: ServerContext, conn: Connection) -> None:
    core = ManageSieveServer(ManageSieveConfig(
        hostname=ctx.hostname,
        tls_available=conn.can_start_tls,
        tls_active=conn.is_tls,
        plaintext_auth=bool(getattr(getattr(ctx.config, "managesieve", None), "allow_plaintext_login", False)),
        relay_command=ctx.cluster is not None,
        implementation=f"dynamail {ctx.extras.get('version', '')}".strip(),
    ))
    await ManageSieveSession(ctx, conn, core).run()


class ManageSieveSession:
    def __init__(self, ctx: ServerContext, conn: Connection, core: ManageSieveServer) -> None:
        self.ctx = ctx
        self.conn = conn
        self.core = core
        login_timeout = float(getattr(ctx.config.limits, "login_timeout", 60.0))
        self.login_deadline = time.monotonic() + min(login_timeout, conn.idle_timeout)

    async def flush(self) -> None:
        out = self.core.data_to_send()
        if out:
            await self.conn.send(out)

    async def next(self) -> Event | None:
        while True:
            ev = self.core.next_event()
            if ev is NEED_DATA:
                await self.flush()
                if self.conn.closed:
                    return ConnectionClosed()
                timeout = None
                if self.core.state in (State.NONAUTH, State.SASL):
                    timeout = max(self.login_deadline - time.monotonic(), 0.0)
                try:
                    with interruptible():
                        data = await self.conn.read(timeout=timeout)
                except IdleTimeout:
                    self.core.idle_timeout()
                    await self.flush()
                    return None
                self.core.receive_data(data)
                continue
            if isinstance(ev, Sentinel):
                raise RuntimeError("ManageSieve core waits for a decision")
            return ev

    async def run(self) -> None:
        metrics = self.ctx.metrics
        with contextlib.suppress(Exception):
            metrics.sessions_total.labels(protocol="managesieve").inc()
            metrics.sessions.labels(protocol="managesieve").inc()
        try:
            await self._run()
        except asyncio.CancelledError:
            if self.core.state is not State.CLOSED:
                await say_goodbye(self.core.shutting_down, self.flush)
            raise
        finally:
            with contextlib.suppress(Exception):
                metrics.sessions.labels(protocol="managesieve").dec()

    async def _run(self) -> None:
        self.core.greeting()
        await self.flush()
        while True:
            ev = await self.next()
            if ev is None or isinstance(ev, (Closing, ConnectionClosed)):
                await self.flush()
                return
            if isinstance(ev, StartTls):
                await self.flush()
                await self.conn.start_tls()
                self.core.tls_started()
            elif isinstance(ev, Login):
                ref, relayed = await self._login(ev)
                if ref is None:
                    if self.core.state is State.CLOSED:
                        await self.flush()
                        return
                    continue
                await self._with_account(ref, relayed, ev.user)
                return
            elif isinstance(ev, ScriptOp):  # not reachable before login
                self.core.op_failed("", "Not logged in")

    async def _login(self, ev: Login) -> tuple[AccountRef | None, bool]:
        ctx = self.ctx
        if ev.kind == "relay":
            cluster = ctx.cluster
            checked = cluster.verify_relay_ticket(ev.secret, ev.challenge) if cluster is not None else None
            if inspect.isawaitable(checked):
                checked = await checked
            if checked is None:
                self.core.login_failed("Invalid relay ticket")
                return None, False
            ref, host, port = checked
            self.conn.set_real_peer(host, port)
            return ref, True
        result = None
        if not ev.authzid or ev.authzid == ev.user:
            result = await ctx.auth.authenticate(ev.user, ev.secret, protocol="managesieve",
                                                 remote=self.conn.peer_host, local=self.conn.local_host)
        if result is not None and result.ok and result.ref is not None:
            return result.ref, False
        await asyncio.sleep(AUTH_FAILURE_DELAY)
        text, code = "Authentication failed", ""
        if result is not None and result.reason == "throttled":
            text, code = "Too many failed logins; try again later", "TRYLATER"
        elif result is not None and result.reason == "disabled":
            text = "Sieve access is not enabled for this account"
        self.core.login_failed(text, code)
        return None, False

    async def _with_account(self, ref: AccountRef, relayed: bool, user: str) -> None:
        ctx = self.ctx
        try:
            async with ctx.accounts.use(ref, relay_ok=not relayed) as placement:
                if isinstance(placement, Relay):
                    ok = await ctx.cluster.relay_session(
                        self.conn, placement, protocol="managesieve", client_reply=b'OK "Logged in"\r\n'
                    )
                    if not ok:
                        self.core.login_unavailable()
                        await self.flush()
                    return
                self.core.login_succeeded(user or ref.address)
                log.info("managesieve login %s from %s", ref, self.conn.peer_host)
                await self._authenticated(ScriptStore(blobs_of(placement.store)))
        except AccountUnavailable:
            if self.core.state is not State.AUTH:
                self.core.login_unavailable()
            await self.flush()
        except Unavailable:  # the account moved or its store closed: BYE (TRYLATER)
            self.core.shutting_down()
            await self.flush()

    async def _authenticated(self, scripts: ScriptStore) -> None:
        while True:
            ev = await self.next()
            if ev is None or isinstance(ev, (Closing, ConnectionClosed)):
                await self.flush()
                return
            if isinstance(ev, ScriptOp):
                await self._script_op(scripts, ev)

    async def _script_op(self, scripts: ScriptStore, ev: ScriptOp) -> None:
        try:
            value: Any = None
            if ev.op == "list":
                value = await scripts.list()
            elif ev.op == "get":
                value = await scripts.get(ev.args[0])
                if value is None:
                    raise ScriptError("No such script", "NONEXISTENT")
            elif ev.op == "put":
                await scripts.put(ev.args[0], ev.args[1])
            elif ev.op == "delete":
                await scripts.delete(ev.args[0])
            elif ev.op == "rename":
                await scripts.rename(ev.args[0], ev.args[1])
            elif ev.op == "activate":
                await scripts.activate(ev.args[0])
            self.core.op_done(value)
        except ScriptError as exc:
            self.core.op_failed(exc.code, exc.text)
        except Unavailable:
            raise
        except (StorageError, OSError) as exc:
            log.warning("managesieve %s failed: %s", ev.op, exc)
            self.core.op_failed("TRYLATER", "Storage error; try again later")
