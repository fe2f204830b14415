"""The asyncio side of SMTP: listeners 25 (inbound), 587 (submission), 465.

The adapter reads bytes from the :class:`~dynamail.net.Connection`, feeds the
sans-IO core, and answers the core's questions with the server's services:
recipients through the directory, credentials through the authenticator,
message storage through :class:`~dynamail.delivery.Delivery` and the
outbound queue.

A message's content is collected as it arrives, preceded by our
``Received`` header: in memory up to ``SPOOL_IN_MEMORY``, beyond that in a
spool file under ``<base>/Spool/`` (so a 50 MB message is never held in
memory).  Once the content is complete, local copies are
delivered and remote recipients are queued; the reply is 250 only after
every local copy and the queue entry are durable, 451 if any of them is not
(RFC 5321 4.2.5: the client keeps the message and retries).

Policy (never an open relay, from any address including localhost):
inbound (25) accepts only recipients in local domains that resolve to an
account, alias or forwarder (else 550 5.1.1); a recipient in any other
domain is refused with 550 5.7.1 unless the session is authenticated
submission (587/465, AUTH required before MAIL).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from dynamail.accounts import AccountRef
from dynamail.net import Connection, IdleTimeout, ListenerSpec, TlsMode
from dynamail.server.context import ServerContext
from dynamail.smtp import replies as R
from dynamail.smtp.core import (
    NEED_DATA,
    PAUSED,
    AuthRequest,
    BodyData,
    Closing,
    ConnectionClosed,
    DataStart,
    MailFrom,
    MessageAborted,
    MessageComplete,
    Mode,
    RcptTo,
    SessionConfig,
    SmtpServer,
    StartTls,
)
from dynamail.smtp.limits import (
    AUTH_FAILURE_DELAY,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS_PER_ADDRESS,
    SmtpLimits,
)
from dynamail.smtp.replies import Reply
from dynamail.smtp.syntax import Address

log = logging.getLogger("dynamail.smtp")

#: Temporary delivery statuses meaning "the account's owner cannot be reached
#: now" (dynamail.delivery): in a cluster such copies wait in the queue.
OWNER_UNREACHABLE = frozenset({"4.4.1", "4.2.1"})

#: Messages up to this size are received into memory, larger ones into a
#: spool file (a 50 MB message must never be held in memory).
SPOOL_IN_MEMORY = 1024 * 1024

BUSY = b"421 4.7.0 Too many connections from your address, try again later\r\n"
SPOOL_DIR = "Spool"


def spool_dir(ctx: ServerContext) -> Path:
    return Path(ctx.config.base) / SPOOL_DIR


def listeners(ctx: ServerContext) -> list[ListenerSpec]:
    """SMTP listeners; also starts the outbound queue of this server."""
    start_queue(ctx)
    idle = min(IDLE_TIMEOUT, float(getattr(ctx.config.limits, "idle_timeout", IDLE_TIMEOUT)))

    def spec(name: str, port: int, mode: Mode, tls: TlsMode = TlsMode.PLAIN) -> ListenerSpec:
        return ListenerSpec(
            name=name,
            port=port,
            handler=functools.partial(session, ctx, mode),
            tls=tls,
            idle_timeout=idle,
            max_per_address=MAX_CONNECTIONS_PER_ADDRESS,
            busy_reply=BUSY,
        )

    return [
        spec("smtp", 25, Mode.INBOUND),
        spec("submission", 587, Mode.SUBMISSION),
        spec("smtps", 465, Mode.SUBMISSION, TlsMode.IMPLICIT),
    ]


def clean_spool(directory: Path) -> None:
    """Remove partial messages left by a crash (none of them was acknowledged)."""
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.is_file():
                entry.unlink(missing_ok=True)


def start_queue(ctx: ServerContext) -> Any:
    """Create and start this server's outbound queue once (kept in ctx.extras)."""
    queue = ctx.extras.get("smtp_queue")
    if queue is not None:
        return queue
    clean_spool(spool_dir(ctx))
    from dynamail.smtp.queue import OutboundQueue

    queue = OutboundQueue.for_context(ctx)
    ctx.extras["smtp_queue"] = queue
    with contextlib.suppress(RuntimeError):  # no running loop: started by the caller
        queue.start()
    closers = ctx.extras.setdefault("closers", [])
    closers.append(queue.close)
    return queue


def limits_for(ctx: ServerContext) -> SmtpLimits:
    size = int(getattr(getattr(ctx.config, "smtp", None), "max_message_size", 0) or 0)
    return SmtpLimits(max_message_size=size) if size > 0 else SmtpLimits()


async def session(ctx: ServerContext, mode: Mode, conn: Connection) -> None:
    core = SmtpServer(
        SessionConfig(
            hostname=ctx.hostname,
            mode=mode,
            tls_available=conn.can_start_tls,
            tls_active=conn.is_tls,
            limits=limits_for(ctx),
        )
    )
    await SmtpSession(ctx, conn, core, mode).run()


class _Spool:
    """The message being received: in memory while small, else a file under Spool/.

    Up to ``SPOOL_IN_MEMORY`` bytes stay in one buffer (most mail; no file
    system work per message); beyond that the content moves to a file and
    every further chunk is appended there, so a large message is held on
    disk, never in memory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.buffer = bytearray()
        self.path: Path | None = None
        self.fh: IO[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self.fh is not None:
            self.fh.write(data)
            return
        self.buffer += data
        if len(self.buffer) > SPOOL_IN_MEMORY:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.path = self.directory / f"{int(time.time())}.{secrets.token_hex(8)}.eml"
            self.fh = open(self.path, "wb")
            self.fh.write(self.buffer)
            self.buffer = bytearray()

    def finish(self) -> Path | bytes:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        if self.path is not None:
            return self.path
        return bytes(self.buffer)

    def discard(self) -> None:
        self.buffer = bytearray()
        if self.fh is not None:
            with contextlib.suppress(OSError):
                self.fh.close()
            self.fh = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None


class SmtpSession:
    def __init__(self, ctx: ServerContext, conn: Connection, core: SmtpServer, mode: Mode) -> None:
        self.ctx = ctx
        self.conn = conn
        self.core = core
        self.mode = mode
        self.session_id = secrets.token_hex(6)
        self.spool: _Spool | None = None
        self.local: list[AccountRef] = []
        self.remote: list[tuple[str, dict[str, str | None]]] = []
        self.sender: Address | None = None
        self.mail_params: dict[str, str | None] = {}
        self.handlers: dict[type, Callable[[Any], Awaitable[bool]]] = {
            MailFrom: self._on_mail,
            RcptTo: self._on_rcpt,
            DataStart: self._on_data_start,
            BodyData: self._on_body,
            MessageComplete: self._on_complete,
            MessageAborted: self._on_aborted,
            AuthRequest: self._on_auth,
            StartTls: self._on_starttls,
            Closing: self._on_closing,
            ConnectionClosed: self._on_closing,
        }

    async def flush(self) -> None:
        out = self.core.data_to_send()
        if out:
            await self.conn.send(out)

    async def run(self) -> None:
        metrics = self.ctx.metrics
        with contextlib.suppress(Exception):
            metrics.sessions_total.labels(protocol="smtp").inc()
        try:
            self.core.greeting()
            await self.flush()
            while not self.conn.closed:
                ev = self.core.next_event()
                if ev is NEED_DATA:
                    await self.flush()
                    try:
                        data = await self.conn.read()
                    except IdleTimeout:
                        self.core.idle_timeout()
                        await self.flush()
                        return
                    self.core.receive_data(data)
                    continue
                if ev is PAUSED:  # pragma: no cover - every decision is made below
                    raise RuntimeError("SMTP core waits for a decision")
                handler = self.handlers.get(type(ev))
                if handler is not None and not await handler(ev):
                    return
        finally:
            if self.spool is not None:
                self.spool.discard()
                self.spool = None

    # -- transaction ---------------------------------------------------------
    async def _on_mail(self, ev: MailFrom) -> bool:
        self.sender = ev.sender
        self.mail_params = ev.params
        self.local = []
        self.remote = []
        return True

    def _rcpt_decision(self, address: Address) -> tuple[Reply | None, Any]:
        directory = self.ctx.directory
        addr = str(address)
        try:
            is_local = address.is_ascii and directory.domain_exists(address.domain)
        except Exception:
            is_local = False
        if is_local:
            recipient = directory.resolve_recipient(addr)
            if recipient is None:
                return R.USER_UNKNOWN, None
            return None, recipient
        if self.mode is Mode.SUBMISSION and self.core.identity is not None:
            return None, addr
        return R.RELAY_DENIED, None

    async def _on_rcpt(self, ev: RcptTo) -> bool:
        loop = asyncio.get_running_loop()
        try:
            problem, target = await loop.run_in_executor(None, self._rcpt_decision, ev.address)
        except Exception:
            log.exception("recipient lookup failed")
            self.core.reject_recipient(Reply(451, "4.3.0", "Temporary lookup failure"))
            return True
        if problem is not None:
            log.info("%s RCPT %s refused: %d", self.session_id, ev.address, problem.code)
            self.core.reject_recipient(problem)
            return True
        if isinstance(target, str):
            self.remote.append((target, ev.params))
        else:
            full = await self._quota_problem(target.accounts)
            if full is not None:
                self.core.reject_recipient(full)
                return True
            self.local.extend(target.accounts)
            self.remote.extend((fwd, {}) for fwd in target.forward)
        self.core.accept_recipient()
        return True

    async def _quota_problem(self, refs: list[AccountRef]) -> Reply | None:
        delivery = self.ctx.delivery
        if delivery is None or not hasattr(delivery, "precheck"):
            return None
        declared = self.mail_params.get("SIZE")
        size = int(declared) if declared and declared.isdigit() else 0
        for ref in refs:
            problem = await delivery.precheck(ref, size)
            if problem is not None:
                return Reply(problem.code, problem.status, problem.text[:1].upper() + problem.text[1:])
        return None

    async def _on_data_start(self, ev: DataStart) -> bool:
        if self.spool is not None:
            self.spool.discard()
        self.spool = _Spool(spool_dir(self.ctx))
        self.spool.write(self._received_header())
        return True

    async def _on_body(self, ev: BodyData) -> bool:
        if self.spool is not None:
            self.spool.write(ev.data)
        return True

    async def _on_aborted(self, ev: MessageAborted) -> bool:
        if self.spool is not None:
            self.spool.discard()
            self.spool = None
        return True

    def _received_header(self) -> bytes:
        core = self.core
        proto = "ESMTP" if core.esmtp else "SMTP"
        if "SMTPUTF8" in self.mail_params:
            proto = "UTF8SMTP"
        if core.tls_active:
            proto += "S"
        if core.identity is not None:
            proto += "A"
        rcpts = core.recipients
        for_part = f"\r\n\tfor <{rcpts[0]}>" if len(rcpts) == 1 else ""
        helo = (core.helo_name or "unknown").replace("\r", "").replace("\n", "")[:200]
        text = (
            f"Received: from {helo} ([{self.conn.peer_host}])\r\n"
            f"\tby {self.ctx.hostname} (dynamail) with {proto} id {self.session_id}"
            f"{for_part};\r\n\t{email.utils.formatdate(localtime=False)}\r\n"
        )
        return text.encode("utf-8", "replace")

    async def _on_complete(self, ev: MessageComplete) -> bool:
        assert self.spool is not None
        content = self.spool.finish()
        try:
            reply = await self._store(content)
        except Exception:
            log.exception("%s storing a message failed", self.session_id)
            reply = R.LOCAL_ERROR
        finally:
            self.spool.discard()
            self.spool = None
        self.core.finish_message(reply)
        return True

    async def _store(self, path: Path | bytes) -> Reply:
        ctx = self.ctx
        sender = "" if self.sender is None else str(self.sender)
        failed: list[tuple[str, Any]] = []
        if self.local:
            if ctx.delivery is None:
                return R.LOCAL_ERROR
            results = await ctx.delivery.deliver(self.local, path)
            temporary = [r for r in results if r.temporary]
            queue = ctx.extras.get("smtp_queue")
            if temporary and ctx.cluster is not None and queue is not None and all(
                r.status in OWNER_UNREACHABLE for r in temporary
            ):
                # SPEC 2 (frontends): the owner is unreachable for now; the
                # message waits in our durable queue instead of being refused
                waiting = list(dict.fromkeys(r.ref.address for r in temporary))
                await queue.enqueue(sender, [], path, params=self.mail_params, local=waiting)
                log.info("%s %d local copies queued until their owner is reachable", self.session_id, len(waiting))
                temporary = []
            if temporary:
                t = temporary[0]
                log.warning("%s local delivery to %s failed: %s", self.session_id, t.ref, t.text)
                return Reply(451, t.status if t.status.startswith("4") else "4.3.0", f"Local delivery failed ({t.text}); try again later")
            permanent = [r for r in results if r.permanent]
            if permanent and len(permanent) == len(results) and not self.remote:
                p = permanent[0]
                return Reply(p.code, p.status, p.text)
            failed = [(str(r.ref), r) for r in permanent]
        queue = ctx.extras.get("smtp_queue")
        if self.remote:
            if queue is None:
                return R.LOCAL_ERROR
            await queue.enqueue(sender, self.remote, path, params=self.mail_params)
        if failed and sender and queue is not None:
            await queue.bounce_now(sender, [(addr, r.code, r.status, r.text) for addr, r in failed], path, params=self.mail_params)
        log.info(
            "%s message from <%s> accepted: %d local, %d queued", self.session_id, sender, len(self.local), len(self.remote)
        )
        return Reply(250, "2.0.0", f"Message accepted as {self.session_id}-{os.getpid()}")

    # -- AUTH and TLS ----------------------------------------------------------
    async def _on_auth(self, ev: AuthRequest) -> bool:
        auth = self.ctx.auth
        result = None
        if not ev.authzid or ev.authzid == ev.login:
            result = await auth.authenticate(ev.login, ev.password, protocol="smtp", remote=self.conn.peer_host)
        if result is not None and result.ok and result.ref is not None:
            self.core.auth_succeeded(result.ref.address)
            return True
        await asyncio.sleep(AUTH_FAILURE_DELAY * (self.core.auth_failures + 1))
        reply = R.AUTH_FAILED
        if result is not None and result.reason == "throttled":
            reply = Reply(454, "4.7.0", "Too many failed logins; try again later")
        closing = self.core.auth_failed(reply)
        if closing is not None:
            await self.flush()
            return False
        return True

    async def _on_starttls(self, ev: StartTls) -> bool:
        await self.flush()
        await self.conn.start_tls()
        self.core.tls_started()
        return True

    async def _on_closing(self, ev: Closing | ConnectionClosed) -> bool:
        await self.flush()
        return False
