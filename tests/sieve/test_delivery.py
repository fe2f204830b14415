"""Sieve at delivery: transcripts of every extension through a real SMTP
listener, the real storage engine and the outbound queue (a local SMTP sink
stands in for remote mail exchangers).

Each step stores a script for an account, sends one message over SMTP and
reads back what each account's mailboxes hold, what the SMTP server
answered and what left through the queue."""

from __future__ import annotations

import asyncio
import logging
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dynamail.sieve.scripts import ScriptStore, blobs_of
from dynamail.storage.api import NoSuchMailbox
from smtp.live import Sink, in_process, next_host, prepare

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sieve-delivery")]

BOB, ALICE, CAROL = "bob@example.org", "alice@example.org", "carol@example.org"
SINK_PORT = 2526


def mail(sender: str, to: str, subject: str, body: str = "Hello.", extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{abs(hash(subject))}@x>\r\n"
            f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n{extra}\r\n{body}\r\n").encode()


class Harness:
    def __init__(self, ctx: Any, port: int, host: str) -> None:
        self.ctx, self.port, self.host = ctx, port, host

    def ref(self, address: str) -> Any:
        return self.ctx.directory.find_account(address)

    async def script(self, address: str, text: str | None, name: str = "main") -> None:
        async with self.ctx.accounts.use(self.ref(address)) as placement:
            scripts = ScriptStore(blobs_of(placement.store))
            if text is None:
                await scripts.activate("")
                return
            await scripts.put(name, text)
            await scripts.activate(name)

    async def send(self, sender: str, rcpts: list[str], data: bytes) -> tuple[int, bytes]:
        def go() -> tuple[int, bytes]:
            with smtplib.SMTP(self.host, self.port, timeout=20) as s:
                s.ehlo("client.example")
                try:
                    s.sendmail(sender, rcpts, data)
                except smtplib.SMTPDataError as exc:
                    return exc.smtp_code, exc.smtp_error
                return 250, b""
        return await asyncio.get_running_loop().run_in_executor(None, go)

    async def mailbox(self, address: str, name: str = "INBOX") -> list[tuple[str, frozenset[str], bytes]]:
        """(subject, flags, message) of each message in the mailbox."""
        async with self.ctx.accounts.use(self.ref(address)) as placement:
            try:
                view = await placement.store.select(name)
            except NoSuchMailbox:
                return []
            try:
                out = []
                for uid in view.uids():
                    data = await view.read(uid)
                    subject = next((line[9:].decode() for line in data.split(b"\r\n")
                                    if line.lower().startswith(b"subject: ")), "")
                    out.append((subject, view.info(uid).flags, data))
                return out
            finally:
                view.close()

    async def subjects(self, address: str, name: str = "INBOX") -> list[str]:
        return [s for s, _f, _d in await self.mailbox(address, name)]

    async def wait_subjects(self, address: str, n: int, name: str = "INBOX") -> list[str]:
        for _ in range(200):
            got = await self.subjects(address, name)
            if len(got) >= n:
                return got
            await asyncio.sleep(0.1)
        raise AssertionError(f"{address} {name} holds {await self.subjects(address, name)}")


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink(next_host(), SINK_PORT)
    yield s
    s.close()


def run_case(tmp_path: Path, sink: Sink, body: Any) -> None:
    base = tmp_path / "base"
    toml = (f'[smtp]\nqueue_retry_seconds = 0.3\n'
            f'mx = {{ "remote.example" = "{sink.server_address[0]}:{SINK_PORT}" }}\n')
    prepare(base, {BOB: "pw", ALICE: "pw", CAROL: "pw"}, toml, aliases={BOB: ["robert"]})
    host = next_host()

    async def run() -> None:
        async with in_process(base, host, ("smtp",)) as (ctx, ports):
            await body(Harness(ctx, ports["smtp"], host))

    asyncio.run(run())


def test_fileinto_flags_copy_mailbox_envelope_body(tmp_path: Path, sink: Sink) -> None:
    async def body(h: Harness) -> None:
        await h.script(BOB, r'''
require ["fileinto", "imap4flags", "copy", "mailbox", "envelope", "body", "variables"];
if envelope :domain :matches "from" "*.example" {
    fileinto :create :flags "\\Seen list" "Lists/${1}";
    stop;
}
if body :contains "invoice" { fileinto :copy :create "Invoices"; addflag "\\Flagged"; }
''')
        assert await h.send("news@lists.example", [BOB], mail("news@lists.example", BOB, "Weekly")) == (250, b"")
        assert await h.send(ALICE, [BOB], mail(ALICE, BOB, "Bill", "Your invoice is attached.")) == (250, b"")
        lists = await h.mailbox(BOB, "Lists/lists")
        assert [(s, f) for s, f, _ in lists] == [("Weekly", frozenset({"\\Seen", "list"}))]
        assert await h.subjects(BOB, "Invoices") == ["Bill"]
        assert [(s, f) for s, f, _ in await h.mailbox(BOB)] == [("Bill", frozenset({"\\Flagged"}))]
    run_case(tmp_path, sink, body)


def test_reject_ereject_discard(tmp_path: Path, sink: Sink) -> None:
    async def body(h: Harness) -> None:
        await h.script(BOB, 'require "reject"; if header :contains "subject" "spam" { reject "No spam, thanks."; }')
        code, text = await h.send(ALICE, [BOB], mail(ALICE, BOB, "spam offer"))
        assert (code, text) == (550, b"5.7.1 No spam, thanks.")
        await h.script(BOB, 'require "ereject"; ereject "Go away";')
        assert await h.send(ALICE, [BOB], mail(ALICE, BOB, "hello")) == (550, b"5.7.1 Go away")
        await h.script(BOB, "discard;")
        assert await h.send(ALICE, [BOB], mail(ALICE, BOB, "into the void")) == (250, b"")
        assert await h.subjects(BOB) == []
        # several recipients: the others get the message, the sender a DSN for bob
        await h.script(BOB, 'require "reject"; reject "Not here.";')
        assert await h.send(ALICE, [BOB, CAROL], mail(ALICE, BOB, "both")) == (250, b"")
        assert await h.subjects(CAROL) == ["both"]
        dsn = await h.wait_subjects(ALICE, 1)
        assert "Not here." in (await h.mailbox(ALICE))[0][2].decode()
        assert dsn
    run_case(tmp_path, sink, body)


def test_redirect_remote_local_and_loop(tmp_path: Path, sink: Sink) -> None:
    async def body(h: Harness) -> None:
        before = len(sink.messages)
        await h.script(BOB, 'require "copy"; redirect :copy "far@remote.example"; redirect "carol@example.org";')
        assert await h.send(ALICE, [BOB], mail(ALICE, BOB, "pass it on")) == (250, b"")
        assert await h.wait_subjects(CAROL, 1) == ["pass it on"]
        assert await h.subjects(BOB) == []
        sent = await asyncio.get_running_loop().run_in_executor(None, sink.wait_messages, before + 1)
        sender, rcpts, data = sent[-1]
        assert (sender, rcpts) == (ALICE, ["far@remote.example"])  # RFC 5228 4.2: envelope sender kept
        assert b"X-Sieve-Redirected-From: bob@example.org" in data
        carol_copy = (await h.mailbox(CAROL))[0][2]
        assert b"X-Sieve-Redirected-From: bob@example.org" in carol_copy
        # the same delivery retried (same delivery id): no second redirect, no second copy
        await h.script(BOB, 'require "copy"; redirect :copy "carol@example.org";')
        again = mail(ALICE, BOB, "retried")
        for _ in range(2):
            (r,) = await h.ctx.delivery.deliver([h.ref(BOB)], again, sender=ALICE, delivery_id="q-retry-1")
            assert r.ok
        assert (await h.wait_subjects(CAROL, 2))[-1] == "retried"
        assert (await h.subjects(BOB)).count("retried") == 1
        # a loop: bob redirects to carol, carol back to bob; it stops at bob
        await h.script(CAROL, 'redirect "bob@example.org";')
        await h.script(BOB, 'redirect "carol@example.org";')
        assert await h.send(ALICE, [BOB], mail(ALICE, BOB, "ping pong")) == (250, b"")
        assert (await h.wait_subjects(BOB, 2))[-1] == "ping pong"
        # and to oneself
        await h.script(CAROL, 'redirect "carol@example.org";')
        assert await h.send(ALICE, [CAROL], mail(ALICE, CAROL, "me again")) == (250, b"")
        assert (await h.wait_subjects(CAROL, 3))[-1] == "me again"
        await asyncio.sleep(1.0)  # nothing more arrives
        assert await h.subjects(BOB) == ["retried", "ping pong"]
        assert await h.subjects(CAROL) == ["pass it on", "retried", "me again"]
    run_case(tmp_path, sink, body)


def test_vacation_once_per_period_and_whom_not_to_answer(tmp_path: Path, sink: Sink) -> None:
    async def body(h: Harness) -> None:
        await h.script(BOB, 'require "vacation"; vacation :days 7 :subject "Away" "Back on Monday.";')
        assert await h.send(ALICE, [BOB], mail(ALICE, BOB, "lunch?")) == (250, b"")
        assert await h.wait_subjects(ALICE, 1) == ["Away"]
        reply = (await h.mailbox(ALICE))[0][2].decode()
        assert "Auto-Submitted: auto-replied" in reply and "Back on Monday." in reply
        assert "In-Reply-To:" in reply
        assert await h.subjects(BOB) == ["lunch?"]  # vacation keeps the message
        # the same sender within 7 days: no second reply
        assert await h.send(ALICE, [BOB], mail(ALICE, BOB, "lunch tomorrow?")) == (250, b"")
        # a list message, an auto-reply, a null sender, a message not addressed to bob
        await h.send(CAROL, [BOB], mail(CAROL, BOB, "list", extra="List-Id: <x.example>\r\n"))
        await h.send(CAROL, [BOB], mail(CAROL, BOB, "auto", extra="Auto-Submitted: auto-replied\r\n"))
        await h.send("", [BOB], mail("mailer-daemon@x.example", BOB, "bounce"))
        await h.send(CAROL, [BOB], mail(CAROL, "everyone@example.org", "bcc"))
        # addressed to bob's alias: answered (carol's first message)
        await h.send(CAROL, [BOB], mail(CAROL, "robert@example.org", "to the alias"))
        # a remote sender gets its reply through the queue, with the null sender, DKIM-signed
        postmaster = h.ctx.directory.find_account("postmaster@test.example")
        await h.ctx.admin.create_dkim_key(postmaster, "example.org", "ed25519")
        before = len(sink.messages)
        await h.send("far@remote.example", [BOB], mail("far@remote.example", BOB, "hi from afar"))
        sent = await asyncio.get_running_loop().run_in_executor(None, sink.wait_messages, before + 1)
        assert sent[-1][0] == "" and sent[-1][1] == ["far@remote.example"]
        assert sent[-1][2].startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
        assert b" d=example.org;" in sent[-1][2]
        await asyncio.sleep(1.0)
        assert await h.subjects(ALICE) == ["Away"]
        assert await h.wait_subjects(CAROL, 1) == ["Away"]
        assert len(await h.subjects(BOB)) == 8
    run_case(tmp_path, sink, body)


def test_relational_date_editheader_and_failures(tmp_path: Path, sink: Sink,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    async def body(h: Harness) -> None:
        await h.script(BOB, '''
require ["fileinto", "copy", "relational", "comparator-i;ascii-numeric", "date", "editheader", "variables"];
if header :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "10" {
    addheader "X-Filed" "junk";
    deleteheader "X-Spam-Score";
    fileinto :copy "Junk";
}
if date :zone "+0000" "date" "weekday" "2" { fileinto "Tuesday"; }
''')
        async with h.ctx.accounts.use(h.ref(BOB)) as placement:
            await placement.store.create_mailbox("Junk")
            await placement.store.create_mailbox("Tuesday")
        assert await h.send(ALICE, [BOB], mail(ALICE, BOB, "cheap", extra="X-Spam-Score: 15\r\n")) == (250, b"")
        junk = (await h.mailbox(BOB, "Junk"))[0][2]
        assert junk.startswith(b"X-Filed: junk\r\n") and b"X-Spam-Score" not in junk
        assert await h.subjects(BOB, "Tuesday") == ["cheap"]  # 1 Dec 2026 is a Tuesday
        # a script that fails at run time: kept in INBOX, the reason logged
        await h.script(BOB, "".join(f'redirect "u{i}@remote.example";' for i in range(9)))
        with caplog.at_level(logging.WARNING, logger="dynamail.sieve"):
            assert await h.send(ALICE, [BOB], mail(ALICE, BOB, "many")) == (250, b"")
        assert await h.subjects(BOB) == ["many"]
        assert "too many redirects" in caplog.text and "kept in INBOX" in caplog.text
        # fileinto a missing mailbox (no :create) plus keep: one copy in INBOX
        await h.script(BOB, 'require "fileinto"; fileinto "Nowhere"; keep;', name="nowhere")
        assert await h.send(ALICE, [BOB], mail(ALICE, BOB, "lost")) == (250, b"")
        assert (await h.subjects(BOB))[-1:] == ["lost"] and (await h.subjects(BOB)).count("lost") == 1
        # duplicate (RFC 7352): the second copy of a Message-ID goes to "Dups"
        await h.script(BOB, 'require ["duplicate", "fileinto", "mailbox"]; '
                            'if duplicate { fileinto :create "Dups"; }', name="dups")
        same = mail(ALICE, BOB, "twice")
        assert await h.send(ALICE, [BOB], same) == (250, b"")
        assert await h.send(ALICE, [BOB], same) == (250, b"")
        assert await h.subjects(BOB, "Dups") == ["twice"]
        assert (await h.subjects(BOB))[-1] == "twice"
        # subaddress, environment, encoded-character, spamtest: a forged
        # X-Spam-Status below our Received field is not ours, so "0" (untested)
        await h.script(BOB, 'require ["fileinto", "mailbox", "subaddress", "environment", '
                            '"encoded-character", "spamtest"]; '
                            'if allof (address :detail "to" "work", environment :is "location" "MDA", '
                            'spamtest :is "0") { fileinto :create "${hex:57 6f 72 6b}"; }', name="mix")
        assert await h.send(ALICE, [BOB], mail(ALICE, "bob+work@example.org", "mixed",
                                               extra="X-Spam-Status: No, score=0 required=15\r\n")) == (250, b"")
        assert await h.subjects(BOB, "Work") == ["mixed"]
        # include (RFC 6609): the active script runs another stored script
        async with h.ctx.accounts.use(h.ref(BOB)) as placement:
            await ScriptStore(blobs_of(placement.store)).put(
                "helper", 'require ["fileinto", "mailbox"]; fileinto :create "Helped";')
        await h.script(BOB, 'require "include"; include "helper"; include :optional "absent";', name="main2")
        assert await h.send(ALICE, [BOB], mail(ALICE, BOB, "included")) == (250, b"")
        assert await h.subjects(BOB, "Helped") == ["included"]
        # a stored script that does not compile: likewise
        await h.script(BOB, "fileinto \"x\";", name="broken")
        assert await h.send(ALICE, [BOB], mail(ALICE, BOB, "broken")) == (250, b"")
        assert await h.subjects(BOB) == ["many", "lost", "twice", "broken"]
        assert "requires the 'fileinto' extension" in caplog.text
    run_case(tmp_path, sink, body)
