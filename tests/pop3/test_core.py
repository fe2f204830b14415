"""Transcript tests of the sans-IO POP3 core."""

from __future__ import annotations

import base64

from dynamail.cluster.challenge import decode_nonce
from dynamail.pop3.core import (
    COMMANDS,
    NEED_DATA,
    PAUSED,
    RELAY_COMMANDS,
    Closing,
    ConnectionClosed,
    Login,
    MaildropEntry,
    Pop3Config,
    Pop3Server,
    Retrieve,
    StartTls,
    State,
    TopFilter,
    Update,
)
from dynamail.smtp.dots import Stuffer

MESSAGES = {
    11: b"Subject: one\r\n\r\nfirst\r\n.dotted\r\n",
    12: b"Subject: two\r\nX: y\r\n\r\nl1\r\nl2\r\nl3\r\n",
}


class Harness:
    def __init__(self, **kw: object) -> None:
        cfg = Pop3Config(hostname="pop.example", timestamp="<1.2@pop.example>", **kw)  # type: ignore[arg-type]
        self.core = Pop3Server(cfg)
        self.core.greeting()
        self.greeting = self.core.data_to_send()
        self.removed: list[int] = []
        self.closed = False
        self.logins: list[Login] = []

    def send(self, data: bytes) -> bytes:
        self.core.receive_data(data)
        out = bytearray()
        while True:
            ev = self.core.next_event()
            if ev is NEED_DATA or ev is PAUSED:
                break
            if isinstance(ev, Login):
                self.logins.append(ev)
                if ev.secret in ("pw", "0123456789abcdef0123456789abcdef", "ticket"):
                    self.core.login_succeeded(
                        [MaildropEntry(uid, len(body), f"7.{uid}") for uid, body in MESSAGES.items()]
                    )
                elif self.core.login_failed() is not None:
                    self.closed = True
            elif isinstance(ev, Retrieve):
                out += self.core.data_to_send()
                body = MESSAGES[ev.uid]
                if ev.lines is not None:
                    body = TopFilter(ev.lines).feed(body, final=True)
                st = Stuffer()
                out += st.feed(body) + st.end()
            elif isinstance(ev, StartTls):
                out += self.core.data_to_send()
                self.core.tls_started()
            elif isinstance(ev, Update):
                self.removed.extend(ev.uids)
                self.core.update_done()
            if isinstance(ev, (Closing, ConnectionClosed)) or self.core.state is State.CLOSED:
                self.closed = True
        out += self.core.data_to_send()
        return bytes(out)


def test_greeting_has_apop_timestamp() -> None:
    assert Harness().greeting == b"+OK dynamail POP3 server ready <1.2@pop.example>\r\n"


def test_full_session() -> None:
    h = Harness(tls_active=True)
    assert h.send(b"USER alice\r\n") == b"+OK Send your password\r\n"
    assert h.send(b"PASS pw\r\n").startswith(b"+OK Logged in, 2 messages")
    assert h.logins == [Login("pass", "alice", "pw")]
    assert h.send(b"STAT\r\n") == b"+OK 2 %d\r\n" % sum(map(len, MESSAGES.values()))
    assert h.send(b"LIST\r\n") == b"+OK Listing follows\r\n1 %d\r\n2 %d\r\n.\r\n" % (len(MESSAGES[11]), len(MESSAGES[12]))
    assert h.send(b"UIDL 2\r\n") == b"+OK 2 7.12\r\n"
    assert h.send(b"RETR 1\r\n") == b"+OK %d octets\r\nSubject: one\r\n\r\nfirst\r\n..dotted\r\n.\r\n" % len(MESSAGES[11])
    assert h.send(b"TOP 2 1\r\n") == b"+OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\nl1\r\n.\r\n"
    assert h.send(b"DELE 1\r\n") == b"+OK Message 1 deleted\r\n"
    assert h.send(b"DELE 1\r\n") == b"-ERR Message 1 already deleted\r\n"
    assert h.send(b"RETR 1\r\n") == b"-ERR Message 1 already deleted\r\n"
    assert h.send(b"LIST\r\n") == b"+OK Listing follows\r\n2 %d\r\n.\r\n" % len(MESSAGES[12])
    assert h.send(b"NOOP\r\n") == b"+OK\r\n"
    assert h.send(b"QUIT\r\n").startswith(b"+OK")
    assert h.removed == [11]
    assert h.closed


def test_rset_undeletes_and_drop_deletes_nothing() -> None:
    h = Harness(tls_active=True)
    h.send(b"USER a\r\nPASS pw\r\nDELE 1\r\nDELE 2\r\n")
    assert h.send(b"RSET\r\n") == b"+OK 2 messages\r\n"
    h.send(b"DELE 2\r\n")
    h.core.receive_data(b"")
    assert h.core.next_event() == ConnectionClosed()
    assert h.removed == []


def test_top_zero_lines_and_errors() -> None:
    h = Harness(tls_active=True)
    h.send(b"USER a\r\nPASS pw\r\n")
    assert h.send(b"TOP 2 0\r\n") == b"+OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\n.\r\n"
    assert h.send(b"TOP 2\r\n").startswith(b"-ERR")
    assert h.send(b"RETR 9\r\n") == b"-ERR No such message\r\n"
    assert h.send(b"RETR x\r\n") == b"-ERR Invalid message number\r\n"
    assert h.send(b"RETR 0\r\n") == b"-ERR No such message\r\n"


def test_plaintext_requires_tls_then_stls() -> None:
    h = Harness(tls_available=True)
    capa = h.send(b"CAPA\r\n")
    assert b"STLS\r\n" in capa and b"USER\r\n" not in capa and capa.endswith(b".\r\n")
    assert h.send(b"USER a\r\n").startswith(b"-ERR [AUTH]")
    out = h.send(b"STLS\r\nUSER injected\r\n")
    assert out == b"+OK Begin TLS negotiation\r\n"
    capa = h.send(b"CAPA\r\n")
    assert b"USER\r\n" in capa and b"STLS" not in capa and b"SASL PLAIN" in capa
    assert h.send(b"PASS pw\r\n") == b"-ERR Send USER first\r\n"
    assert h.send(b"STLS\r\n") == b"-ERR Already using TLS\r\n"


def test_apop_and_sasl() -> None:
    h = Harness(tls_active=True)
    assert h.send(b"APOP alice 0123456789ABCDEF0123456789ABCDEF\r\n").startswith(b"+OK Logged in")
    assert h.logins[0] == Login("apop", "alice", "0123456789abcdef0123456789abcdef")
    h2 = Harness(plaintext_auth=True)
    assert h2.send(b"AUTH\r\n") == b"+OK Methods follow\r\nPLAIN\r\n.\r\n"
    assert h2.send(b"AUTH PLAIN\r\n") == b"+ \r\n"
    assert h2.send(base64.b64encode(b"\0bob\0pw") + b"\r\n").startswith(b"+OK Logged in")
    assert h2.logins[0] == Login("sasl", "bob", "pw", "")
    h3 = Harness(plaintext_auth=True)
    assert h3.send(b"AUTH PLAIN " + base64.b64encode(b"\0bob\0pw") + b"\r\n").startswith(b"+OK Logged in")
    h4 = Harness(plaintext_auth=True)
    assert h4.send(b"AUTH PLAIN\r\n*\r\n").endswith(b"-ERR Authentication cancelled\r\n")
    assert h4.send(b"AUTH CRAM-MD5\r\n").startswith(b"-ERR")
    assert h4.send(b"AUTH PLAIN %%%\r\n") == b"-ERR Cannot decode response\r\n"


def test_apop_before_stls_follows_the_plaintext_rule() -> None:
    h = Harness(tls_available=True)
    assert h.send(b"APOP alice 0123456789abcdef0123456789abcdef\r\n") == (
        b"-ERR [AUTH] Plaintext authentication disallowed, use STLS\r\n"
    )
    assert h.logins == []
    h2 = Harness(tls_available=True, plaintext_auth=True)
    assert h2.send(b"APOP alice 0123456789abcdef0123456789abcdef\r\n").startswith(b"+OK Logged in")
    assert [x.kind for x in h2.logins] == ["apop"]


def test_login_failures_close() -> None:
    h = Harness(tls_active=True)
    assert h.send(b"USER a\r\nPASS bad\r\n").endswith(b"-ERR [AUTH] Authentication failed\r\n")
    h.send(b"USER a\r\nPASS bad\r\n")
    assert h.send(b"USER a\r\nPASS bad\r\n").endswith(b"-ERR [AUTH] Too many failures, closing connection\r\n")
    assert h.closed


def test_relay_command_only_in_cluster() -> None:
    h = Harness()
    assert h.send(b"XDYNAMAIL-RELAY ticket\r\n") == b"-ERR Unknown command\r\n"
    h2 = Harness(relay_command=True)
    assert h2.send(b"XDYNAMAIL-RELAY ticket\r\n").startswith(b"+OK Logged in")
    assert h2.logins == [Login("relay", "", "ticket")]


def test_relay_challenge_transcript() -> None:
    assert Harness().send(b"XDYNAMAIL-CHALLENGE\r\n") == b"-ERR Unknown command\r\n"
    h = Harness(relay_command=True)
    out = h.send(b"XDYNAMAIL-CHALLENGE\r\n")
    assert out.startswith(b"+OK ") and out.endswith(b"\r\n")
    nonce = decode_nonce(out[4:-2])
    assert nonce is not None and len(nonce) >= 12
    # one challenge per connection, no arguments
    assert h.send(b"XDYNAMAIL-CHALLENGE\r\n") == b"-ERR Challenge already issued on this connection\r\n"
    assert Harness(relay_command=True).send(b"XDYNAMAIL-CHALLENGE x\r\n") == b"-ERR Syntax: XDYNAMAIL-CHALLENGE\r\n"
    # the ticket goes to the adapter with the nonce, which it spends
    assert h.send(b"XDYNAMAIL-RELAY bad\r\n") == b"-ERR [AUTH] Authentication failed\r\n"
    assert h.logins == [Login("relay", "", "bad", challenge=nonce)]
    assert h.send(b"XDYNAMAIL-RELAY ticket\r\n") == (
        b"-ERR [AUTH] Relay challenge already used on this connection\r\n")
    assert len(h.logins) == 1
    # a fresh connection's nonce differs; after login the commands are out of state
    h2 = Harness(relay_command=True)
    other = decode_nonce(h2.send(b"XDYNAMAIL-CHALLENGE\r\n")[4:-2])
    assert other is not None and other != nonce
    assert h2.send(b"XDYNAMAIL-RELAY ticket\r\n").startswith(b"+OK Logged in")
    assert h2.logins == [Login("relay", "", "ticket", challenge=other)]
    assert h2.send(b"XDYNAMAIL-CHALLENGE\r\n") == b"-ERR XDYNAMAIL-CHALLENGE not valid in this state\r\n"
    # without a challenge: the old ticket form, no nonce
    h3 = Harness(relay_command=True)
    assert h3.send(b"XDYNAMAIL-RELAY ticket\r\n").startswith(b"+OK Logged in")
    assert h3.logins == [Login("relay", "", "ticket", challenge=b"")]


def test_state_table() -> None:
    for verb, cmd in COMMANDS.items():
        if verb in RELAY_COMMANDS:
            continue
        h = Harness(tls_active=True)
        out = h.send(verb.encode() + b"\r\n")
        if State.AUTHORIZATION not in cmd.states:
            assert out == b"-ERR %s not valid in this state\r\n" % verb.encode()
        h = Harness(tls_active=True)
        h.send(b"USER a\r\nPASS pw\r\n")
        out = h.send(verb.encode() + b" 1\r\n")
        if State.TRANSACTION not in cmd.states:
            assert out == b"-ERR %s not valid in this state\r\n" % verb.encode()
        else:
            assert out


def test_long_lines() -> None:
    h = Harness(tls_active=True)
    assert h.send(b"USER " + b"a" * 300 + b"\r\n") == b"-ERR Line too long\r\n"
    assert h.send(b"USER " + b"a" * 41 + b"\r\n") == b"-ERR Argument too long\r\n"
    assert h.send(b"X" * 20000) == b"-ERR Line too long\r\n"
    assert h.send(b"more\r\nNOOP\r\n") == b"-ERR NOOP not valid in this state\r\n"
    assert h.send(b"FOO\r\n") == b"-ERR Unknown command\r\n"


def test_unauthenticated_command_limit() -> None:
    h = Harness()
    out = h.send(b"CAPA\r\n" * 60)
    assert out.endswith(b"-ERR Too many commands without login\r\n")
    assert h.closed


def test_idle_timeout() -> None:
    h = Harness()
    assert isinstance(h.core.idle_timeout(), Closing)
    assert h.core.data_to_send() == b"-ERR Autologout; idle for too long\r\n"


def test_top_filter_in_chunks() -> None:
    msg = b"A: 1\r\nB: 2\r\n\r\none\r\ntwo\r\nthree\r\n"
    for lines, expect in [(0, b"A: 1\r\nB: 2\r\n\r\n"), (2, b"A: 1\r\nB: 2\r\n\r\none\r\ntwo\r\n"), (9, msg)]:
        f = TopFilter(lines)
        out = b"".join(f.feed(msg[i : i + 3]) for i in range(0, len(msg), 3)) + f.feed(b"", final=True)
        assert out == expect
