"""Hostile clients on every port of a running server.  Afterwards the
server is still up, still serves another client, and its memory has not
grown beyond a generous bound."""

from __future__ import annotations

import contextlib
import imaplib
import os
import smtplib
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from tests.e2e.conftest import (
    DOMAIN,
    IMPLICIT_TLS,
    OPEN_FILES,
    PM_PASSWORD,
    PORTS,
    Server,
    source,
    start_server,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

MB = 1 << 20
RSS_BOUND = 200 * MB
HOG = {"hog": "hog-pw-3", "user": "user-pw-4"}


@pytest.fixture(scope="module")
def victim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("hostile") / "base", HOG)
    try:
        yield srv
    finally:
        srv.stop()


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _connect(srv: Server, name: str, src: str) -> socket.socket:
    s = socket.create_connection((srv.host, srv.port(name)), timeout=20, source_address=(src, 0))
    if name in IMPLICIT_TLS:
        s = _insecure().wrap_socket(s)
    return s


def _abuse(srv: Server, name: str, payload: bytes) -> None:
    """Send ``payload``, then read what comes back for a moment; the server
    may answer with errors or close the connection, both are fine."""
    with contextlib.suppress(OSError), _connect(srv, name, source(2)) as s:
        with contextlib.suppress(OSError):
            s.sendall(payload)
        s.settimeout(1.0)
        with contextlib.suppress(OSError):
            while s.recv(65536):
                pass


def _rss(srv: Server) -> int:
    return psutil.Process(srv.pid).memory_info().rss


def _still_serves(srv: Server) -> None:
    ctx = srv.tls_client()
    imap = imaplib.IMAP4(srv.host, srv.port("imap"), timeout=30)
    imap.starttls(ssl_context=ctx)
    imap.login(f"user@{DOMAIN}", "user-pw-4")
    assert imap.select("INBOX")[0] == "OK"
    imap.logout()
    with smtplib.SMTP(srv.host, srv.port("smtp"), timeout=30) as smtp:
        assert smtp.sendmail("x@elsewhere.example", [f"user@{DOMAIN}"], b"Subject: alive\r\n\r\nok\r\n") == {}
    assert srv.cli("postmaster", PM_PASSWORD, ["GETVERSION"])[0].startswith("201 ")
    with urllib.request.urlopen(f"http://{srv.host}:{srv.port('http')}/health", timeout=30) as r:
        assert r.status == 200


PAYLOADS = {
    "random": lambda: os.urandom(256 * 1024),
    "nul": lambda: b"A\x00B\x00C" * 2000 + b"\r\n" + b"\x00" * 5000 + b"\r\n",
    "long-line": lambda: b"X" * (10 * MB) + b"\r\n",
    "unbalanced": lambda: (
        b"a1 LOGIN {5}\r\nab"  # a literal that never completes
        b'\r\nb1 SELECT "INBOX\r\nc1 APPEND INBOX (\\Seen {99999999999+}\r\n' + b"(" * 5000 + b"\r\n"
    ),
}


def test_garbage_on_every_port(victim: Server) -> None:
    before = _rss(victim)
    jobs = [(name, p) for name in PORTS for p in PAYLOADS.values()]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda job: _abuse(victim, job[0], job[1]()), jobs))
    assert victim.proc is not None and victim.proc.poll() is None
    _still_serves(victim)
    assert _rss(victim) - before < RSS_BOUND


@pytest.mark.parametrize("name,busy", [
    ("imap", b"* BYE"), ("pop3", b"-ERR"), ("smtp", b"421"), ("cli", b"5"),
])
def test_thousands_of_connections_from_one_address(victim: Server, name: str, busy: bytes) -> None:
    """More connections from one address than the per-address limit (1000 at
    most): the extra ones get the protocol's busy reply; another address is
    still served, and the first address again once its connections close."""
    if OPEN_FILES < 2200:
        pytest.skip(f"open-file limit {OPEN_FILES} too low for 1010 connections (needs 2200)")
    socks: list[socket.socket] = []
    try:
        for _ in range(1010):
            socks.append(_connect(victim, name, source(3)))
        last = socks[-1]
        last.settimeout(20)
        assert last.recv(200).startswith(busy)
        with _connect(victim, name, source(4)) as other:
            assert not other.recv(200).startswith(busy)
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 30
    while True:  # the server notices the closes asynchronously
        with _connect(victim, name, source(3)) as again:
            if not again.recv(200).startswith(busy):
                break
        assert time.monotonic() < deadline, "address still refused after its connections closed"
        time.sleep(0.2)


def test_client_that_never_reads_a_large_fetch(victim: Server) -> None:
    """Five sessions pipeline FETCH of 20 MB of mail 50 times each and never
    read: the server must not buffer it all, and others keep working."""
    ctx = victim.tls_client()
    imap = imaplib.IMAP4_SSL(victim.host, victim.port("imaps"), ssl_context=ctx, timeout=60)
    imap.login(f"hog@{DOMAIN}", "hog-pw-3")
    body = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 5000
    for _ in range(4):
        assert imap.append("INBOX", None, None, body)[0] == "OK"
    imap.logout()
    before = _rss(victim)
    hogs = []
    try:
        for _ in range(5):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.bind((source(5), 0))
            s.settimeout(30)
            s.connect((victim.host, victim.port("imap")))
            f = s.makefile("rb")
            f.readline()
            s.sendall(f"a LOGIN hog@{DOMAIN} hog-pw-3\r\nb SELECT INBOX\r\n".encode())
            while not f.readline().startswith(b"b OK"):
                pass
            s.sendall(b"".join(b"c%d FETCH 1:* BODY.PEEK[]\r\n" % n for n in range(50)))
            hogs.append(s)
        done = threading.Event()
        peak = [before]

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss(victim))
                time.sleep(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            time.sleep(2)
            _still_serves(victim)
        finally:
            done.set()
            watcher.join()
        assert peak[0] - before < RSS_BOUND
    finally:
        for s in hogs:
            s.close()
    _still_serves(victim)
