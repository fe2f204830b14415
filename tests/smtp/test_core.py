"""Transcript tests of the sans-IO SMTP core."""

from __future__ import annotations

import base64

import pytest

from dynamail.smtp import replies as R
from dynamail.smtp.core import (
    COMMANDS,
    NEED_DATA,
    PAUSED,
    AuthRequest,
    BodyData,
    Closing,
    ConnectionClosed,
    DataStart,
    MailFrom,
    MessageAborted,
    MessageComplete,
    Mode,
    RcptTo,
    SessionConfig,
    SmtpServer,
    StartTls,
    State,
)
from dynamail.smtp.limits import SmtpLimits
from dynamail.smtp.replies import Reply


class Harness:
    """Drives a core the way the adapter does, with a fixed policy."""

    def __init__(self, **kw: object) -> None:
        limits = kw.pop("limits", SmtpLimits())
        self.core = SmtpServer(SessionConfig(hostname="mx.example", limits=limits, **kw))  # type: ignore[arg-type]
        self.core.greeting()
        self.local = {"alice@example.org", "bob@example.org"}
        self.password = "secret"
        self.own = {"alice@example.org"}  # senders the authenticated user may use
        self.bodies: list[bytes] = []
        self.body = bytearray()
        self.events: list[object] = []
        self.store_reply = Reply(250, "2.0.0", "OK queued")
        self.closed = False
        self.greeting = self.core.data_to_send()

    def send(self, data: bytes) -> bytes:
        self.core.receive_data(data)
        self._run()
        return self.core.data_to_send()

    def _run(self) -> None:
        while True:
            ev = self.core.next_event()
            if ev is NEED_DATA or ev is PAUSED:
                return
            self.events.append(ev)
            if isinstance(ev, MailFrom) and self.core.deciding_sender:
                if str(ev.sender) in self.own or ev.sender is None:
                    self.core.accept_sender()
                else:
                    self.core.reject_sender(Reply(553, "5.7.1", "Not yours"))
            elif isinstance(ev, RcptTo):
                if str(ev.address) in self.local:
                    self.core.accept_recipient()
                else:
                    self.core.reject_recipient(R.USER_UNKNOWN)
            elif isinstance(ev, DataStart):
                self.body = bytearray()
            elif isinstance(ev, BodyData):
                self.body += ev.data
            elif isinstance(ev, MessageComplete):
                assert ev.size == len(self.body)
                self.bodies.append(bytes(self.body))
                self.core.finish_message(self.store_reply)
            elif isinstance(ev, AuthRequest):
                if ev.password == self.password:
                    self.core.auth_succeeded(ev.login)
                elif self.core.auth_failed() is not None:
                    self.closed = True
                    return
            elif isinstance(ev, StartTls):
                self.core.tls_started()
            elif isinstance(ev, (Closing, ConnectionClosed)):
                self.closed = True
                return


def codes(out: bytes) -> list[int]:
    return [int(line[:3]) for line in out.split(b"\r\n") if line and line[3:4] == b" "]


def test_greeting() -> None:
    h = Harness()
    assert h.greeting == b"220 mx.example ESMTP dynamail\r\n"


def test_full_transaction_with_data() -> None:
    h = Harness()
    out = h.send(b"EHLO client.example\r\n")
    assert out.startswith(b"250-mx.example Hello client.example\r\n")
    for cap in (b"PIPELINING", b"SIZE 52428800", b"8BITMIME", b"ENHANCEDSTATUSCODES", b"CHUNKING", b"SMTPUTF8", b"DSN"):
        assert cap in out
    assert b"AUTH" not in out  # inbound: no AUTH
    assert b"STARTTLS" not in out  # no TLS configured
    assert h.send(b"MAIL FROM:<x@remote.example>\r\n") == b"250 2.1.0 Sender OK\r\n"
    assert h.send(b"RCPT TO:<alice@example.org>\r\n") == b"250 2.1.5 Recipient OK\r\n"
    assert h.send(b"RCPT TO:<nobody@example.org>\r\n") == b"550 5.1.1 User unknown\r\n"
    assert h.send(b"DATA\r\n").startswith(b"354 ")
    out = h.send(b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n")
    assert out == b"250 2.0.0 OK queued\r\n"
    assert h.bodies == [b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"]
    assert h.send(b"QUIT\r\n").startswith(b"221 2.0.0")
    assert h.closed


def test_pipelined_commands_reply_in_order() -> None:
    h = Harness()
    out = h.send(
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<zz@example.org>\r\n"
        b"RCPT TO:<bob@example.org>\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n"
    )
    assert codes(out) == [250, 250, 250, 550, 250, 354, 250, 221]
    assert h.bodies == [b"hello\r\n"]


def test_data_split_across_reads() -> None:
    h = Harness()
    h.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    msg = b"line one\r\n.dot\r\nx\r\n.\r\nNOOP\r\n"
    out = b""
    for i in range(len(msg)):
        out += h.send(msg[i : i + 1])
    assert codes(out) == [250, 250]
    assert h.bodies == [b"line one\r\ndot\r\nx\r\n"]


def test_bare_lf_dot_does_not_end_data() -> None:
    h = Harness()
    h.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    out = h.send(b"a\n.\nMAIL FROM:<evil@x.y>\r\n.\r\n")
    assert codes(out) == [250]
    assert h.bodies == [b"a\n.\nMAIL FROM:<evil@x.y>\r\n"]


def test_commands_before_helo_and_bad_sequence() -> None:
    h = Harness()
    assert h.send(b"MAIL FROM:<a@b.c>\r\n") == b"503 5.5.1 Send HELO/EHLO first\r\n"
    h.send(b"EHLO c\r\n")
    assert h.send(b"RCPT TO:<alice@example.org>\r\n") == b"503 5.5.1 Bad sequence of commands\r\n"
    assert h.send(b"DATA\r\n") == b"503 5.5.1 Bad sequence of commands\r\n"
    h.send(b"MAIL FROM:<a@b.c>\r\n")
    assert h.send(b"DATA\r\n") == b"554 5.5.1 No valid recipients\r\n"
    assert h.send(b"MAIL FROM:<a@b.c>\r\n") == b"503 5.5.1 Bad sequence of commands\r\n"
    assert h.send(b"FOO\r\n") == b"500 5.5.2 Command unrecognized\r\n"
    assert h.send(b"RSET\r\n") == b"250 2.0.0 OK\r\n"
    assert h.core.state is State.READY


@pytest.mark.parametrize(
    "cmd,reply",
    [
        (b"MAIL FROM:a@b.c\r\n", 250),  # lenient: no brackets
        (b"MAIL FROM: <a@b.c>\r\n", 250),
        (b"MAIL FROM:<a@b.c> SIZE=100 BODY=8BITMIME\r\n", 250),
        (b"MAIL FROM:<a@b.c> SIZE=99999999999\r\n", 552),
        (b"MAIL FROM:<a@b.c> SIZE=abc\r\n", 501),
        (b"MAIL FROM:<a@b.c> FOO=bar\r\n", 555),
        (b"MAIL FROM:<a@@b.c>\r\n", 501),
        (b"MAIL FROM:<a@b.c\r\n", 501),
        (b"MAIL TO:<a@b.c>\r\n", 501),
        (b"MAIL FROM:<\xc3\xa4@b.c>\r\n", 553),
        (b"MAIL FROM:<\xc3\xa4@b.c> SMTPUTF8\r\n", 250),
        (b"MAIL FROM:<@route,@r2:a@b.c>\r\n", 250),
        (b'MAIL FROM:<"a b"@b.c>\r\n', 250),
        (b"MAIL FROM:<a@b.c> RET=HDRS ENVID=abc\r\n", 250),
        (b"MAIL FROM:<a@[127.0.0.1]>\r\n", 250),
        (b"MAIL FROM:<a@-bad-.c>\r\n", 501),
        (b"MAIL FROM:<a\xff@b.c>\r\n", 500),
    ],
)
def test_mail_from_syntax(cmd: bytes, reply: int) -> None:
    h = Harness()
    h.send(b"EHLO c\r\n")
    assert codes(h.send(cmd)) == [reply]


def test_rcpt_params_and_postmaster() -> None:
    h = Harness()
    h.local.add("postmaster@mx.example")
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n")
    assert codes(h.send(b"RCPT TO:<Postmaster>\r\n")) == [250]
    assert codes(h.send(b"RCPT TO:<alice@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.org\r\n")) == [250]
    assert codes(h.send(b"RCPT TO:<alice@example.org> NOTIFY=NEVER,SUCCESS\r\n")) == [501]
    assert codes(h.send(b"RCPT TO:<alice@example.org> XYZ\r\n")) == [555]
    assert codes(h.send(b"RCPT TO:<>\r\n")) == [501]
    rcpts = [e for e in h.events if isinstance(e, RcptTo)]
    assert str(rcpts[0].address) == "postmaster@mx.example"


def test_too_many_recipients() -> None:
    h = Harness(limits=SmtpLimits(max_recipients=2))
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n")
    out = h.send(b"RCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<alice@example.org>\r\n")
    assert out.split(b"\r\n")[2] == b"452 4.5.3 Too many recipients"


def test_message_too_big_is_refused_after_data() -> None:
    h = Harness(limits=SmtpLimits(max_message_size=100))
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    out = h.send(b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n.\r\n")
    assert out == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    assert any(isinstance(e, MessageAborted) for e in h.events)
    assert h.bodies == []
    assert h.core.state is State.READY


def test_text_line_too_long() -> None:
    h = Harness()
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    out = h.send(b"ok\r\n" + b"z" * 999 + b"\r\nmore\r\n.\r\n")
    assert codes(out) == [500]
    assert h.bodies == []
    # exactly 1000 octets with CRLF is fine
    h.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    assert codes(h.send(b"z" * 998 + b"\r\n.\r\n")) == [250]


def test_huge_unterminated_data_line_is_bounded() -> None:
    h = Harness()
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    for _ in range(50):
        assert h.send(b"q" * 10000) == b""
        assert h.core.buffered() == 0
    assert codes(h.send(b"\r\n.\r\n")) == [500]


def test_command_line_too_long() -> None:
    h = Harness()
    h.send(b"EHLO c\r\n")
    out = h.send(b"NOOP " + b"a" * 20000 + b"\r\nNOOP\r\n")
    assert codes(out) == [500, 250]


def test_commands_without_data_limit() -> None:
    h = Harness(limits=SmtpLimits(max_commands_without_data=5))
    out = h.send(b"EHLO c\r\n" + b"NOOP\r\n" * 10)
    assert codes(out)[-1] == 421
    assert h.closed
    assert h.core.state is State.CLOSED


def test_bdat_chunks() -> None:
    h = Harness()
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c> BODY=BINARYMIME\r\nRCPT TO:<alice@example.org>\r\n")
    out = h.send(b"BDAT 5\r\nhel.\nBDAT 4 LAST\r\nlo\r\nQUIT\r\n")
    assert out.split(b"\r\n")[:3] == [b"250 2.0.0 5 octets received", b"250 2.0.0 OK queued", b"221 2.0.0 mx.example Service closing transmission channel"]
    assert h.bodies == [b"hel.\nlo\r\n"]
    starts = [e for e in h.events if isinstance(e, DataStart)]
    assert starts == [DataStart("BDAT")]


def test_bdat_without_recipients_discards_chunk() -> None:
    h = Harness()
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n")
    out = h.send(b"BDAT 6 LAST\r\nNOOP\r\nNOOP\r\n")
    assert codes(out) == [554, 250]


def test_bdat_before_mail_discards_chunk() -> None:
    h = Harness()
    h.send(b"EHLO c\r\n")
    assert codes(h.send(b"BDAT 6\r\nRSET\r\nNOOP\r\n")) == [503, 250]


def test_bdat_over_size_limit_refused_before_storing() -> None:
    h = Harness(limits=SmtpLimits(max_message_size=100))
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\n")
    out = h.send(b"BDAT 5000 LAST\r\n" + b"x" * 5000 + b"NOOP\r\n")
    assert out.split(b"\r\n")[:2] == [b"552 5.3.4 Message size exceeds fixed maximum message size", b"250 2.0.0 OK"]
    assert not [e for e in h.events if isinstance(e, (DataStart, BodyData))]
    assert h.core.state is State.READY and h.core.recipients == []
    # cumulative: a second chunk that would pass the limit is refused whole
    h.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\n")
    out = h.send(b"BDAT 60\r\n" + b"y" * 60 + b"BDAT 60\r\n" + b"z" * 30)
    assert codes(out) == [250]
    out = h.send(b"z" * 30 + b"BDAT 1 LAST\r\nw")
    assert codes(out) == [552, 503]
    stored = b"".join(e.data for e in h.events if isinstance(e, BodyData))
    assert stored == b"y" * 60
    assert isinstance(h.events[-1], MessageAborted) and h.bodies == []
    # the next transaction works
    h.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\n")
    assert codes(h.send(b"BDAT 3 LAST\r\nabc")) == [250]
    assert h.bodies == [b"abc"]


def test_data_after_bdat_refused() -> None:
    h = Harness()
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\nBDAT 2\r\nab")
    assert codes(h.send(b"DATA\r\n")) == [503]


def test_binarymime_requires_bdat() -> None:
    h = Harness()
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c> BODY=BINARYMIME\r\nRCPT TO:<alice@example.org>\r\n")
    assert codes(h.send(b"DATA\r\n")) == [503]


def submission(**kw: object) -> Harness:
    return Harness(mode=Mode.SUBMISSION, tls_available=True, **kw)


def test_submission_requires_auth_and_tls() -> None:
    h = submission()
    out = h.send(b"EHLO c\r\n")
    assert b"STARTTLS" in out and b"AUTH" not in out
    assert codes(h.send(b"MAIL FROM:<a@b.c>\r\n")) == [530]
    assert codes(h.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")) == [538]
    assert h.send(b"STARTTLS\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
    assert h.core.state is State.START and h.core.tls_active
    out = h.send(b"EHLO c\r\n")
    assert b"AUTH PLAIN LOGIN" in out and b"STARTTLS" not in out
    cred = base64.b64encode(b"\0alice@example.org\0secret")
    assert h.send(b"AUTH PLAIN " + cred + b"\r\n") == b"235 2.7.0 Authentication successful\r\n"
    assert h.core.identity == "alice@example.org"
    assert codes(h.send(b"AUTH PLAIN " + cred + b"\r\n")) == [503]
    assert codes(h.send(b"MAIL FROM:<alice@example.org>\r\n")) == [250]


def test_starttls_discards_pipelined_plaintext() -> None:
    h = submission()
    h.send(b"EHLO c\r\n")
    out = h.send(b"STARTTLS\r\nMAIL FROM:<injected@x.y>\r\n")
    assert codes(out) == [220]
    assert not any(isinstance(e, MailFrom) for e in h.events)


def test_auth_login_and_plain_challenges() -> None:
    h = submission(tls_active=True)
    h.send(b"EHLO c\r\n")
    assert h.send(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert h.send(base64.b64encode(b"alice") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert codes(h.send(base64.b64encode(b"secret") + b"\r\n")) == [235]
    h2 = submission(tls_active=True)
    h2.send(b"EHLO c\r\n")
    assert h2.send(b"AUTH PLAIN\r\n") == b"334 \r\n"
    assert codes(h2.send(b"*\r\n")) == [501]
    assert codes(h2.send(b"AUTH PLAIN\r\n!!!notbase64\r\n")) == [334, 501]
    assert codes(h2.send(b"AUTH CRAM-MD5\r\n")) == [504]
    assert codes(h2.send(b"AUTH PLAIN " + base64.b64encode(b"no-nul") + b"\r\n")) == [501]


def test_auth_failures_close_session() -> None:
    h = submission(tls_active=True)
    h.send(b"EHLO c\r\n")
    bad = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong") + b"\r\n"
    assert codes(h.send(bad)) == [535]
    assert codes(h.send(bad)) == [535]
    assert codes(h.send(bad)) == [421]
    assert h.closed


def test_inbound_has_no_auth() -> None:
    h = Harness(tls_available=True)
    h.send(b"EHLO c\r\n")
    assert codes(h.send(b"AUTH PLAIN AGEAYg==\r\n")) == [502]


def test_auth_without_tls_when_configured() -> None:
    h = submission(auth_without_tls=True)
    assert b"AUTH PLAIN LOGIN" in h.send(b"EHLO c\r\n")


def test_eof_mid_data() -> None:
    h = Harness()
    h.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\npartial")
    h.core.receive_data(b"")
    assert h.core.next_event() == ConnectionClosed()
    assert h.bodies == []


def test_idle_timeout_reply() -> None:
    h = Harness()
    ev = h.core.idle_timeout()
    assert ev.reply.code == 421
    assert h.core.data_to_send() == b"421 4.4.2 mx.example Idle timeout, closing connection\r\n"


def test_helo_syntax_and_vrfy() -> None:
    h = Harness()
    assert codes(h.send(b"HELO\r\n")) == [501]
    assert h.send(b"HELO c\r\n") == b"250 mx.example Hello c\r\n"
    assert codes(h.send(b"VRFY alice\r\nEXPN list\r\nHELP\r\n")) == [252, 502, 214]


def test_every_command_state_pair_answers() -> None:
    """Each (state, command) pair either runs or is refused with 503."""
    prefixes = {
        State.START: b"",
        State.READY: b"EHLO c\r\n",
        State.MAIL: b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n",
        State.RCPT: b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\n",
        State.BDAT: b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.org>\r\nBDAT 1\r\nx",
    }
    for state, prefix in prefixes.items():
        for name, cmd in COMMANDS.items():
            h = Harness()
            if prefix:
                h.send(prefix)
            assert h.core.state is state
            args = {"BDAT": b" 0", "MAIL": b" FROM:<a@b.c>", "RCPT": b" TO:<bob@example.org>"}
            out = h.send(name.encode() + args.get(name, b"") + b"\r\n")
            assert out, (state, name)
            if state not in cmd.states:
                assert codes(out)[0] == 503, (state, name, out)
            else:
                assert codes(out)[0] != 503 or name in ("DATA", "AUTH"), (state, name, out)


def test_sender_decided_by_the_adapter_when_asked() -> None:
    h = submission(tls_active=True, check_sender=True)
    h.send(b"EHLO c\r\n")
    h.send(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n")
    # pipelined: the refused MAIL starts no transaction, so RCPT and DATA fail too
    out = h.send(b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    assert out.split(b"\r\n")[0] == b"553 5.7.1 Not yours" and codes(out) == [553, 503, 503]
    assert h.core.state is State.READY and h.core.sender is None
    out = h.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<alice@example.org>\r\n")
    assert codes(out) == [250, 250] and h.core.state is State.RCPT
    assert codes(h.send(b"RSET\r\nMAIL FROM:<>\r\n")) == [250, 250]


def test_sender_accepted_at_once_without_check() -> None:
    h = submission(tls_active=True)
    h.send(b"EHLO c\r\n")
    h.send(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n")
    assert codes(h.send(b"MAIL FROM:<bob@example.org>\r\n")) == [250]
    assert not h.core.deciding_sender
