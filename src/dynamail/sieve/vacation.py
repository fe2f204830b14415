"""The vacation extension (RFC 5230, RFC 6131 ``:seconds``): whom to answer,
how often, and the reply itself.

A reply goes out only when every rule of RFC 5230 4.5 and 4.6 (and RFC
3834 2) allows it: the envelope sender is not null and not one of the
user's own addresses; the message is not auto-submitted, not bulk or list
mail (``Precedence``, ``List-*`` fields), not from a system address
(``MAILER-DAEMON``, ``owner-*``, ``*-request``, ...); and one of the user's
addresses appears in a recipient field.  The response log
(:class:`ResponseLog`) remembers, per sender and handle, until when no
further reply is sent (RFC 5230 4.1 ``:days``); it is stored with the
account and bounded to ``VACATION_MAX_RECORDS`` entries.
"""

from __future__ import annotations

import email.message
import email.policy
import email.utils
import hashlib
import json
import time
from collections.abc import Callable, Iterable

from dynamail.sieve import limits
from dynamail.sieve.actions import Vacation
from dynamail.sieve.commands import Call, Value
from dynamail.sieve.message import SieveMessage

_SYSTEM_LOCALPARTS = frozenset({
    "mailer-daemon", "listserv", "majordomo", "postmaster", "noreply", "no-reply", "root",
})
_LIST_FIELDS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post",
                "list-owner", "list-archive")
_RECIPIENT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")


def vacation_action(call: Call, s: Callable[[Value | None], str],
                    sl: Callable[[Value | None], tuple[str, ...]]) -> Vacation:
    """The Vacation action of one ``vacation`` command, arguments expanded."""
    if "seconds" in call.tags:
        period = call.number("seconds", limits.VACATION_MIN_SECONDS)
        period = max(limits.VACATION_MIN_SECONDS, min(period, limits.VACATION_MAX_DAYS * 86400))
    else:
        days = call.number("days", limits.VACATION_DEFAULT_DAYS)
        period = max(limits.VACATION_MIN_DAYS, min(days, limits.VACATION_MAX_DAYS)) * 86400
    reason = s(call.args[0])[: limits.VACATION_MAX_REASON]
    subject = s(call.tags["subject"])[: limits.VACATION_MAX_SUBJECT] if "subject" in call.tags else None
    from_ = s(call.tags["from"]) if "from" in call.tags else None
    mime = bool(call.tags.get("mime"))
    if "handle" in call.tags:
        handle = s(call.tags["handle"])
    else:  # RFC 5230 4.2: the implicit handle depends on the reply's content
        handle = "implicit:" + hashlib.sha256(
            "\0".join([reason, subject or "", from_ or "", "mime" if mime else ""]).encode()
        ).hexdigest()[:32]
    return Vacation(reason, subject, from_, sl(call.tags.get("addresses")), mime, handle, period)


def _addr(text: str) -> str:
    return email.utils.parseaddr(text)[1].lower() or text.strip().lower()


def refusal(msg: SieveMessage, sender: str | None, recipient: str, action: Vacation,
            own: Iterable[str] = ()) -> str | None:
    """Why no reply may be sent (RFC 5230 4.5, 4.6; RFC 3834 2); None if one may."""
    if not sender:
        return "null or unknown envelope sender"
    mine = {recipient.lower(), *(a.lower() for a in own), *(_addr(a) for a in action.addresses)}
    if action.from_:
        mine.add(_addr(action.from_))
    sender_l = sender.lower()
    if sender_l in mine:
        return "the sender is the user"
    for value in msg.values("auto-submitted"):
        if value.split(";")[0].strip().lower() != "no":
            return "the message is auto-submitted"
    for value in msg.values("precedence"):
        if value.strip().lower() in ("bulk", "list", "junk"):
            return "the message is bulk or list mail"
    for name in _LIST_FIELDS:
        if msg.values(name):
            return "the message comes from a mailing list"
    local = sender_l.rpartition("@")[0]
    if local in _SYSTEM_LOCALPARTS or local.startswith("owner-") or local.endswith(("-request", "-owner")):
        return "the sender is a system address"
    for name in _RECIPIENT_FIELDS:
        if any(a.lower() in mine for a in msg.raw_addresses(name)):
            return None
    return "none of the user's addresses is a recipient"


def build_reply(msg: SieveMessage, sender: str, recipient: str, action: Vacation, hostname: str) -> bytes:
    """The reply (RFC 5230 5): to the envelope sender, marked auto-replied."""
    subject = action.subject
    if subject is None:
        original = (msg.values("subject") or [""])[0]
        subject = "Auto: " + original if original else "Automated reply"
    reply = email.message.EmailMessage(policy=email.policy.SMTP)
    reply["From"] = action.from_ or recipient
    reply["To"] = sender
    reply["Subject"] = subject.replace("\r", " ").replace("\n", " ")
    reply["Date"] = email.utils.formatdate(localtime=False)
    reply["Message-ID"] = email.utils.make_msgid(domain=hostname)
    reply["Auto-Submitted"] = "auto-replied (vacation)"  # RFC 3834 5, RFC 5230 5.6
    msgid = (msg.values("message-id") or [""])[0].strip()
    if msgid:
        reply["In-Reply-To"] = msgid  # RFC 5230 5.8
        refs = " ".join([*(msg.values("references") or [""])[0].split(), msgid])
        reply["References"] = refs[-900:]
    if action.mime:
        head = reply.as_bytes(policy=email.policy.SMTP).split(b"\r\n\r\n", 1)[0]
        entity = action.reason.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
        return head + b"\r\nMIME-Version: 1.0\r\n" + entity
    reply.set_content(action.reason)
    return reply.as_bytes(policy=email.policy.SMTP)


class ResponseLog:
    """When each (sender, handle) may be answered again (RFC 5230 4.2)."""

    def __init__(self, records: dict[str, float] | None = None) -> None:
        self.records: dict[str, float] = dict(records or {})

    @staticmethod
    def key(sender: str, handle: str) -> str:
        return hashlib.sha256(f"{sender.lower()}\0{handle}".encode()).hexdigest()[:32]

    @classmethod
    def load(cls, blob: bytes | None) -> ResponseLog:
        if not blob:
            return cls()
        try:
            raw = json.loads(blob)
        except ValueError:
            return cls()
        if not isinstance(raw, dict):
            return cls()
        return cls({str(k): float(v) for k, v in raw.items() if isinstance(v, (int, float))})

    def dump(self) -> bytes:
        return json.dumps(self.records, sort_keys=True).encode()

    def due(self, sender: str, handle: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.records.get(self.key(sender, handle), 0.0) <= now

    def record(self, sender: str, handle: str, period: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.records = {k: v for k, v in self.records.items() if v > now}
        self.records[self.key(sender, handle)] = now + period
        while len(self.records) > limits.VACATION_MAX_RECORDS:
            oldest = min(self.records, key=self.records.__getitem__)
            del self.records[oldest]

    def merge(self, records: dict[str, float], bound: int, now: float | None = None) -> None:
        """Add ``records`` (key -> until when), drop expired ones, keep at most ``bound``."""
        now = time.time() if now is None else now
        self.records = {k: v for k, v in {**self.records, **records}.items() if v > now}
        if len(self.records) > bound:
            keep = sorted(self.records.items(), key=lambda kv: kv[1])[-bound:]
            self.records = dict(keep)
