"""Real clients (imaplib, imapclient, mbsync, offlineimap, getmail, fetchmail,
curl) against a real server process."""

from __future__ import annotations

import email
import imaplib
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.imap.server import PASSWORD, RealServer, real_server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("imap")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    with real_server(tmp_path_factory.mktemp("imapsrv"), "127.0.4.10") as s:
        yield s


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def message(i: int, subject: str = "Test") -> bytes:
    return (
        f"From: sender{i}@example.test\r\nTo: alice@example.test\r\nSubject: {subject} {i}\r\n"
        f"Message-ID: <msg{i}@example.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
        f"Body of message {i}\r\n"
    ).encode()


def test_imaplib_full_session(server: RealServer) -> None:
    with imaplib.IMAP4(server.host, server.imap_port) as m:
        assert "STARTTLS" in m.capabilities
        m.starttls(_tls())
        typ, _ = m.login("alice", PASSWORD)
        assert typ == "OK"
        assert m.create("Work/Reports")[0] == "OK"
        for i in range(5):
            typ, data = m.append("INBOX", "(\\Flagged)" if i == 0 else "", imaplib.Time2Internaldate(1700000000), message(i))
            assert typ == "OK" and b"APPENDUID" in data[0]
        typ, data = m.select("INBOX")
        assert typ == "OK" and int(data[0]) >= 5
        typ, data = m.search(None, '(SUBJECT "Test 3")')
        assert data[0].split()[-1:] == [b"4"] or data[0]
        typ, data = m.uid("SEARCH", "ALL")
        uids = data[0].split()
        typ, data = m.uid("FETCH", uids[0], "(FLAGS BODY.PEEK[])")
        assert typ == "OK"
        msg = email.message_from_bytes(data[0][1])
        assert msg["Subject"].startswith("Test")
        assert m.store("2", "+FLAGS", "(\\Deleted)")[0] == "OK"
        typ, data = m.expunge()
        assert data == [b"2"]
        assert m.copy("1", "Work/Reports")[0] == "OK"
        typ, data = m.status("Work/Reports", "(MESSAGES)")
        assert b"MESSAGES 1" in data[0]
        typ, data = m.list()
        assert any(b"Work/Reports" in x for x in data)
        typ, data = m.fetch("1:*", "(ENVELOPE BODYSTRUCTURE RFC822.SIZE INTERNALDATE)")
        assert typ == "OK" and len(data) >= 4
        assert m.close()[0] == "OK"
        assert m.logout()[0] == "BYE"


def test_imaplib_implicit_tls_and_idle(server: RealServer) -> None:
    with imaplib.IMAP4_SSL(server.host, server.imaps_port, ssl_context=_tls()) as m:
        m.login("bob", PASSWORD)
        m.select("INBOX")
        with imaplib.IMAP4(server.host, server.imap_port) as other:
            other.login("bob", PASSWORD)
            tag = m._new_tag().decode()  # type: ignore[attr-defined]
            m.send(f"{tag} IDLE\r\n".encode())
            assert m.readline().startswith(b"+")
            other.append("INBOX", "", None, message(99))
            assert m.readline().strip().endswith(b"EXISTS")
            assert m.readline().strip() == b"* 1 RECENT"  # RFC 3501 7.3.2 (rev1 session)
            m.send(b"DONE\r\n")
            assert m.readline().startswith(tag.encode() + b" OK")


def test_imapclient_session(server: RealServer) -> None:
    imapclient = pytest.importorskip("imapclient")
    with imapclient.IMAPClient(server.host, port=server.imap_port, ssl=False) as c:
        c.starttls(_tls())
        c.login("alice", PASSWORD)
        assert b"QRESYNC" in c.capabilities()
        c.enable("CONDSTORE")
        c.create_folder("Lists")
        c.append("Lists", message(200), flags=[b"\\Seen", b"custom"])
        info = c.select_folder("Lists")
        assert info[b"EXISTS"] == 1 and b"HIGHESTMODSEQ" in info
        uids = c.search(["ALL"])
        assert len(uids) == 1
        data = c.fetch(uids, ["FLAGS", "ENVELOPE", "BODY[]", "MODSEQ"])
        entry = data[uids[0]]
        assert set(entry[b"FLAGS"]) == {b"\\Seen", b"custom", b"\\Recent"}  # first session to see it
        assert entry[b"ENVELOPE"].subject == b"Test 200"
        c.add_flags(uids, [b"\\Answered"])
        assert b"\\Answered" in c.get_flags(uids)[uids[0]]
        assert c.folder_status("Lists", ["MESSAGES", "UIDNEXT"])[b"MESSAGES"] == 1
        c.move(uids, "INBOX")
        assert c.search(["ALL"]) == []
        assert c.namespace().personal[0][0] == ""
        assert b"dynamail" in c.id_({"name": "test"})[0]
        roots, _quotas = c.get_quota_root("INBOX")
        assert roots.mailbox == "INBOX" and len(roots.quota_roots) == 1
        c.unselect_folder()
        c.logout()


MBSYNC_CONF = """\
IMAPAccount test
Host {host}
Port {port}
User alice
Pass {password}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account test

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:Sync
Near :local:Sync
Create Both
Expunge Both
SyncState *
Sync All
"""


def _maildir_flags(path: Path) -> dict[str, str]:
    out = {}
    for sub in ("cur", "new"):
        d = path / sub
        if not d.exists():
            continue
        for f in d.iterdir():
            data = f.read_bytes()
            mid = email.message_from_bytes(data)["Message-ID"]
            flags = f.name.split(":2,", 1)[1] if ":2," in f.name else ""
            out[mid] = "".join(sorted(flags))
    return out


def test_mbsync_round_trip(server: RealServer, tmp_path: Path) -> None:
    mbsync = shutil.which("mbsync")
    if mbsync is None:
        pytest.skip("mbsync (isync) is not installed")
    maildir = tmp_path / "mail"
    box = maildir / "Sync"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    n = 300
    for i in range(n):
        flags = "S" if i % 3 == 0 else ""
        (box / "cur" / f"{1700000000 + i}.{i}.host:2,{flags}").write_bytes(message(1000 + i, "Sync"))
    conf = tmp_path / "mbsyncrc"
    conf.write_text(MBSYNC_CONF.format(host=server.host, port=server.imap_port, password=PASSWORD, maildir=maildir))

    def run() -> None:
        res = subprocess.run([mbsync, "-c", str(conf), "-a"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr

    run()
    with imaplib.IMAP4(server.host, server.imap_port) as m:
        m.login("alice", PASSWORD)
        _typ, data = m.select("Sync")
        assert int(data[0]) == n
        # change flags on the server side
        m.store("1:50", "+FLAGS", "(\\Flagged)")
        m.store("51:60", "+FLAGS", "(\\Deleted)")
        m.expunge()
        m.logout()
    # change flags on the local side: mark the last 20 as seen and answered
    files = sorted((box / "cur").iterdir())
    for f in files[-20:]:
        base = f.name.split(":2,", 1)[0]
        f.rename(f.with_name(base + ":2,RS"))
    run()
    local = _maildir_flags(box)
    with imaplib.IMAP4(server.host, server.imap_port) as m:
        m.login("alice", PASSWORD)
        m.select("Sync", readonly=True)
        _typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        remote = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            flags = imaplib.ParseFlags(item[0])
            mid = email.message_from_bytes(item[1])["Message-ID"]
            letters = {b"\\Seen": "S", b"\\Flagged": "F", b"\\Answered": "R", b"\\Deleted": "T", b"\\Draft": "D"}
            remote[mid] = "".join(sorted(letters[f] for f in flags if f in letters))
        m.logout()
    assert len(remote) == n - 10
    assert local == remote
    assert sum("F" in v for v in remote.values()) == 50
    assert sum("R" in v for v in remote.values()) == 20


def test_fetchmail_and_curl(server: RealServer, tmp_path: Path) -> None:
    fetchmail = shutil.which("fetchmail")
    curl = shutil.which("curl")
    if fetchmail is None and curl is None:
        pytest.skip("neither fetchmail nor curl is installed")
    with imaplib.IMAP4(server.host, server.imap_port) as m:
        m.login("bob", PASSWORD)
        m.create("Fetch")
        for i in range(3):
            m.append("Fetch", "", None, message(500 + i, "Fetchmail"))
        m.logout()
    if curl is not None:
        res = subprocess.run(
            [curl, "-s", "--user", f"bob:{PASSWORD}", f"imap://{server.host}:{server.imap_port}/Fetch;UID=1"],
            capture_output=True, timeout=60,
        )
        assert res.returncode == 0, res.stderr
        assert b"Subject: Fetchmail 500" in res.stdout
    if fetchmail is not None:
        out = tmp_path / "delivered.mbox"
        rc = tmp_path / "fetchmailrc"
        rc.write_text(
            f'poll {server.host} service {server.imap_port} protocol IMAP user "bob" password "{PASSWORD}" '
            f'folder "Fetch" sslproto "" fetchall mda "/bin/sh -c \'cat >> {out}\'"\n'
        )
        rc.chmod(0o600)
        res = subprocess.run(
            [fetchmail, "-f", str(rc), "-v", "--nosyslog", "--pidfile", str(tmp_path / "pid"),
             "--idfile", str(tmp_path / "ids")],
            capture_output=True, text=True, timeout=120, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )
        assert res.returncode == 0, res.stdout + res.stderr
        text = out.read_text()
        assert text.count("Subject: Fetchmail") == 3
        with imaplib.IMAP4(server.host, server.imap_port) as m:
            m.login("bob", PASSWORD)
            _typ, data = m.status("Fetch", "(MESSAGES)")
            assert b"MESSAGES 0" in data[0]  # fetched messages were deleted and expunged
            m.logout()


OFFLINEIMAP_CONF = """\
[general]
accounts = test
metadata = {meta}
ui = quiet

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {maildir}

[Repository remote]
type = IMAP
remotehost = {host}
remoteport = {port}
remoteuser = bob
remotepass = {password}
ssl = no
starttls = no
folderfilter = lambda name: name in ["Offline"]
"""


def test_offlineimap_round_trip(server: RealServer, tmp_path: Path) -> None:
    offlineimap = shutil.which("offlineimap")
    if offlineimap is None:
        pytest.skip("offlineimap (Debian offlineimap3) is not installed")
    with imaplib.IMAP4(server.host, server.imap_port) as m:
        m.login("bob", PASSWORD)
        m.create("Offline")
        for i in range(20):
            m.append("Offline", "(\\Flagged)" if i < 5 else "", None, message(3000 + i, "Offline"))
        m.logout()
    maildir = tmp_path / "mail"
    maildir.mkdir()
    conf = tmp_path / "offlineimaprc"
    conf.write_text(OFFLINEIMAP_CONF.format(meta=tmp_path / "meta", maildir=maildir, host=server.host,
                                            port=server.imap_port, password=PASSWORD))

    def run() -> None:
        res = subprocess.run([offlineimap, "-c", str(conf), "-o", "-u", "basic"], capture_output=True,
                             text=True, timeout=180, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
        assert res.returncode == 0 and "ERROR" not in res.stdout + res.stderr, res.stdout + res.stderr

    run()
    box = maildir / "Offline"
    local = _maildir_flags(box)
    assert len(local) == 20 and sum("F" in v for v in local.values()) == 5
    # local changes: one message read, one deleted, one new; they reach the server
    files = sorted((box / "cur").iterdir()) + sorted((box / "new").iterdir())
    seen = files[6]
    seen.rename(box / "cur" / (seen.name.split(":2,", 1)[0] + ":2,S"))
    files[7].unlink()
    (box / "new" / "1800000000.local.host").write_bytes(message(3999, "Offline"))
    run()
    with imaplib.IMAP4(server.host, server.imap_port) as m:
        m.login("bob", PASSWORD)
        m.select("Offline", readonly=True)
        _typ, data = m.search(None, "ALL")
        assert len(data[0].split()) == 20  # 20 - 1 deleted + 1 new
        _typ, data = m.search(None, "SEEN")
        assert len(data[0].split()) == 1
        _typ, data = m.search(None, 'SUBJECT "Offline 3999"')
        assert len(data[0].split()) == 1
        m.logout()
    run()  # a third run finds nothing to do and still succeeds
    assert len(_maildir_flags(box)) == 20


def test_getmail_retrieves_once(server: RealServer, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    getmail = shutil.which("getmail")
    if getmail is None:
        pytest.skip("getmail (Debian getmail6) is not installed")
    with imaplib.IMAP4(server.host, server.imap_port) as m:
        m.login("alice", PASSWORD)
        m.create("Getmail")
        for i in range(4):
            m.append("Getmail", "", None, message(4000 + i, "Getmail"))
        m.logout()
    # getmail refuses to deliver as root: as root it delivers as "nobody",
    # into a directory nobody can reach (pytest's tmp_path is private)
    as_root = os.geteuid() == 0
    top = Path(tempfile.mkdtemp(prefix="dmgetmail", dir="/tmp")) if as_root else tmp_path
    request.addfinalizer(lambda: shutil.rmtree(top, ignore_errors=True) if as_root else None)
    maildir = top / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    if as_root:
        for d in (top, maildir, *(maildir / s for s in ("cur", "new", "tmp"))):
            d.chmod(0o777)
    rc = tmp_path / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = SimpleIMAPRetriever\n"
        f"server = {server.host}\nport = {server.imap_port}\nusername = alice\npassword = {PASSWORD}\n"
        'mailboxes = ("Getmail",)\n\n'
        f"[destination]\ntype = Maildir\npath = {maildir}/\n" + ("user = nobody\n" if as_root else "") + "\n"
        "[options]\nread_all = false\ndelete = false\nverbose = 0\n"
    )

    def run() -> None:
        res = subprocess.run([getmail, "--rcfile", str(rc), "--getmaildir", str(tmp_path)],
                             capture_output=True, text=True, timeout=120,
                             env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
        assert res.returncode == 0, res.stdout + res.stderr

    run()
    got = [f.read_bytes() for f in (maildir / "new").iterdir()]
    assert sorted(email.message_from_bytes(g)["Subject"] for g in got) == [f"Getmail {4000 + i}" for i in range(4)]
    run()  # already retrieved (getmail remembers UIDVALIDITY/UID): nothing new
    assert len(list((maildir / "new").iterdir())) == 4
    with imaplib.IMAP4(server.host, server.imap_port) as m:
        m.login("alice", PASSWORD)
        m.append("Getmail", "", None, message(4010, "Getmail"))
        m.logout()
    run()
    assert len(list((maildir / "new").iterdir())) == 5


def test_imapclient_desktop_startup_and_resync(server: RealServer) -> None:
    """What a desktop client does at start-up and on reconnecting: CAPABILITY,
    ID, ENABLE QRESYNC, LIST with SPECIAL-USE and STATUS, SELECT with QRESYNC
    (RFC 7162 3.2.5), UID FETCH of the changes, then IDLE."""
    imapclient = pytest.importorskip("imapclient")

    def connect() -> Any:
        c = imapclient.IMAPClient(server.host, port=server.imap_port, ssl=False, timeout=30)
        c.login("alice", PASSWORD)
        caps = c.capabilities()
        assert b"QRESYNC" in caps and b"SPECIAL-USE" in caps and b"LIST-STATUS" in caps
        assert b"dynamail" in c.id_({"name": "Desktop", "version": "1.0"})[0]
        assert c.enable("QRESYNC") == [b"QRESYNC"]
        return c

    def raw(c: Any, *args: str) -> dict[str, list[Any]]:
        imap = c._imap
        typ, _ = imap._simple_command(*args)
        assert typ == "OK", args
        out = {k: list(v) for k, v in imap.untagged_responses.items()}
        imap.untagged_responses.clear()
        return out

    setup = imapclient.IMAPClient(server.host, port=server.imap_port, ssl=False, timeout=30)
    setup.login("alice", PASSWORD)
    setup.create_folder("Desktop")
    for i in range(3):
        setup.append("Desktop", message(5000 + i, "Desk"))

    c = connect()
    got = raw(c, "LIST", '""', '"*"', "RETURN", "(SPECIAL-USE STATUS (MESSAGES UIDVALIDITY HIGHESTMODSEQ))")
    names = [x.decode() if isinstance(x, bytes) else x for x in got["LIST"]]
    assert any(n.endswith('"/" Desktop') for n in names)
    status = next(s for s in got["STATUS"] if s.startswith(b"Desktop "))
    validity = int(status.split(b"UIDVALIDITY ")[1].split()[0].rstrip(b")"))
    modseq = int(status.split(b"HIGHESTMODSEQ ")[1].split()[0].rstrip(b")"))
    info = c.select_folder("Desktop")
    assert info[b"EXISTS"] == 3 and info[b"UIDVALIDITY"] == validity
    uids = c.search(["ALL"])
    c.logout()

    # changes while the client is away
    setup.select_folder("Desktop")
    setup.add_flags([uids[0]], [b"\\Flagged"])
    setup.delete_messages([uids[1]])
    setup.expunge()
    setup.append("Desktop", message(5009, "Desk"))

    c = connect()
    got = raw(c, "SELECT", "Desktop", f"(QRESYNC ({validity} {modseq}))")
    c._imap.state = "SELECTED"  # imaplib does not know a SELECT with parameters
    assert got["VANISHED"] == [b"(EARLIER) %d" % uids[1]]
    fetched = b" ".join(got["FETCH"])
    assert b"UID %d" % uids[0] in fetched and b"\\Flagged" in fetched
    changed = c.fetch(c.search(["ALL"]), ["FLAGS"], modifiers=[f"CHANGEDSINCE {modseq}"])
    assert sorted(changed) == [uids[0], uids[2] + 1]
    # IDLE: another client's append arrives at once
    c.idle()
    setup.append("Desktop", message(5010, "Desk"))
    events = c.idle_check(timeout=10)
    c.idle_done()
    assert any(e[1] == b"EXISTS" for e in events if isinstance(e, tuple) and len(e) > 1)
    c.logout()
    setup.logout()
