"""Sieve at delivery: the owner of an account runs its active script over
each message it delivers to that account, and carries out the result.

:meth:`SieveFilter.plan` runs on the member that owns the account (the
delivery layer calls it only for a local placement, after any cluster
hand-off), with the account's store open.  It reads the active script,
runs it in a worker thread within the CPU budget, and returns a
:class:`Plan`: the copies to append (mailbox, flags), the message with
header edits, a refusal (``reject``/``ereject``: a permanent ``550 5.7.1``
result, which SMTP turns into a refusal at DATA or a delivery status
notification), and the messages to send afterwards (redirects and vacation
replies), which go out through the outbound queue only after the copies are
durable.

Failure policy (RFC 5228 2.10.6): a script that does not compile, crosses a
limit or fails at run time files the message into INBOX, and the reason is
logged.  A message larger than ``MAX_FILTERED_MESSAGE`` is not filtered.

Loops: a redirected copy carries ``X-Sieve-Redirected-From: <account>``; a
message that already names this account there is not redirected again
(kept instead), nor is one with more than ``MAX_RECEIVED_FOR_REDIRECT``
Received fields.  Vacation replies use the null sender (RFC 5230 5.1) and
``Auto-Submitted``, so they never trigger another vacation or a bounce.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamail import __version__, names
from dynamail.accounts import AccountRef
from dynamail.sieve import limits
from dynamail.sieve.actions import Envelope, FileInto, Outcome, Redirect, Reject, Vacation
from dynamail.sieve.commands import Script, compile_script
from dynamail.sieve.grammar import SieveError
from dynamail.sieve.interpreter import Run
from dynamail.sieve.message import SieveMessage
from dynamail.sieve.scripts import DUPLICATE_KEY, VACATION_KEY, ScriptStore, blobs_of
from dynamail.sieve.vacation import ResponseLog, build_reply, refusal

log = logging.getLogger("dynamail.sieve")

#: Messages larger than this are delivered to INBOX without running the script.
MAX_FILTERED_MESSAGE = 32 * 1024 * 1024
#: Compiled scripts kept in memory, keyed by the hash of their text.
COMPILED_CACHE = 256
LOOP_HEADER = "X-Sieve-Redirected-From"
#: How long a delivery's sent redirects and replies are remembered (longer
#: than the outbound queue keeps retrying, so a retried delivery sends none again).
SENT_REMEMBERED = 6 * 86400
SENT_KEY = "sieve.sent"

#: send(sender, recipient, message): hands one message to the outbound queue.
Sender = Callable[[str, str, bytes], Awaitable[None]]

_SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}


@dataclass
class Copy:
    mailbox: str
    flags: frozenset[str]
    create: bool = False


@dataclass
class Plan:
    copies: list[Copy]
    data: bytes | None = None  # the edited message; None: the original
    refuse: str | None = None  # reject/ereject reason
    outgoing: list[tuple[str, str, bytes]] = field(default_factory=list)  # (sender, recipient, message)
    duplicates: dict[str, float] = field(default_factory=dict)  # RFC 7352 records to keep
    note: str = ""
    delivery: str | None = None  # the delivery's copy id: a retry sends nothing twice


def keep_plan(note: str = "") -> Plan:
    return Plan([Copy("INBOX", frozenset())], note=note)


def _canonical_flags(flags: frozenset[str]) -> frozenset[str]:
    """System flags in their canonical case; keywords that are IMAP atoms (RFC 9051 9)."""
    out: set[str] = set()
    for f in flags:
        if f.startswith("\\"):
            if f.lower() in _SYSTEM_FLAGS:
                out.add(_SYSTEM_FLAGS[f.lower()])
        elif f and len(f) <= 128 and all(33 <= ord(c) < 127 and c not in '(){%*"\\]' for c in f):
            out.add(f)
    return frozenset(out)


class SieveFilter:
    def __init__(self, hostname: str, send: Sender | None = None,
                 own_addresses: Callable[[AccountRef], list[str]] | None = None) -> None:
        self.hostname = hostname
        self.send = send
        #: the account's other addresses (aliases, domain aliases): vacation
        #: answers mail addressed to any of them (RFC 5230 4.5)
        self.own_addresses = own_addresses
        #: RFC 5183 items that describe this server
        self.environment = {"domain": hostname, "host": hostname, "version": __version__}
        self._compiled: collections.OrderedDict[str, Script] = collections.OrderedDict()

    def compile(self, text: str) -> Script:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        script = self._compiled.get(digest)
        if script is None:
            script = compile_script(text)
            self._compiled[digest] = script
            while len(self._compiled) > COMPILED_CACHE:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(digest)
        return script

    async def plan(self, ref: AccountRef, store: Any, message: Path | bytes, sender: str | None,
                   delivery: str | None = None) -> Plan:
        """What to do with ``message`` for ``ref``; never raises for a script's fault."""
        scripts = ScriptStore(blobs_of(store))
        try:
            active = await scripts.active()
        except (OSError, ValueError) as exc:
            log.warning("sieve: scripts of %s unreadable (%s); message kept in INBOX", ref, exc)
            return keep_plan("scripts unreadable")
        if active is None:
            return keep_plan()
        name, text = active
        loop = asyncio.get_running_loop()
        if isinstance(message, bytes):
            data = message
        else:
            size = await loop.run_in_executor(None, lambda: Path(message).stat().st_size)
            if size > MAX_FILTERED_MESSAGE:
                log.info("sieve: message of %d octets for %s not filtered (limit %d)", size, ref, MAX_FILTERED_MESSAGE)
                return keep_plan("message too large to filter")
            data = await loop.run_in_executor(None, Path(message).read_bytes)
        if len(data) > MAX_FILTERED_MESSAGE:
            return keep_plan("message too large to filter")
        try:
            script = self.compile(text)
            mailboxes = frozenset(m.name for m in await store.list_mailboxes())
            seen: dict[str, float] = {}
            if "duplicate" in script.requires:
                seen = ResponseLog.load(await blobs_of(store).get_meta(DUPLICATE_KEY)).records
            library = await self._library(scripts, name, script)
            envelope = Envelope(sender, ref.address)
            msg = SieveMessage.parse(data)
            outcome = await loop.run_in_executor(
                None, lambda: Run(script, msg, envelope, mailboxes=mailboxes, seen=seen,
                                  environment=self.environment, library=library,
                                  delivery=delivery).execute()
            )
        except SieveError as exc:
            log.warning("sieve: script %r of %s failed: %s; message kept in INBOX", name, ref, exc)
            return keep_plan(f"script failed: {exc}")
        for warning in outcome.warnings:
            log.info("sieve: script %r of %s: %s", name, ref, warning)
        plan = await self._carry_out(ref, store, msg, outcome, sender, mailboxes)
        plan.delivery = delivery
        return plan

    async def _library(self, scripts: ScriptStore, name: str, script: Script) -> dict[str, Script]:
        """The scripts ``script`` includes (RFC 6609), directly or not, compiled."""
        library: dict[str, Script] = {name: script}
        pending = list(script.includes)
        while pending and len(library) <= limits.MAX_INCLUDES:
            other = pending.pop()
            if other in library:
                continue
            text = await scripts.get(other)
            if text is None:
                continue  # a run-time error when it is included, unless :optional
            compiled = self.compile(text)
            library[other] = compiled
            pending.extend(compiled.includes)
        return library

    async def _carry_out(self, ref: AccountRef, store: Any, msg: SieveMessage, outcome: Outcome,
                         sender: str | None, mailboxes: frozenset[str] = frozenset()) -> Plan:
        plan = Plan([], outcome.message if outcome.message != msg.data else None,
                    duplicates=dict(outcome.duplicates))
        for action in outcome.actions:
            if isinstance(action, FileInto):
                box = action.mailbox
                try:
                    names.mailbox_name(box, "/")
                except names.BadName:
                    log.warning("sieve: %s: fileinto %r: not a mailbox name; filed into INBOX", ref, box)
                    box = "INBOX"
                if box != "INBOX" and not action.create and mailboxes and box not in mailboxes:
                    # RFC 5228 4.1: a missing mailbox is an error; the message is kept (once)
                    log.warning("sieve: %s: fileinto %r: no such mailbox; filed into INBOX", ref, box)
                    box = "INBOX"
                if any(c.mailbox == box for c in plan.copies):
                    continue
                plan.copies.append(Copy(box, _canonical_flags(action.flags), action.create))
            elif isinstance(action, Reject):
                plan.refuse = action.reason
            elif isinstance(action, Redirect):
                self._redirect(ref, msg, outcome, action, sender, plan)
            elif isinstance(action, Vacation):
                await self._vacation(ref, store, msg, action, sender, plan)
        return plan

    def _redirect(self, ref: AccountRef, msg: SieveMessage, outcome: Outcome, action: Redirect,
                  sender: str | None, plan: Plan) -> None:
        seen = {v.strip().lower() for v in msg.values(LOOP_HEADER)}
        hops = len(msg.values("received"))
        if ref.address.lower() in seen or hops > limits.MAX_RECEIVED_FOR_REDIRECT:
            log.warning("sieve: %s: redirect to %s refused (mail loop); message kept", ref, action.address)
            if not any(c.mailbox == "INBOX" for c in plan.copies):
                plan.copies.append(Copy("INBOX", frozenset()))
            return
        head = f"{LOOP_HEADER}: {ref.address}\r\n".encode()
        # RFC 5228 4.2: the envelope sender is kept; the message as edited
        plan.outgoing.append((sender or "", action.address, head + outcome.message))

    async def _vacation(self, ref: AccountRef, store: Any, msg: SieveMessage, action: Vacation,
                        sender: str | None, plan: Plan) -> None:
        own: list[str] = []
        if self.own_addresses is not None:
            try:
                own = await asyncio.get_running_loop().run_in_executor(None, self.own_addresses, ref)
            except Exception:
                log.warning("sieve: %s: aliases unreadable; vacation knows only the address", ref)
        why = refusal(msg, sender, ref.address, action, own)
        if why is not None:
            log.info("sieve: %s: no vacation reply: %s", ref, why)
            return
        assert sender
        blobs = blobs_of(store)
        responses = ResponseLog.load(await blobs.get_meta(VACATION_KEY))
        if not responses.due(sender, action.handle):
            log.info("sieve: %s: no vacation reply to %s: already answered within the period", ref, sender)
            return
        responses.record(sender, action.handle, action.period)
        await blobs.put_meta(VACATION_KEY, responses.dump())
        reply = build_reply(msg, sender, ref.address, action, self.hostname)
        plan.outgoing.append(("", sender, reply))  # RFC 5230 5.1: null envelope sender

    async def finish(self, ref: AccountRef, store: Any, plan: Plan) -> None:
        """After the copies are durable: keep the duplicate records, then hand
        the plan's redirects and replies to the outbound queue."""
        if plan.duplicates:
            blobs = blobs_of(store)
            log_ = ResponseLog.load(await blobs.get_meta(DUPLICATE_KEY))
            log_.merge(plan.duplicates, limits.DUPLICATE_MAX_RECORDS)
            await blobs.put_meta(DUPLICATE_KEY, log_.dump())
        if not plan.outgoing:
            return
        if plan.delivery is None:
            await self.send_all(ref, plan)
            return
        # a retried delivery (same copy id) does not send its redirects again
        blobs = blobs_of(store)
        sent = ResponseLog.load(await blobs.get_meta(SENT_KEY))
        todo = [o for o in plan.outgoing if sent.due(o[1], plan.delivery)]
        if len(todo) < len(plan.outgoing):
            log.info("sieve: %s: %d message(s) of this delivery were sent before", ref, len(plan.outgoing) - len(todo))
        plan.outgoing = todo
        await self.send_all(ref, plan)
        for _sender, recipient, _data in todo:
            sent.record(recipient, plan.delivery, SENT_REMEMBERED)
        if todo:
            await blobs.put_meta(SENT_KEY, sent.dump())

    async def send_all(self, ref: AccountRef, plan: Plan) -> None:
        """Hand the plan's redirects and replies to the outbound queue."""
        for sender, recipient, data in plan.outgoing:
            if self.send is None:
                log.warning("sieve: %s: no outbound queue; message to %s not sent", ref, recipient)
                continue
            try:
                await self.send(sender, recipient, data)
                log.info("sieve: %s: queued a message to %s", ref, recipient)
            except Exception:
                log.exception("sieve: %s: queuing a message to %s failed", ref, recipient)
