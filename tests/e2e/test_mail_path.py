"""A message's whole path with the clients people use: swaks submits with
AUTH over STARTTLS, imaplib, poplib, mbsync and fetchmail read it back, and
an unauthenticated relay attempt is refused."""

from __future__ import annotations

import email
import imaplib
import poplib
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from tests.e2e.conftest import DOMAIN, Server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

BOB = f"bob@{DOMAIN}"


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} (Debian package {package}) not installed")


def _swaks(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["swaks", "--hide-informational", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def delivered(server: Server) -> str:
    """Subject of one message alice submitted to bob with swaks."""
    _need("swaks", "swaks")
    subject = f"e2e-{uuid.uuid4().hex}"
    r = _swaks(server, "--server", f"{server.host}:{server.port('submission')}", "--tls",
               "--auth", "PLAIN", "--auth-user", f"alice@{DOMAIN}", "--auth-password", "alice-pw-1",
               "--from", f"alice@{DOMAIN}", "--to", BOB, "--header", f"Subject: {subject}",
               "--body", "line one\nline two")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<~  250 " in r.stdout  # the DATA reply came over TLS
    return subject


def test_imap_and_pop3_read_it(server: Server, delivered: str) -> None:
    ctx = server.tls_client()
    imap = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=ctx, timeout=30)
    imap.login(BOB, "bob-pw-2")
    imap.select("INBOX", readonly=True)
    typ, hits = imap.search(None, "SUBJECT", delivered)
    assert typ == "OK" and len(hits[0].split()) == 1
    typ, data = imap.fetch(hits[0].split()[0].decode(), "(BODY.PEEK[])")
    msg = email.message_from_bytes(data[0][1])  # type: ignore[index]
    assert msg["Subject"] == delivered and msg["From"] == f"alice@{DOMAIN}"
    assert "line two" in msg.get_payload()
    imap.logout()

    pop = poplib.POP3(server.host, server.port("pop3"), timeout=30)
    pop.stls(context=ctx)
    pop.user(BOB)
    pop.pass_("bob-pw-2")
    subjects = []
    for i in range(1, pop.stat()[0] + 1):
        _, lines, _ = pop.top(i, 0)
        subjects += [ln for ln in lines if ln.startswith(b"Subject: ")]
    assert f"Subject: {delivered}".encode() in subjects
    pop.quit()


def test_mbsync_pulls_the_mailbox(server: Server, delivered: str, tmp_path: Path) -> None:
    _need("mbsync", "isync")
    maildir = tmp_path / "mail"
    maildir.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"IMAPAccount e2e\nHost {server.host}\nPort {server.port('imap')}\nUser {BOB}\n"
        f"Pass bob-pw-2\nSSLType STARTTLS\nCertificateFile {server.cert}\n\n"
        "IMAPStore e2e-remote\nAccount e2e\n\n"
        f"MaildirStore e2e-local\nPath {maildir}/\nInbox {maildir}/INBOX\n\n"
        "Channel e2e\nFar :e2e-remote:\nNear :e2e-local:\nPatterns INBOX\n"
        "Create Near\nSync Pull\nSyncState *\n"
    )
    r = subprocess.run(["mbsync", "-c", str(rc), "e2e"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    files = [p for p in (maildir / "INBOX").rglob("*") if p.is_file() and p.parent.name in ("new", "cur")]
    subjects = {email.message_from_bytes(p.read_bytes())["Subject"] for p in files}
    assert delivered in subjects


def test_fetchmail_downloads_over_stls(server: Server, delivered: str, tmp_path: Path) -> None:
    """fetchmail checks the certificate and its name (fetchmail compares DNS
    names only, so it is given the Main Domain the certificate names)."""
    _need("fetchmail", "fetchmail")
    out = tmp_path / "out.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll {server.host} service {server.port('pop3')} protocol pop3 auth password\n"
        f'  user "{BOB}" password "bob-pw-2" sslproto tls1.2+ sslcertck\n'
        f"  sslcertfile {server.cert} sslcommonname {DOMAIN} keep\n"
        f"  mda \"/bin/sh -c 'cat >> {out}'\"\n"
    )
    rc.chmod(0o600)
    r = subprocess.run(
        ["fetchmail", "-f", str(rc), "--idfile", str(tmp_path / "ids"), "--nosyslog"],
        capture_output=True, text=True, timeout=120, env={"FETCHMAILHOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Subject: {delivered}" in out.read_text(errors="replace")


def test_relay_refused_without_authentication(server: Server) -> None:
    _need("swaks", "swaks")
    r = _swaks(server, "--server", f"{server.host}:{server.port('smtp')}",
               "--from", "spammer@elsewhere.example", "--to", "victim@faraway.example")
    assert r.returncode != 0
    assert "<** 550 5.7.1" in r.stdout, r.stdout
    r = _swaks(server, "--server", f"{server.host}:{server.port('submission')}", "--tls",
               "--from", "spammer@elsewhere.example", "--to", "victim@faraway.example")
    assert r.returncode != 0
    assert "<~* 530 " in r.stdout, r.stdout
    # a wrong password does not open the relay either
    r = _swaks(server, "--server", f"{server.host}:{server.port('submission')}", "--tls",
               "--auth", "PLAIN", "--auth-user", f"alice@{DOMAIN}", "--auth-password", "wrong",
               "--from", f"alice@{DOMAIN}", "--to", "victim@faraway.example")
    assert r.returncode != 0
    assert "<~* 535 " in r.stdout, r.stdout


def test_submission_over_implicit_tls(server: Server) -> None:
    _need("swaks", "swaks")
    subject = f"e2e-465-{uuid.uuid4().hex}"
    r = _swaks(server, "--server", f"{server.host}:{server.port('smtps')}", "--tls-on-connect",
               "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", "alice-pw-1",
               "--from", f"alice@{DOMAIN}", "--to", BOB, "--header", f"Subject: {subject}")
    assert r.returncode == 0, r.stdout + r.stderr
    imap = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=server.tls_client(), timeout=30)
    imap.login(BOB, "bob-pw-2")
    imap.select("INBOX", readonly=True)
    assert len(imap.search(None, "SUBJECT", subject)[1][0].split()) == 1
    imap.logout()
