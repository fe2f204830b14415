"""The asyncio side of SMTP: listeners 25 (inbound), 587 (submission), 465.

One of the two modules of the SMTP package that do network I/O; the other
is ``outbound`` (the outbound queue's delivery loop and its client
transport).  The protocol decisions are made by the sans-IO cores (``core``
for the server, ``client`` for outbound sessions), the queue's files and
rules live in ``queue``, message spooling in ``spool``, what the server adds
to a message in ``submission``.

The adapter reads bytes from the :class:`~dynamail.net.Connection`, feeds the
sans-IO core, and answers the core's questions with the server's services:
recipients and senders through the directory, credentials through the
authenticator, message storage through :class:`~dynamail.delivery.Delivery`
and the outbound queue.

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
submission (587/465, AUTH required before MAIL).  On submission the
envelope sender must be the authenticated account's own address or alias
(553 5.7.1) unless ``[smtp] allow_any_sender`` is set (RFC 6409 8.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dynamail import events
from dynamail.accounts import AccountRef
from dynamail.delivery import JUNK
from dynamail.filter.milter import MilterFilter
from dynamail.filter.rspamd import RspamdFilter, remove_fields
from dynamail.mailauth.gate import InboundGate
from dynamail.mailauth.signing import Signer
from dynamail.net import Connection, IdleTimeout, ListenerSpec, TlsMode
from dynamail.net.listener import interruptible, say_goodbye
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
    State,
)
from dynamail.smtp.limits import (
    AUTH_FAILURE_DELAY,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS_PER_ADDRESS,
    SmtpLimits,
)
from dynamail.smtp.outbound import OutboundQueue, send_remote
from dynamail.smtp.replies import Reply
from dynamail.smtp.spool import Spool, clean_spool
from dynamail.smtp.submission import HeaderCompleter, received_field
from dynamail.smtp.syntax import Address

__all__ = ["OutboundQueue", "listeners", "send_remote", "session", "start_queue"]

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


def signer_for(ctx: ServerContext) -> Signer:
    """This server's DKIM signer (one per context, kept in ctx.extras)."""
    signer: Signer | None = ctx.extras.get("dkim_signer")
    if signer is None:
        signer = ctx.extras["dkim_signer"] = Signer(ctx.directory)
    return signer


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
        self.session_id = conn.session_id  # in the session's log line (dynamail.events)
        self.transactions = 0  # MAIL FROM accepted so far: the message id is <session>.<n>
        self.messages = 0  # messages accepted (250) in this session
        self.spool: Spool | None = None
        self.local: list[AccountRef] = []
        # quota limits of the local recipients, read with their lookup (one thread job)
        self.limits: dict[AccountRef, int | None] = {}
        self.remote: list[tuple[str, dict[str, str | None]]] = []
        # local recipients that asked NOTIFY=SUCCESS (RFC 3461): address, ORCPT, accounts
        self.success: list[tuple[str, str | None, list[AccountRef]]] = []
        # every accepted RCPT in order: address, its accounts, its remote targets
        self.accepted: list[tuple[str, list[AccountRef], list[str]]] = []
        self.junk: frozenset[Any] = frozenset()  # local recipients whose copy goes to Junk
        self.discard = False  # a milter said: accept and drop
        self.sender: Address | None = None
        self.mail_params: dict[str, str | None] = {}
        self.identity: AccountRef | None = None  # the authenticated account (submission)
        self.completer: HeaderCompleter | None = None
        # submission: the time to authenticate counts from the connection
        # (as for IMAP, POP3 and the admin CLI); NOOP, RSET or a trickled
        # line do not extend it
        self.login_deadline: float | None = None
        if mode is Mode.SUBMISSION:
            login_timeout = float(getattr(ctx.config.limits, "login_timeout", IDLE_TIMEOUT))
            self.login_deadline = time.monotonic() + min(login_timeout, conn.idle_timeout)
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
        try:
            self.core.greeting()
            await self.flush()
            while not self.conn.closed:
                ev = self.core.next_event()
                if ev is NEED_DATA:
                    await self.flush()
                    timeout: float | None = None
                    if self.login_deadline is not None and self.identity is None:
                        timeout = max(0.0, self.login_deadline - time.monotonic())
                    try:
                        if self.core.between_commands:
                            with interruptible():  # shutdown ends the session at once
                                data = await self.conn.read(timeout=timeout)
                        else:
                            data = await self.conn.read(timeout=timeout)
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
        except asyncio.CancelledError:  # server shutdown (RFC 5321 section 3.8)
            if self.core.state is not State.CLOSED:
                await say_goodbye(self.core.shutting_down, self.flush)
            raise
        finally:
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
        self.transactions += 1
        self.local = []
        self.limits = {}
        self.remote = []
        self.success = []
        self.accepted = []
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

    def _rcpt_lookup(self, address: Address) -> tuple[Reply | None, Any, dict[AccountRef, int | None]]:
        """The RCPT decision and the quota limits of its local accounts, in
        one worker-thread job (each hand-off to a thread costs CPU)."""
        problem, target = self._rcpt_decision(address)
        limits: dict[AccountRef, int | None] = {}
        delivery = self.ctx.delivery
        if problem is None and not isinstance(target, str) and hasattr(delivery, "quota_limit_sync"):
            for ref in target.accounts:
                limits[ref] = delivery.quota_limit_sync(ref)
        return problem, target, limits

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
            problem, target, limits = await loop.run_in_executor(None, self._rcpt_lookup, ev.address)
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
            self.accepted.append((str(ev.address), [], [target]))
        else:
            full = await self._quota_problem(target.accounts, limits)
            if full is not None:
                self.core.reject_recipient(full)
                return True
            self.local.extend(target.accounts)
            self.limits.update(limits)
            self.remote.extend((fwd, {}) for fwd in target.forward)
            self.accepted.append((str(ev.address), list(target.accounts), list(target.forward)))
            notify = {w.upper() for w in (ev.params.get("NOTIFY") or "").split(",")}
            if "SUCCESS" in notify and target.accounts:
                self.success.append((str(ev.address), ev.params.get("ORCPT"), list(target.accounts)))
        self.core.accept_recipient()
        return True

    async def _quota_problem(self, refs: list[AccountRef], limits: dict[AccountRef, int | None]) -> Reply | None:
        delivery = self.ctx.delivery
        if delivery is None or not hasattr(delivery, "precheck"):
            return None
        declared = self.mail_params.get("SIZE")
        size = int(declared) if declared and declared.isdigit() else 0
        for ref in refs:
            problem = await (delivery.precheck(ref, size, limits[ref]) if ref in limits
                             else delivery.precheck(ref, size))
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
        if self.mode is Mode.LMTP:
            proto = "LMTP"  # RFC 3848
        if "SMTPUTF8" in self.mail_params:
            proto = "UTF8SMTP"
        if core.tls_active:
            proto += "S"
        if core.identity is not None:
            proto += "A"
        return received_field(
            helo=core.helo_name, peer=self.conn.peer_host, hostname=self.ctx.hostname, protocol=proto,
            session_id=self.message_id, recipients=[str(r) for r in core.recipients], identity=core.identity,
        )

    @property
    def message_id(self) -> str:
        """The id of the current transaction's message: in the Received:
        field, the 250 reply and the message's log line."""
        return f"{self.session_id}.{self.transactions}"

    async def _on_complete(self, ev: MessageComplete) -> bool:
        assert self.spool is not None
        if self.completer is not None:
            self.spool.write(self.completer.finish())
            self.completer = None
        content = self.spool.finish()
        reply: Reply | list[Reply] | None = None
        if self.mode is Mode.SUBMISSION:
            content = await self._dkim_sign(content)
        elif self.mode is Mode.INBOUND:
            content, reply = await self._examine(content)
        try:
            if reply is None and self.discard:
                log.info("%s discarded by the content filter", self.session_id)
                reply = Reply(250, "2.0.0", "Message accepted")
            if reply is None:
                reply = await self._store(content)
        except Exception:
            log.exception("%s storing a message failed", self.session_id)
            reply = R.LOCAL_ERROR if self.mode is not Mode.LMTP else [R.LOCAL_ERROR] * len(self.core.recipients)
        finally:
            self.spool.discard()
            self.spool = None
        self.core.finish_message(reply)
        return True

    async def _examine(self, content: Path | bytes) -> tuple[Path | bytes, Reply | None]:
        """Port 25, before anything is stored: SPF, DKIM, DMARC and ARC
        (dynamail.mailauth.gate), then the content filter (dynamail.filter).
        The content with the fields they add, or the refusal (451 when DNS
        or the filter failed now, 550 by DMARC policy or the filter)."""
        self.junk = frozenset()
        self.discard = False
        gate = InboundGate.for_context(self.ctx)
        flt = RspamdFilter.for_context(self.ctx)
        milter = MilterFilter.for_context(self.ctx)
        if gate is None and flt is None and milter is None:
            return content, None
        assert self.spool is not None
        mail_from = "" if self.sender is None else str(self.sender)
        helo = self.core.helo_name or ""
        fields = b""
        junk: set[Any] = set()
        if gate is not None:
            try:
                outcome = await gate.examine(content, ip=self.conn.peer_host, helo=helo, mail_from=mail_from,
                                             local=self.local, others=bool(self.remote))
            except Exception:
                log.exception("%s sender checks failed", self.session_id)
                return content, Reply(451, "4.3.0", "Sender checks failed; try again later")
            if outcome.defer is not None:
                log.info("%s deferred: %s", self.session_id, outcome.defer)
                return content, Reply(451, "4.4.3", "DNS lookup failed temporarily; try again later")
            if outcome.reject is not None:
                log.info("%s refused: %s", self.session_id, outcome.reject)
                return content, Reply(550, "5.7.1", outcome.reject)
            fields += outcome.fields
            junk |= outcome.junk
        if flt is not None:
            verdict = await flt.scan(content, ip=self.conn.peer_host, helo=helo, mail_from=mail_from,
                                     rcpts=[str(r) for r in self.core.recipients], queue_id=self.session_id)
            log.info("%s content filter: %s (score %s)", self.session_id, verdict.action, verdict.score)
            if verdict.action == "reject":
                return content, Reply(550, "5.7.1", verdict.text)
            if verdict.action == "defer":
                return content, Reply(451, "4.7.1", verdict.text)
            if verdict.action == "junk":
                junk |= set(self.local)
            fields += verdict.fields
        if milter is not None:
            mv = await milter.scan(content, ip=self.conn.peer_host, helo=helo, mail_from=mail_from,
                                   rcpts=[str(r) for r in self.core.recipients], hostname=self.ctx.hostname,
                                   queue_id=self.session_id)
            log.info("%s milter: %s", self.session_id, mv.action)
            if mv.action in ("reject", "defer"):
                return content, Reply(mv.code, mv.status, mv.text)
            if mv.action == "discard":
                self.discard = True
            fields += MilterFilter.fields(mv)
        self.junk = frozenset(junk)

        def rewrite(header: bytes) -> bytes:
            if gate is not None:
                header = gate.strip(header)
            if flt is not None:
                header = remove_fields(header)
            return fields + header

        return self.spool.rewrite_head(rewrite), None

    async def _deliver_local(self, path: Path | bytes, sender: str, delivery_id: str) -> list[Any]:
        """Deliver to the local recipients, those in ``self.junk`` into Junk;
        one result per entry of ``self.local``."""
        delivery = self.ctx.delivery
        assert delivery is not None
        did = delivery_id
        if not self.junk:
            return list(await delivery.deliver(self.local, path, sender=sender, limits=self.limits,
                                               delivery_id=did))
        inbox = [r for r in self.local if r not in self.junk]
        junk = [r for r in self.local if r in self.junk]
        results = await delivery.deliver(inbox, path, sender=sender, limits=self.limits,
                                         delivery_id=did) if inbox else []
        results += await delivery.deliver(junk, path, sender=sender, mailbox=JUNK, limits=self.limits,
                                          delivery_id=did) if junk else []
        by_ref = {r.ref: r for r in results}
        return [by_ref[ref] for ref in self.local]

    async def _dkim_sign(self, content: Path | bytes) -> Path | bytes:
        """Sign submitted mail once, before any copy is stored or queued
        (dynamail.mailauth.signing); a failure is logged and the message
        goes unsigned rather than not at all."""
        assert self.spool is not None
        try:
            fields = await asyncio.get_running_loop().run_in_executor(None, signer_for(self.ctx).signature, content)
        except Exception:
            log.exception("%s DKIM signing failed; sent unsigned", self.session_id)
            return content
        return self.spool.prepend(fields) if fields else content

    async def _store(self, path: Path | bytes) -> Reply | list[Reply]:
        ctx = self.ctx
        sender = "" if self.sender is None else str(self.sender)
        failed: list[tuple[str, Any]] = []
        copies: dict[str, str] = {}  # recipient account or address -> where its copy went
        queue_ids: list[str] = []
        if self.local:
            if ctx.delivery is None:
                return R.LOCAL_ERROR
            # one id per message: a copy retried from the queue after a lost
            # answer carries the same id and is not stored twice
            delivery_id = f"s{secrets.token_hex(9)}"
            results = await self._deliver_local(path, sender, delivery_id)
            here = self.ctx.listeners.member
            for r in results:
                where = r.member or here
                stored = "stored" + (f" on {where}" if where else "") + (f" uid {r.uid}" if r.uid else "")
                copies[r.ref.address] = stored if r.ok else f"failed {r.code}"
            temporary = [r for r in results if r.temporary]
            queue = ctx.extras.get("smtp_queue")
            delivered = [r.ref.address for r in results if r.ok]
            if delivered and queue is not None:
                # these accounts are reachable: copies queued for them go now
                queue.wake_local(delivered)
            if temporary and ctx.cluster is not None and queue is not None and all(
                r.status in OWNER_UNREACHABLE for r in temporary
            ):
                # SPEC 2 (frontends): the owner is unreachable for now; the
                # message waits in our durable queue instead of being refused
                waiting = list(dict.fromkeys(r.ref.address for r in temporary))
                queue_ids.append(await queue.enqueue(sender, [], path, params=self.mail_params, local=waiting,
                                                     delivery_id=delivery_id))
                copies.update((address, "queued") for address in waiting)
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
            queue_ids.append(await queue.enqueue(sender, self.remote, path, params=self.mail_params))
            copies.update((target, "queued") for target, _params in self.remote)
        if self.success and sender and queue is not None:
            bad = {ref for _, r in failed for ref in [r.ref]}
            told = [(addr, orcpt) for addr, orcpt, refs in self.success if not bad & set(refs)]
            if told:
                await queue.success_now(sender, told, path, params=self.mail_params)
        if failed and sender and queue is not None:
            await queue.bounce_now(sender, [(addr, r.code, r.status, r.text) for addr, r in failed], path, params=self.mail_params)
        self.messages += 1
        self.conn.note(messages=self.messages)
        events.emit("message", id=self.message_id, session=self.session_id, member=self.ctx.listeners.member or None,
                    **{"from": sender or "<>"}, to=[str(r) for r in self.core.recipients], copies=copies,
                    queue=",".join(q for q in queue_ids if q) or None)
        return Reply(250, "2.0.0", f"Message accepted as {self.message_id}")

    # -- AUTH and TLS ----------------------------------------------------------
    async def _on_auth(self, ev: AuthRequest) -> bool:
        auth = self.ctx.auth
        result = None
        if not ev.authzid or ev.authzid == ev.login:
            result = await auth.authenticate(
                ev.login, ev.password, protocol="smtp", remote=self.conn.peer_host, local=self.conn.local_host
            )
        if result is not None and result.ok and result.ref is not None:
            self.identity = result.ref
            self.core.auth_succeeded(result.ref.address)
            self.conn.note(account=result.ref.address)
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
