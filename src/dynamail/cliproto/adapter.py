"""asyncio adapter of the admin CLI protocol (port 106).

Reads command lines from a :class:`~dynamail.net.Connection`, feeds them to
:class:`~dynamail.cliproto.core.CliCore`, performs the actions it returns
(authentication through ``ctx.auth``, commands through ``ctx.admin``) and
writes the replies.  Everything protocol-shaped lives in the core; this
module only translates.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from dynamail import __version__
from dynamail.admin import AdminError
from dynamail.cliproto import limits
from dynamail.cliproto.commands import run_command
from dynamail.cliproto.core import (
    CODE_SYNTAX,
    Authenticate,
    CliCore,
    Execute,
    Send,
    State,
)
from dynamail.net import Connection, IdleTimeout, LineTooLong, ListenerSpec
from dynamail.server.context import ServerContext

log = logging.getLogger("dynamail.cli")

ADMIN_ERROR_CODES = {
    "not_found": 513,
    "exists": 514,
    "forbidden": 520,
    "bad_request": 501,
    "unavailable": 530,
    "not_cluster": 502,
}


def make_token(hostname: str) -> str:
    return f"<{os.getpid()}.{time.time_ns() // 1000}.{os.urandom(4).hex()}@{hostname}>"


def admin_error_reply(exc: Exception) -> tuple[int, str]:
    """Map an ``AdminError`` (or another failure) to a 5xx code and text."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and 500 <= code <= 599:
        return code, str(exc)
    if isinstance(code, str):
        return ADMIN_ERROR_CODES.get(code, CODE_SYNTAX), getattr(exc, "message", str(exc))
    return CODE_SYNTAX, str(exc) or type(exc).__name__


class CliExecutor:
    """Performs the core's actions against the server's services.

    Separate from the I/O loop so transcript tests can drive a core and an
    executor without any socket."""

    def __init__(self, ctx: ServerContext, core: CliCore, remote: str, local: str = "") -> None:
        self.ctx = ctx
        self.core = core
        self.remote = remote
        self.local = local  # the server address the client connected to
        self.note: Any = None  # records facts for the session's log line (Connection.note)

    async def perform(self, action: Send | Authenticate | Execute) -> Send:
        if isinstance(action, Authenticate):
            return await self._authenticate(action)
        if isinstance(action, Execute):
            return await self._execute(action)
        return action

    async def _authenticate(self, action: Authenticate) -> Send:
        auth = self.ctx.auth
        if auth is None:
            return self.core.login_done(None, "logins are not available")
        if action.apop_digest:
            result = await auth.verify_apop(
                action.login, action.token, action.apop_digest, protocol="cli", remote=self.remote,
                local=self.local,
            )
        else:
            result = await auth.authenticate(
                action.login, action.password, protocol="cli", remote=self.remote, local=self.local
            )
        if result.ok:
            log.info("cli login %s from %s", result.ref, self.remote)
            if result.ref is not None and self.note is not None:
                self.note(account=result.ref.address)
            return self.core.login_done(result.ref)
        log.info("cli login failed for %r from %s: %s", action.login[:80], self.remote, result.reason)
        message = getattr(result, "message", "") or "incorrect account name or password"
        return self.core.login_done(None, message)

    async def _execute(self, action: Execute) -> Send:
        ctx = self.ctx
        ctx.metrics.commands.labels("cli", action.command.name).inc()
        log.debug("cli %s by %s from %s", action.command.name, action.actor, self.remote)
        try:
            value: Any = await run_command(ctx, action)
        except AdminError as exc:
            code, text = admin_error_reply(exc)
            return self.core.command_failed(code, text)
        except Exception:
            # A bug, not the client's fault: log it, answer, keep the session.
            log.exception("cli %s failed", action.command.name)
            return self.core.command_failed(CODE_SYNTAX, "internal error")
        if action.command.logged:
            log.info("cli %s by %s", action.command.name, action.actor)
        return self.core.command_done(value)


class CliSession:
    """The I/O loop of one connection."""

    def __init__(self, ctx: ServerContext, conn: Connection) -> None:
        self.ctx = ctx
        self.conn = conn
        self.core = CliCore(ctx.hostname, make_token(ctx.hostname), version=__version__)
        self.remote = conn.peer_host
        self.local = str(getattr(conn, "local_host", "") or "")
        self.executor = CliExecutor(ctx, self.core, self.remote, self.local)
        self.executor.note = conn.note

    async def run(self) -> None:
        conn, core = self.conn, self.core
        cfg_limits = getattr(self.ctx.config, "limits", None)
        idle = getattr(cfg_limits, "cli_idle_timeout", limits.IDLE_TIMEOUT)
        login_timeout = getattr(cfg_limits, "login_timeout", limits.LOGIN_TIMEOUT)
        log.info("cli session from %s", self.remote)
        try:
            # the time to log in counts from the connection: a command
            # answered before login (NOOP) or a trickled line never extends it
            login_deadline = time.monotonic() + login_timeout
            await conn.send(core.greeting())
            while core.state is not State.CLOSED and not conn.closed:
                # a line must be whole within the timeout, however it trickles in
                deadline = time.monotonic() + idle if core.state is State.READY else login_deadline
                try:
                    line = await conn.readline(limits.MAX_LINE, deadline=deadline)
                except LineTooLong:
                    if await self._send(core.line_too_long()):
                        break
                    continue
                except IdleTimeout:
                    await self._send(core.idle_timeout())
                    log.info("cli session from %s timed out", self.remote)
                    break
                if not line:
                    break
                send = await self.executor.perform(core.receive(line))
                if await self._send(send):
                    break
        finally:
            log.info("cli session from %s closed", self.remote)

    async def _send(self, send: Send) -> bool:
        if send.data:
            await self.conn.send(send.data)
        return send.close


async def _handle(ctx: ServerContext, conn: Connection) -> None:
    await CliSession(ctx, conn).run()


def listeners(ctx: ServerContext) -> list[ListenerSpec]:
    async def handler(conn: Connection) -> None:
        await _handle(ctx, conn)

    cfg_limits = getattr(ctx.config, "limits", None)
    idle = getattr(cfg_limits, "cli_idle_timeout", limits.IDLE_TIMEOUT)
    return [
        ListenerSpec(
            name="cli",
            port=106,
            handler=handler,
            idle_timeout=idle,
            max_connections=1000,
            max_per_address=50,
            busy_reply=b"530 too many connections, try later\r\n",
        )
    ]
