"""ManageSieve in a cluster: a session on a member that does not own the
account is relayed to the owner (over STARTTLS when the cluster runs TLS);
the script it stores there filters a message delivered through a third
member, because the owner runs it."""

from __future__ import annotations

import base64
import smtplib
import socket
from typing import Any

import pytest
from tests.cluster.conftest import have
from tests.cluster.test_processes import PASSWORD, _place_on, provision, subjects

from dynamail.net.tls import client_context_insecure

pytestmark = [pytest.mark.xdist_group("cluster"), pytest.mark.slow, pytest.mark.timeout(240),
              pytest.mark.skipif(not have("dynamail.managesieve.adapter") or not have("dynamail.imap.adapter"),
                                 reason="ManageSieve or IMAP server not built")]

SCRIPT = b'require "fileinto";\r\nif header :contains "subject" "sorted" { fileinto "Sorted"; }\r\n'


def _response(f: Any) -> list[bytes]:
    out = []
    while True:
        line = f.readline()
        out.append(line)
        if not line or line[:2] in (b"OK", b"NO") or line[:3] == b"BY":
            return out


def test_managesieve_session_relayed_to_the_owner(cluster_factory: Any) -> None:
    c = cluster_factory(3)
    provision(c, "b1")
    _place_on(c, "b3")
    m = c.member("b2")
    sock = socket.create_connection((m["host"], m["ports"]["managesieve"]), timeout=20)
    f = sock.makefile("rb")
    assert _response(f)[-1].startswith(b"OK")
    sock.sendall(b"STARTTLS\r\n")
    assert _response(f)[-1].startswith(b"OK")
    f.close()
    tls = client_context_insecure().wrap_socket(sock, server_hostname=m["host"])
    f = tls.makefile("rb")
    assert _response(f)[-1].startswith(b"OK")  # capabilities again
    token = base64.b64encode(f"\0ann@shared.test\0{PASSWORD}".encode())
    tls.sendall(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')
    assert _response(f) == [b'OK "Logged in"\r\n']
    tls.sendall(b'PUTSCRIPT "s" {%d+}\r\n' % len(SCRIPT) + SCRIPT + b"\r\n")
    assert _response(f) == [b"OK\r\n"]
    tls.sendall(b'SETACTIVE "s"\r\n')
    assert _response(f) == [b"OK\r\n"]
    tls.sendall(b"LISTSCRIPTS\r\n")
    assert _response(f) == [b'"s" ACTIVE\r\n', b"OK\r\n"]
    tls.sendall(b"LOGOUT\r\n")
    assert _response(f)[-1].startswith(b"OK")
    tls.close()
    assert c.locate("ann@shared.test") == "b3"
    c.imap("b3", "ann@shared.test", PASSWORD).create("Sorted")
    with smtplib.SMTP(c.member("b1")["host"], c.member("b1")["ports"]["smtp"], timeout=15) as sm:
        sm.sendmail("x@example.org", ["ann@shared.test"], b"Subject: sorted mail\r\n\r\nz\r\n")
        sm.sendmail("x@example.org", ["ann@shared.test"], b"Subject: plain mail\r\n\r\nz\r\n")
    inbox = subjects(c, "b2")
    assert "plain mail" in inbox and "sorted mail" not in inbox
    conn = c.imap("b2", "ann@shared.test", PASSWORD)
    try:
        typ, data = conn.select("Sorted", readonly=True)
        assert typ == "OK" and data[0] == b"1"
    finally:
        conn.logout()


def test_handed_off_delivery_carries_the_envelope_sender(cluster_factory: Any) -> None:
    """Protocol version 4: the owner's script sees the envelope sender of a
    message that arrived at another member, and vacation answers it."""
    c = cluster_factory(3)
    provision(c, "b1", accounts=("ann", "bea"))
    _place_on(c, "b3")
    script = (b'require ["vacation", "envelope", "fileinto"];\r\n'
              b'if envelope :is "from" "bea@shared.test" { fileinto "FromBea"; }\r\n'
              b'vacation :days 1 :subject "Away" "Back soon.";\r\n')
    m = c.member("b2")
    sock = socket.create_connection((m["host"], m["ports"]["managesieve"]), timeout=20)
    f = sock.makefile("rb")
    _response(f)
    sock.sendall(b"STARTTLS\r\n")
    _response(f)
    f.close()
    tls = client_context_insecure().wrap_socket(sock, server_hostname=m["host"])
    f = tls.makefile("rb")
    _response(f)
    token = base64.b64encode(f"\0ann@shared.test\0{PASSWORD}".encode())
    tls.sendall(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')
    assert _response(f) == [b'OK "Logged in"\r\n']
    tls.sendall(b'PUTSCRIPT "v" {%d+}\r\n' % len(script) + script + b'\r\nSETACTIVE "v"\r\n')
    assert _response(f) == [b"OK\r\n"] and _response(f) == [b"OK\r\n"]
    tls.close()
    c.imap("b3", "ann@shared.test", PASSWORD).create("FromBea")
    b1 = c.member("b1")
    with smtplib.SMTP(b1["host"], b1["ports"]["smtp"], timeout=15) as sm:  # b1 hands it to b3
        sm.sendmail("bea@shared.test", ["ann@shared.test"],
                    b"From: bea@shared.test\r\nTo: ann@shared.test\r\nSubject: lunch\r\n\r\nz\r\n")
    assert c.locate("ann@shared.test") == "b3"
    conn = c.imap("b2", "ann@shared.test", PASSWORD)
    try:
        typ, data = conn.select("FromBea", readonly=True)
        assert typ == "OK" and data[0] == b"1", "\n".join(
            line for n in ("b1", "b3") for line in c.logs(n).splitlines() if "sieve" in line or "deliver" in line)
    finally:
        conn.logout()
    c.wait(lambda: "Away" in subjects(c, "b1", "bea@shared.test"), what="the vacation reply reaches bea")
