"""kill -9 during SMTP deliveries: after a restart, every message the server
acknowledged with 250 is in the mailbox, and the mailbox is readable."""

from __future__ import annotations

import imaplib
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from tests.e2e.conftest import DOMAIN, Server, start_server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

SENDERS = 6


@pytest.fixture
def crashable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("crash") / "base", {"sink": "sink-pw-5"})
    try:
        yield srv
    finally:
        srv.stop()


def _send_until_stopped(srv: Server, k: int, acked: list[str], stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        try:
            with socket.create_connection((srv.host, srv.port("smtp")), timeout=10) as c:
                r = c.makefile("rb")
                r.readline()
                c.sendall(b"HELO sender.example\r\n")
                r.readline()
                while not stop.is_set():
                    tag = f"m-{k}-{n}"
                    n += 1
                    # pipelined envelope; sizes vary so appends cross blocks differently
                    c.sendall(f"MAIL FROM:<s@sender.example>\r\nRCPT TO:<sink@{DOMAIN}>\r\nDATA\r\n".encode())
                    if not (r.readline().startswith(b"250") and r.readline().startswith(b"250")
                            and r.readline().startswith(b"354")):
                        break
                    c.sendall(f"Subject: {tag}\r\n\r\n".encode() + b"z" * (700 * (n % 9)) + b"\r\n.\r\n")
                    reply = r.readline()
                    if reply.startswith(b"250"):
                        acked.append(tag)  # list.append is atomic
                    elif not reply:
                        break
        except OSError:
            time.sleep(0.05)


def test_kill_9_during_deliveries_loses_no_acknowledged_message(crashable: Server) -> None:
    acked: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_send_until_stopped, args=(crashable, k, acked, stop))
               for k in range(SENDERS)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        crashable.kill()  # SIGKILL while the senders are still sending
        confirmed = list(acked)  # every 250 the clients received before the kill
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(confirmed) >= 200

    crashable.start()
    imap = imaplib.IMAP4(crashable.host, crashable.port("imap"), timeout=60)
    imap.starttls(ssl_context=crashable.tls_client())
    imap.login(f"sink@{DOMAIN}", "sink-pw-5")
    typ, _ = imap.select("INBOX", readonly=True)
    assert typ == "OK"
    typ, fetched = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    stored = {m.group(1).decode() for part in fetched if isinstance(part, tuple)
              for m in [re.search(rb"Subject: (m-\d+-\d+)", part[1])] if m}
    imap.logout()
    missing = [t for t in confirmed if t not in stored]
    assert not missing, f"{len(missing)} of {len(confirmed)} acknowledged messages lost: {missing[:10]}"
    # at most one message per sender was durable but not yet acknowledged
    assert len(stored) <= len(acked) + SENDERS


def test_second_server_on_the_same_base_is_refused(server: Server) -> None:
    """Two servers on one base would fight over every account (the storage
    fences the first one out); the second start is refused instead."""
    r = subprocess.run(
        [sys.executable, "-m", "dynamail", "serve", "--base", str(server.base),
         "--listen", "127.0.11.8", "--port-offset", "20000"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "another dynamail server" in r.stderr
    assert server.cli("alice", "alice-pw-1", ["NOOP"]) == ["200 OK"]


def _append_until_stopped(srv: Server, k: int, acked: list[tuple[int, int]], stop: threading.Event) -> None:
    """MULTIAPPEND of three messages at a time (RFC 3502: all or none)."""
    n = 0
    while not stop.is_set():
        try:
            with socket.create_connection((srv.host, srv.port("imap")), timeout=10) as c:
                r = c.makefile("rb")
                r.readline()
                c.sendall(f"a LOGIN sink@{DOMAIN} sink-pw-5\r\n".encode())
                if not r.readline().startswith(b"a OK"):
                    continue
                while not stop.is_set():
                    parts = [f"Subject: g-{k}-{n}-{j}\r\n\r\n".encode() + b"q" * (900 * j) + b"\r\n" for j in range(3)]
                    c.sendall(b"t APPEND INBOX" + b"".join(b" () {%d+}\r\n" % len(p) + p for p in parts) + b"\r\n")
                    line = r.readline()
                    while line and not line.startswith(b"t "):
                        line = r.readline()
                    if line.startswith(b"t OK"):
                        acked.append((k, n))
                    elif not line:
                        break
                    n += 1
        except OSError:
            time.sleep(0.05)


def test_kill_9_during_multiappend_keeps_groups_whole(crashable: Server) -> None:
    acked: list[tuple[int, int]] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_append_until_stopped, args=(crashable, k, acked, stop)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        crashable.kill()
        confirmed = list(acked)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(confirmed) >= 150

    crashable.start()
    imap = imaplib.IMAP4(crashable.host, crashable.port("imap"), timeout=60)
    imap.starttls(ssl_context=crashable.tls_client())
    imap.login(f"sink@{DOMAIN}", "sink-pw-5")
    assert imap.select("INBOX", readonly=True)[0] == "OK"
    typ, fetched = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    imap.logout()
    groups: dict[tuple[int, int], set[int]] = {}
    for part in fetched:
        if isinstance(part, tuple):
            m = re.search(rb"Subject: g-(\d+)-(\d+)-(\d)", part[1])
            assert m is not None, part
            groups.setdefault((int(m[1]), int(m[2])), set()).add(int(m[3]))
    assert [g for g in confirmed if groups.get(g) != {0, 1, 2}] == []  # acknowledged: all there
    assert [g for g, parts in groups.items() if parts != {0, 1, 2}] == []  # none torn
