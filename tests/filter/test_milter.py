"""The milter hook against a real milter: OpenDKIM (Debian ``opendkim``) in
verifying mode on loopback, in front of a real ``dynamail serve``: a good
signature gets OpenDKIM's Authentication-Results field, a broken one is
rejected (OpenDKIM's ``On-BadSignature reject``), and with OpenDKIM stopped
the server answers 451 (fail closed); failing open against a closed port."""

from __future__ import annotations

import asyncio
import imaplib
import shutil
import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from tests.smtp.live import LiveServer, next_host, prepare, wait_port

from dynamail.directory import Directory
from dynamail.filter.milter import MilterFilter, header_fields
from dynamail.mailauth.signing import Signer

OPENDKIM = shutil.which("opendkim") or shutil.which("opendkim", path="/usr/sbin:/usr/bin")
RCPT, PW = "rcpt@local.example", "pw-1234"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_header_fields() -> None:
    assert header_fields(b"A: 1\r\nB: two\r\n\tlines\r\n\r\nbody") == [("A", "1"), ("B", "two\r\n\tlines")]


def test_milter_down_fails_open_or_closed() -> None:
    address = f"127.0.0.1:{_free_port()}"

    async def go(fail_open: bool) -> str:
        v = await MilterFilter(address, timeout=2.0, fail_open=fail_open).scan(
            b"Subject: x\r\n\r\nhi\r\n", ip="127.0.0.1", helo="h", mail_from="", rcpts=["a@b"], hostname="mx",
            queue_id="q")
        return f"{v.action} {v.code}"

    assert asyncio.run(go(True)) == "accept 0"
    assert asyncio.run(go(False)) == "defer 451"


class OpenDkim:
    def __init__(self, workdir: Path, dns: str) -> None:
        self.port = _free_port()
        (workdir / "dns.txt").write_text(dns)
        self.conf = workdir / "opendkim.conf"
        self.conf.write_text(
            f"Socket inet:{self.port}@127.0.0.1\nMode v\nTestDNSData file:{workdir / 'dns.txt'}\n"
            f"AuthservID mx.milter.test\nOn-BadSignature reject\nSyslog no\nPidFile {workdir / 'pid'}\n")
        assert OPENDKIM is not None
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [OPENDKIM, "-f", "-x", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        wait_port("127.0.0.1", self.port, 20)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
            time.sleep(0.2)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Directory:
    d = Directory(tmp_path_factory.mktemp("keys") / "b", main_domain="m.example",
                  password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    d.create_domain("example.org")
    d.create_dkim_key("example.org", "ed25519", "e1")
    return d


@pytest.fixture(scope="module")
def opendkim(tmp_path_factory: pytest.TempPathFactory, keys: Directory) -> Iterator[OpenDkim]:
    if OPENDKIM is None:
        pytest.skip("opendkim (Debian opendkim) is not installed")
    dns = "".join(f"{k['name']} {k['txt']}\n" for k in keys.dkim_keys("example.org"))
    o = OpenDkim(tmp_path_factory.mktemp("opendkim"), dns)
    yield o
    o.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, opendkim: OpenDkim) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("milter") / "base"
    prepare(base, {RCPT: PW}, f'[smtp]\nmilter = "inet:127.0.0.1:{opendkim.port}"\nfilter_fail_open = false\n')
    srv = LiveServer(base, next_host())
    srv.start()
    wait_port(srv.host, srv.port("imap"))
    yield srv
    srv.stop()


def message(subject: str) -> bytes:
    return (f"From: Alice <alice@example.org>\r\nTo: {RCPT}\r\nSubject: {subject}\r\n"
            "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\r\nHello.\r\n").encode()


def send(server: LiveServer, data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=30) as s:
        s.ehlo("client.example.org")
        s.mail("alice@example.org")
        assert s.rcpt(RCPT)[0] == 250
        return s.data(data)


def inbox(server: LiveServer) -> list[bytes]:
    c = imaplib.IMAP4(server.host, server.port("imap"), timeout=20)
    try:
        c.login(RCPT, PW)
        c.select("INBOX", readonly=True)
        _, data = c.uid("SEARCH", "ALL")
        return [bytes(c.uid("FETCH", u, "(BODY.PEEK[])")[1][0][1]) for u in data[0].split()]  # type: ignore[index]
    finally:
        c.logout()


@pytest.mark.slow
@pytest.mark.xdist_group("milter")
def test_opendkim_milter(server: LiveServer, opendkim: OpenDkim, keys: Directory) -> None:
    good = message("signed")
    code, text = send(server, Signer(keys).signature(good) + good)
    assert code == 250, text
    [got] = [m for m in inbox(server) if b"Subject: signed" in m]
    head = got.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    assert head.startswith(b"Authentication-Results: mx.milter.test;"), head[:300]
    assert b"dkim=pass" in head and b"header.s=e1" in head
    bad = message("tampered")
    code, _ = send(server, (Signer(keys).signature(bad) + bad).replace(b"Hello.", b"Pay now."))
    assert code == 550
    assert not [m for m in inbox(server) if b"tampered" in m]
    opendkim.stop()
    code, text = send(server, message("while down"))
    assert code == 451 and text.startswith(b"4.7.1")
