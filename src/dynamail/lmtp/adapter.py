"""The LMTP listener (RFC 2033), port 24 plus the port offset.

An existing MTA (Postfix ``lmtp:``, Exim ``lmtp`` transport …) hands mail to
the cluster here.  The protocol is the SMTP server core in ``Mode.LMTP``
(``LHLO`` instead of ``HELO``/``EHLO``); this adapter is the SMTP adapter's
session with one difference at the end of DATA: one reply per accepted
recipient, in RCPT order (RFC 2033 4.2), each given only once that
recipient's copies are durable:

* every local account of the recipient stored: ``250``;
* one of its copies failed temporarily (storage error, owner unreachable in
  a cluster, mailbox full): ``4xx`` for that recipient only, so the MTA
  retries just that one;
* refused for good (message bigger than the quota): ``5xx``;
* a forwarder to another domain: ``250`` once the outbound queue holds it.

LMTP is final delivery from a trusted MTA: no AUTH, no relaying (a
recipient outside our domains is refused with ``550 5.7.1``), no sender
checks; the MTA in front is expected to have done those.  Bind it to an
address only that MTA reaches (``listen``, or a firewall).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from dynamail.delivery import DeliveryResult
from dynamail.net import Connection, ListenerSpec
from dynamail.server.context import ServerContext
from dynamail.smtp import replies as R
from dynamail.smtp.adapter import SmtpSession, limits_for, start_queue
from dynamail.smtp.core import Mode, SessionConfig, SmtpServer
from dynamail.smtp.limits import IDLE_TIMEOUT, MAX_CONNECTIONS_PER_ADDRESS
from dynamail.smtp.replies import Reply

__all__ = ["LmtpSession", "listeners", "session"]

log = logging.getLogger("dynamail.lmtp")

LMTP_PORT = 24


def listeners(ctx: ServerContext) -> list[ListenerSpec]:
    start_queue(ctx)  # forwarders to other domains go out through the queue
    idle = min(IDLE_TIMEOUT, float(getattr(ctx.config.limits, "idle_timeout", IDLE_TIMEOUT)))
    return [
        ListenerSpec(
            name="lmtp",
            port=LMTP_PORT,
            handler=functools.partial(session, ctx),
            idle_timeout=idle,
            max_per_address=MAX_CONNECTIONS_PER_ADDRESS,
            busy_reply=b"421 4.7.0 Too many connections from your address, try again later\r\n",
        )
    ]


async def session(ctx: ServerContext, conn: Connection) -> None:
    core = SmtpServer(
        SessionConfig(
            hostname=ctx.hostname,
            mode=Mode.LMTP,
            tls_available=conn.can_start_tls,
            tls_active=conn.is_tls,
            limits=limits_for(ctx),
        )
    )
    await LmtpSession(ctx, conn, core, Mode.LMTP).run()


def _reply_for(result: DeliveryResult) -> Reply:
    if result.ok:
        return Reply(250, "2.0.0", "delivered")
    status = result.status
    if status[:1] != str(result.code)[0]:
        status = f"{str(result.code)[0]}.0.0"
    return Reply(result.code, status, result.text)


class LmtpSession(SmtpSession):
    """An SMTP session whose end of DATA answers once per recipient."""

    async def _store(self, path: Path | bytes) -> list[Reply]:
        ctx = self.ctx
        sender = "" if self.sender is None else str(self.sender)
        by_ref: dict[object, DeliveryResult] = {}
        if self.local:
            if ctx.delivery is None:
                return [R.LOCAL_ERROR] * len(self.accepted)
            results = await ctx.delivery.deliver(self.local, path, sender=sender)
            by_ref = {r.ref: r for r in results}
            delivered = [r.ref.address for r in results if r.ok]
            queue = ctx.extras.get("smtp_queue")
            if delivered and queue is not None:
                queue.wake_local(delivered)
        queued_ok = True
        if self.remote:
            queue = ctx.extras.get("smtp_queue")
            try:
                if queue is None:
                    raise RuntimeError("no outbound queue")
                await queue.enqueue(sender, self.remote, path, params=self.mail_params)
            except Exception:
                log.exception("%s queueing forwarded copies failed", self.session_id)
                queued_ok = False
        replies: list[Reply] = []
        for address, refs, forwards in self.accepted:
            reply = Reply(250, "2.0.0", f"<{address}> delivered as {self.session_id}-{os.getpid()}")
            outcomes = [by_ref[ref] for ref in refs if ref in by_ref]
            failed = [r for r in outcomes if not r.ok]
            if any(r.temporary for r in failed):
                reply = _reply_for(next(r for r in failed if r.temporary))
            elif failed:
                reply = _reply_for(failed[0])
            elif forwards and not queued_ok:
                reply = R.LOCAL_ERROR
            replies.append(reply)
            log.info("%s LMTP <%s> -> <%s>: %d", self.session_id, sender, address, reply.code)
        return replies
