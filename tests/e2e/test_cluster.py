"""A local Dynamic Cluster (two backends, one frontend) from ``dynamail
cluster up``, used as an operator and mail clients would: provisioning
through different doors on different members, mail in through one member
and read through the others (TLS, relayed sessions), refusals alike
everywhere, a Non-Ready frontend, and the account served again after its
owner is killed."""

from __future__ import annotations

import imaplib
import json
import poplib
import random
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.conftest import PORTS, Server

from dynamail.cliproto.datafmt import parse

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

OFFSET = 30000
SHARED = "shared.test"


def _dynamail(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dynamail", *args],
                          capture_output=True, text=True, timeout=timeout)


def _free_hosts(n: int) -> int:
    """Last octet N such that 127.0.11.N to .N+n-1 have their ports free."""
    start = random.randrange(120)
    for i in range(120):
        first = 120 + (start + i) % 120
        try:
            for host in (f"127.0.11.{first + k}" for k in range(n)):
                for port in [*PORTS.values(), 7070]:
                    with socket.socket() as s:
                        s.bind((host, port + OFFSET))
        except OSError:
            continue
        return first
    raise RuntimeError("no free loopback addresses in 127.0.11.120-242")


@dataclass
class Cluster:
    dir: Path
    info: dict[str, Any]

    @property
    def password(self) -> str:
        return str(self.info["admin"]["password"])

    def member(self, name: str) -> Server:
        m = next(m for m in self.info["members"] if m["name"] == name)
        return Server(self.dir / "members" / name, m["host"], offset=OFFSET)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    d = tmp_path_factory.mktemp("cluster")
    r = _dynamail("cluster", "up", "--dir", str(d), "--backends", "2", "--frontends", "1",
                  "--prefix", "127.0.11", "--first-host", str(_free_hosts(3)), "--port-offset", str(OFFSET))
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        yield Cluster(d, json.loads((d / "cluster.json").read_text()))
    finally:
        _dynamail("cluster", "down", "--dir", str(d))


def _imap_count(srv: Server, user: str, password: str) -> int:
    imap = imaplib.IMAP4(srv.host, srv.port("imap"), timeout=30)
    imap.starttls(ssl_context=srv.tls_client())
    imap.login(user, password)
    typ, data = imap.select("INBOX", readonly=True)
    assert typ == "OK"
    imap.logout()
    return int(data[0] or 0)


def test_one_service_through_any_member(cluster: Cluster) -> None:
    b1, b2 = cluster.member("b1"), cluster.member("b2")
    pm = ("postmaster", cluster.password)
    assert b1.cli(*pm, [f"CREATEDOMAIN {SHARED} SHARED", f"CREATEACCOUNT u1@{SHARED} {{Password=pw-u1;}}"]) == [
        "200 OK", "200 OK"]
    status, _ = b2.api(*pm, "POST", f"/domains/{SHARED}/accounts", {"name": "u2", "password": "pw-u2"})
    assert status == 201
    # every member and every door sees both accounts
    for srv in (b1, b2):
        assert set(parse(srv.cli(*pm, [f"LISTACCOUNTS {SHARED}"])[0][4:])) == {"u1", "u2"}  # type: ignore[arg-type]
        assert set(srv.api(*pm, "GET", f"/domains/{SHARED}/accounts")[1]["accounts"]) == {"u1", "u2"}
        r = srv.admin_cmd(*pm, "account", "list", SHARED)
        assert r.returncode == 0, r.stderr
        assert set(json.loads(r.stdout)["accounts"]) == {"u1", "u2"}

    # a plain user is refused alike on every member and door
    refusals = [b1.cli(f"u1@{SHARED}", "pw-u1", [f"CREATEACCOUNT x@{SHARED}"])[0],
                b2.cli(f"u1@{SHARED}", "pw-u1", [f"CREATEACCOUNT x@{SHARED}"])[0]]
    status, answer = b2.api(f"u1@{SHARED}", "pw-u1", "POST", f"/domains/{SHARED}/accounts", {"name": "x"})
    assert status == 403
    assert refusals == ["520 " + answer["error"]["message"]] * 2

    # mail in through b2, read through both members over TLS
    with smtplib.SMTP(b2.host, b2.port("smtp"), timeout=60) as smtp:
        smtp.starttls(context=b2.tls_client())
        refused = smtp.sendmail("sender@outside.example", [f"u1@{SHARED}", f"u2@{SHARED}"],
                                b"Subject: through the cluster\r\n\r\nhello\r\n")
        assert refused == {}
    assert _imap_count(b1, f"u1@{SHARED}", "pw-u1") == 1
    assert _imap_count(b2, f"u1@{SHARED}", "pw-u1") == 1
    for srv in (b1, b2):
        pop = poplib.POP3(srv.host, srv.port("pop3"), timeout=30)
        pop.stls(context=srv.tls_client())
        pop.user(f"u2@{SHARED}")
        pop.pass_("pw-u2")
        assert pop.stat()[0] == 1
        assert b"Subject: through the cluster" in pop.top(1, 0)[1]
        pop.quit()


def test_through_the_frontend(cluster: Cluster) -> None:
    f1 = cluster.member("f1")
    pm = ("postmaster", cluster.password)
    assert f1.cli(*pm, [f"CREATEACCOUNT u3@{SHARED} {{Password=pw-u3;}}"]) == ["200 OK"]
    assert set(parse(f1.cli(*pm, [f"LISTACCOUNTS {SHARED}"])[0][4:])) == {"u1", "u2", "u3"}  # type: ignore[arg-type]
    with smtplib.SMTP(f1.host, f1.port("submission"), timeout=60) as smtp:
        smtp.starttls(context=f1.tls_client())
        smtp.login(f"u2@{SHARED}", "pw-u2")
        assert smtp.sendmail(f"u2@{SHARED}", [f"u3@{SHARED}"], b"Subject: front\r\n\r\nhi\r\n") == {}
    imap = imaplib.IMAP4_SSL(f1.host, f1.port("imaps"), ssl_context=f1.tls_client(), timeout=30)
    imap.login(f"u3@{SHARED}", "pw-u3")
    assert imap.select("INBOX")[1] == [b"1"]
    _, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: front" in data[0][1]  # type: ignore[index]
    imap.logout()
    assert _imap_count(cluster.member("b1"), f"u3@{SHARED}", "pw-u3") == 1


def _client_ports_open(srv: Server) -> list[str]:
    open_ = []
    for name in ("smtp", "submission", "imap", "imaps", "pop3", "pop3s", "cli"):
        try:
            socket.create_connection((srv.host, srv.port(name)), timeout=5).close()
            open_.append(name)
        except OSError:
            pass
    return open_


def test_non_ready_frontend_closes_its_client_ports(cluster: Cluster) -> None:
    f1 = cluster.member("f1")
    r = _dynamail("cluster", "nonready", "--dir", str(cluster.dir), "f1")
    assert r.returncode == 0, r.stderr
    try:
        deadline = time.monotonic() + 3
        while _client_ports_open(f1) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _client_ports_open(f1) == []
        socket.create_connection((f1.host, f1.port("http")), timeout=5).close()
    finally:
        assert _dynamail("cluster", "ready", "--dir", str(cluster.dir), "f1").returncode == 0
    deadline = time.monotonic() + 10
    while len(_client_ports_open(f1)) < 7:
        assert time.monotonic() < deadline, "client ports not reopened after Make Ready"
        time.sleep(0.2)


def test_account_served_again_after_its_owner_is_killed(cluster: Cluster) -> None:
    assert _imap_count(cluster.member("b1"), f"u1@{SHARED}", "pw-u1") == 1  # opens it somewhere
    owner = _dynamail("cluster", "locate", "--dir", str(cluster.dir), f"u1@{SHARED}").stdout.strip()
    assert owner in ("b1", "b2")
    survivor = cluster.member("b2" if owner == "b1" else "b1")
    r = _dynamail("cluster", "kill", "--dir", str(cluster.dir), owner)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 60
    while True:
        try:
            assert _imap_count(survivor, f"u1@{SHARED}", "pw-u1") == 1
            break
        except (imaplib.IMAP4.error, OSError, ssl.SSLError):
            assert time.monotonic() < deadline, "account not served again after its owner died"
            time.sleep(0.2)
    status = json.loads(_dynamail("cluster", "status", "--dir", str(cluster.dir), "--json").stdout)
    assert status["controller"] == survivor.base.name
