"""The asyncio side of POP3: listeners 110 (STLS) and 995 (implicit TLS).

After a successful login the session holds the account through the locator
(``ctx.accounts.use``) for its whole TRANSACTION state and works on a
snapshot view of INBOX (the maildrop).  Messages are streamed from storage
in bounded chunks and dot-stuffed on the way (RFC 1939 3), so a large
message never sits in memory.  Deletions marked by DELE are applied (flag
\\Deleted, then expunge of exactly those UIDs) only when QUIT arrives in the
TRANSACTION state; a dropped or timed-out connection deletes nothing.

UIDL values are ``<uidvalidity>.<uid>``: both are stored with the mailbox,
so they stay the same across sessions and restarts (RFC 1939 7).

In a cluster, an account owned by another member is relayed there
(``ctx.cluster.relay_session``); the owner accepts ``XDYNAMAIL-RELAY
<ticket>`` in the AUTHORIZATION state in place of a login, the ticket bound
to the nonce its ``XDYNAMAIL-CHALLENGE`` issued on the connection
(cluster/challenge.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import secrets
import time
from typing import Any

from dynamail.accounts import AccountRef
from dynamail.cluster.locator import AccountUnavailable, Relay
from dynamail.net import Connection, IdleTimeout, ListenerSpec, TlsMode
from dynamail.net.listener import interruptible, say_goodbye
from dynamail.pop3.core import (
    NEED_DATA,
    Closing,
    ConnectionClosed,
    Event,
    Login,
    MaildropEntry,
    Pop3Config,
    Pop3Server,
    Retrieve,
    Sentinel,
    StartTls,
    State,
    TopFilter,
    Update,
)
from dynamail.pop3.limits import (
    AUTH_FAILURE_DELAY,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS_PER_ADDRESS,
    SEND_CHUNK,
)
from dynamail.server.context import ServerContext
from dynamail.smtp.dots import Stuffer
from dynamail.storage.api import StorageError, StorageIOError, Unavailable

log = logging.getLogger("dynamail.pop3")

BUSY = b"-ERR [SYS/TEMP] Too many connections from your address\r\n"


def listeners(ctx: ServerContext) -> list[ListenerSpec]:
    idle = max(IDLE_TIMEOUT, float(getattr(ctx.config.limits, "idle_timeout", IDLE_TIMEOUT)))
    handler = functools.partial(session, ctx)
    common: dict[str, Any] = {
        "idle_timeout": idle, "max_per_address": MAX_CONNECTIONS_PER_ADDRESS, "busy_reply": BUSY,
    }
    return [
        ListenerSpec("pop3", 110, handler, TlsMode.PLAIN, **common),
        ListenerSpec("pop3s", 995, handler, TlsMode.IMPLICIT, **common),
    ]


async def session(ctx: ServerContext, conn: Connection) -> None:
    token = f"<{os.getpid()}.{int(time.time())}.{secrets.token_hex(6)}@{ctx.hostname}>"
    core = Pop3Server(
        Pop3Config(
            hostname=ctx.hostname,
            timestamp=token,
            tls_available=conn.can_start_tls,
            tls_active=conn.is_tls,
            plaintext_auth=bool(getattr(getattr(ctx.config, "pop3", None), "allow_plaintext_login", False)),
            relay_command=ctx.cluster is not None,
        )
    )
    await Pop3Session(ctx, conn, core).run()


class Pop3Session:
    def __init__(self, ctx: ServerContext, conn: Connection, core: Pop3Server) -> None:
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
        """The next event; None when the session ended by timeout."""
        while True:
            ev = self.core.next_event()
            if ev is NEED_DATA:
                await self.flush()
                if self.conn.closed:
                    return ConnectionClosed()
                timeout = None
                if self.core.state is State.AUTHORIZATION:
                    # log in within the login timeout, not the long idle timeout
                    timeout = max(self.login_deadline - time.monotonic(), 0.0)
                try:
                    with interruptible():  # between commands: shutdown ends the session at once
                        data = await self.conn.read(timeout=timeout)
                except IdleTimeout:
                    self.core.idle_timeout()
                    await self.flush()
                    return None
                self.core.receive_data(data)
                continue
            if isinstance(ev, Sentinel):  # PAUSED: every decision is made in place
                raise RuntimeError("POP3 core waits for a decision")
            return ev

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:  # server shutdown
            if self.core.state is not State.CLOSED:
                await say_goodbye(self.core.shutting_down, self.flush)
            raise

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
                await self._with_account(ref, relayed)
                return

    async def _login(self, ev: Login) -> tuple[AccountRef | None, bool]:
        ctx = self.ctx
        remote = self.conn.peer_host
        if ev.kind == "relay":
            cluster = ctx.cluster
            checked = cluster.verify_relay_ticket(ev.secret, ev.challenge) if cluster is not None else None
            if inspect.isawaitable(checked):
                checked = await checked
            if checked is None:
                self.core.login_failed("[AUTH] Invalid relay ticket")
                return None, False
            ref, host, port = checked
            self.conn.set_real_peer(host, port)
            return ref, True
        if ev.kind == "apop":
            result = await ctx.auth.verify_apop(
                ev.user, self.core.config.timestamp, ev.secret, protocol="pop3", remote=remote,
                local=self.conn.local_host,
            )
        elif ev.authzid and ev.authzid != ev.user:
            result = None
        else:
            result = await ctx.auth.authenticate(
                ev.user, ev.secret, protocol="pop3", remote=remote, local=self.conn.local_host
            )
        if result is not None and result.ok and result.ref is not None:
            return result.ref, False
        await asyncio.sleep(AUTH_FAILURE_DELAY)
        text = "[AUTH] Authentication failed"
        if result is not None and result.reason == "throttled":
            text = "[AUTH] Too many failed logins; try again later"
        elif result is not None and result.reason == "disabled":
            text = "[AUTH] POP3 access is not enabled for this account"
        self.core.login_failed(text)
        return None, False

    async def _with_account(self, ref: AccountRef, relayed: bool) -> None:
        ctx = self.ctx
        if ctx.accounts is None:
            self.core.login_unavailable()
            await self.flush()
            return
        self.conn.note(account=ref.address)
        try:
            async with ctx.accounts.use(ref, relay_ok=not relayed) as placement:
                if isinstance(placement, Relay):
                    self.conn.note(outcome=f"relayed to {placement.member}")
                    ok = await ctx.cluster.relay_session(
                        self.conn, placement, protocol="pop3", client_reply=b"+OK Logged in\r\n"
                    )
                    if not ok:
                        self.core.login_unavailable()
                        await self.flush()
                    return
                view = await placement.store.select("INBOX")
                try:
                    await self._transaction(view)
                finally:
                    view.close()
        except Unavailable:
            # closed or fenced under the session: the account is moving
            if self.core.state is State.AUTHORIZATION:
                self.core.login_unavailable()
            elif self.core.state is not State.CLOSED:
                self.core.unavailable()
            with contextlib.suppress(ConnectionError, OSError):
                await self.flush()
        except AccountUnavailable:
            if self.core.state is State.AUTHORIZATION:
                self.core.login_unavailable()
                await self.flush()

    async def _transaction(self, view: Any) -> None:
        maildrop = [
            MaildropEntry(uid, view.info(uid).size, f"{view.uidvalidity}.{uid}") for uid in view.uids()
        ]
        self.core.login_succeeded(maildrop)
        log.info("pop3 login %s from %s: %d messages", self.conn.listener, self.conn.peer_host, len(maildrop))
        while True:
            ev = await self.next()
            if ev is None or isinstance(ev, (Closing, ConnectionClosed)):
                await self.flush()
                return
            if isinstance(ev, Retrieve):
                await self.flush()
                await self._send_message(view, ev)
            elif isinstance(ev, Update):
                ok = True
                if ev.uids:
                    try:
                        await view.store(ev.uids, "add", frozenset({"\\Deleted"}))
                        await view.expunge(ev.uids)
                    except StorageIOError as exc:  # the file system refused it (full, I/O error)
                        log.warning("pop3 update failed: %s", exc)
                        ok = False
                    except StorageError:
                        log.exception("pop3 update failed")
                        ok = False
                self.core.update_done(ok)
                await self.flush()
                return

    async def _send_message(self, view: Any, ev: Retrieve) -> None:
        loop = asyncio.get_running_loop()
        fh, offset, length = await view.open_body(ev.uid)
        fd = fh.fileno()
        stuffer = Stuffer()
        top = TopFilter(ev.lines) if ev.lines is not None else None
        pos = 0
        while pos < length and not self.conn.closed:
            n = min(SEND_CHUNK, length - pos)
            chunk = await loop.run_in_executor(None, os.pread, fd, n, offset + pos)
            if not chunk:
                break
            pos += len(chunk)
            if top is not None:
                chunk = top.feed(chunk, final=pos >= length)
            self.conn.write(stuffer.feed(chunk))
            await self.conn.drain()
            if top is not None and top.done:
                break
        if top is not None and not top.done:
            self.conn.write(stuffer.feed(top.feed(b"", final=True)))
        self.conn.write(stuffer.end())
        await self.conn.drain()
