"""The Counters page adds up: each of the ten client listeners is used a
different number of times by a real client, and the server's session
counters (JSON API ``/monitors``, the Counters page, ``/metrics``) show
exactly those numbers under the listener's own name."""

from __future__ import annotations

import base64
import imaplib
import poplib
import re
import smtplib
import ssl
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tests.e2e.conftest import PM_PASSWORD, Server, start_server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

# a different count per listener, so that one counted as another shows
USES = {"smtp": 1, "submission": 2, "smtps": 3, "imap": 1, "imaps": 2, "pop3": 3, "pop3s": 1,
        "cli": 2, "http": 3, "https": 2}
ALICE = ("alice", "alice-pw-1")


def _use(server: Server, name: str, tls: ssl.SSLContext) -> None:
    host, port = server.host, server.port(name)
    if name == "smtp":
        with smtplib.SMTP(host, port, timeout=30) as s:
            s.sendmail("x@remote.test", ["alice@e2e.test"], b"Subject: counted\r\n\r\nhi\r\n")
    elif name == "submission":
        with smtplib.SMTP(host, port, timeout=30) as s:
            s.starttls(context=tls)
            s.login("alice@e2e.test", ALICE[1])
    elif name == "smtps":
        with smtplib.SMTP_SSL(host, port, timeout=30, context=tls) as s:
            s.login("alice@e2e.test", ALICE[1])
    elif name in ("imap", "imaps"):
        if name == "imap":
            imap = imaplib.IMAP4(host, port, timeout=30)
            imap.starttls(ssl_context=tls)
        else:
            imap = imaplib.IMAP4_SSL(host, port, ssl_context=tls, timeout=30)
        imap.login(*ALICE)
        imap.select("INBOX")
        imap.logout()
    elif name in ("pop3", "pop3s"):
        if name == "pop3":
            pop = poplib.POP3(host, port, timeout=30)
            pop.stls(context=tls)
        else:
            pop = poplib.POP3_SSL(host, port, timeout=30, context=tls)
        pop.user(ALICE[0])
        pop.pass_(ALICE[1])
        pop.stat()
        pop.quit()
    elif name == "cli":
        assert server.cli("postmaster", PM_PASSWORD, ["NOOP"]) == ["200 OK"]
    elif name in ("http", "https"):
        scheme = "https" if name == "https" else "http"
        handler = urllib.request.HTTPSHandler(context=tls)
        with urllib.request.build_opener(handler).open(f"{scheme}://{host}:{port}/health", timeout=30) as r:
            assert r.status == 200
    else:  # pragma: no cover
        raise AssertionError(name)


def _get(server: Server, path: str) -> bytes:
    token = base64.b64encode(f"postmaster:{PM_PASSWORD}".encode()).decode()
    req = urllib.request.Request(f"http://{server.host}:{server.port('http')}{path}",
                                 headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return bytes(r.read())


def test_every_listener_counts_its_own_sessions(tmp_path: Path) -> None:
    server = start_server(tmp_path / "base", {ALICE[0]: ALICE[1]})
    try:
        tls = server.tls_client()
        before = _monitors(server)  # start_server used the CLI once; this request is HTTP
        for name, times in USES.items():
            for _ in range(times):
                _use(server, name, tls)
        after = _monitors(server)
        # every HTTP request of this test is one connection: _monitors' own
        # request after `before` counts too
        expected = dict(USES)
        expected["http"] += 1
        for name in USES:
            assert after[name]["total"] - before[name]["total"] == expected[name], (name, before, after)
            assert after[name]["open"] == (1 if name == "http" else 0), (name, after)
        metrics = _get(server, "/metrics").decode()
        for name in USES:
            m = re.search(r'^dynamail_sessions_total\{protocol="' + name + r'"\} (\S+)$', metrics, re.M)
            assert m is not None, name
            assert int(float(m.group(1))) >= after[name]["total"]
        page = _counters_page(server)
        for name in USES:
            row = re.search("<td>" + name.upper() + r"</td><td[^>]*>(\d+)</td><td[^>]*>(\d+)</td>", page)
            assert row is not None, name
            assert int(row.group(2)) >= after[name]["total"], (name, row.group(0))
    finally:
        server.stop()


def _counters_page(server: Server) -> str:
    """The WebAdmin Counters page, logged in through the login form."""
    base = f"http://{server.host}:{server.port('http')}"
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(base + "/admin/login", timeout=30) as r:
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.read().decode())
    assert csrf is not None
    form = urllib.parse.urlencode({"csrf": csrf.group(1), "user": "postmaster", "password": PM_PASSWORD,
                                   "next": "/admin/monitors"}).encode()
    with opener.open(base + "/admin/login", data=form, timeout=30) as r:
        assert r.status == 200
    with opener.open(base + "/admin/monitors", timeout=30) as r:
        return str(r.read().decode())


def _monitors(server: Server) -> dict[str, dict[str, int]]:
    import json

    sessions: dict[str, dict[str, int]] = json.loads(_get(server, "/api/v1/monitors"))["sessions"]
    return sessions


def test_favicon(server: Server) -> None:
    with urllib.request.urlopen(f"http://{server.host}:{server.port('http')}/favicon.ico", timeout=30) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/x-icon"
        data = r.read()
    assert data[:4] == b"\x00\x00\x01\x00" and b"PNG" in data[:40]
