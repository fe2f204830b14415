"""LMTP against a real ``dynamail serve``: Python's smtplib.LMTP and Postfix's
``smtp-source -L``, per-recipient replies, delivery checked over POP3."""

from __future__ import annotations

import shutil
import smtplib
import subprocess
from collections.abc import Iterator

import pytest
from tests.smtp.live import LiveServer, next_host, prepare, wait_port
from tests.smtp.test_live import message, pop3_messages

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lmtp")]

ALICE, BOB, TINY = "alice@example.org", "bob@example.org", "tiny@example.org"
PW = "secret-pw"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("lmtp") / "base"
    prepare(base, {ALICE: PW, BOB: PW, TINY: PW}, settings={TINY: {"MaxAccountSize": "2K"}},
            aliases={BOB: ["1bob", "2bob", "3bob"]})
    srv = LiveServer(base, next_host())
    srv.start()
    wait_port(srv.host, srv.port("lmtp"))
    yield srv
    srv.stop()


def lmtp(server: LiveServer) -> smtplib.LMTP:
    return smtplib.LMTP(server.host, server.port("lmtp"), timeout=20)


def test_per_recipient_replies(server: LiveServer) -> None:
    before = len(pop3_messages(server, ALICE, PW))
    with lmtp(server) as c:
        code, _ = c.ehlo()  # smtplib.LMTP sends LHLO
        assert code == 250
        assert c.docmd("MAIL", "FROM:<someone@outside.example>")[0] == 250
        assert c.docmd("RCPT", f"TO:<{ALICE}>")[0] == 250
        assert c.docmd("RCPT", "TO:<nobody@example.org>")[0] == 550
        assert c.docmd("RCPT", "TO:<far@elsewhere.example>")[0] == 550  # no relaying
        assert c.docmd("RCPT", f"TO:<{TINY}>")[0] == 250
        assert c.docmd("DATA")[0] == 354
        big = message(ALICE, "per recipient", "x" * 4000 + "\n").as_bytes().replace(b"\n", b"\r\n")
        c.send(big + b".\r\n")
        first = c.getreply()
        second = c.getreply()
        assert first[0] == 250, first
        assert second[0] == 552 and second[1].startswith(b"5.2.2"), second  # over TINY's quota
    after = pop3_messages(server, ALICE, PW)
    assert len(after) == before + 1
    assert b"Subject: per recipient" in after[-1]
    assert b"with LMTP" in after[-1]  # the Received field (RFC 3848)
    assert pop3_messages(server, TINY, PW) == []


def test_smtplib_sendmail(server: LiveServer) -> None:
    # smtplib.LMTP reads one reply after DATA, so one recipient per message
    with lmtp(server) as c:
        assert c.sendmail("x@outside.example", [BOB], message(BOB, "two").as_bytes()) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            c.sendmail("x@outside.example", ["nobody@example.org"], message(BOB, "none").as_bytes())
    assert any(b"Subject: two" in m for m in pop3_messages(server, BOB, PW))


def test_helo_is_refused(server: LiveServer) -> None:
    with smtplib.SMTP(server.host, server.port("lmtp"), timeout=20) as c:
        assert c.helo()[0] == 500
        assert c.ehlo()[0] == 500


@pytest.mark.skipif(shutil.which("smtp-source") is None, reason="smtp-source (Debian postfix) is not installed")
def test_postfix_smtp_source(server: LiveServer) -> None:
    before = len(pop3_messages(server, BOB, PW))
    # 3 sessions of 4 messages each, every message to bob's aliases 1bob..3bob
    subprocess.run(
        ["smtp-source", "-L", "-s", "3", "-m", "12", "-r", "3", "-f", "src@outside.example",
         "-t", "bob@example.org", "-l", "2000", f"{server.host}:{server.port('lmtp')}"],
        check=True, timeout=60, capture_output=True,
    )
    # three recipients that are one account: one copy per message
    assert len(pop3_messages(server, BOB, PW)) == before + 12
