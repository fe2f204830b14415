"""Relayed sessions between members whose wall clocks differ by far more
than the old ticket validity (cluster/challenge.py): one member of a real
two-backend cluster runs under libfaketime, as the chaos campaign's
clock-step fault runs it, with its wall clock an hour ahead.  IMAP, POP3
and ManageSieve logins are relayed both to it (it owns ``ann``) and from it
(``bob`` lives on the other member).  With the time-stamped tickets of
earlier releases every one of these relays was refused."""

from __future__ import annotations

import base64
import imaplib
import poplib
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from tests.cluster.conftest import Cluster, have
from tests.cluster.test_processes import PASSWORD, _place_on, provision

from dynamail.chaos import clock
from dynamail.cluster import limits
from dynamail.net.tls import client_context_insecure

pytestmark = [pytest.mark.xdist_group("cluster"), pytest.mark.slow, pytest.mark.timeout(240),
              pytest.mark.skipif(not (have("dynamail.imap.adapter") and have("dynamail.pop3.adapter")),
                                 reason="IMAP or POP3 server not built")]

STEP = 3600.0  # seconds; the old tickets allowed RELAY_TICKET_VALIDITY (30 s)


def _internal_date(c: Cluster, member: str, account: str) -> float:
    """APPEND a message through ``member`` and return the wall-clock time
    its owner stamped it with (INTERNALDATE, RFC 9051 2.3.3)."""
    conn = c.imap(member, account, PASSWORD)
    try:
        typ, data = conn.append("INBOX", None, None, b"Subject: clock\r\n\r\nwhen\r\n")
        assert typ == "OK", data
        conn.select("INBOX", readonly=True)
        _typ, fetched = conn.fetch("*", "(INTERNALDATE)")
        stamp = imaplib.Internaldate2tuple(fetched[0] if isinstance(fetched[0], bytes) else fetched[0][0])
        assert stamp is not None, fetched
        return time.mktime(stamp)
    finally:
        conn.logout()


def _imap_relayed(c: Cluster, member: str, account: str) -> None:
    conn = c.imap(member, account, PASSWORD)  # raises on NO [UNAVAILABLE]
    try:
        typ, data = conn.select("INBOX")
        assert typ == "OK", data
    finally:
        conn.logout()


def _pop3_relayed(c: Cluster, member: str, account: str) -> None:
    m = c.member(member)
    p = poplib.POP3(m["host"], m["ports"]["pop3"], timeout=15)
    try:
        p.stls(client_context_insecure())
        p.user(account)
        assert p.pass_(PASSWORD).startswith(b"+OK Logged in")
        p.stat()
    finally:
        p.quit()


def _managesieve_relayed(c: Cluster, member: str, account: str) -> None:
    m = c.member(member)
    sock = socket.create_connection((m["host"], m["ports"]["managesieve"]), timeout=20)

    def response(f: Any) -> list[bytes]:
        out = []
        while True:
            line = f.readline()
            out.append(line)
            if not line or line[:2] in (b"OK", b"NO") or line[:3] == b"BYE":
                return out

    f = sock.makefile("rb")
    assert response(f)[-1].startswith(b"OK")
    sock.sendall(b"STARTTLS\r\n")
    assert response(f)[-1].startswith(b"OK")
    f.close()
    tls = client_context_insecure().wrap_socket(sock, server_hostname=m["host"])
    f = tls.makefile("rb")
    assert response(f)[-1].startswith(b"OK")
    token = base64.b64encode(f"\0{account}\0{PASSWORD}".encode())
    tls.sendall(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')
    assert response(f) == [b'OK "Logged in"\r\n']
    tls.sendall(b"LISTSCRIPTS\r\n")
    assert response(f)[-1] == b"OK\r\n"
    tls.sendall(b"LOGOUT\r\n")
    response(f)
    tls.close()


def test_relays_work_both_ways_while_one_members_wall_clock_is_an_hour_off(
        cluster_factory: Any, tmp_path: Path) -> None:
    lib = clock.library()
    if not lib:
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    assert limits.RELAY_TICKET_VALIDITY < STEP / 10
    faults = tmp_path / "b2-clock"
    faults.mkdir()
    clock.step(faults, 0)
    c = cluster_factory(2, wrappers={"b2": ["env", *clock.environment(lib, faults), *clock.entry()]})
    provision(c, "b1", ("ann", "bob"))
    _place_on(c, "b2", "ann@shared.test")
    _place_on(c, "b1", "bob@shared.test")

    clock.step(faults, STEP)
    # b2 (ann's owner) now stamps what it stores an hour ahead: the step is in effect
    c.wait(lambda: _internal_date(c, "b2", "ann@shared.test") - time.time() > STEP - 600,
           timeout=20, what="b2's wall clock to be stepped")
    assert abs(_internal_date(c, "b1", "bob@shared.test") - time.time()) < 600  # b1's is not

    # relayed to the stepped owner, and from the stepped member to its peer
    _imap_relayed(c, "b1", "ann@shared.test")
    _imap_relayed(c, "b2", "bob@shared.test")
    _pop3_relayed(c, "b1", "ann@shared.test")
    _pop3_relayed(c, "b2", "bob@shared.test")
    if have("dynamail.managesieve.adapter"):
        _managesieve_relayed(c, "b1", "ann@shared.test")
        _managesieve_relayed(c, "b2", "bob@shared.test")
    # the sessions were relayed, not moved
    assert c.locate("ann@shared.test") == "b2"
    assert c.locate("bob@shared.test") == "b1"
