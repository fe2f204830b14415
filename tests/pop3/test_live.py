"""Real POP3 clients (poplib, fetchmail) against a real ``dynamail serve`` process."""

from __future__ import annotations

import hashlib
import poplib
import re
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from smtp.live import LiveServer, client_tls, next_host, prepare

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smtp-pop3")]

CAROL, CAROL_PW = "carol@example.org", "carol pw with spaces"
DAVE, DAVE_PW = "dave@example.org", "dave-pw"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("pop3") / "base"
    prepare(base, {CAROL: CAROL_PW, DAVE: DAVE_PW}, "[limits]\nlogin_timeout = 3.0\n")
    srv = LiveServer(base, next_host())
    srv.start()
    yield srv
    srv.stop()


def deliver(server: LiveServer, to: str, subject: str, body: str = "Body line\n.starts with dot\n") -> None:
    msg = EmailMessage()
    msg["From"] = "someone@outside.example"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=20) as s:
        assert s.send_message(msg, to_addrs=[to]) == {}


def stls_login(server: LiveServer, user: str, password: str) -> poplib.POP3:
    p = poplib.POP3(server.host, server.port("pop3"), timeout=20)
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps
    p.stls(context=client_tls())
    caps = p.capa()
    assert "USER" in caps and "UIDL" in caps and "TOP" in caps and "STLS" not in caps
    p.user(user)
    p.pass_(password)
    return p


def test_full_session_with_stls(server: LiveServer) -> None:
    deliver(server, CAROL, "pop one")
    deliver(server, CAROL, "pop two", "l1\nl2\nl3\n")
    p = stls_login(server, CAROL, CAROL_PW)
    count, size = p.stat()
    assert count == 2
    listing = p.list()[1]
    assert sum(int(x.split()[1]) for x in listing) == size
    uidls = [x.split()[1] for x in p.uidl()[1]]
    assert len(set(uidls)) == 2 and all(re.fullmatch(rb"\d+\.\d+", u) for u in uidls)
    resp, lines, octets = p.retr(1)
    assert resp.startswith(b"+OK")
    assert b"Subject: pop one" in lines and b".starts with dot" in lines
    assert octets >= int(listing[0].split()[1])
    top = p.top(2, 1)[1]
    assert b"Subject: pop two" in top and top[-1] == b"l1" and b"l2" not in top
    assert p.noop().startswith(b"+OK")
    p.dele(1)
    with pytest.raises(poplib.error_proto):
        p.retr(1)
    p.rset()
    p.dele(2)
    assert p.stat()[0] == 1
    p.quit()
    p = stls_login(server, CAROL, CAROL_PW)
    assert [x.split()[1] for x in p.uidl()[1]] == uidls[:1]
    p.quit()


def test_dropped_connection_deletes_nothing(server: LiveServer) -> None:
    deliver(server, DAVE, "keep me")
    p = stls_login(server, DAVE, DAVE_PW)
    n = p.stat()[0]
    for i in range(n):
        p.dele(i + 1)
    p.sock.close()  # no QUIT
    p = stls_login(server, DAVE, DAVE_PW)
    assert p.stat()[0] == n
    p.quit()


def test_uidl_stable_across_restart_and_apop(server: LiveServer) -> None:
    deliver(server, DAVE, "stable")
    p = poplib.POP3_SSL(server.host, server.port("pop3s"), context=client_tls(), timeout=20)
    p.user(DAVE)
    p.pass_(DAVE_PW)
    before = p.uidl()[1]
    p.quit()
    server.stop()
    server.start()
    p = poplib.POP3(server.host, server.port("pop3"), timeout=20)
    assert p.timestamp.search(p.welcome)
    with pytest.raises(poplib.error_proto, match="Plaintext authentication disallowed"):
        p.apop(DAVE, DAVE_PW)  # [pop3] allow_plaintext_login is off: APOP too waits for STLS
    p.stls(context=client_tls())
    p.apop(DAVE, DAVE_PW)
    assert p.uidl()[1] == before
    p.quit()


def test_bad_password_and_apop_digest(server: LiveServer) -> None:
    p = poplib.POP3(server.host, server.port("pop3"), timeout=20)
    with pytest.raises(poplib.error_proto, match="AUTH"):
        p.user(DAVE)  # plaintext refused before STLS
    stamp = p.timestamp.search(p.welcome).group(1)  # type: ignore[union-attr]
    p.stls(context=client_tls())
    wrong = hashlib.md5(stamp + b"not the password").hexdigest()
    with pytest.raises(poplib.error_proto, match="Authentication failed"):
        p._shortcmd(f"APOP {DAVE} {wrong}")
    p.quit()


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is not installed")
def test_fetchmail_downloads_mailbox(server: LiveServer, tmp_path: Path) -> None:
    for i in range(3):
        deliver(server, CAROL, f"fetch {i}")
    out = tmp_path / "mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"set no syslog\n"
        f"poll {server.host} service {server.port('pop3s')} protocol pop3 uidl\n"
        f'  user "{CAROL}" there with password "{CAROL_PW}" is "tester" here\n'
        f"  ssl no sslcertck\n"
        f"  mda \"/bin/sh -c 'cat >> {out}'\"\n"
        f"  fetchall\n"
    )
    rc.chmod(0o600)
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "FETCHMAILHOME": str(tmp_path)}
    run = subprocess.run(["fetchmail", "-f", str(rc), "--nodetach", "-v"], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    data = out.read_bytes()
    for i in range(3):
        assert f"Subject: fetch {i}".encode() in data
    p = poplib.POP3_SSL(server.host, server.port("pop3s"), context=client_tls(), timeout=20)
    p.user(CAROL)
    p.pass_(CAROL_PW)
    assert p.stat()[0] == 0  # fetchmail deleted what it downloaded
    p.quit()


def test_login_timeout_closes_unauthenticated_session(server: LiveServer) -> None:
    import socket

    with socket.create_connection((server.host, server.port("pop3")), timeout=20) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"+OK")
        sock.sendall(b"CAPA\r\n")
        while f.readline() not in (b".\r\n", b""):
            pass
        assert f.readline() == b"-ERR Autologout; idle for too long\r\n"  # after the 3 s login timeout
        assert f.readline() == b""
