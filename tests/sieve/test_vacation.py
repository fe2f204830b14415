"""Vacation (RFC 5230): whom not to answer, the response log, the reply."""

from __future__ import annotations

import email
import email.policy

import pytest

from dynamail.sieve.actions import Vacation
from dynamail.sieve.message import SieveMessage
from dynamail.sieve.vacation import ResponseLog, build_reply, refusal

BASE = [
    "From: Alice <alice@example.org>",
    "To: bob@example.com",
    "Subject: Lunch?",
    "Message-ID: <m1@example.org>",
    "References: <m0@example.org>",
]
ACTION = Vacation("I am away", None, None, (), False, "h", 7 * 86400)


def msg(*extra: str, to: str = "To: bob@example.com") -> SieveMessage:
    lines = [line for line in BASE if not line.startswith("To:")] + [to, *extra]
    return SieveMessage.parse(("\r\n".join(lines) + "\r\n\r\nhi\r\n").encode())


def test_ordinary_mail_is_answered() -> None:
    assert refusal(msg(), "alice@example.org", "bob@example.com", ACTION) is None


@pytest.mark.parametrize("extra, sender, why", [
    ((), "", "null"),
    ((), None, "null"),
    ((), "bob@example.com", "is the user"),
    (("Auto-Submitted: auto-replied",), "alice@example.org", "auto-submitted"),
    (("Precedence: bulk",), "alice@example.org", "bulk"),
    (("List-Id: <x.lists.example.org>",), "alice@example.org", "mailing list"),
    ((), "MAILER-DAEMON@example.org", "system address"),
    ((), "owner-list@example.org", "system address"),
    ((), "list-request@example.org", "system address"),
])
def test_whom_not_to_answer(extra: tuple[str, ...], sender: str | None, why: str) -> None:
    reason = refusal(msg(*extra), sender, "bob@example.com", ACTION)
    assert reason is not None and why in reason


def test_must_be_a_recipient() -> None:
    m = msg(to="To: everyone@example.com")
    assert "recipient" in (refusal(m, "alice@example.org", "bob@example.com", ACTION) or "")
    with_alias = Vacation("x", None, None, ("everyone@example.com",), False, "h", 86400)
    assert refusal(m, "alice@example.org", "bob@example.com", with_alias) is None
    assert refusal(msg("Auto-Submitted: no"), "alice@example.org", "bob@example.com", ACTION) is None
    assert refusal(msg(to="Cc: Bob <BOB@example.com>"), "alice@example.org", "bob@example.com", ACTION) is None


def test_response_log_once_per_period_and_bounded() -> None:
    log = ResponseLog()
    assert log.due("alice@example.org", "h", now=1000.0)
    log.record("alice@example.org", "h", 86400, now=1000.0)
    assert not log.due("ALICE@example.org", "h", now=1000.0 + 86399)
    assert log.due("alice@example.org", "other-handle", now=2000.0)
    assert log.due("alice@example.org", "h", now=1000.0 + 86400)
    again = ResponseLog.load(log.dump())
    assert not again.due("alice@example.org", "h", now=5000.0)
    assert ResponseLog.load(b"garbage").records == {}
    for i in range(5000):
        log.record(f"u{i}@x", "h", 86400, now=3000.0 + i)
    assert len(log.records) == 4096


def test_reply() -> None:
    raw = build_reply(msg(), "alice@example.org", "bob@example.com",
                      Vacation("Back on Monday.", None, None, (), False, "h", 1), "mail.example.com")
    reply = email.message_from_bytes(raw, policy=email.policy.default)
    assert reply["To"] == "alice@example.org" and reply["From"] == "bob@example.com"
    assert reply["Subject"] == "Auto: Lunch?"
    assert reply["Auto-Submitted"].startswith("auto-replied")
    assert reply["In-Reply-To"] == "<m1@example.org>"
    assert reply["References"] == "<m0@example.org> <m1@example.org>"
    assert reply.get_content().strip() == "Back on Monday."
    mime = build_reply(msg(), "alice@example.org", "bob@example.com",
                       Vacation("Content-Type: text/html\r\n\r\n<b>away</b>\r\n", "Gone", "Bob <b@example.com>", (), True,
                                "h", 1), "mail.example.com")
    parsed = email.message_from_bytes(mime, policy=email.policy.default)
    assert parsed.get_content_type() == "text/html" and parsed["Subject"] == "Gone"
    assert "<b>away</b>" in parsed.get_content()
