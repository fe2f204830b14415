"""Back up one account of a running cluster and restore it into another.

Cluster A (two backends) serves ``ann@shared.test``; while SMTP deliveries
and IMAP flag changes go on, ``dynamail admin account
export`` is asked of the *other* member, which sends it to the owner; the
archive is then restored with ``dynamail admin account import`` into
cluster B (one backend). B then holds exactly the archive's messages, with
their flags and UIDs (A's UIDs were 1..n), and every archived message is
one A holds."""

from __future__ import annotations

import contextlib
import imaplib
import random
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cluster.clients import admin_cli

from dynamail.cluster import launcher

pytestmark = [pytest.mark.xdist_group("cluster"), pytest.mark.slow, pytest.mark.timeout(300)]

PREFIX = "127.0.28"
OFFSET = 21000
ACCOUNT = "ann@shared.test"
PASSWORD = "pw-Backup-1"
LETTERS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}


def _free_first_host(count: int) -> int:
    for _ in range(200):
        first = random.randrange(10, 250 - count)
        try:
            for i in range(count):
                with socket.socket() as s:
                    s.bind((f"{PREFIX}.{first + i}", launcher.CLUSTER_PORT + OFFSET))
        except OSError:
            continue
        return first
    raise RuntimeError("no free loopback addresses")


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    first = _free_first_host(3)
    a, b = tmp_path / "a", tmp_path / "b"
    made = []
    try:
        for d, n, host in ((a, 2, first), (b, 1, first + 2)):
            launcher.up(d, n, port_offset=OFFSET, prefix=PREFIX, first_host=host, lease=1.0, margin=0.2,
                        heartbeat=0.15, timeout=60.0)
            made.append(d)
            m = launcher.read_cluster(d)["members"][0]
            out = admin_cli(m, launcher.read_cluster(d)["admin"], "CREATEDOMAIN shared.test SHARED",
                            f'CREATEACCOUNT {ACCOUNT} {{Password="{PASSWORD}";RealName="Ann";}}', timeout=60)
            assert all(line.startswith("200") for line in out), out
        yield a, b
    finally:
        for d in made:
            with contextlib.suppress(Exception):
                launcher.down(d, timeout=5.0)


def member(d: Path, name: str) -> dict[str, Any]:
    return next(m for m in launcher.read_cluster(d)["members"] if m["name"] == name)


def imap(m: dict[str, Any]) -> imaplib.IMAP4:
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = imaplib.IMAP4(m["host"], m["ports"]["imap"], timeout=30)
            conn.login(ACCOUNT, PASSWORD)
            return conn
        except (imaplib.IMAP4.error, OSError, EOFError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def deliver(m: dict[str, Any], i: int) -> None:
    with smtplib.SMTP(m["host"], m["ports"]["smtp"], timeout=30) as s:
        s.sendmail("x@remote.test", [ACCOUNT],
                   f"From: x@remote.test\r\nSubject: m{i}\r\nMessage-ID: <m{i}@remote.test>\r\n\r\nbody {i}\r\n")


def admin(d: Path, m: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    pw = launcher.read_cluster(d)["admin"]["password"]
    return subprocess.run([sys.executable, "-m", "dynamail", "admin", "--server",
                           f"{m['host']}:{m['ports']['http']}", "--user", "postmaster", "--password", pw, *args],
                          capture_output=True, text=True, timeout=120)


def archived(path: Path) -> dict[str, tuple[int, frozenset[str]]]:
    """Message-ID → (UID, flags) of the archive's INBOX."""
    out: dict[str, tuple[int, frozenset[str]]] = {}
    with tarfile.open(path) as tar:
        keywords = {chr(ord("a") + int(n)): kw for n, _, kw in
                    (line.partition(" ") for line in tar.extractfile("Maildir/dovecot-keywords")  # type: ignore[union-attr]
                     .read().decode().splitlines())}
        for info in tar.getmembers():
            found = re.fullmatch(r"Maildir/cur/\d+\.M(\d+)\.dynamail:2,(\w*)", info.name)
            if not found:
                continue
            data = tar.extractfile(info).read()  # type: ignore[union-attr]
            mid = re.search(rb"Message-ID: <([^>]+)>", data)
            assert mid is not None
            flags = frozenset(LETTERS.get(c) or keywords[c] for c in found.group(2))
            out[mid.group(1).decode()] = (int(found.group(1)), flags)
    return out


def held(conn: imaplib.IMAP4) -> dict[str, tuple[int, frozenset[str]]]:
    conn.select("INBOX")
    typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    assert typ == "OK"
    out = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta = item[0].decode()
        uid = int(re.search(r"UID (\d+)", meta).group(1))  # type: ignore[union-attr]
        flags = re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split()  # type: ignore[union-attr]
        mid = re.search(rb"<([^>]+)>", item[1]).group(1).decode()  # type: ignore[union-attr]
        out[mid] = (uid, frozenset(f for f in flags if f != "\\Recent"))
    return out


def test_export_under_load_restore_into_another_cluster(clusters: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = clusters
    b1, b2 = member(a, "b1"), member(a, "b2")
    for i in range(30):
        deliver(b1, i)
    # b1's log says where each copy went: the owner it was stored on, and its UID
    log = (a / "members" / "b1" / "serve.log").read_text()
    assert re.search(r'message id=\S+ .*copies="ann@shared\.test=stored on b[12] uid \d+"', log), log[-2000:]
    owner_session = imap(b1)  # keeps the account open on its owner during the export
    owner_session.select("INBOX")
    owner = launcher.locate(a, ACCOUNT)
    assert owner in ("b1", "b2")
    other = b2 if owner == "b1" else b1
    owner_session.uid("STORE", "1:10", "+FLAGS", "(\\Seen $Important)")
    owner_session.uid("STORE", "5:7", "+FLAGS", "(\\Flagged)")
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        i = 1000
        conn = imap(b1)
        try:
            while not stop.is_set():
                deliver(b1, i)
                conn.select("INBOX")
                conn.uid("STORE", f"{random.randrange(1, 30)}", "+FLAGS", "(\\Answered)")
                i += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.5)
        out = tmp_path / "ann.tar.gz"
        done = admin(a, other, "account", "export", ACCOUNT, str(out))  # asked of the member that is not the owner
        assert done.returncode == 0, done.stderr
        assert "asking it" in done.stderr and owner in done.stderr
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(60)
    assert not errors, errors
    archive = archived(out)
    assert len(archive) >= 30
    assert all(f"m{i}@remote.test" in archive for i in range(30))
    at_a = held(owner_session)
    owner_session.logout()
    assert set(archive) <= set(at_a)  # every archived message is one A holds
    for mid, (uid, _flags) in archive.items():
        assert at_a[mid][0] == uid
    assert archive["m0@remote.test"][1] >= {"\\Seen", "$Important"}
    assert archive["m5@remote.test"][1] >= {"\\Flagged", "\\Seen", "$Important"}
    # restore into cluster B, twice: the second run adds nothing
    bb1 = member(b, "b1")
    for attempt in range(2):
        done = admin(b, bb1, "--json", "account", "import", ACCOUNT, str(out))
        assert done.returncode == 0, done.stderr
        if attempt == 0:
            assert f'"imported": {len(archive)}' in done.stdout, done.stdout
        else:
            assert '"imported": 0' in done.stdout and f'"duplicates": {len(archive)}' in done.stdout
    conn = imap(bb1)
    try:
        at_b = held(conn)
    finally:
        conn.logout()
    assert at_b == archive  # the same messages, flags and (A's were 1..n) UIDs


def test_whole_shared_storage_copied_from_a_stopped_cluster_serves_in_another(tmp_path: Path) -> None:
    """docs/backup.md, "without snapshots": stop every member, copy the
    shared storage, start another cluster on the copy: the same accounts,
    messages, flags, UIDs and UIDVALIDITY."""
    first = _free_first_host(3)
    a, b = tmp_path / "a", tmp_path / "b"
    try:
        launcher.up(a, 2, port_offset=OFFSET, prefix=PREFIX, first_host=first, lease=1.0, margin=0.2,
                    heartbeat=0.15, timeout=60.0)
        m = member(a, "b1")
        out = admin_cli(m, launcher.read_cluster(a)["admin"], "CREATEDOMAIN shared.test SHARED",
                        f'CREATEACCOUNT {ACCOUNT} {{Password="{PASSWORD}";}}', timeout=60)
        assert all(line.startswith("200") for line in out), out
        for i in range(12):
            deliver(m, i)
        conn = imap(m)
        conn.select("INBOX")
        conn.uid("STORE", "2:4", "+FLAGS", "(\\Seen $Done)")
        conn.uid("STORE", "5", "+FLAGS", "(\\Deleted)")
        conn.expunge()
        before = held(conn)
        uidvalidity = conn.response("UIDVALIDITY")
        assert uidvalidity[1][0], uidvalidity
        conn.logout()
        launcher.down(a, timeout=10.0)
        b.mkdir()
        shutil.copytree(a / "shared", b / "shared", symlinks=True)  # the backup, taken while stopped
        launcher.up(b, 1, port_offset=OFFSET, prefix=PREFIX, first_host=first + 2, lease=1.0, margin=0.2,
                    heartbeat=0.15, timeout=60.0)
        conn = imap(member(b, "b1"))
        try:
            after = held(conn)
            assert conn.response("UIDVALIDITY") == uidvalidity
        finally:
            conn.logout()
        assert len(before) == 11 and after == before
    finally:
        for d in (a, b):
            with contextlib.suppress(Exception):
                launcher.down(d, timeout=5.0)
