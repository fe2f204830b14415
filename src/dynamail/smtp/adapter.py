"""The asyncio side of SMTP: listeners 25 (inbound), 587 (submission), 465,
and the outbound queue's delivery loop with its client transport.

This is the only module of the SMTP package that does network I/O; the
protocol decisions are made by the sans-IO cores (``core`` for the server,
``client`` for outbound sessions), the queue's files and rules live in
``queue``, message spooling in ``spool``.

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
import functools
import logging
import os
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from dynamail.accounts import AccountRef
from dynamail.net import Connection, IdleTimeout, ListenerSpec, TlsMode
from dynamail.server.context import ServerContext
from dynamail.smtp import replies as R
from dynamail.smtp.client import (
    ClientTransaction,
    Outcome,
    ProtocolError,
    ReplyReader,
    ServerReply,
    Step,
)
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
from dynamail.smtp.dots import Stuffer
from dynamail.smtp.limits import (
    AUTH_FAILURE_DELAY,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS_PER_ADDRESS,
    SmtpLimits,
)
from dynamail.smtp.queue import (
    QUEUE_DIR,
    Envelope,
    QueuedRecipient,
    QueueStore,
    is_eightbit,
    parse_host_port,
)
from dynamail.smtp.replies import Reply
from dynamail.smtp.spool import Spool, clean_spool
from dynamail.smtp.submission import HeaderCompleter, received_field
from dynamail.smtp.syntax import Address

log = logging.getLogger("dynamail.smtp")

#: Temporary delivery statuses meaning "the account's owner cannot be reached
#: now" (dynamail.delivery): in a cluster such copies wait in the queue.
OWNER_UNREACHABLE = frozenset({"4.4.1", "4.2.1"})

MAX_FORWARD_DEPTH = 5  # forwarders followed inside our own domains

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


def start_queue(ctx: ServerContext) -> OutboundQueue:
    """Create and start this server's outbound queue once (kept in ctx.extras)."""
    queue: OutboundQueue | None = ctx.extras.get("smtp_queue")
    if queue is None:
        clean_spool(spool_dir(ctx))
        queue = OutboundQueue.for_context(ctx)
        ctx.extras["smtp_queue"] = queue
        ctx.extras.setdefault("closers", []).append(queue.close)
    with contextlib.suppress(RuntimeError):  # no running loop yet: a later call starts it
        queue.start()
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
            auth_without_tls=bool(getattr(ctx.config.smtp, "allow_plaintext_auth", False)),
            check_sender=mode is Mode.SUBMISSION and not getattr(ctx.config.smtp, "allow_any_sender", False),
            limits=limits_for(ctx),
        )
    )
    await SmtpSession(ctx, conn, core, mode).run()


class SmtpSession:
    def __init__(self, ctx: ServerContext, conn: Connection, core: SmtpServer, mode: Mode) -> None:
        self.ctx = ctx
        self.conn = conn
        self.core = core
        self.mode = mode
        self.session_id = secrets.token_hex(6)
        self.spool: Spool | None = None
        self.local: list[AccountRef] = []
        self.remote: list[tuple[str, dict[str, str | None]]] = []
        # local recipients that asked NOTIFY=SUCCESS (RFC 3461): address, ORCPT, accounts
        self.success: list[tuple[str, str | None, list[AccountRef]]] = []
        self.sender: Address | None = None
        self.mail_params: dict[str, str | None] = {}
        self.identity: AccountRef | None = None  # the authenticated account (submission)
        self.completer: HeaderCompleter | None = None
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
            metrics.sessions.labels(protocol="smtp").inc()
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
            with contextlib.suppress(Exception):
                metrics.sessions.labels(protocol="smtp").dec()
            if self.spool is not None:
                self.spool.discard()
                self.spool = None

    # -- transaction ---------------------------------------------------------
    async def _on_mail(self, ev: MailFrom) -> bool:
        if self.core.deciding_sender:
            loop = asyncio.get_running_loop()
            try:
                allowed = await loop.run_in_executor(None, self._sender_allowed, ev.sender)
            except Exception:
                log.exception("sender lookup failed")
                self.core.reject_sender(Reply(451, "4.3.0", "Temporary lookup failure"))
                return True
            if not allowed:
                log.info("%s MAIL FROM <%s> refused for %s", self.session_id, ev.sender, self.core.identity)
                self.core.reject_sender(
                    Reply(553, "5.7.1", f"Sender address <{ev.sender}> is not yours ({self.core.identity})")
                )
                return True
            self.core.accept_sender()
        self.sender = ev.sender
        self.mail_params = ev.params
        self.local = []
        self.remote = []
        self.success = []
        return True

    def _sender_allowed(self, sender: Address | None) -> bool:
        """RFC 6409 8.1: the authenticated account may send as its own
        address or one of its aliases; the null sender is allowed."""
        if sender is None:
            return True
        if self.identity is None or not sender.local.isascii():
            return False
        try:
            domain = sender.domain if sender.domain.isascii() else sender.domain.encode("idna").decode("ascii")
        except UnicodeError:
            return False
        ref = self.ctx.directory.find_account(f"{sender.local}@{domain}")
        return ref is not None and ref == self.identity

    def _rcpt_decision(self, address: Address) -> tuple[Reply | None, Any]:
        directory = self.ctx.directory
        try:
            # an internationalised domain is looked up by its A-label (RFC 5890)
            domain = address.domain if address.domain.isascii() else address.domain.encode("idna").decode("ascii")
            is_local = directory.domain_exists(domain)
        except Exception:
            is_local = False
        if is_local:
            if not address.local.isascii():
                return R.USER_UNKNOWN, None  # account names are ASCII
            recipient = directory.resolve_recipient(f"{address.local}@{domain}")
            if recipient is None:
                return R.USER_UNKNOWN, None
            return None, self._expand_local_forwards(recipient)
        if self.mode is Mode.SUBMISSION and self.core.identity is not None:
            return None, str(address)
        return R.RELAY_DENIED, None

    def _expand_local_forwards(self, recipient: Any, depth: int = 0) -> Any:
        """Forwarders that point into our own domains resolve here, not via
        MX (up to MAX_FORWARD_DEPTH levels, so a forwarding loop ends)."""
        if not recipient.forward or depth >= MAX_FORWARD_DEPTH:
            return recipient
        directory = self.ctx.directory
        accounts = list(recipient.accounts)
        forward: list[str] = []
        for target in recipient.forward:
            domain = target.rpartition("@")[2].lower()
            try:
                local = directory.domain_exists(domain)
            except Exception:
                local = False
            inner = directory.resolve_recipient(target) if local else None
            if inner is None:
                forward.append(target)  # remote, or unknown: let the queue report it
                continue
            inner = self._expand_local_forwards(inner, depth + 1)
            accounts.extend(inner.accounts)
            forward.extend(inner.forward)
        return type(recipient)(accounts=accounts, forward=forward)

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
            notify = {w.upper() for w in (ev.params.get("NOTIFY") or "").split(",")}
            if "SUCCESS" in notify and target.accounts:
                self.success.append((str(ev.address), ev.params.get("ORCPT"), list(target.accounts)))
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
        self.spool = Spool(spool_dir(self.ctx))
        self.spool.write(self._received_header())
        # RFC 6409 8.2/8.3: submitted messages get a Date and Message-ID if missing
        self.completer = HeaderCompleter(self.ctx.hostname) if self.mode is Mode.SUBMISSION else None
        return True

    async def _on_body(self, ev: BodyData) -> bool:
        if self.spool is not None:
            self.spool.write(ev.data if self.completer is None else self.completer.feed(ev.data))
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
        return received_field(
            helo=core.helo_name, peer=self.conn.peer_host, hostname=self.ctx.hostname, protocol=proto,
            session_id=self.session_id, recipients=[str(r) for r in core.recipients], identity=core.identity,
        )

    async def _on_complete(self, ev: MessageComplete) -> bool:
        assert self.spool is not None
        if self.completer is not None:
            self.spool.write(self.completer.finish())
            self.completer = None
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
        if self.success and sender and queue is not None:
            bad = {ref for _, r in failed for ref in [r.ref]}
            told = [(addr, orcpt) for addr, orcpt, refs in self.success if not bad & set(refs)]
            if told:
                await queue.success_now(sender, told, path, params=self.mail_params)
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
            self.identity = result.ref
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


# -- the outbound queue's delivery loop ------------------------------------------------
MAX_PARALLEL = 20  # queue entries attempted at once
IDLE_POLL = 30.0  # seconds between scans when nothing is due


class OutboundQueue:
    """Runs the durable queue (``dynamail.smtp.queue``): enqueue, attempts, bounces.

    Remote recipients are sent with :func:`send_remote`; ``local`` recipients
    (accounts whose owner was unreachable) are retried through local
    delivery.  The in-memory ``entries`` are an index; the files are the truth.
    """

    def __init__(
        self,
        directory: Path,
        *,
        hostname: str,
        relay_host: str = "",
        mx_map: dict[str, str] | None = None,
        retry_seconds: float = 300.0,
        expire_seconds: float = 5 * 24 * 3600.0,
        delivery: Callable[[], Any] = lambda: None,
        resolve_local: Callable[[str], Any] = lambda address: None,
        metrics: Any = None,
    ) -> None:
        self.store = QueueStore(directory, hostname=hostname, retry_seconds=retry_seconds, expire_seconds=expire_seconds)
        self.hostname = hostname
        self.relay_host = relay_host
        self.mx_map = dict(mx_map or {})
        self._delivery = delivery
        self._resolve_local = resolve_local
        self.metrics = metrics
        self.entries: dict[str, Envelope] = {}
        self._busy: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._closing = False
        self._loaded = False

    @classmethod
    def for_context(cls, ctx: ServerContext) -> OutboundQueue:
        smtp = ctx.config.smtp
        directory = ctx.directory

        def resolve_local(address: str) -> Any:
            try:
                _, domain = address.rsplit("@", 1)
                if not directory.domain_exists(domain.lower()):
                    return None
            except Exception:
                return None
            return directory.resolve_recipient(address)

        return cls(
            Path(ctx.config.base) / QUEUE_DIR,
            hostname=ctx.hostname,
            relay_host=smtp.relay_host,
            mx_map=smtp.mx,
            retry_seconds=smtp.queue_retry_seconds,
            expire_seconds=smtp.queue_expire_seconds,
            delivery=lambda: ctx.delivery,
            resolve_local=resolve_local,
            metrics=ctx.metrics,
        )

    def start(self) -> None:
        """Load the queue directory, then start the delivery loop.

        Loading removes the debris of interrupted enqueues, so it must finish
        before any session can enqueue: it runs here, synchronously, before
        the listeners open (``listeners(ctx)`` calls this)."""
        loop = asyncio.get_running_loop()
        if not self._loaded:
            self._load()
        if self._task is None:
            self._task = loop.create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        tasks = [t for t in (self._task, *self._attempts) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def size(self) -> int:
        return len(self.entries)

    def backoff(self, attempts: int) -> float:
        return self.store.backoff(attempts)

    def build_dsn(self, env: Envelope, failed: list[QueuedRecipient], message: Path | bytes) -> bytes:
        return self.store.build_dsn(env, failed, message)

    def _gauge(self) -> None:
        if self.metrics is not None:
            with contextlib.suppress(Exception):
                self.metrics.queue_size.set(len(self.entries))

    def _load(self) -> None:
        self.entries.update(self.store.load())
        self._loaded = True

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def enqueue(
        self,
        sender: str,
        recipients: Sequence[tuple[str, dict[str, str | None]]] | Sequence[str],
        message: Path | bytes,
        *,
        params: dict[str, str | None] | None = None,
        local: Sequence[str] = (),
    ) -> str:
        """Queue ``message``; durable on return; the queue id."""
        if not self._loaded:
            await self._io(self._load)  # never race the start-up scan
        env = self.store.new_envelope(sender, recipients, params, local)
        await self._io(self.store.write_entry, env, message)
        self.entries[env.id] = env
        self._gauge()
        self._wake.set()
        return env.id

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._gauge()
        sem = asyncio.Semaphore(MAX_PARALLEL)
        while not self._closing:
            self._wake.clear()
            now = time.time()
            wait = IDLE_POLL
            for env in list(self.entries.values()):
                if env.id in self._busy:
                    continue
                if env.next_attempt <= now:
                    self._busy.add(env.id)
                    task = loop.create_task(self._attempt_guarded(env, sem))
                    self._attempts.add(task)
                    task.add_done_callback(self._attempts.discard)
                else:
                    wait = min(wait, env.next_attempt - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.05))

    async def _attempt_guarded(self, env: Envelope, sem: asyncio.Semaphore) -> None:
        try:
            async with sem:
                await self.attempt(env)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("queue entry %s: attempt failed", env.id)
            env.next_attempt = time.time() + self.store.retry_seconds
        finally:
            self._busy.discard(env.id)
            self._wake.set()

    async def attempt(self, env: Envelope) -> None:
        """One delivery attempt for every pending recipient of ``env``."""
        msg_path = self.store.paths(env.id)[0]
        self.store.expire_if_due(env, time.time())
        pending = env.pending()
        local = [r for r in pending if r.local]
        if local:
            await self._attempt_local(local, msg_path)
        by_domain: dict[str, list[QueuedRecipient]] = {}
        for r in pending:
            if not r.local:
                by_domain.setdefault(r.address.rpartition("@")[2].lower(), []).append(r)
        results = await asyncio.gather(*(
            send_remote(
                domain, helo=self.hostname, sender=env.sender, recipients=[r.address for r in rs],
                message=msg_path, relay_host=self.relay_host, mx_map=self.mx_map,
                dsn_params=env.params, rcpt_params={r.address: {"NOTIFY": r.notify, "ORCPT": r.orcpt} for r in rs},
            )
            for domain, rs in by_domain.items()
        ))
        for rs, outcomes in zip(by_domain.values(), results, strict=True):
            for r in rs:
                o = outcomes.get(r.address, Outcome(451, "4.4.1 no outcome"))
                self.store.record(r, o.code, o.text)
                r.dsn_passed = o.dsn_passed
        if not self.store.finish_attempt(env, time.time()):
            delayed = self.store.to_delay_notify(env, time.time())
            if delayed:
                await self._bounce(env, delayed, msg_path)
            await self._io(self.store.save, env)
            log.info("queue entry %s: %d recipients deferred (attempt %d)", env.id, len(env.pending()), env.attempts)
            return
        notices = self.store.to_notify(env)
        if notices:
            await self._bounce(env, notices, msg_path)
        failed = [r for r in env.recipients if r.state == "failed"]
        await self._io(self.store.remove, env)
        self.entries.pop(env.id, None)
        self._gauge()
        log.info("queue entry %s done: %d sent, %d failed", env.id, sum(r.state == "sent" for r in env.recipients), len(failed))

    async def _attempt_local(self, recipients: list[QueuedRecipient], message: Path) -> None:
        delivery = self._delivery()
        todo: list[tuple[QueuedRecipient, AccountRef]] = []
        for r in recipients:
            target = await self._io(self._resolve_local, r.address)
            if target is None or not target.accounts:
                self.store.record(r, 550, "5.1.1 account no longer exists")
            else:
                todo.append((r, target.accounts[0]))
        if not todo:
            return
        if delivery is None:
            for r, _ in todo:
                self.store.record(r, 451, "4.3.0 local delivery not available")
            return
        results = await delivery.deliver([ref for _, ref in todo], message)
        for (r, _), res in zip(todo, results, strict=True):
            self.store.record(r, res.code, f"{res.status} {res.text}")

    async def bounce_now(
        self,
        sender: str,
        failures: list[tuple[str, int, str, str]],
        message: Path | bytes,
        *,
        params: dict[str, str | None] | None = None,
    ) -> None:
        """A DSN for recipients that failed at once (e.g. a local quota)."""
        env = Envelope("now", sender, [
            QueuedRecipient(addr, None, None, "failed", code, f"{status} {text}") for addr, code, status, text in failures
        ], time.time(), 0.0, 1, dict(params or {}))
        await self._bounce(env, env.recipients, message)

    async def success_now(
        self, sender: str, delivered: list[tuple[str, str | None]], message: Path | bytes,
        *, params: dict[str, str | None] | None = None,
    ) -> None:
        """A "delivered" DSN for local recipients that asked NOTIFY=SUCCESS."""
        env = Envelope("now", sender, [
            QueuedRecipient(addr, "SUCCESS", orcpt, "sent", 250, "2.0.0 delivered", local=True)
            for addr, orcpt in delivered
        ], time.time(), 0.0, 1, dict(params or {}))
        await self._bounce(env, env.recipients, message)

    async def _bounce(self, env: Envelope, failed: list[QueuedRecipient], message: Path | bytes) -> None:
        """Send a DSN about ``failed`` (or delayed/delivered) recipients to the sender."""
        dsn = await self._io(self.store.build_dsn, env, failed, message)
        target = await self._io(self._resolve_local, env.sender)
        delivery = self._delivery()
        if target is not None and delivery is not None and (target.accounts or target.forward):
            if target.accounts:
                results = await delivery.deliver(list(target.accounts), dsn)
                waiting = [r.ref.address for r in results if r.temporary]
                if waiting:  # keep the notice until the account can take it
                    await self.enqueue("", [], dsn, local=waiting)
                if any(r.permanent for r in results):
                    log.warning("notice to %s refused by its mailbox", env.sender)
            if target.forward:
                await self.enqueue("", list(target.forward), dsn)
            return
        await self.enqueue("", [env.sender], dsn)


# -- sending to a remote domain (RFC 5321 5.1) -----------------------------------------
# Routing: the configured relay host, else the static MX map ([smtp] mx), else
# the domain's MX records (dnspython, asynchronous) in preference order, the
# domain itself when it has no MX (implicit MX), a permanent failure for a
# null MX (RFC 7505) or a domain that does not exist.  The protocol decisions
# are made by the sans-IO ClientTransaction; this code only moves bytes.

CONNECT_TIMEOUT = 30.0
REPLY_TIMEOUT = 300.0  # RFC 5321 4.5.3.2: 5 minutes for most replies
DATA_END_TIMEOUT = 600.0  # 10 minutes for the reply to the end of data
SEND_CHUNK = 64 * 1024


async def route(domain: str, relay_host: str, mx_map: dict[str, str]) -> tuple[list[tuple[str, int]], Outcome | None]:
    """The hosts to try for ``domain``, or a failure of routing itself."""
    if relay_host:
        return [parse_host_port(relay_host)], None
    static = mx_map.get(domain) or mx_map.get(domain.lower())
    if static:
        return [parse_host_port(part) for part in static.split(",") if part.strip()], None
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    try:
        answer = await dns.asyncresolver.resolve(domain, "MX", lifetime=30.0)
    except dns.resolver.NXDOMAIN:
        return [], Outcome(550, f"5.1.2 domain {domain} does not exist")
    except dns.resolver.NoAnswer:
        return [(domain, 25)], None  # implicit MX
    except dns.exception.DNSException as exc:
        return [], Outcome(451, f"4.4.3 DNS lookup for {domain} failed: {exc.__class__.__name__}")
    records = sorted(((r.preference, str(r.exchange).rstrip(".")) for r in answer), key=lambda x: x[0])
    if len(records) == 1 and records[0][1] in ("", "."):
        return [], Outcome(556, f"5.1.10 domain {domain} accepts no mail (null MX)")
    return [(host, 25) for _, host in records if host not in ("", ".")], None


def _client_tls() -> ssl.SSLContext:
    # opportunistic TLS (RFC 3207 4.1): encrypt when offered, do not authenticate
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    return tls


async def _read_reply(reader: asyncio.StreamReader, rr: ReplyReader, timeout: float) -> ServerReply:
    while True:
        reply = rr.next_reply()
        if reply is not None:
            return reply
        data = await asyncio.wait_for(reader.read(65536), timeout)
        if not data:
            raise ConnectionError("connection closed by server")
        rr.feed(data)


async def send_to_host(host: str, port: int, tx: ClientTransaction, message: Path) -> None:
    """Run ``tx`` against one host; outcomes are recorded in ``tx``."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
    rr = ReplyReader()
    try:
        while tx.step is not Step.DONE:
            timeout = DATA_END_TIMEOUT if tx.step is Step.CONTENT else REPLY_TIMEOUT
            reply = await _read_reply(reader, rr, timeout)
            out = tx.on_reply(reply)
            if tx.step is Step.STARTTLS and reply.code == 220:
                await writer.start_tls(_client_tls(), server_hostname=host)
                out = tx.tls_started()
            if out:
                writer.write(out)
                await writer.drain()
            if tx.step is Step.CONTENT:
                await _send_content(writer, message)
            if tx.step is Step.QUIT and out == b"QUIT\r\n":
                with contextlib.suppress(Exception):  # the answer to QUIT does not matter
                    await _read_reply(reader, rr, 5.0)
                break
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 5.0)


async def _send_content(writer: asyncio.StreamWriter, message: Path) -> None:
    stuffer = Stuffer()
    with open(message, "rb") as fh:
        while chunk := fh.read(SEND_CHUNK):
            writer.write(stuffer.feed(chunk))
            await writer.drain()
    writer.write(stuffer.end())
    await writer.drain()


async def send_remote(
    domain: str,
    *,
    helo: str,
    sender: str,
    recipients: list[str],
    message: Path,
    relay_host: str = "",
    mx_map: dict[str, str] | None = None,
    dsn_params: dict[str, str | None] | None = None,
    rcpt_params: dict[str, dict[str, str | None]] | None = None,
) -> dict[str, Outcome]:
    """Deliver to ``recipients`` (all in ``domain``); an outcome for each.

    ``dsn_params`` (RET, ENVID) and ``rcpt_params`` (NOTIFY, ORCPT per
    recipient) go to a server that advertises DSN (RFC 3461 5.2.2/5.3)."""
    hosts, failure = await route(domain, relay_host, mx_map or {})
    if failure is not None:
        return {rcpt: failure for rcpt in recipients}
    size = message.stat().st_size
    eightbit = await asyncio.get_running_loop().run_in_executor(None, is_eightbit, message)
    utf8 = not (sender.isascii() and all(x.isascii() for x in recipients))
    last = Outcome(451, f"4.4.1 no answer from any host for {domain}")
    for host, port in hosts:
        tx = ClientTransaction(
            helo=helo, sender=sender, recipients=list(recipients), size=size,
            tls_possible=True, eightbit=eightbit, utf8=utf8,
            dsn_params=dict(dsn_params or {}), rcpt_params=dict(rcpt_params or {}),
        )
        try:
            await send_to_host(host, port, tx, message)
        except (OSError, TimeoutError, ProtocolError, ssl.SSLError, ConnectionError) as exc:
            log.info("delivery to %s via %s:%d failed: %s", domain, host, port, exc)
            last = Outcome(451, f"4.4.1 {host}:{port}: {exc.__class__.__name__} {exc}".strip())
            if not tx.accepted or tx.step not in (Step.CONTENT, Step.QUIT, Step.DONE):
                continue  # nothing committed: try the next host
            tx.unfinished(last.code, last.text)
            return dict(tx.outcomes)
        tx.unfinished(451, "4.4.2 connection ended early")
        if tx.error is not None and tx.error.code < 500 and not tx.accepted:
            last = tx.error
            continue  # a temporary refusal of the whole session: next MX
        return dict(tx.outcomes)
    return {rcpt: last for rcpt in recipients}
