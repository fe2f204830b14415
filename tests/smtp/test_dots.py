"""Dot-stuffing round trips and robustness of the SMTP/POP3 parsers against random input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamail.smtp.core import (
    NEED_DATA,
    PAUSED,
    AuthRequest,
    Closing,
    ConnectionClosed,
    MailFrom,
    MessageComplete,
    Mode,
    RcptTo,
    SessionConfig,
    SmtpServer,
    StartTls,
)
from dynamail.smtp.dots import CanonicalStuffer, Stuffer, Unstuffer
from dynamail.smtp.limits import SmtpLimits
from dynamail.smtp.replies import Reply

lines = st.lists(st.sampled_from([b"", b".", b"..", b".x", b"abc", b"a.b", b"\t.", b"x" * 50]), max_size=30)


def _content(ls: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in ls)


@given(lines, st.integers(min_value=1, max_value=17))
def test_stuff_unstuff_round_trip(ls: list[bytes], step: int) -> None:
    content = _content(ls)
    s = Stuffer()
    wire = b"".join(s.feed(content[i : i + step]) for i in range(0, len(content), step)) + s.end()
    assert wire.endswith(b".\r\n")
    u = Unstuffer()
    got = bytearray()
    done = False
    for i in range(0, len(wire), step):
        r = u.feed(wire[i : i + step])
        got += r.data
        assert not r.line_too_long
        if r.done:
            done = True
            break
    assert done
    assert bytes(got) == content


def test_stuffer_adds_final_crlf() -> None:
    s = Stuffer()
    assert s.feed(b"no newline") + s.end() == b"no newline\r\n.\r\n"
    s = Stuffer()
    assert s.end() == b".\r\n"


raw_pieces = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"x", b"MAIL FROM:<a@b>", b" "]), max_size=40)


@given(raw_pieces, st.integers(min_value=1, max_value=9))
def test_canonical_stuffer_sends_only_crlf_lines(pieces: list[bytes], step: int) -> None:
    """Outbound: whatever line endings the stored message has, the wire holds
    only CRLF lines, and the only line that is a lone dot is the terminator."""
    content = b"".join(pieces)
    s = CanonicalStuffer()
    wire = b"".join(s.feed(content[i : i + step]) for i in range(0, len(content), step)) + s.end()
    whole = CanonicalStuffer()
    assert wire == whole.feed(content) + whole.end()  # chunk boundaries change nothing
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    lines = wire.split(b"\r\n")
    assert lines[-1] == b""
    for line in lines[:-1]:
        assert b"\r" not in line and b"\n" not in line
    assert [i for i, line in enumerate(lines) if line == b"."] == [len(lines) - 2]
    u = Unstuffer()
    r = u.feed(wire)
    assert r.done and r.rest == b""
    canonical = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if canonical and not canonical.endswith(b"\r\n"):
        canonical += b"\r\n"
    assert r.data == canonical


def test_canonical_stuffer_defuses_smuggling_variants() -> None:
    for sep in (b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"):
        s = CanonicalStuffer()
        wire = s.feed(b"first" + sep + b"MAIL FROM:<ceo@ext.test>\r\n") + s.end()
        assert wire == b"first\r\n..\r\nMAIL FROM:<ceo@ext.test>\r\n.\r\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20), st.sampled_from([Mode.INBOUND, Mode.SUBMISSION]), st.booleans())
def test_smtp_core_survives_random_bytes(chunks: list[bytes], mode: Mode, check_sender: bool) -> None:
    core = SmtpServer(SessionConfig(
        "mx.example", mode=mode, tls_available=True, auth_without_tls=True, check_sender=check_sender,
        limits=SmtpLimits(max_message_size=2000),
    ))
    core.greeting()
    for chunk in [b"EHLO x\r\n", *chunks, b""]:
        core.receive_data(chunk)
        for _ in range(10000):
            ev = core.next_event()
            if ev is NEED_DATA or ev is PAUSED:
                break
            if isinstance(ev, RcptTo):
                core.accept_recipient()
            elif isinstance(ev, MailFrom) and core.deciding_sender:
                if ev.sender is None:
                    core.accept_sender()
                else:
                    core.reject_sender(Reply(553, "5.7.1", "not yours"))
            elif isinstance(ev, MessageComplete):
                core.finish_message(Reply(250, "2.0.0", "ok"))
            elif isinstance(ev, AuthRequest):
                core.auth_failed()
            elif isinstance(ev, StartTls):
                core.tls_started()
            elif isinstance(ev, (Closing, ConnectionClosed)):
                break
        out = core.data_to_send()
        for line in out.split(b"\r\n")[:-1]:
            assert line[:3].isdigit()
        assert core.buffered() <= 12288 + 300


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_pop3_core_survives_random_bytes(chunks: list[bytes]) -> None:
    from dynamail.pop3.core import NEED_DATA as P_NEED
    from dynamail.pop3.core import PAUSED as P_PAUSED
    from dynamail.pop3.core import Login, MaildropEntry, Pop3Config, Pop3Server, Retrieve, Update
    from dynamail.pop3.core import StartTls as PStartTls

    core = Pop3Server(Pop3Config("pop.example", timestamp="<a@b>", plaintext_auth=True))
    core.greeting()
    for chunk in [b"USER a\r\nPASS b\r\n", *chunks, b""]:
        core.receive_data(chunk)
        for _ in range(10000):
            ev = core.next_event()
            if ev is P_NEED or ev is P_PAUSED:
                break
            if isinstance(ev, Login):
                core.login_succeeded([MaildropEntry(1, 10, "1.1")])
            elif isinstance(ev, Update):
                core.update_done()
            elif isinstance(ev, PStartTls):
                core.tls_started()
            elif isinstance(ev, Retrieve):
                pass
        out = core.data_to_send()
        for line in out.split(b"\r\n")[:-1]:
            assert line.startswith((b"+OK", b"-ERR", b"+ ", b".")) or line[:1].isalnum()


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_path_parser_only_raises_syntax_problems(text: str) -> None:
    from dynamail.smtp.syntax import SyntaxProblem, parse_mail_from, parse_rcpt_to

    for parse in (lambda t: parse_mail_from("FROM:" + t), lambda t: parse_rcpt_to("TO:" + t, "mx.example")):
        try:
            address, params = parse(text)
        except SyntaxProblem as exc:
            assert 500 <= exc.reply.code < 600
        else:
            assert address is None or "@" in str(address)
            assert all(k == k.upper() for k in params)
