"""The durable outbound queue: ``<base>/Queue/``.

Each queued message is two files: ``<id>.msg`` (the message, as received,
with our Received header) and ``<id>.env`` (the envelope as JSON: sender,
recipients with their state, attempts, next attempt time, DSN parameters).
Enqueueing writes and fsyncs the message, then writes the envelope with
``atomic_write`` (temporary file, fsync, rename, directory fsync): the
envelope's appearance is the commit point, so a crash at any instant leaves
either no entry or a complete one.  :meth:`OutboundQueue.enqueue` returns
only after that, so SMTP answers 250 only for a durable queue entry.  On
start the directory is scanned: complete entries are retried at once;
a message file without an envelope (a crash mid-enqueue) is removed.

Delivery attempts follow RFC 5321 4.5.4.1: per-recipient outcomes, 2xx done,
5xx failed, 4xx retried with exponential back-off (``queue_retry_seconds``
doubling, at most ``MAX_BACKOFF``) until ``queue_expire_seconds``, after
which the remaining recipients fail.  Failed recipients produce one delivery
status notification (RFC 3464) to the sender unless the sender is null or
the recipient asked NOTIFY=NEVER (RFC 3461); a notification is itself sent
with the null sender, so bounces never loop.  The queue keeps entries in
memory only as an index; the files are the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dynamail.durable import atomic_write, fsync_dir, make_dirs, remove_stale_temporaries
from dynamail.smtp import outbound
from dynamail.smtp.client import Outcome

log = logging.getLogger("dynamail.smtp.queue")

QUEUE_DIR = "Queue"
MAX_BACKOFF = 4 * 3600.0
MAX_PARALLEL = 20
IDLE_POLL = 30.0
MAX_HEADER_IN_DSN = 64 * 1024
MAX_FULL_RETURN = 10 * 1024 * 1024
_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass
class QueuedRecipient:
    address: str
    notify: str | None = None  # RFC 3461 NOTIFY value as given
    orcpt: str | None = None
    state: str = "pending"  # "pending" | "sent" | "failed"
    code: int = 0
    text: str = ""
    local: bool = False  # an account of ours whose owner was unreachable (cluster)


@dataclass
class Envelope:
    id: str
    sender: str  # "" for the null reverse-path
    recipients: list[QueuedRecipient]
    created: float
    next_attempt: float
    attempts: int = 0
    params: dict[str, str | None] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        raw = json.loads(data)
        raw["recipients"] = [QueuedRecipient(**r) for r in raw["recipients"]]
        return cls(**raw)

    def pending(self) -> list[QueuedRecipient]:
        return [r for r in self.recipients if r.state == "pending"]


def enhanced_status(code: int, text: str) -> str:
    m = _STATUS.match(text.strip())
    if m and m.group(1) == str(code)[0]:
        return m.group(0)
    return f"{str(code)[0]}.0.0" if code >= 400 else "5.0.0"


class OutboundQueue:
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
        self.directory = directory
        self.hostname = hostname
        self.relay_host = relay_host
        self.mx_map = dict(mx_map or {})
        self.retry_seconds = retry_seconds
        self.expire_seconds = expire_seconds
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
    def for_context(cls, ctx: Any) -> OutboundQueue:
        smtp = ctx.config.smtp
        directory = ctx.directory

        def resolve_local(address: str) -> Any:
            try:
                _, domain = address.rsplit("@", 1)
                if not directory.domain_exists(domain.lower()):
                    return None
            except (ValueError, Exception):
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

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        """Load the queue directory and start the delivery loop (needs a running loop)."""
        loop = asyncio.get_running_loop()
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

    def _gauge(self) -> None:
        if self.metrics is not None:
            with contextlib.suppress(Exception):
                self.metrics.queue_size.set(len(self.entries))

    def _load(self) -> None:
        make_dirs(self.directory)
        remove_stale_temporaries(self.directory)
        envs = {p.stem for p in self.directory.glob("*.env")}
        for msg in self.directory.glob("*.msg"):
            if msg.stem not in envs:
                msg.unlink(missing_ok=True)  # crashed before the commit point
        for env_path in self.directory.glob("*.env"):
            msg = env_path.with_suffix(".msg")
            try:
                env = Envelope.from_json(env_path.read_bytes())
            except (OSError, ValueError, TypeError, KeyError):
                log.error("unreadable queue envelope %s kept aside", env_path)
                with contextlib.suppress(OSError):
                    env_path.rename(env_path.with_suffix(".bad"))
                continue
            if not msg.exists():
                env_path.unlink(missing_ok=True)
                continue
            env.next_attempt = 0.0  # retry at once after a restart
            self.entries[env.id] = env
        self._loaded = True

    # -- enqueue ------------------------------------------------------------------
    def _paths(self, qid: str) -> tuple[Path, Path]:
        return self.directory / f"{qid}.msg", self.directory / f"{qid}.env"

    def _write_entry(self, env: Envelope, message: Path | bytes) -> None:
        if not self._loaded:
            make_dirs(self.directory)
        msg_path, env_path = self._paths(env.id)
        tmp = self.directory / f".{env.id}.msg.{secrets.token_hex(4)}.tmp"
        with open(tmp, "wb") as out:
            if isinstance(message, bytes):
                out.write(message)
            else:
                with open(message, "rb") as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, msg_path)
        atomic_write(env_path, env.to_json())  # commit point (fsyncs the directory)

    async def enqueue(
        self,
        sender: str,
        recipients: Sequence[tuple[str, dict[str, str | None]]] | Sequence[str],
        message: Path | bytes,
        *,
        params: dict[str, str | None] | None = None,
        local: Sequence[str] = (),
    ) -> str:
        """Queue ``message`` for ``recipients``; durable on return; the queue id.

        ``local`` names accounts of this server or cluster whose delivery
        failed temporarily (their owner unreachable); the queue retries them
        through local delivery."""
        rcpts: list[QueuedRecipient] = [QueuedRecipient(address, local=True) for address in local]
        for item in recipients:
            if isinstance(item, str):
                rcpts.append(QueuedRecipient(item))
            else:
                address, rparams = item
                rcpts.append(QueuedRecipient(address, rparams.get("NOTIFY"), rparams.get("ORCPT")))
        now = time.time()
        qid = f"{int(now * 1000):x}{secrets.token_hex(6)}"
        env = Envelope(qid, sender, rcpts, now, now, 0, {k: v for k, v in (params or {}).items() if k in ("RET", "ENVID", "BODY", "SMTPUTF8")})
        await asyncio.get_running_loop().run_in_executor(None, self._write_entry, env, message)
        self.entries[qid] = env
        self._gauge()
        self._wake.set()
        return qid

    def _save(self, env: Envelope) -> None:
        atomic_write(self._paths(env.id)[1], env.to_json())

    def _remove(self, env: Envelope) -> None:
        msg_path, env_path = self._paths(env.id)
        env_path.unlink(missing_ok=True)
        fsync_dir(self.directory)
        msg_path.unlink(missing_ok=True)

    # -- delivery loop --------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._load)
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
            env.next_attempt = time.time() + self.retry_seconds
        finally:
            self._busy.discard(env.id)
            self._wake.set()

    def backoff(self, attempts: int) -> float:
        return float(min(self.retry_seconds * (2 ** max(attempts - 1, 0)), MAX_BACKOFF))

    async def attempt(self, env: Envelope) -> None:
        """One delivery attempt of every pending recipient of ``env``."""
        loop = asyncio.get_running_loop()
        msg_path = self._paths(env.id)[0]
        now = time.time()
        pending = env.pending()
        if now - env.created > self.expire_seconds:
            for r in pending:
                r.state, r.code = "failed", 500
                r.text = f"4.4.7 delivery time expired; last error: {r.text or 'none'}"
            pending = []
        local = [r for r in pending if r.local]
        if local:
            await self._attempt_local(local, msg_path)
        by_domain: dict[str, list[QueuedRecipient]] = {}
        for r in pending:
            if not r.local:
                by_domain.setdefault(r.address.rpartition("@")[2].lower(), []).append(r)
        results = await asyncio.gather(
            *(
                outbound.send(
                    domain, helo=self.hostname, sender=env.sender,
                    recipients=[r.address for r in rs], message=msg_path,
                    relay_host=self.relay_host, mx_map=self.mx_map,
                )
                for domain, rs in by_domain.items()
            )
        )
        for rs, outcomes in zip(by_domain.values(), results, strict=True):
            for r in rs:
                o = outcomes.get(r.address, Outcome(451, "4.4.1 no outcome"))
                r.code, r.text = o.code, o.text
                if 200 <= o.code < 300:
                    r.state = "sent"
                elif o.code >= 500:
                    r.state = "failed"
        env.attempts += 1
        if env.pending():
            env.next_attempt = time.time() + self.backoff(env.attempts)
            await loop.run_in_executor(None, self._save, env)
            log.info("queue entry %s: %d recipients deferred (attempt %d)", env.id, len(env.pending()), env.attempts)
            return
        failed = [r for r in env.recipients if r.state == "failed" and (r.notify or "").upper() != "NEVER"]
        if failed and env.sender:
            await self._bounce(env, failed, msg_path)
        await loop.run_in_executor(None, self._remove, env)
        self.entries.pop(env.id, None)
        self._gauge()
        log.info("queue entry %s done: %d sent, %d failed", env.id, sum(r.state == "sent" for r in env.recipients), len(failed))

    async def _attempt_local(self, recipients: list[QueuedRecipient], message: Path) -> None:
        loop = asyncio.get_running_loop()
        delivery = self._delivery()
        refs: list[Any] = []
        for r in recipients:
            target = await loop.run_in_executor(None, self._resolve_local, r.address)
            if target is None or not target.accounts:
                r.state, r.code, r.text = "failed", 550, "5.1.1 account no longer exists"
                refs.append(None)
            else:
                refs.append(target.accounts[0])
        todo = [(r, ref) for r, ref in zip(recipients, refs, strict=True) if ref is not None]
        if not todo:
            return
        if delivery is None:
            for r, _ in todo:
                r.code, r.text = 451, "4.3.0 local delivery not available"
            return
        results = await delivery.deliver([ref for _, ref in todo], message)
        for (r, _), res in zip(todo, results, strict=True):
            r.code, r.text = res.code, f"{res.status} {res.text}"
            if res.ok:
                r.state = "sent"
            elif res.permanent:
                r.state = "failed"

    # -- delivery status notifications ----------------------------------------------
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

    async def _bounce(self, env: Envelope, failed: list[QueuedRecipient], message: Path | bytes) -> None:
        loop = asyncio.get_running_loop()
        dsn = await loop.run_in_executor(None, self.build_dsn, env, failed, message)
        target = await loop.run_in_executor(None, self._resolve_local, env.sender)
        delivery = self._delivery()
        if target is not None and delivery is not None and (target.accounts or target.forward):
            if target.accounts:
                results = await delivery.deliver(list(target.accounts), dsn)
                if any(not r.ok for r in results):
                    log.warning("bounce to %s could not be stored locally", env.sender)
            if target.forward:
                await self.enqueue("", list(target.forward), dsn)
            return
        await self.enqueue("", [env.sender], dsn)

    def build_dsn(self, env: Envelope, failed: list[QueuedRecipient], message: Path | bytes) -> bytes:
        """An RFC 3464 multipart/report for ``failed`` recipients."""
        boundary = f"=_dynamail_{secrets.token_hex(12)}"
        now = email.utils.formatdate(localtime=False)
        header, full = self._original(message, env.params.get("RET"))
        lines = [
            f"From: Mail Delivery System <MAILER-DAEMON@{self.hostname}>",
            f"To: <{env.sender}>",
            "Subject: Undelivered Mail Returned to Sender",
            f"Date: {now}",
            f"Message-ID: <{secrets.token_hex(10)}@{self.hostname}>",
            "Auto-Submitted: auto-replied",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
            "",
            "This is a MIME-encapsulated message.",
            "",
            f"--{boundary}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            f"This is the mail system at {self.hostname}.",
            "",
            "Your message could not be delivered to the following recipients:",
            "",
        ]
        for r in failed:
            lines.append(f"  <{r.address}>: {r.code} {r.text}")
        lines += ["", f"--{boundary}", "Content-Type: message/delivery-status", ""]
        lines.append(f"Reporting-MTA: dns; {self.hostname}")
        envid = env.params.get("ENVID")
        if envid:
            lines.append(f"Original-Envelope-Id: {envid}")
        lines.append(f"Arrival-Date: {email.utils.formatdate(env.created, localtime=False)}")
        for r in failed:
            lines.append("")
            lines.append(f"Final-Recipient: rfc822; {r.address}")
            if r.orcpt:
                lines.append(f"Original-Recipient: {r.orcpt}")
            lines.append("Action: failed")
            lines.append(f"Status: {enhanced_status(r.code if r.code >= 500 else 500, r.text)}")
            if r.code:
                lines.append(f"Diagnostic-Code: smtp; {r.code} {r.text}"[:900])
            lines.append(f"Last-Attempt-Date: {now}")
        lines.append("")
        if full is not None:
            lines += [f"--{boundary}", "Content-Type: message/rfc822", ""]
            head = "\r\n".join(lines).encode("utf-8") + b"\r\n"
            body = full if full.endswith(b"\r\n") else full + b"\r\n"
            return head + body + f"--{boundary}--\r\n".encode()
        lines += [f"--{boundary}", "Content-Type: text/rfc822-headers", ""]
        head = "\r\n".join(lines).encode("utf-8") + b"\r\n"
        return head + header + f"\r\n--{boundary}--\r\n".encode()

    @staticmethod
    def _original(message: Path | bytes, ret: str | None) -> tuple[bytes, bytes | None]:
        full_wanted = (ret or "").upper() == "FULL"
        if isinstance(message, bytes):
            if full_wanted and len(message) <= MAX_FULL_RETURN:
                return b"", message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            data = message[:MAX_HEADER_IN_DSN]
        else:
            try:
                size = message.stat().st_size
                with open(message, "rb") as fh:
                    if full_wanted and size <= MAX_FULL_RETURN:
                        full = fh.read()
                        return b"", full.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                    data = fh.read(MAX_HEADER_IN_DSN)
            except OSError:
                return b"", None
        data = data.replace(b"\r\n", b"\n")
        end = data.find(b"\n\n")
        header = data if end < 0 else data[: end + 1]
        return header.replace(b"\n", b"\r\n"), None
