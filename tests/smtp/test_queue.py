"""The durable outbound queue, in process, against a real SMTP sink."""

from __future__ import annotations

import asyncio
import email
import json
from pathlib import Path
from typing import Any

from dynamail.smtp.outbound import OutboundQueue
from dynamail.smtp.queue import (
    MAX_BACKOFF,
    Envelope,
    QueuedRecipient,
    enhanced_status,
)

from .live import Sink, next_host

MSG = b"From: a@local.example\r\nSubject: queued\r\n\r\nbody\r\n.dot line\r\n"
PORT = 2526


def make_queue(tmp_path: Path, host: str, **kw: object) -> OutboundQueue:
    return OutboundQueue(tmp_path / "Queue", hostname="mx.test", mx_map={"remote.example": f"{host}:{PORT}"}, retry_seconds=10.0, **kw)  # type: ignore[arg-type]


def test_recovery_keeps_only_committed_entries(tmp_path: Path) -> None:
    q = make_queue(tmp_path, "127.0.0.1")
    qdir = tmp_path / "Queue"

    async def run() -> str:
        return await q.enqueue("a@local.example", ["x@remote.example"], MSG)

    qid = asyncio.run(run())
    assert (qdir / f"{qid}.msg").read_bytes() == MSG
    env = json.loads((qdir / f"{qid}.env").read_bytes())
    assert env["sender"] == "a@local.example" and env["recipients"][0]["address"] == "x@remote.example"
    (qdir / "orphan.msg").write_bytes(b"crashed before the envelope")
    (qdir / "lonely.env").write_bytes((qdir / f"{qid}.env").read_bytes().replace(qid.encode(), b"lonely"))
    (qdir / ".x.msg.abcd.tmp").write_bytes(b"partial")
    q2 = make_queue(tmp_path, "127.0.0.1")
    q2._load()
    assert list(q2.entries) == [qid]
    assert sorted(p.name for p in qdir.iterdir()) == sorted([f"{qid}.msg", f"{qid}.env"])


def test_delivered_deferred_and_bounced(tmp_path: Path) -> None:
    host = next_host()
    sink = Sink(host, PORT)
    q = make_queue(tmp_path, host)
    try:
        async def run() -> tuple[Envelope, list[Envelope]]:
            q._load()
            qid = await q.enqueue(
                "a@local.example",
                [("ok@remote.example", {}), ("later@remote.example", {}), ("reject@remote.example", {"ORCPT": "rfc822;reject@remote.example"})],
                MSG, params={"ENVID": "env-1"},
            )
            env = q.entries[qid]
            await q.attempt(env)
            first = Envelope.from_json((tmp_path / "Queue" / f"{qid}.env").read_bytes())
            # expire the entry: the deferred recipient fails too, one DSN for both
            env.created -= 10 * 24 * 3600
            await q.attempt(env)
            return first, list(q.entries.values())

        first, left = asyncio.run(run())
    finally:
        sink.close()
    assert [m[1] for m in sink.messages] == [["ok@remote.example"]]
    assert sink.messages[0][2] == MSG  # dot-stuffing undone by the sink
    states = {r.address: r.state for r in first.recipients}
    assert states == {"ok@remote.example": "sent", "later@remote.example": "pending", "reject@remote.example": "failed"}
    assert first.attempts == 1
    # the sender is not local here, so the DSN itself is queued, with the null sender
    assert len(left) == 1 and left[0].sender == "" and [r.address for r in left[0].recipients] == ["a@local.example"]
    dsn = email.message_from_bytes((tmp_path / "Queue" / f"{left[0].id}.msg").read_bytes())
    assert dsn.get_content_type() == "multipart/report"
    parts = dsn.get_payload()
    assert isinstance(parts, list) and [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = parts[1].as_string()
    assert "Original-Envelope-Id: env-1" in status
    assert "Final-Recipient: rfc822; reject@remote.example" in status and "Status: 5.1.1" in status
    assert "Original-Recipient: rfc822;reject@remote.example" in status
    assert "Final-Recipient: rfc822; later@remote.example" in status and "delivery time expired" in status


def test_no_bounce_for_null_sender_or_notify_never(tmp_path: Path) -> None:
    host = next_host()
    sink = Sink(host, PORT)
    q = make_queue(tmp_path, host)
    try:
        async def run() -> int:
            q._load()
            for sender, params in (("", {}), ("a@local.example", {"NOTIFY": "NEVER"})):
                qid = await q.enqueue(sender, [("reject@remote.example", params)], MSG)
                await q.attempt(q.entries[qid])
            return len(q.entries)

        assert asyncio.run(run()) == 0
    finally:
        sink.close()
    assert list((tmp_path / "Queue").iterdir()) == []


def test_unreachable_host_is_retried_with_backoff(tmp_path: Path) -> None:
    q = make_queue(tmp_path, next_host())  # nothing listens there

    async def run() -> Envelope:
        q._load()
        qid = await q.enqueue("a@local.example", ["x@remote.example"], MSG)
        await q.attempt(q.entries[qid])
        return q.entries[qid]

    env = asyncio.run(run())
    assert env.attempts == 1 and env.pending()[0].code == 451
    assert [q.backoff(n) for n in (1, 2, 3)] == [10.0, 20.0, 40.0]
    assert q.backoff(100) == MAX_BACKOFF


def test_return_full_message_and_status_codes(tmp_path: Path) -> None:
    q = make_queue(tmp_path, "127.0.0.1")
    msg = tmp_path / "m.eml"
    msg.write_bytes(MSG)
    env = Envelope("id", "a@local.example", [QueuedRecipient("x@r.example", state="failed", code=554, text="5.7.1 spam")], 0.0, 0.0, params={"RET": "FULL"})
    dsn = email.message_from_bytes(q.build_dsn(env, env.recipients, msg))
    parts = dsn.get_payload()
    assert isinstance(parts, list) and parts[2].get_content_type() == "message/rfc822"
    assert b".dot line" in q.build_dsn(env, env.recipients, msg)
    assert enhanced_status(550, "5.1.1 no such user") == "5.1.1"
    assert enhanced_status(550, "no code") == "5.0.0"
    assert enhanced_status(550, "4.1.1 mismatch") == "5.0.0"


def test_local_copies_wait_for_their_owner(tmp_path: Path) -> None:
    """A copy for one of our accounts whose owner is unreachable waits in the
    queue and is delivered locally once the account can be opened."""
    import contextlib
    from collections.abc import AsyncIterator

    from argon2 import PasswordHasher

    from dynamail.accounts import AccountRef
    from dynamail.cluster.locator import AccountUnavailable, Placement, StandaloneLocator
    from dynamail.delivery import Delivery
    from dynamail.directory import Directory
    from dynamail.storage import FileMailStore

    d = Directory(tmp_path / "base", main_domain="main.example", password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    d.create_domain("example.org")
    alice = d.create_account("example.org", "alice")

    class Flaky(StandaloneLocator):
        down = True

        @contextlib.asynccontextmanager
        async def use(self, ref: AccountRef, *, relay_ok: bool = True) -> AsyncIterator[Placement]:
            if self.down:
                raise AccountUnavailable("owner unreachable")
            async with super().use(ref, relay_ok=relay_ok) as p:
                yield p

    locator = Flaky(FileMailStore(), d.account_mail_path)
    delivery = Delivery(d, locator)
    q = OutboundQueue(tmp_path / "Queue", hostname="mx.test", retry_seconds=1.0, delivery=lambda: delivery, resolve_local=d.resolve_recipient)

    async def run() -> tuple[int, int, int]:
        try:
            q._load()
            qid = await q.enqueue("s@outside.example", [], MSG, local=[alice.address])
            await q.attempt(q.entries[qid])
            deferred = q.entries[qid].pending()[0].code
            locator.down = False
            await q.attempt(q.entries[qid])
            async with locator.use(alice) as p:
                count = (await p.store.status("INBOX")).messages  # type: ignore[union-attr]
            return deferred, len(q.entries), count
        finally:
            await locator.close()

    assert asyncio.run(run()) == (451, 0, 1)


def test_success_and_delay_notifications(tmp_path: Path) -> None:
    host = next_host()
    sink = Sink(host, PORT)
    q = OutboundQueue(tmp_path / "Queue", hostname="mx.test", mx_map={"remote.example": f"{host}:{PORT}"}, retry_seconds=10.0)
    q.store.delay_notice_after = 0.0
    try:
        async def run() -> tuple[list[Envelope], list[Envelope]]:
            q._load()
            qid = await q.enqueue(
                "a@local.example",
                [("ok@remote.example", {"NOTIFY": "SUCCESS"}), ("later@remote.example", {"NOTIFY": "DELAY,FAILURE"})],
                MSG,
            )
            await q.attempt(q.entries[qid])
            after_first = [e for e in q.entries.values() if e.id != qid]
            await q.attempt(q.entries[qid])  # still deferred: no second delay notice
            after_second = [e for e in q.entries.values() if e.id != qid]
            return after_first, after_second

        first, second = asyncio.run(run())
    finally:
        sink.close()
    assert len(first) == 1 and len(second) == 1  # one "delayed" DSN, sent once
    dsn = (tmp_path / "Queue" / f"{first[0].id}.msg").read_bytes()
    assert b"Subject: Delayed Mail (still being retried)" in dsn
    assert b"Final-Recipient: rfc822; later@remote.example\r\nAction: delayed\r\nStatus: 4.3.0" in dsn
    assert b"Will-Retry-Until:" in dsn
    assert b"ok@remote.example" not in dsn  # success is reported when the entry completes


def test_success_report_built_for_relayed_and_delivered(tmp_path: Path) -> None:
    q = make_queue(tmp_path, "127.0.0.1")
    env = Envelope("id", "a@local.example", [
        QueuedRecipient("x@r.example", "SUCCESS", None, "sent", 250, "2.0.0 ok"),
        QueuedRecipient("me@local.example", "SUCCESS", None, "sent", 250, "2.0.0 delivered", local=True),
    ], 0.0, 0.0)
    assert q.store.to_notify(env) == env.recipients
    dsn = q.build_dsn(env, env.recipients, MSG)
    assert b"Subject: Successful Mail Delivery Report" in dsn
    assert b"Action: relayed\r\nStatus: 2.0.0" in dsn and b"Action: delivered\r\nStatus: 2.0.0" in dsn
    env.sender = ""
    assert q.store.to_notify(env) == []


def _relay_with_notify(tmp_path: Path, dsn: bool) -> tuple[Sink, list[bytes]]:
    """Queue one message with DSN requests to a sink (advertising DSN or
    not); the sink and the notices the sender got."""
    host = next_host()
    sink = Sink(host, PORT, dsn=dsn)
    q = make_queue(tmp_path, host)
    try:
        async def run() -> list[bytes]:
            q._load()
            qid = await q.enqueue(
                "a@local.example",
                [("ok@remote.example", {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;ok@remote.example"}),
                 ("reject@remote.example", {"NOTIFY": "FAILURE"}), ("plain@remote.example", {})],
                MSG, params={"RET": "HDRS", "ENVID": "env+2B7"},
            )
            await q.attempt(q.entries[qid])
            assert qid not in q.entries  # complete: every recipient sent or failed
            return [(tmp_path / "Queue" / f"{e.id}.msg").read_bytes() for e in q.entries.values()]

        notices = asyncio.run(run())
    finally:
        sink.close()
    return sink, notices


def test_dsn_request_passed_to_a_server_that_advertises_dsn(tmp_path: Path) -> None:
    sink, notices = _relay_with_notify(tmp_path, dsn=True)
    assert sink.commands == [
        f"MAIL FROM:<a@local.example> SIZE={len(MSG)} RET=HDRS ENVID=env+2B7",
        "RCPT TO:<ok@remote.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ok@remote.example",
        "RCPT TO:<reject@remote.example> NOTIFY=FAILURE",
        "RCPT TO:<plain@remote.example>",
    ]
    # the success is the next server's to report; our hop's failure is ours
    [notice] = notices
    assert b"Action: failed" in notice and b"reject@remote.example" in notice
    assert b"Action: relayed" not in notice and b"Final-Recipient: rfc822; ok@remote.example" not in notice


def test_relayed_notice_when_the_next_server_has_no_dsn(tmp_path: Path) -> None:
    sink, notices = _relay_with_notify(tmp_path, dsn=False)
    assert sink.commands[0] == f"MAIL FROM:<a@local.example> SIZE={len(MSG)}"
    assert "RCPT TO:<ok@remote.example>" in sink.commands  # no DSN parameters
    [notice] = notices
    assert (
        b"Final-Recipient: rfc822; ok@remote.example\r\nOriginal-Recipient: rfc822;ok@remote.example\r\n"
        b"Action: relayed\r\nStatus: 2.0.0"
    ) in notice
    assert b"Action: failed" in notice and b"Original-Envelope-Id: env+7\r\n" in notice  # decoded (RFC 3464 2.2.1), as Postfix does


def _flaky_local(tmp_path: Path) -> tuple[Any, Any, Any]:
    import contextlib
    from collections.abc import AsyncIterator

    from argon2 import PasswordHasher

    from dynamail.accounts import AccountRef
    from dynamail.cluster.locator import AccountUnavailable, Placement, StandaloneLocator
    from dynamail.directory import Directory
    from dynamail.storage import FileMailStore

    d = Directory(tmp_path / "base", main_domain="main.example", password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    d.create_domain("example.org")
    alice = d.create_account("example.org", "alice")

    class Flaky(StandaloneLocator):
        down = True

        @contextlib.asynccontextmanager
        async def use(self, ref: AccountRef, *, relay_ok: bool = True) -> AsyncIterator[Placement]:
            if self.down:
                raise AccountUnavailable("owner unreachable")
            async with super().use(ref, relay_ok=relay_ok) as p:
                yield p

    locator = Flaky(FileMailStore(), d.account_mail_path)
    return d, alice, locator


def test_local_copies_retry_on_a_short_schedule_then_back_off(tmp_path: Path) -> None:
    """A copy for one of our accounts (a cluster hand-off whose owner was
    unreachable) is retried after 1, 2, 4, 8, 15, 30 s, then with the usual
    back-off; a remote recipient keeps the usual back-off."""
    import time

    from dynamail.delivery import Delivery

    d, alice, locator = _flaky_local(tmp_path)
    delivery = Delivery(d, locator)
    q = OutboundQueue(tmp_path / "Queue", hostname="mx.test", retry_seconds=300.0, delivery=lambda: delivery,
                      resolve_local=d.resolve_recipient)
    assert [q.backoff(n, local=True) for n in range(1, 10)] == [1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 300.0, 600.0, 1200.0]
    assert q.backoff(100, local=True) == MAX_BACKOFF and q.backoff(1) == 300.0

    async def run() -> list[float]:
        try:
            q._load()
            qid = await q.enqueue("s@outside.example", [], MSG, local=[alice.address])
            delays = []
            for _ in range(3):
                before = time.time()
                await q.attempt(q.entries[qid])
                after = time.time()
                env = q.entries[qid]
                assert env.pending()[0].code == 451
                delay = env.next_attempt - before
                assert env.next_attempt - after <= delay
                delays.append(round(delay))
            return delays
        finally:
            await locator.close()

    assert asyncio.run(run()) == [1, 2, 4]
    on_disk = json.loads(next((tmp_path / "Queue").glob("*.env")).read_bytes())
    assert on_disk["attempts"] == 3


def test_local_copies_are_woken_when_their_account_is_reachable(tmp_path: Path) -> None:
    """The running queue delivers a waiting local copy as soon as it is told
    the account is reachable again, not at its next scheduled attempt."""
    from dynamail.delivery import Delivery

    d, alice, locator = _flaky_local(tmp_path)
    delivery = Delivery(d, locator)
    q = OutboundQueue(tmp_path / "Queue", hostname="mx.test", retry_seconds=300.0, delivery=lambda: delivery,
                      resolve_local=d.resolve_recipient)

    async def run() -> tuple[int, int, int, int]:
        q.start()
        try:
            qid = await q.enqueue("s@outside.example", [], MSG, local=[alice.address])
            while q.entries[qid].attempts == 0:  # the loop's first attempt, owner down
                await asyncio.sleep(0.02)
            q.entries[qid].next_attempt = 10**12  # as if far in the future
            locator.down = False
            other = q.wake_local(["bob@example.org"])
            woken = q.wake_local([alice.address.upper()])
            while qid in q.entries:
                await asyncio.sleep(0.02)
            async with locator.use(alice) as p:
                count = (await p.store.status("INBOX")).messages
            return other, woken, len(q.entries), count
        finally:
            await q.close()
            await locator.close()

    assert asyncio.run(run()) == (0, 1, 0, 1)
