"""Issue 17: what an outside probe of a standalone server found, each checked
through the real ports of a real ``dynamail serve`` process."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import ACCOUNTS, DOMAIN, PM_PASSWORD, Server, free_host

pytestmark = pytest.mark.slow

LOGIN_TIMEOUT = 2.0
IDLE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with short login and idle timeouts."""
    base = tmp_path_factory.mktemp("security") / "base"
    (base / "Settings").mkdir(parents=True)
    (base / "Settings" / "server.toml").write_text(
        f"[limits]\nlogin_timeout = {LOGIN_TIMEOUT}\nidle_timeout = {IDLE_TIMEOUT}\ncli_idle_timeout = {IDLE_TIMEOUT}\n"
    )
    srv = Server(base, free_host())
    srv.start()
    replies = srv.cli("postmaster", PM_PASSWORD, [
        f'CREATEACCOUNT {name}@{DOMAIN} {{Password="{pw}";}}' for name, pw in ACCOUNTS.items()
    ])
    assert all(r == "200 OK" for r in replies), replies
    try:
        yield srv
    finally:
        srv.stop()


# ---- finding 3: the time to log in counts from the connection ---------------------------


def _trickle(srv: Server, port: str, opening: list[bytes], drip: bytes, cap: float = 25.0) -> float:
    """Connect, send ``opening`` (one item per reply awaited), then one piece
    of ``drip`` every 0.4 s (cycling); the seconds until the server closes."""
    with socket.create_connection((srv.host, srv.port(port)), timeout=cap) as s:
        start = time.monotonic()
        f = s.makefile("rb")
        f.readline()  # greeting
        for line in opening:
            s.sendall(line)
            f.readline()
        s.settimeout(0.4)
        i = 0
        while time.monotonic() - start < cap:
            try:
                s.sendall(drip[i % len(drip) : i % len(drip) + 1] if len(drip) > 1 else drip)
            except OSError:
                return time.monotonic() - start
            i += 1
            try:
                while True:
                    got = s.recv(4096)
                    if not got:
                        return time.monotonic() - start
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - start
        return cap


def test_trickling_clients_are_cut_off_at_the_deadline(strict: Server) -> None:
    """Issue 17 finding 3: NOOP every second, an unfinished literal or a line
    trickled a byte at a time kept a client that never logs in connected for
    minutes (IMAP, admin CLI; submission before AUTH likewise); after login,
    a trickled line is bounded too."""
    alice = f"alice@{DOMAIN}"
    pre_login = {
        "imap NOOP": ("imap", [], b"a NOOP\r\n"),
        "imap literal": ("imap", [b"a LOGIN {999999999+}\r\n"], b"x"),
        "imap line": ("imap", [], b"a LOGIN alice"),
        "cli NOOP": ("cli", [], b"NOOP\r\n"),
        "cli line": ("cli", [], b"USER postmaster"),
        "pop3 line": ("pop3", [], b"USER alice"),
        "submission NOOP": ("submission", [b"EHLO c.example\r\n"], b"NOOP\r\n"),
    }
    after_login = {
        "imap line after login": ("imap", [f"l LOGIN {alice} {ACCOUNTS['alice']}\r\n".encode()], b"b SELECT INBOX"),
        "imap literal after login": ("imap", [f"l LOGIN {alice} {ACCOUNTS['alice']}\r\n".encode(),
                                              b"b APPEND INBOX {9999}\r\n"], b"x"),
        "cli line after login": ("cli", [b"USER postmaster\r\n", f"PASS {PM_PASSWORD}\r\n".encode()], b"GETDOMAIN"),
    }
    cases = {**pre_login, **after_login}
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {name: pool.submit(_trickle, strict, port, opening, drip) for name, (port, opening, drip) in cases.items()}
        held = {name: f.result() for name, f in futures.items()}
    slack = 4.0  # the server's timer granularity and a busy machine
    for name in pre_login:
        assert held[name] < LOGIN_TIMEOUT + slack, (name, held)
    for name in after_login:
        assert held[name] < LOGIN_TIMEOUT + IDLE_TIMEOUT + slack, (name, held)
