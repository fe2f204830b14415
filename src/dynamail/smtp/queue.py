"""The durable outbound queue on disk: ``<base>/Queue/`` (the sans-IO half).

Each queued message is two files: ``<id>.msg`` (the message, as received,
with our Received header) and ``<id>.env`` (the envelope as JSON: sender,
recipients with their state, attempts, next attempt time, DSN parameters).
:meth:`QueueStore.write_entry` writes and fsyncs the message, then writes the
envelope with ``atomic_write`` (temporary file, fsync, rename, directory
fsync): the envelope's appearance is the commit point, so a crash at any
instant leaves either no entry or a complete one, and SMTP answers 250 only
after it.  :meth:`QueueStore.load` scans the directory at start: complete
entries are due at once; a message file without an envelope (a crash
mid-enqueue) is removed.

Attempts follow RFC 5321 4.5.4.1: per-recipient outcomes, 2xx done, 5xx
failed, 4xx retried with exponential back-off (``retry_seconds`` doubling,
at most ``MAX_BACKOFF``) until ``expire_seconds``, after which the remaining
recipients fail.  An entry that still holds a copy for one of our own
accounts (its owner was unreachable during a cluster fail-over, which takes
seconds) is retried on the short ``LOCAL_RETRY_SCHEDULE`` first, then with
the usual back-off.  Failed recipients produce one delivery status notification
(RFC 3464, built here) to the sender unless the sender is null or the
recipient asked NOTIFY=NEVER (RFC 3461); a notification is itself sent with
the null sender, so bounces never loop.

This module does file I/O only; the delivery loop, the SMTP client transport
and MX lookups run in ``dynamail.smtp.adapter`` (``OutboundQueue``).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dynamail.durable import fsync_dir, remove_stale_temporaries
from dynamail.filemodes import open_private, private_dirs, write_private
from dynamail.smtp.dsnparams import envid_for_report, orcpt_for_report

log = logging.getLogger("dynamail.smtp.queue")

QUEUE_DIR = "Queue"
READ_CHUNK = 64 * 1024
MAX_BACKOFF = 4 * 3600.0
# seconds before the 1st, 2nd, ... retry of a copy for one of our accounts
# (a cluster hand-off): an ownership fail-over completes within seconds
LOCAL_RETRY_SCHEDULE: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
DELAY_NOTICE_AFTER = 4 * 3600.0  # a NOTIFY=DELAY recipient still pending this long is told
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
    delay_notified: bool = False  # a "delayed" DSN was sent for it
    dsn_passed: bool = False  # relayed to a server that took the DSN request (RFC 3461 5.2.2)

    def wants(self, event: str) -> bool:
        """RFC 3461 4.1: NOTIFY=SUCCESS, FAILURE, DELAY or NEVER.  Without
        NOTIFY, failures are reported (and nothing else)."""
        if self.notify is None:
            return event == "FAILURE"
        return event in {w.strip().upper() for w in self.notify.split(",")}

    @property
    def action(self) -> str:
        """The DSN Action (RFC 3464 2.3.3) for this recipient's state."""
        if self.state == "failed":
            return "failed"
        if self.state == "pending":
            return "delayed"
        return "delivered" if self.local else "relayed"  # the next server took no DSN request


@dataclass
class Envelope:
    id: str
    sender: str  # "" for the null reverse-path
    recipients: list[QueuedRecipient]
    created: float
    next_attempt: float
    attempts: int = 0
    params: dict[str, str | None] = field(default_factory=dict)
    # the delivery id of its local copies (exactly-once hand-off): the id of
    # the SMTP transaction that tried them first, else the entry's own id
    delivery_id: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        raw = json.loads(data)
        raw["recipients"] = [QueuedRecipient(**r) for r in raw["recipients"]]
        return cls(**raw)

    def pending(self) -> list[QueuedRecipient]:
        return [r for r in self.recipients if r.state == "pending"]


_INTROS = (
    ("failed", "Your message could not be delivered to the following recipients:"),
    ("delayed", "Delivery to the following recipients is delayed; the mail system keeps trying:"),
    ("delivered", "Your message was delivered to the following recipients:"),
    ("relayed", "Your message was handed on to the following recipients' mail systems:"),
)


def enhanced_status(code: int, text: str) -> str:
    m = _STATUS.match(text.strip())
    if m and m.group(1) == str(code)[0]:
        return m.group(0)
    return f"{str(code)[0]}.0.0" if code >= 400 else "5.0.0"


class QueueStore:
    """The files of the queue and the rules that change an envelope."""

    def __init__(
        self, directory: Path, *, hostname: str, retry_seconds: float = 300.0,
        expire_seconds: float = 5 * 24 * 3600.0, delay_notice_after: float = DELAY_NOTICE_AFTER,
    ) -> None:
        self.directory = directory
        self.hostname = hostname
        self.retry_seconds = retry_seconds
        self.expire_seconds = expire_seconds
        self.delay_notice_after = delay_notice_after

    def paths(self, qid: str) -> tuple[Path, Path]:
        return self.directory / f"{qid}.msg", self.directory / f"{qid}.env"

    def load(self) -> dict[str, Envelope]:
        """Every committed entry, due at once; debris of crashes removed."""
        private_dirs(self.directory)
        remove_stale_temporaries(self.directory)
        envs = {p.stem for p in self.directory.glob("*.env")}
        for msg in self.directory.glob("*.msg"):
            if msg.stem not in envs:
                msg.unlink(missing_ok=True)  # crashed before the commit point
        entries: dict[str, Envelope] = {}
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
            entries[env.id] = env
        return entries

    @staticmethod
    def new_envelope(
        sender: str,
        recipients: Sequence[tuple[str, dict[str, str | None]]] | Sequence[str],
        params: dict[str, str | None] | None = None,
        local: Sequence[str] = (),
        delivery_id: str = "",
    ) -> Envelope:
        """``local`` names accounts of ours whose owner was unreachable;
        ``delivery_id`` is the id their first attempt carried."""
        rcpts: list[QueuedRecipient] = [QueuedRecipient(address, local=True) for address in local]
        for item in recipients:
            if isinstance(item, str):
                rcpts.append(QueuedRecipient(item))
            else:
                address, rparams = item
                rcpts.append(QueuedRecipient(address, rparams.get("NOTIFY"), rparams.get("ORCPT")))
        now = time.time()
        qid = f"{int(now * 1000):x}{secrets.token_hex(6)}"
        kept = {k: v for k, v in (params or {}).items() if k in ("RET", "ENVID", "BODY", "SMTPUTF8")}
        return Envelope(qid, sender, rcpts, now, now, 0, kept, delivery_id or qid)

    def write_entry(self, env: Envelope, message: Path | bytes, prefix: bytes = b"") -> None:
        """Make the entry durable: message file (``prefix``, e.g. DKIM
        signature fields, in front), then the envelope (commit point)."""
        private_dirs(self.directory)
        msg_path, env_path = self.paths(env.id)
        tmp = self.directory / f".{env.id}.msg.{secrets.token_hex(4)}.tmp"
        with open_private(tmp, "xb") as out:
            out.write(prefix)
            if isinstance(message, bytes):
                out.write(message)
            else:
                with open(message, "rb") as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, msg_path)
        write_private(env_path, env.to_json())  # fsyncs the directory too

    def save(self, env: Envelope) -> None:
        write_private(self.paths(env.id)[1], env.to_json())

    def remove(self, env: Envelope) -> None:
        msg_path, env_path = self.paths(env.id)
        env_path.unlink(missing_ok=True)
        fsync_dir(self.directory)
        msg_path.unlink(missing_ok=True)

    def backoff(self, attempts: int, *, local: bool = False) -> float:
        """Seconds until the next attempt after ``attempts`` attempts; with
        ``local`` (a copy for one of our accounts) the short schedule comes
        first, then the usual back-off starting again at ``retry_seconds``."""
        if local:
            if attempts <= len(LOCAL_RETRY_SCHEDULE):
                return LOCAL_RETRY_SCHEDULE[max(attempts, 1) - 1]
            attempts -= len(LOCAL_RETRY_SCHEDULE)
        return float(min(self.retry_seconds * (2 ** max(attempts - 1, 0)), MAX_BACKOFF))

    @staticmethod
    def has_local(env: Envelope) -> bool:
        """Whether a copy for one of our accounts is still pending."""
        return any(r.local for r in env.pending())

    def expire_if_due(self, env: Envelope, now: float) -> None:
        """Past the maximum lifetime every pending recipient fails (4.4.7)."""
        if now - env.created > self.expire_seconds:
            for r in env.pending():
                r.state, r.code = "failed", 500
                r.text = f"4.4.7 delivery time expired; last error: {r.text or 'none'}"

    @staticmethod
    def record(r: QueuedRecipient, code: int, text: str) -> None:
        r.code, r.text = code, text
        if 200 <= code < 300:
            r.state = "sent"
        elif code >= 500:
            r.state = "failed"

    def finish_attempt(self, env: Envelope, now: float) -> bool:
        """Count the attempt; True when the entry is complete (nothing pending)."""
        env.attempts += 1
        if env.pending():
            env.next_attempt = now + self.backoff(env.attempts, local=self.has_local(env))
            return False
        return True

    @staticmethod
    def to_notify(env: Envelope) -> list[QueuedRecipient]:
        """Recipients of a completed entry the sender is told about: failures
        (unless NOTIFY=NEVER) and, when asked, successes, except those relayed
        to a server that took the DSN request on.  None for the null sender."""
        if not env.sender:
            return []
        return [
            r for r in env.recipients
            if (r.state == "failed" and r.wants("FAILURE"))
            or (r.state == "sent" and r.wants("SUCCESS") and not r.dsn_passed)
        ]

    def to_delay_notify(self, env: Envelope, now: float) -> list[QueuedRecipient]:
        """Pending recipients that asked NOTIFY=DELAY and have waited
        ``delay_notice_after``; each is reported once (marked here)."""
        if not env.sender or now - env.created < self.delay_notice_after:
            return []
        due = [r for r in env.pending() if r.wants("DELAY") and not r.delay_notified]
        for r in due:
            r.delay_notified = True
        return due

    def build_dsn(self, env: Envelope, recipients: list[QueuedRecipient], message: Path | bytes) -> bytes:
        """An RFC 3464 multipart/report about ``recipients``, each with the
        Action of its state (failed, delayed, delivered, relayed)."""
        boundary = f"=_dynamail_{secrets.token_hex(12)}"
        now = email.utils.formatdate(localtime=False)
        header, full = self._original(message, env.params.get("RET"))
        actions = {r.action for r in recipients}
        if "failed" in actions:
            subject = "Undelivered Mail Returned to Sender"
        elif "delayed" in actions:
            subject = "Delayed Mail (still being retried)"
        else:
            subject = "Successful Mail Delivery Report"
        lines = [
            f"From: Mail Delivery System <MAILER-DAEMON@{self.hostname}>",
            f"To: <{env.sender}>",
            f"Subject: {subject}",
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
        ]
        for action, intro in _INTROS:
            group = [r for r in recipients if r.action == action]
            if group:
                lines += ["", intro, ""]
                lines += [f"  <{r.address}>: {r.code} {r.text}".rstrip() for r in group]
        lines += ["", f"--{boundary}", "Content-Type: message/delivery-status", ""]
        lines.append(f"Reporting-MTA: dns; {self.hostname}")
        envid = envid_for_report(env.params.get("ENVID"))
        if envid:
            lines.append(f"Original-Envelope-Id: {envid}")
        lines.append(f"Arrival-Date: {email.utils.formatdate(env.created, localtime=False)}")
        for r in recipients:
            lines.append("")
            lines.append(f"Final-Recipient: rfc822; {r.address}")
            orcpt = orcpt_for_report(r.orcpt)
            if orcpt:
                lines.append(f"Original-Recipient: {orcpt}")
            lines.append(f"Action: {r.action}")
            if r.action == "failed":
                status = enhanced_status(r.code if r.code >= 500 else 500, r.text)
            elif r.action == "delayed":
                status = enhanced_status(r.code if 400 <= r.code < 500 else 451, r.text)
            else:
                status = "2.0.0"
            lines.append(f"Status: {status}")
            if r.code:
                lines.append(f"Diagnostic-Code: smtp; {r.code} {r.text}"[:900])
            lines.append(f"Last-Attempt-Date: {now}")
            if r.action == "delayed":
                until = email.utils.formatdate(env.created + self.expire_seconds, localtime=False)
                lines.append(f"Will-Retry-Until: {until}")
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


def parse_host_port(text: str, default: int = 25) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[address]:port`` (static MX map, relay host)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port else default
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host:
        return host, int(port)
    return text, default


def is_eightbit(message: Path) -> bool:
    with open(message, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            if not chunk.isascii():
                return True
    return False
