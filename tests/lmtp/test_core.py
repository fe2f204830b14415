"""The SMTP core in LMTP mode (RFC 2033): LHLO, and one reply per recipient."""

from __future__ import annotations

from tests.smtp.test_core import Harness, codes

from dynamail.smtp.core import Mode
from dynamail.smtp.limits import SmtpLimits
from dynamail.smtp.replies import Reply


class LmtpHarness(Harness):
    """Answers the end of DATA with ``per_rcpt`` (default: 250 for each recipient)."""

    def __init__(self, **kw: object) -> None:
        self.per_rcpt: list[Reply] = []
        super().__init__(mode=Mode.LMTP, **kw)

    @property  # type: ignore[override]
    def store_reply(self) -> list[Reply]:
        return self.per_rcpt or [Reply(250, "2.0.0", "OK")] * len(self.core.recipients)

    @store_reply.setter
    def store_reply(self, value: object) -> None:
        pass


def test_greeting_and_lhlo() -> None:
    h = LmtpHarness()
    assert h.greeting == b"220 mx.example LMTP dynamail\r\n"
    assert h.send(b"HELO client\r\n").startswith(b"500 ")
    assert h.send(b"EHLO client\r\n").startswith(b"500 ")
    out = h.send(b"LHLO client.example\r\n")
    assert out.startswith(b"250-mx.example Hello client.example\r\n")
    assert b"PIPELINING" in out and b"ENHANCEDSTATUSCODES" in out
    assert b"CHUNKING" not in out


def test_lhlo_refused_on_smtp() -> None:
    h = Harness()
    assert h.send(b"LHLO client\r\n").startswith(b"500 ")


def test_one_reply_per_recipient_in_order() -> None:
    h = LmtpHarness()
    h.send(b"LHLO c\r\n")
    h.send(b"MAIL FROM:<x@remote.example>\r\n")
    assert h.send(b"RCPT TO:<alice@example.org>\r\n") == b"250 2.1.5 Recipient OK\r\n"
    assert h.send(b"RCPT TO:<nobody@example.org>\r\n").startswith(b"550 ")
    assert h.send(b"RCPT TO:<bob@example.org>\r\n") == b"250 2.1.5 Recipient OK\r\n"
    h.per_rcpt = [Reply(250, "2.0.0", "alice ok"), Reply(452, "4.2.2", "bob full")]
    assert h.send(b"DATA\r\n").startswith(b"354 ")
    out = h.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
    assert out == b"250 2.0.0 alice ok\r\n452 4.2.2 bob full\r\n"


def test_oversized_message_refused_once_per_recipient() -> None:
    h = LmtpHarness(limits=SmtpLimits(max_message_size=100))
    h.send(b"LHLO c\r\nMAIL FROM:<x@remote.example>\r\n")
    h.send(b"RCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n")
    h.send(b"DATA\r\n")
    out = h.send(b"Subject: x\r\n\r\n" + b"y" * 200 + b"\r\n.\r\n")
    assert codes(out) == [552, 552]
    assert h.send(b"NOOP\r\n").startswith(b"250 ")
