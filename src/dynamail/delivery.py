"""Local delivery: one message, appended once to each of several accounts.

This is the single place where a message becomes mail in an account.  SMTP
(inbound and submission), the outbound queue (bounces) and the cluster layer
(hand-offs from other members) all call :meth:`Delivery.deliver`; nothing here
knows about SMTP sessions.

Invariants:

* a :class:`DeliveryResult` with ``ok`` True means the copy is durable on
  storage (``AccountStore.append`` returns only then); the caller may
  acknowledge the message only when every result it cares about is ``ok``;
* every account is reached through the locator (``accounts.use(ref)``), so a
  cluster member appends only to accounts it owns and hands the others to
  their owner through the :attr:`Delivery.remote` hook;
* copies for several accounts are appended concurrently, so the storage
  engine can group-commit their fsyncs;
* a failure is never raised to the caller: it is a result with an SMTP reply
  code, temporary (4xx: the sender retries) or permanent (5xx: it bounces),
  following RFC 5321 section 4.2 and RFC 3463 enhanced codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from dynamail.accounts import AccountRef
from dynamail.cluster.locator import AccountLocator, AccountUnavailable, Local, Relay
from dynamail.storage.api import (
    AppendRequest,
    MailboxExists,
    NoSuchMailbox,
    QuotaExceeded,
    StorageError,
    Unavailable,
)

if TYPE_CHECKING:
    from dynamail.sieve.filter import SieveFilter

log = logging.getLogger("dynamail.delivery")

Message = Path | bytes
JUNK = "Junk"  # where mail judged as spam is filed (created on first use, \Junk)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of delivering one copy to one account."""

    ref: AccountRef
    ok: bool
    code: int = 250  # SMTP reply code (RFC 5321 section 4.2.3)
    status: str = "2.0.0"  # enhanced status code (RFC 3463)
    text: str = "delivered"
    uid: int | None = None
    member: str = ""  # the cluster member that stored the copy ("" = this server)

    @property
    def temporary(self) -> bool:
        return not self.ok and 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return not self.ok and self.code >= 500


def temporary_failure(ref: AccountRef, text: str, status: str = "4.3.0") -> DeliveryResult:
    return DeliveryResult(ref, False, 451, status, text)


class Unknown:
    """A quota limit not read yet (``None`` is a real value: unlimited)."""


UNKNOWN = Unknown()

#: ``remote(owner, message, mailbox, envelope sender, copy id)``: hand one
#: copy to the owner; the owner's result
RemoteHook = Callable[[Relay, Message, str, "str | None", "str | None"], Awaitable[DeliveryResult]]


async def _no_remote(placement: Relay, message: Message, mailbox: str, sender: str | None = None,
                     delivery_id: str | None = None) -> DeliveryResult:
    return temporary_failure(placement.ref, f"owner {placement.member} not reachable", "4.4.1")


def copy_id(delivery_id: str | None, ref: AccountRef) -> str | None:
    """The delivery id of one copy: the message's id (an SMTP transaction
    or a queue entry) and the account.  Every attempt to deliver that copy
    carries it; the owner stores it with the message in the same durable
    commit, and a repeat answers the first copy's UID instead of storing the
    message again (exactly-once hand-off)."""
    return f"{delivery_id}/{ref.domain}/{ref.name}" if delivery_id else None


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: object) -> int | None:
    """``MaxAccountSize`` as bytes: ``100M``, ``2G``, ``1024``, ``unlimited`` (None)."""
    if value is None:
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    text = str(value).strip().upper()
    if text in ("", "UNLIMITED", "DEFAULT", "0"):
        return None
    unit = ""
    if text[-1] in "KMGT":
        unit, text = text[-1], text[:-1]
    elif text.endswith("B") and len(text) > 1 and text[-2] in "KMGT":
        unit, text = text[-2], text[:-2]
    try:
        return int(float(text) * _UNITS[unit])
    except ValueError:
        return None


def message_size(message: Message) -> int:
    if isinstance(message, bytes):
        return len(message)
    return os.stat(message).st_size


class Delivery:
    """Appends messages to accounts through the locator."""

    def __init__(self, directory: Any, accounts: AccountLocator, metrics: Any = None) -> None:
        self.directory = directory
        self.accounts = accounts
        self.metrics = metrics
        #: Hand-off to the member that owns an account; the cluster layer sets it.
        self.remote: RemoteHook = _no_remote
        #: The account's Sieve script, run by the owner for deliveries to INBOX.
        self.sieve: SieveFilter | None = None

    async def deliver(
        self,
        recipients: list[AccountRef],
        message: Message,
        *,
        mailbox: str = "INBOX",
        flags: frozenset[str] = frozenset(),
        sender: str | None = None,
        limits: Mapping[AccountRef, int | None] | None = None,
        delivery_id: str | None = None,
    ) -> list[DeliveryResult]:
        """Append one copy of ``message`` per distinct account; one result per
        entry of ``recipients`` (duplicates get the result of the first).

        ``sender`` is the envelope sender ("" for ``<>``, None when unknown);
        the account's Sieve script sees it as ``envelope "from"``.
        ``limits`` are quota limits the caller read already in this
        transaction (``quota_limit_sync``), so they are not read again.
        ``delivery_id`` (unique to the message): a copy an earlier attempt
        already stored is not stored again (:func:`copy_id`)."""
        distinct = list(dict.fromkeys(recipients))
        size = message_size(message)
        known = limits or {}
        results = await asyncio.gather(
            *(self._deliver_one(ref, message, size, mailbox, flags, sender, known.get(ref, UNKNOWN),
                                copy_id(delivery_id, ref))
              for ref in distinct)
        )
        by_ref = dict(zip(distinct, results, strict=True))
        for r in results:
            self._count("ok" if r.ok else ("temporary" if r.temporary else "permanent"))
        return [by_ref[ref] for ref in recipients]

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            with contextlib.suppress(Exception):
                self.metrics.deliveries.labels(result=result).inc()

    async def deliver_copy(self, ref: AccountRef, message: Message, *, mailbox: str = "INBOX",
                           flags: frozenset[str] = frozenset(), sender: str | None = None,
                           copy: str | None = None) -> DeliveryResult:
        """One copy handed over by another member, with the copy id the
        sending member computed (:func:`copy_id`)."""
        r = await self._deliver_one(ref, message, message_size(message), mailbox, flags, sender,
                                    copy=copy)
        self._count("ok" if r.ok else ("temporary" if r.temporary else "permanent"))
        return r

    async def _deliver_one(
        self, ref: AccountRef, message: Message, size: int, mailbox: str, flags: frozenset[str],
        sender: str | None = None, limit: int | Unknown | None = UNKNOWN, copy: str | None = None,
    ) -> DeliveryResult:
        try:
            async with self.accounts.use(ref) as placement:
                if isinstance(placement, Relay):
                    # the owner runs the account's Sieve script, with the envelope sender
                    return await self.remote(placement, message, mailbox, sender, copy)
                assert isinstance(placement, Local)
                if isinstance(limit, Unknown):
                    limit = await self.quota_limit(ref)
                if self.sieve is not None and mailbox == "INBOX":
                    return await self._filtered(placement, message, size, flags, sender, limit, copy)
                return await self._append(placement, message, size, mailbox, flags, limit, copy)
        except AccountUnavailable as exc:
            return temporary_failure(ref, f"account unavailable: {exc}", "4.2.1")
        except Unavailable:
            # fenced by a newer owner or closed under us: the account is
            # moving; in a cluster the copy waits in the queue (4.2.1)
            return temporary_failure(ref, "account moving to another server", "4.2.1")
        except QuotaExceeded:
            return DeliveryResult(ref, False, 452, "4.2.2", "mailbox full")
        except StorageError as exc:
            log.warning("delivery to %s failed: %s", ref, exc)
            return temporary_failure(ref, "local storage error")
        except OSError as exc:
            log.warning("delivery to %s failed: %s", ref, exc)
            return temporary_failure(ref, "local I/O error")

    async def _append(
        self, placement: Local, message: Message, size: int, mailbox: str, flags: frozenset[str],
        limit: int | None, copy: str | None = None,
    ) -> DeliveryResult:
        ref = placement.ref
        if limit is not None:
            if size > limit:
                # the message alone exceeds the account's whole allocation:
                # no retry can succeed (RFC 5321 4.2.2 reply 552, RFC 3463 5.2.2)
                return DeliveryResult(ref, False, 552, "5.2.2", "message exceeds the mailbox quota")
            used, _count = await placement.store.quota_usage()
            if used + size > limit:
                # full now, may have room later: temporary (RFC 3463 4.2.2)
                return DeliveryResult(ref, False, 452, "4.2.2", "mailbox full")
        store = placement.store
        if isinstance(message, bytes):
            uids = await self._append_to(store, mailbox, AppendRequest(message, flags, delivery_id=copy))
        else:
            with open(message, "rb") as fh:
                uids = await self._append_to(store, mailbox, AppendRequest(fh, flags, delivery_id=copy))
        return DeliveryResult(ref, True, 250, "2.0.0", "delivered", uids[0] if uids else None)

    async def _filtered(
        self, placement: Local, message: Message, size: int, flags: frozenset[str], sender: str | None,
        limit: int | None, copy: str | None = None,
    ) -> DeliveryResult:
        """Delivery through the account's Sieve script (``dynamail.sieve.filter``)."""
        assert self.sieve is not None
        ref = placement.ref
        plan = await self.sieve.plan(ref, placement.store, message, sender, copy)
        if plan.refuse is not None:
            # RFC 5429 2.1: refuse at the protocol level where possible (SMTP
            # answers 550 or sends a delivery status notification)
            return DeliveryResult(ref, False, 550, "5.7.1", _reply_text(plan.refuse))
        uid: int | None = None
        for i, kept in enumerate(plan.copies):
            if kept.create and kept.mailbox != "INBOX":
                with contextlib.suppress(MailboxExists):
                    await placement.store.create_mailbox(kept.mailbox)
            data: Message = plan.data if plan.data is not None else message
            result = await self._append(placement, data, len(data) if isinstance(data, bytes) else size,
                                        kept.mailbox, flags | kept.flags, limit,
                                        f"{copy}#{i}" if copy and i else copy)
            if not result.ok:
                return result
            uid = uid if uid is not None else result.uid
        await self.sieve.finish(ref, placement.store, plan)
        text = "delivered" if plan.copies else "delivered (no copy kept by the Sieve script)"
        return DeliveryResult(ref, True, 250, "2.0.0", text, uid)

    async def precheck(
        self, ref: AccountRef, size: int = 0, limit: int | Unknown | None = UNKNOWN
    ) -> DeliveryResult | None:
        """Quota check before a message is accepted (SMTP RCPT, RFC 5321
        4.5.3.1.10): a failure result when the account cannot take a message
        of ``size`` bytes now, None when it can (or when its owner is another
        member, which checks again at delivery).  ``limit``: the quota limit
        when the caller read it already (``quota_limit_sync``)."""
        if isinstance(limit, Unknown):
            limit = await self.quota_limit(ref)
        if limit is None:
            return None
        if size > limit:
            return DeliveryResult(ref, False, 552, "5.2.2", "message exceeds the mailbox quota")
        try:
            async with self.accounts.use(ref) as placement:
                if not isinstance(placement, Local):
                    return None
                used, _count = await placement.store.quota_usage()
        except (AccountUnavailable, StorageError, OSError):
            return None  # decided at delivery time
        if used + max(size, 1) > limit:
            return DeliveryResult(ref, False, 452, "4.2.2", "mailbox full")
        return None

    async def _append_to(self, store: Any, mailbox: str, req: AppendRequest) -> list[int]:
        try:
            return list(await store.append(mailbox, [req]))
        except NoSuchMailbox:
            if mailbox == "INBOX":
                raise
            if mailbox == JUNK:
                # filed as spam before the account ever had a Junk mailbox
                with contextlib.suppress(MailboxExists):
                    await store.create_mailbox(JUNK, special_use="\\Junk")
                if not isinstance(req.data, bytes):
                    _rewind(req.data)
                return list(await store.append(JUNK, [req]))
            # a filing target that vanished: keep the mail in INBOX
            data = req.data
            if not isinstance(data, bytes):
                _rewind(data)
            return list(await store.append("INBOX", [req]))

    def quota_limit_sync(self, ref: AccountRef) -> int | None:
        """``quota_limit`` for a caller already off the event loop (the SMTP
        adapter reads it in the same worker-thread job as the recipient)."""
        getter = getattr(self.directory, "effective_account_settings", None)
        if getter is None or inspect.iscoroutinefunction(getter):
            return None
        try:
            settings = getter(ref)
        except Exception:
            return None
        return parse_size(settings.get("MaxAccountSize")) if isinstance(settings, dict) else None

    async def quota_limit(self, ref: AccountRef) -> int | None:
        """The account's effective ``MaxAccountSize`` in bytes (None: unlimited)."""
        getter = None
        for name in ("effective_account_settings", "account_effective_settings"):
            getter = getattr(self.directory, name, None)
            if getter is not None:
                break
        if getter is None:
            return None
        try:
            if inspect.iscoroutinefunction(getter):
                settings = await getter(ref)
            else:
                # the directory reads files: keep that off the event loop
                settings = await asyncio.get_running_loop().run_in_executor(None, getter, ref)
        except Exception:
            return None
        if not isinstance(settings, dict):
            return None
        return parse_size(settings.get("MaxAccountSize"))


def _reply_text(reason: str) -> str:
    """A reject reason as one line of an SMTP reply (ASCII, bounded)."""
    line = " ".join(reason.split())
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in line)[:200]
    return text or "rejected by the recipient's filter"


def _rewind(fh: BinaryIO) -> None:
    with contextlib.suppress(OSError, ValueError):
        fh.seek(0)
