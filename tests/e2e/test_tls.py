"""Every listener speaks TLS where it should, with the generated certificate.

The client trusts only the server's ``Settings/server.crt`` and checks the
name against the address it connected to (the listen address)."""

from __future__ import annotations

import imaplib
import poplib
import shutil
import smtplib
import socket
import subprocess

import pytest
from tests.e2e.conftest import IMPLICIT_TLS, Server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]


@pytest.mark.parametrize("name", IMPLICIT_TLS)
def test_implicit_tls_ports(server: Server, name: str) -> None:
    ctx = server.tls_client()
    with socket.create_connection((server.host, server.port(name)), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname=server.host) as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            if name == "https":
                s.sendall(f"GET /health HTTP/1.1\r\nHost: {server.host}\r\nConnection: close\r\n\r\n".encode())
                assert s.recv(100).startswith(b"HTTP/1.1 200")
            else:
                greeting = s.recv(200)
                assert greeting[:3] in (b"220", b"* O", b"+OK"), greeting


def test_starttls_and_stls(server: Server) -> None:
    ctx = server.tls_client()
    for name in ("smtp", "submission"):
        with smtplib.SMTP(server.host, server.port(name), timeout=30) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("starttls")
            assert smtp.starttls(context=ctx)[0] == 220
            assert smtp.ehlo()[0] == 250
            if name == "submission":
                assert "PLAIN" in smtp.esmtp_features.get("auth", "")
    imap = imaplib.IMAP4(server.host, server.port("imap"), timeout=30)
    assert imap.starttls(ssl_context=ctx)[0] == "OK"
    assert imap.login("alice", "alice-pw-1")[0] == "OK"
    imap.logout()
    pop = poplib.POP3(server.host, server.port("pop3"), timeout=30)
    assert pop.stls(context=ctx).startswith(b"+OK")
    assert pop.user("alice").startswith(b"+OK")
    assert pop.pass_("alice-pw-1").startswith(b"+OK")
    pop.quit()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl (Debian package openssl) not installed")
@pytest.mark.parametrize("name,starttls", [
    ("smtps", None), ("imaps", None), ("pop3s", None), ("https", None),
    ("smtp", "smtp"), ("submission", "smtp"), ("imap", "imap"), ("pop3", "pop3"),
])
def test_openssl_s_client(server: Server, name: str, starttls: str | None) -> None:
    cmd = ["openssl", "s_client", "-connect", f"{server.host}:{server.port(name)}",
           "-CAfile", str(server.cert), "-verify_return_error", "-verify_ip", server.host, "-brief"]
    if starttls:
        cmd += ["-starttls", starttls]
    r = subprocess.run(cmd, input=b"", capture_output=True, timeout=60)
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    assert "CONNECTION ESTABLISHED" in out, out
    assert "Verification: OK" in out, out
