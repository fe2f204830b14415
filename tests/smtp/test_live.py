"""Real clients against a real ``dynamail serve`` process: inbound, submission,
relay refusal, limits, BDAT, swaks, and the outbound queue."""

from __future__ import annotations

import base64
import imaplib
import poplib
import shutil
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from .live import LiveServer, Sink, client_tls, next_host, prepare

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smtp-pop3")]

ALICE, ALICE_PW = "alice@example.org", "alice-pw"
BOB, BOB_PW = "bob@example.org", "bob-pw"
TINY = "tiny@example.org"
SINK_PORT = 2525


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink(next_host(), SINK_PORT)
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("smtp") / "base"
    sink_host = sink.server_address[0]
    toml = (
        "[limits]\nidle_timeout = 4.0\n"
        f'[smtp]\nqueue_retry_seconds = 0.3\nmx = {{ "remote.example" = "{sink_host}:{SINK_PORT}" }}\n'
    )
    prepare(base, {ALICE: ALICE_PW, BOB: BOB_PW, TINY: "tiny-pw"}, toml, settings={TINY: {"MaxAccountSize": "3K"}},
            forwarders={"fwd@example.org": BOB, "ext@example.org": "far@remote.example"},
            aliases={ALICE: ["alice.alias"]})
    srv = LiveServer(base, next_host())
    srv.start()
    yield srv
    srv.stop()


def message(to: str, subject: str, body: str = "Hello.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@outside.example"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def pop3_messages(server: LiveServer, user: str, password: str) -> list[bytes]:
    p = poplib.POP3_SSL(server.host, server.port("pop3s"), context=client_tls(), timeout=20)
    try:
        p.user(user)
        p.pass_(password)
        count, _ = p.stat()
        return [b"\r\n".join(p.retr(i + 1)[1]) for i in range(count)]
    finally:
        p.quit()


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.1)


def test_inbound_delivery_with_received_header(server: LiveServer) -> None:
    with smtplib.SMTP(server.host, server.port("smtp"), local_hostname="client.example", timeout=20) as s:
        code, caps = s.ehlo()
        assert code == 250
        for ext in (b"PIPELINING", b"SIZE", b"8BITMIME", b"ENHANCEDSTATUSCODES", b"STARTTLS", b"CHUNKING", b"SMTPUTF8"):
            assert ext in caps
        assert b"AUTH" not in caps
        refused = s.send_message(message(ALICE, "inbound one"), to_addrs=[ALICE])
        assert refused == {}
    msgs = pop3_messages(server, ALICE, ALICE_PW)
    mine = [m for m in msgs if b"Subject: inbound one" in m]
    assert len(mine) == 1
    assert mine[0].startswith(b"Received: from client.example ([127.0.0.1])")
    assert b"by test.example (dynamail) with ESMTP" in mine[0]


def test_unknown_recipient_and_relay_refused(server: LiveServer) -> None:
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=20) as s:
        s.ehlo()
        s.mail("x@outside.example")
        code, text = s.rcpt("nobody@example.org")
        assert (code, text[:5]) == (550, b"5.1.1")
        # never an open relay: refused from a loopback (local-looking) client
        code, text = s.rcpt("victim@remote.example")
        assert (code, text[:5]) == (550, b"5.7.1")


def test_relay_refused_from_other_address(server: LiveServer) -> None:
    with smtplib.SMTP(server.host, server.port("smtp"), source_address=("127.0.12.250", 0), timeout=20) as s:
        s.ehlo()
        s.mail("x@outside.example")
        code, text = s.rcpt("victim@remote.example")
        assert (code, text[:5]) == (550, b"5.7.1")
    # and submission without authentication refuses MAIL altogether
    with smtplib.SMTP(server.host, server.port("submission"), timeout=20) as s:
        s.ehlo()
        code, text = s.mail("x@outside.example")
        assert (code, text[:5]) == (530, b"5.7.0")


def test_submission_starttls_auth_local_and_remote(server: LiveServer, sink: Sink) -> None:
    before = len(sink.messages)
    with smtplib.SMTP(server.host, server.port("submission"), timeout=20) as s:
        s.ehlo()
        assert not s.has_extn("auth")  # no AUTH before TLS
        s.starttls(context=client_tls())
        s.ehlo()
        assert "PLAIN" in s.esmtp_features["auth"]
        s.login(ALICE, ALICE_PW)
        refused = s.send_message(message(BOB, "submitted"), from_addr=ALICE, to_addrs=[BOB, "friend@remote.example"])
        assert refused == {}
    assert any(b"Subject: submitted" in m for m in pop3_messages(server, BOB, BOB_PW))
    got = sink.wait_messages(before + 1)
    sender, rcpts, data = got[-1]
    assert (sender, rcpts) == (ALICE, ["friend@remote.example"])
    assert b"Subject: submitted" in data and b"with ESMTPSA" in data


def test_outbound_never_passes_on_a_smuggled_message(server: LiveServer, sink: Sink) -> None:
    """Issue 17 finding 1: bare-LF/bare-CR dots submitted in a body reach the
    next hop as content on canonical CRLF lines, never as the end of DATA.
    The sink reads lines up to LF, as a lenient next hop would."""
    before = len(sink.messages)
    smuggled = (
        b"Subject: smuggle\r\n\r\nfirst\n.\nMAIL FROM:<ceo@ext.test>\r\nRCPT TO:<victim@remote.example>\r\n"
        b"DATA\r\nSubject: forged\r\n\r\nsecond\r.\rthird\n.\r\nRCPT TO:<victim2@remote.example>\r\nend\r\n"
    )
    with smtplib.SMTP_SSL(server.host, server.port("smtps"), context=client_tls(), timeout=20) as s:
        s.login(ALICE, ALICE_PW)
        s.mail(ALICE)
        assert s.rcpt("friend@remote.example")[0] == 250
        assert s.docmd("DATA")[0] == 354
        s.send(smuggled + b"\r\n.\r\n")  # raw: smtplib.data() would fix the line ends itself
        assert s.getreply()[0] == 250
    got = sink.wait_messages(before + 1)
    time.sleep(1.0)  # a smuggled second message would arrive right behind the first
    assert len(sink.messages) == before + 1
    assert not [c for c in sink.commands if "ceo@ext.test" in c or "victim" in c]
    _sender, rcpts, data = got[before]
    assert rcpts == ["friend@remote.example"]
    body = data.split(b"\r\n\r\n", 1)[1]
    assert body.startswith(b"first\r\n.\r\nMAIL FROM:<ceo@ext.test>\r\n")  # the dot arrived stuffed, as content
    assert b"second\r\n.\r\nthird\r\n.\r\nRCPT TO:<victim2@remote.example>" in body
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")


def test_submission_implicit_tls_465(server: LiveServer) -> None:
    with smtplib.SMTP_SSL(server.host, server.port("smtps"), context=client_tls(), timeout=20) as s:
        s.login(BOB, BOB_PW)
        assert s.send_message(message(ALICE, "via 465"), from_addr=BOB, to_addrs=[ALICE]) == {}
    assert any(b"Subject: via 465" in m for m in pop3_messages(server, ALICE, ALICE_PW))


def test_submission_hygiene_date_message_id_sender(server: LiveServer) -> None:
    """RFC 6409 8: missing Date and Message-ID are added, the envelope sender
    must belong to the authenticated account, Received names the account."""
    bare = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: bare submission\r\n\r\nno date here\r\n"
    dated = (
        b"Date: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <own.1@client.example>\r\n"
        b"Subject: dated submission\r\n\r\nbody\r\n"
    )
    with smtplib.SMTP_SSL(server.host, server.port("smtps"), context=client_tls(), timeout=20) as s:
        s.login(ALICE, ALICE_PW)
        assert s.sendmail(ALICE, [BOB], bare) == {}
        assert s.sendmail("alice.alias@example.org", [BOB], dated) == {}  # an alias of the account
        assert s.sendmail("", [BOB], b"Subject: null sender\r\n\r\nx\r\n") == {}
        code, text = s.mail(BOB)  # someone else's address
        assert (code, text[:5]) == (553, b"5.7.1")
        code, text = s.mail("alice@outside.example")
        assert (code, text[:5]) == (553, b"5.7.1")
        code, text = s.rcpt(BOB)  # no transaction was started
        assert code == 503
    msgs = pop3_messages(server, BOB, BOB_PW)
    [got] = [m for m in msgs if b"Subject: bare submission" in m]
    head = got.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"Received: from ")
    assert b"(authenticated as alice@example.org)" in head and b"with ESMTPSA" in head
    assert head.count(b"\r\nDate: ") == 1 and head.count(b"\r\nMessage-ID: <") == 1
    for secret in (ALICE_PW.encode(), base64.b64encode(b"\0" + ALICE.encode() + b"\0" + ALICE_PW.encode())):
        assert secret not in got
    [kept] = [m for m in msgs if b"Subject: dated submission" in m]
    assert kept.count(b"Date: ") == 1 and b"Date: Mon, 2 Nov 2026 10:00:00 +0100" in kept
    assert kept.count(b"Message-ID: ") == 1 and b"<own.1@client.example>" in kept


def test_inbound_leaves_headers_alone(server: LiveServer) -> None:
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=20) as s:
        assert s.sendmail("x@outside.example", [BOB], b"Subject: inbound bare\r\n\r\nx\r\n") == {}
    [got] = [m for m in pop3_messages(server, BOB, BOB_PW) if b"Subject: inbound bare" in m]
    assert b"\r\nDate: " not in got and b"Message-ID" not in got and b"authenticated" not in got


def test_bad_auth_is_refused_then_closed(server: LiveServer) -> None:
    s = smtplib.SMTP_SSL(server.host, server.port("smtps"), context=client_tls(), source_address=("127.0.12.251", 0), timeout=20)
    s.ehlo()
    codes = []
    for _ in range(3):
        code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0nobody@example.org\0wrong").decode())
        codes.append(code)
    assert codes == [535, 535, 421]
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.noop()


def raw_session(host: str, port: int) -> tuple[socket.socket, callable]:  # type: ignore[valid-type]
    sock = socket.create_connection((host, port), timeout=20)
    f = sock.makefile("rb")

    def reply() -> list[bytes]:
        lines = []
        while True:
            line = f.readline()
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return lines

    return sock, reply


def test_bdat_via_raw_commands(server: LiveServer) -> None:
    sock, reply = raw_session(server.host, server.port("smtp"))
    assert reply()[0].startswith(b"220")
    sock.sendall(b"EHLO raw.example\r\n")
    assert any(b"CHUNKING" in line for line in reply())
    part1 = b"Subject: chunked\r\n\r\nfirst part, "
    part2 = b"second part\r\n.line with dot\r\n"
    sock.sendall(b"MAIL FROM:<raw@outside.example> BODY=BINARYMIME\r\nRCPT TO:<" + BOB.encode() + b">\r\n")
    assert reply()[0].startswith(b"250") and reply()[0].startswith(b"250")
    sock.sendall(b"BDAT %d\r\n" % len(part1) + part1)
    assert reply()[0] == b"250 2.0.0 %d octets received" % len(part1)
    sock.sendall(b"BDAT %d LAST\r\n" % len(part2) + part2)
    assert reply()[0].startswith(b"250 2.0.0 Message accepted")
    sock.sendall(b"QUIT\r\n")
    assert reply()[0].startswith(b"221")
    sock.close()
    got = [m for m in pop3_messages(server, BOB, BOB_PW) if b"Subject: chunked" in m]
    assert len(got) == 1
    assert got[0].endswith(b"first part, second part\r\n.line with dot")  # poplib strips the final CRLF


def test_declared_size_too_big_and_long_line(server: LiveServer) -> None:
    sock, reply = raw_session(server.host, server.port("smtp"))
    reply()
    sock.sendall(b"EHLO raw.example\r\n")
    reply()
    sock.sendall(b"MAIL FROM:<a@outside.example> SIZE=999999999999\r\n")
    assert reply()[0].startswith(b"552 5.3.4")
    sock.sendall(b"MAIL FROM:<a@outside.example>\r\nRCPT TO:<" + ALICE.encode() + b">\r\nDATA\r\n")
    assert [r[0][:3] for r in (reply(), reply(), reply())] == [b"250", b"250", b"354"]
    sock.sendall(b"Subject: long\r\n\r\n" + b"x" * 1200 + b"\r\n.\r\n")
    assert reply()[0].startswith(b"500 5.5.2")
    sock.close()


def test_idle_timeout_and_connection_limit(server: LiveServer) -> None:
    sock, reply = raw_session(server.host, server.port("smtp"))
    reply()
    sock.settimeout(20)
    assert reply()[0].startswith(b"421 4.4.2")  # the server's idle timeout is 4 s here
    sock.close()
    conns = []
    try:
        for _ in range(20):
            s, r = raw_session(server.host, server.port("smtp"))
            assert r()[0].startswith(b"220")
            conns.append(s)
        s, r = raw_session(server.host, server.port("smtp"))
        assert r()[0].startswith(b"421 4.7.0")
        s.close()
    finally:
        for s in conns:
            s.close()


def test_large_message_streams_through(server: LiveServer) -> None:
    body = ("0123456789" * 7 + "\n") * (20 * 1024 * 1024 // 71)
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=60) as s:
        assert s.send_message(message(BOB, "large", body), to_addrs=[BOB]) == {}
    p = poplib.POP3_SSL(server.host, server.port("pop3s"), context=client_tls(), timeout=60)
    p.user(BOB)
    p.pass_(BOB_PW)
    sizes = [int(x.split()[1]) for x in p.list()[1]]
    assert max(sizes) > 20 * 1024 * 1024
    p.quit()
    assert list((server.base / "Spool").iterdir()) == []  # the spool file is gone


def test_visible_over_imap(server: LiveServer) -> None:
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=20) as s:
        s.send_message(message(ALICE, "for imap"), to_addrs=[ALICE])
    try:
        m = imaplib.IMAP4(server.host, server.port("imap"), timeout=20)
    except OSError:
        pytest.skip("IMAP listener not available in this build")
    try:
        m.starttls(ssl_context=client_tls())
        m.login(ALICE, ALICE_PW)
        m.select("INBOX")
        typ, data = m.search(None, "SUBJECT", '"for imap"')
        assert typ == "OK" and data[0].split()
    finally:
        m.logout()


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_inbound_and_submission(server: LiveServer) -> None:
    run = subprocess.run(
        ["swaks", "--server", f"{server.host}:{server.port('smtp')}", "--to", ALICE, "--from", "s@outside.example",
         "--header", "Subject: swaks inbound", "--pipeline"],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run(
        ["swaks", "--server", f"{server.host}:{server.port('submission')}", "--to", BOB, "--from", ALICE,
         "--tls", "--auth", "LOGIN", "--auth-user", ALICE, "--auth-password", ALICE_PW,
         "--header", "Subject: swaks submission"],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert any(b"Subject: swaks submission" in m for m in pop3_messages(server, BOB, BOB_PW))
    assert any(b"Subject: swaks inbound" in m for m in pop3_messages(server, ALICE, ALICE_PW))


def test_permanent_failure_bounces_to_sender(server: LiveServer, sink: Sink) -> None:
    with smtplib.SMTP_SSL(server.host, server.port("smtps"), context=client_tls(), timeout=20) as s:
        s.login(ALICE, ALICE_PW)
        assert s.send_message(message("reject-me@remote.example", "will bounce"), from_addr=ALICE, to_addrs=["reject-me@remote.example"]) == {}

    def bounced() -> bool:
        return any(b"Undelivered Mail Returned to Sender" in m for m in pop3_messages(server, ALICE, ALICE_PW))

    wait_for(bounced, 30)
    dsn = next(m for m in pop3_messages(server, ALICE, ALICE_PW) if b"Undelivered Mail" in m)
    assert b"multipart/report; report-type=delivery-status" in dsn
    assert b"Final-Recipient: rfc822; reject-me@remote.example" in dsn
    assert b"Status: 5.1.1" in dsn
    assert b"Subject: will bounce" in dsn  # the original headers


def test_dsn_parameters_are_xtext_and_cannot_inject_report_fields(server: LiveServer) -> None:
    """Issue 17 finding 5: ENVID/ORCPT that are not xtext, or decode to a
    control character, are refused at the port; valid ones reach the report
    decoded (RFC 3461 4, RFC 3464 2.2.1/2.3.2)."""
    with smtplib.SMTP_SSL(server.host, server.port("smtps"), context=client_tls(), timeout=20) as s:
        s.login(ALICE, ALICE_PW)
        for bad in ("env1\rX-Injected-Envid:yes", "env1+0DX-Injected:yes", "a+2", "a=b", "x" * 101):
            s.send(f"MAIL FROM:<{ALICE}> ENVID={bad}\r\n".encode())  # raw: smtplib refuses a bare CR itself
            code, text = s.getreply()
            assert (code, text[:5]) == (501, b"5.5.4"), bad
        assert s.docmd(f"MAIL FROM:<{ALICE}> RET=HDRS ENVID=env+2Bone")[0] == 250
        for bad in ("rfc822;a@b\rX-Injected:yes", "rfc822;a+0Ab@c", "rfc822", ";a@b", "rfc822;"):
            s.send(f"RCPT TO:<reject-dsn@remote.example> NOTIFY=FAILURE ORCPT={bad}\r\n".encode())
            code, text = s.getreply()
            assert (code, text[:5]) == (501, b"5.5.4"), bad
        assert s.docmd("RCPT TO:<reject-dsn@remote.example> NOTIFY=FAILURE ORCPT=rfc822;orig+2Bx@remote.example")[0] == 250
        assert s.docmd("DATA")[0] == 354
        s.send(b"Subject: dsn params\r\n\r\nbody\r\n.\r\n")
        assert s.getreply()[0] == 250

    def report() -> bytes | None:
        return next((m for m in pop3_messages(server, ALICE, ALICE_PW) if b"reject-dsn@remote.example" in m), None)

    wait_for(lambda: report() is not None, 30)
    dsn = report()
    assert dsn is not None
    assert b"Original-Envelope-Id: env+one\r\n" in dsn
    assert b"Original-Recipient: rfc822;orig+x@remote.example\r\n" in dsn
    assert b"X-Injected" not in dsn


def test_queue_survives_kill_and_delivers_when_mx_is_up(tmp_path: Path) -> None:
    sink_host = next_host()
    base = tmp_path / "base"
    toml = f'[smtp]\nqueue_retry_seconds = 0.2\nmx = {{ "down.example" = "{sink_host}:{SINK_PORT}" }}\n'
    prepare(base, {ALICE: ALICE_PW}, toml)
    srv = LiveServer(base, next_host())
    srv.start()
    try:
        with smtplib.SMTP_SSL(srv.host, srv.port("smtps"), context=client_tls(), timeout=20) as s:
            s.login(ALICE, ALICE_PW)
            assert s.send_message(message("x@down.example", "queued across kill"), from_addr=ALICE, to_addrs=["x@down.example"]) == {}
        queue = base / "Queue"
        assert len(list(queue.glob("*.env"))) == 1
        time.sleep(1.0)  # a few failed attempts against the closed port
        srv.kill()
        assert len(list(queue.glob("*.env"))) == 1 and len(list(queue.glob("*.msg"))) == 1
        sink = Sink(sink_host, SINK_PORT)
        try:
            srv.start()
            got = sink.wait_messages(1)
            assert got[0][1] == ["x@down.example"] and b"queued across kill" in got[0][2]
            # the entry (.env) goes first, then its message file (.msg)
            wait_for(lambda: not list(queue.glob("*.env")) and not list(queue.glob("*.msg")))
        finally:
            sink.close()
    finally:
        srv.stop()


def test_quota_checked_at_rcpt(server: LiveServer) -> None:
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=20) as s:
        s.ehlo()
        s.mail("x@outside.example", ["SIZE=5000"])
        code, text = s.rcpt(TINY)
        assert (code, text[:5]) == (552, b"5.2.2")  # larger than the whole quota
        s.rset()
        assert s.send_message(message(TINY, "fills it", "y" * 2200 + "\n"), to_addrs=[TINY]) == {}
        s.mail("x@outside.example", ["SIZE=1000"])
        code, text = s.rcpt(TINY)
        assert (code, text[:5]) == (452, b"4.2.2")  # full for now: try later
        s.rset()
        s.mail("x@outside.example")
        assert s.rcpt(TINY)[0] == 250  # no size declared: a small message may fit
        s.rset()


def test_forwarders_local_and_remote(server: LiveServer, sink: Sink) -> None:
    before = len(sink.messages)
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=20) as s:
        assert s.send_message(message("fwd@example.org", "forwarded inside"), to_addrs=["fwd@example.org"]) == {}
        assert s.send_message(message("ext@example.org", "forwarded outside"), to_addrs=["ext@example.org"]) == {}
    assert any(b"Subject: forwarded inside" in m for m in pop3_messages(server, BOB, BOB_PW))
    got = sink.wait_messages(before + 1)
    assert any(rcpts == ["far@remote.example"] and b"Subject: forwarded outside" in data for _, rcpts, data in got)


def test_notify_success_for_local_delivery(server: LiveServer) -> None:
    with smtplib.SMTP_SSL(server.host, server.port("smtps"), context=client_tls(), timeout=20) as s:
        s.login(ALICE, ALICE_PW)
        s.ehlo()
        assert s.has_extn("dsn")
        refused = s.sendmail(ALICE, [BOB], message(BOB, "tell me").as_bytes(), mail_options=["RET=HDRS", "ENVID=e42"], rcpt_options=["NOTIFY=SUCCESS"])
        assert refused == {}
    reports = [m for m in pop3_messages(server, ALICE, ALICE_PW) if b"Successful Mail Delivery Report" in m]
    assert len(reports) == 1
    assert b"Original-Envelope-Id: e42" in reports[0]
    assert b"Final-Recipient: rfc822; bob@example.org\r\nAction: delivered\r\nStatus: 2.0.0" in reports[0]


def test_smtputf8_recipients(server: LiveServer) -> None:
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=20) as s:
        s.ehlo()
        assert s.has_extn("smtputf8")
        s.command_encoding = "utf-8"
        s.mail("sender@outside.example", ["SMTPUTF8"])
        code, text = s.rcpt("jürgen@example.org")
        assert (code, text[:5]) == (550, b"5.1.1")  # a local domain: unknown user, not relaying
        code, text = s.rcpt("x@bücher.example")
        assert (code, text[:5]) == (550, b"5.7.1")
        s.rset()
        s.mail("sender@outside.example")
        s.command_encoding = "utf-8"  # smtplib would refuse to send it otherwise
        code, text = s.rcpt("jürgen@example.org")
        assert (code, text[:5]) == (553, b"5.6.7")  # UTF-8 address without SMTPUTF8
