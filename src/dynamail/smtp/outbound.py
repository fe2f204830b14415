"""The outbound queue's delivery loop and the client transport that sends
mail to other servers (RFC 5321 5.1).

With ``adapter`` this is the only SMTP module that does network I/O
(asyncio, sockets, TLS).  It makes no protocol decisions of its own: the
queue's files, states and notices are ``queue.QueueStore`` (sans-IO), the
SMTP dialogue is ``client.ClientTransaction`` (sans-IO); this module runs
attempts on a schedule, looks up routes, and moves bytes.

Invariants: the queue files are the truth, ``OutboundQueue.entries`` an
index rebuilt from them at start; an entry is removed only after every
recipient is sent or failed and the notices it owes are queued or
delivered; at most ``MAX_PARALLEL`` entries are attempted at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from dynamail.accounts import AccountRef
from dynamail.mailauth.signing import Signer
from dynamail.server.context import ServerContext
from dynamail.smtp.client import (
    ClientTransaction,
    Outcome,
    ProtocolError,
    ReplyReader,
    ServerReply,
    Step,
)
from dynamail.smtp.dots import CanonicalStuffer
from dynamail.smtp.queue import (
    QUEUE_DIR,
    Envelope,
    QueuedRecipient,
    QueueStore,
    is_eightbit,
    parse_host_port,
)

log = logging.getLogger("dynamail.smtp")

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
        signer: Callable[[Path | bytes], bytes] | None = None,
    ) -> None:
        #: DKIM signature fields for a message (dynamail.mailauth.signing)
        self.signer = signer
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
            signer=Signer(directory).signature,
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

    def backoff(self, attempts: int, *, local: bool = False) -> float:
        return self.store.backoff(attempts, local=local)

    def wake_local(self, addresses: Collection[str] | None = None) -> int:
        """Make the entries waiting for one of our accounts (all, or those
        for ``addresses``) due now: the account can be opened again (a
        delivery to it just succeeded, or ownership moved).  Returns how
        many entries were woken."""
        wanted = None if addresses is None else {a.lower() for a in addresses}
        woken = 0
        for env in self.entries.values():
            if any(r.local and (wanted is None or r.address.lower() in wanted) for r in env.pending()):
                if env.next_attempt > 0.0:
                    env.next_attempt = 0.0
                    woken += 1
        if woken:
            self._wake.set()
        return woken

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
        sign: bool = False,
        delivery_id: str = "",
    ) -> str:
        """Queue ``message``; durable on return; the queue id.

        ``sign``: a message this server writes (a notice, a vacation
        answer, a redirect) is DKIM-signed here, once, before the first
        attempt, so every retry sends the same bytes.  Local copies are
        delivered with ``delivery_id`` (the id of an attempt already made;
        default the queue id), so none is stored twice."""
        if not self._loaded:
            await self._io(self._load)  # never race the start-up scan
        prefix = b""
        if sign and self.signer is not None:
            try:
                prefix = await self._io(self.signer, message)
            except Exception:
                log.exception("DKIM signing of a queued message failed; sent unsigned")
        env = self.store.new_envelope(sender, recipients, params, local, delivery_id)
        await self._io(self.store.write_entry, env, message, prefix)
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
            env.next_attempt = time.time() + self.store.backoff(max(env.attempts, 1), local=self.store.has_local(env))
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
            await self._attempt_local(local, msg_path, env.sender, env.delivery_id or env.id)
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

    async def _attempt_local(self, recipients: list[QueuedRecipient], message: Path,
                             sender: str | None = None, delivery_id: str | None = None) -> None:
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
        results = await delivery.deliver([ref for _, ref in todo], message, sender=sender,
                                         delivery_id=delivery_id)
        for (r, _), res in zip(todo, results, strict=True):
            self.store.record(r, res.code, f"{res.status} {res.text}")
        reachable = [r.address for (r, _), res in zip(todo, results, strict=True) if res.ok]
        if reachable:  # other copies waiting for these accounts can go now
            self.wake_local(reachable)

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
                    await self.enqueue("", [], dsn, local=waiting, sign=True)
                if any(r.permanent for r in results):
                    log.warning("notice to %s refused by its mailbox", env.sender)
            if target.forward:
                await self.enqueue("", list(target.forward), dsn, sign=True)
            return
        await self.enqueue("", [env.sender], dsn, sign=True)


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
    stuffer = CanonicalStuffer()
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
