"""``dynamail serve --workers N``: real processes, real clients, real kills.

One server run as two worker processes must behave as one server: every
connection (whichever worker the kernel hands it to) sees the same accounts,
settings and mail; an account has one writer at a time; a worker killed
with SIGKILL is started again and no acknowledged message is lost or
doubled; SIGTERM stops every worker; a supervisor killed with SIGKILL
leaves no worker behind.
"""

from __future__ import annotations

import imaplib
import os
import re
import signal
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamail.server.workers import worker_address

from .test_serve import CliClient, ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server")]

HOST = "127.0.2.7"
PASSWORD = "Pm-secret-1"


def _wait(pred, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Workers(ServerProcess):
    def worker_pids(self) -> dict[str, int]:
        """The newest pid of every worker, from the supervisor's log."""
        pids: dict[str, int] = {}
        for name, pid in re.findall(r"worker (w\d+) started \(pid (\d+)\)", self.output()):
            pids[name] = int(pid)
        return pids

    def wait_ready(self, count: int) -> None:
        """Every worker serves and the workers agree on a Controller."""
        _wait(lambda: len(self.worker_pids()) == count, "the workers to start")
        _wait(lambda: self.output().count("role backend)") >= count and "controller is w" in self.output(),
              "every worker to serve")
        # every worker answers on its own address and logs in postmaster
        for i in range(1, count + 1):
            _wait(lambda i=i: self._cli_ok(worker_address(i)), f"worker w{i}'s CLI")

    def _cli_ok(self, host: str) -> bool:
        try:
            c = CliClient(host, self.port(106))
            c.login("postmaster", PASSWORD)
            c.close()
            return True
        except (OSError, AssertionError):
            return False

    def cli(self, host: str | None = None) -> CliClient:
        c = CliClient(host or self.host, self.port(106))
        c.login("postmaster", PASSWORD)
        return c


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    srv = Workers(tmp_path / "base", HOST, None, "--workers", "2", "--postmaster-password", PASSWORD)
    try:
        srv.wait_ready(2)
        yield srv
    finally:
        pids = list(srv.worker_pids().values())
        srv.stop()
        for pid in pids:  # no worker outlives its supervisor
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _deliver(srv: Workers, rcpt: str, n: int, tries: float = 60.0) -> bool:
    """Send message ``n`` to ``rcpt``; True once a 250 came back (a
    connection refused or dropped is retried, as a client would)."""
    deadline = time.monotonic() + tries
    while time.monotonic() < deadline:
        try:
            with smtplib.SMTP(srv.host, srv.port(25), timeout=15) as s:
                s.sendmail("sender@remote.test", [rcpt],
                           f"Message-ID: <m{n}@remote.test>\r\nSubject: n{n}\r\n\r\nbody {n}\r\n")
            return True
        except (OSError, smtplib.SMTPException):
            time.sleep(0.2)
    return False


def _subjects(srv: Workers, user: str, password: str, host: str | None = None) -> list[str]:
    m = imaplib.IMAP4(host or srv.host, srv.port(143), timeout=15)
    try:
        m.login(user, password)
        m.select("INBOX", readonly=True)
        typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        if typ != "OK" or data == [None]:
            return []
        return sorted(bytes(part[1]).decode().strip().removeprefix("Subject: ")
                      for part in data if isinstance(part, tuple))
    finally:
        m.logout()


def test_two_workers_are_one_server(workers: Workers) -> None:
    srv = workers
    c = srv.cli()
    for name in ("ann", "ben", "cy", "dot"):
        assert c.cmd(f"CREATEACCOUNT {name}@main.test {{Password=pw-{name};}}").startswith("200 OK")
    c.close()
    # a change made through one worker is seen through the other at once
    c1 = srv.cli(worker_address(1))
    c2 = srv.cli(worker_address(2))
    assert c1.cmd('UPDATEACCOUNTSETTINGS ann@main.test {RealName="Ann A";}').startswith("200 OK")
    assert c2.data("GETACCOUNTSETTINGS ann@main.test")["RealName"] == "Ann A"  # type: ignore[index]
    assert c2.cmd("UPDATEACCOUNTDEFAULTS {MaxAccountSize=5M;}").startswith("200 OK")  # server-wide
    assert c1.data("GETACCOUNTDEFAULTS")["MaxAccountSize"] == "5M"  # type: ignore[index]
    assert c1.cmd("CREATEDOMAIN other.test").startswith("200 OK")
    assert "other.test" in c2.data("LISTDOMAINS")  # type: ignore[operator]
    c1.close()
    c2.close()
    # mail through whichever worker the kernel picks, read through the others
    for n in range(20):
        assert _deliver(srv, f"{('ann', 'ben', 'cy', 'dot')[n % 4]}@main.test", n)
    for i, name in enumerate(("ann", "ben", "cy", "dot")):
        want = sorted(f"n{n}" for n in range(20) if n % 4 == i)
        for host in (srv.host, worker_address(1), worker_address(2)):
            assert _subjects(srv, f"{name}@main.test", f"pw-{name}", host) == want
    out = srv.output()
    # both workers took connections, and sessions were relayed to owners
    assert "[w1] INFO dynamail.events: session" in out and "[w2] INFO dynamail.events: session" in out
    assert 'outcome="relayed to w' in out
    # each account had one owner: both workers never opened the same account
    assert " ERROR " not in out and "Traceback" not in out


def test_append_survives_a_paused_owner_with_one_writer(workers: Workers) -> None:
    """SIGSTOP the worker that owns an account; the other worker takes it
    over and acknowledges APPENDs; the paused one wakes and can write
    nothing the successor did not see: every acknowledged APPEND is there
    exactly once, UIDs ascend."""
    srv = workers
    c = srv.cli()
    assert c.cmd("CREATEACCOUNT eve@main.test {Password=pw-eve;}").startswith("200 OK")
    c.close()
    m = imaplib.IMAP4(worker_address(1), srv.port(143), timeout=15)
    m.login("eve@main.test", "pw-eve")
    m.append("INBOX", None, None, b"Subject: a0\r\n\r\nx\r\n")
    m.logout()
    _wait(lambda: "account=eve@main.test member=w1" in srv.output(), "the session's log line")
    line = [ln for ln in srv.output().splitlines() if "account=eve@main.test member=w1" in ln][-1]
    owner = re.search(r'relayed to (w\d)', line)
    owner_name = owner.group(1) if owner else "w1"
    other = "w2" if owner_name == "w1" else "w1"
    pid = srv.worker_pids()[owner_name]
    os.kill(pid, signal.SIGSTOP)
    acked = ["a0"]
    try:
        deadline = time.monotonic() + 60
        n = 1
        while time.monotonic() < deadline and n < 6:
            try:
                m = imaplib.IMAP4(worker_address(int(other[1:])), srv.port(143), timeout=8)
                m.login("eve@main.test", "pw-eve")
                typ, _ = m.append("INBOX", None, None, f"Subject: a{n}\r\n\r\nx\r\n".encode())
                m.logout()
                if typ == "OK":
                    acked.append(f"a{n}")
                    n += 1
            except (OSError, imaplib.IMAP4.error):
                time.sleep(0.3)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert len(acked) == 6, acked
    # the woken worker: its sessions now go to the new owner
    m = imaplib.IMAP4(worker_address(int(owner_name[1:])), srv.port(143), timeout=15)
    _wait(lambda: _try_login(m), "the woken worker to serve eve")
    typ, _ = m.append("INBOX", None, None, b"Subject: a6\r\n\r\nx\r\n")
    assert typ == "OK"
    acked.append("a6")
    m.select("INBOX")
    _, data = m.uid("SEARCH", "ALL")
    uids = [int(u) for u in data[0].split()]
    m.logout()
    assert uids == sorted(set(uids))
    assert _subjects(srv, "eve@main.test", "pw-eve") == sorted(acked)
    assert "Traceback" not in srv.output()


def _try_login(m: imaplib.IMAP4) -> bool:
    try:
        m.login("eve@main.test", "pw-eve")
        return True
    except imaplib.IMAP4.error:
        return False


def test_killed_worker_is_started_again_and_no_mail_is_lost(workers: Workers) -> None:
    srv = workers
    c = srv.cli()
    assert c.cmd("CREATEACCOUNT fay@main.test {Password=pw-fay;}").startswith("200 OK")
    c.close()
    sent = []
    for n in range(30):
        if n == 10:
            os.kill(srv.worker_pids()["w1"], signal.SIGKILL)
        if n == 20:
            os.kill(srv.worker_pids()["w2"], signal.SIGKILL)
        assert _deliver(srv, "fay@main.test", n)
        sent.append(f"n{n}")
    _wait(lambda: srv.output().count("worker w1 started") == 2 and srv.output().count("worker w2 started") == 2,
          "the supervisor to start the killed workers again")
    assert "worker w1 ended (signal 9)" in srv.output()
    _wait(lambda: _subjects_or_none(srv) == sorted(sent), "every acknowledged message exactly once")
    assert srv.proc.poll() is None


def _subjects_or_none(srv: Workers) -> list[str] | None:
    try:
        return _subjects(srv, "fay@main.test", "pw-fay")
    except (OSError, imaplib.IMAP4.error):
        return None


def test_sigterm_stops_every_worker(workers: Workers) -> None:
    srv = workers
    pids = list(srv.worker_pids().values())
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(30) == 0
    for pid in pids:
        _wait(lambda pid=pid: not _alive(pid), f"worker {pid} to end")
    assert "Traceback" not in srv.output()
    assert not (srv.base / "server.pid").exists()
    # the same base serves as one process again, mail and all
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex((srv.host, srv.port(143))) != 0


def test_supervisor_killed_takes_its_workers_along(workers: Workers) -> None:
    srv = workers
    pids = list(srv.worker_pids().values())
    srv.proc.kill()
    srv.proc.wait(10)
    for pid in pids:
        _wait(lambda pid=pid: not _alive(pid), f"worker {pid} to end", timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_one_process_serves_the_base_the_workers_left(tmp_path: Path) -> None:
    """workers = 2, then workers = 1 on the same base: the accounts, their
    mail and the settings are all there."""
    base = tmp_path / "base"
    srv = Workers(base, HOST, None, "--workers", "2", "--postmaster-password", PASSWORD)
    try:
        srv.wait_ready(2)
        c = srv.cli()
        assert c.cmd("CREATEACCOUNT gus@main.test {Password=pw-gus;}").startswith("200 OK")
        assert c.cmd("UPDATEACCOUNTDEFAULTS {MaxAccountSize=7M;}").startswith("200 OK")
        c.close()
        for n in range(3):
            assert _deliver(srv, "gus@main.test", n)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()
    one = ServerProcess(base, HOST, srv.offset)
    try:
        assert _subjects(one, "gus@main.test", "pw-gus") == ["n0", "n1", "n2"]  # type: ignore[arg-type]
        c = CliClient(HOST, one.port(106))
        c.login("postmaster", PASSWORD)
        assert c.data("GETACCOUNTDEFAULTS")["MaxAccountSize"] == "7M"  # type: ignore[index]
        c.close()
        assert _deliver(one, "gus@main.test", 3)  # type: ignore[arg-type]
    finally:
        one.stop()
