"""Mail written by a real Dovecot (through ``doveadm``) in its Maildir and
mbox formats imports exactly as Dovecot itself serves it: the same text
(Dovecot hides its mbox bookkeeping headers; so must we), flags, keywords,
folders and received dates.  Dovecot's own answer (``doveadm fetch``) is
the expectation."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dynamail.migrate import import_into
from dynamail.storage import FileMailStore

pytestmark = [
    pytest.mark.xdist_group("migrate-dovecot"),
    pytest.mark.skipif(shutil.which("dovecot") is None or shutil.which("doveadm") is None,
                       reason="dovecot/doveadm not installed (Debian dovecot-imapd)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Dovecot instance needs root"),
]

CONF = """\
base_dir = {d}/run
log_path = {d}/dovecot.log
mail_location = {location}
first_valid_uid = 1
mail_uid = {uid}
mail_gid = {gid}
ssl = no
protocols =
default_internal_user = root
default_login_user = root
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home
}}
passdb {{
  driver = static
  args = nopassword=y
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
"""
KEYWORDS = ["Work", "$label1", "Custom", "$Forwarded"]
SYSTEM = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]
MAILBOXES = ["INBOX", "Work/Projects", "Sent"]


@pytest.fixture
def dovecot(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, Callable[..., str]]]:
    fmt: str = request.param
    # the mail user must reach its home: not under pytest's private tmp_path
    d = Path(tempfile.mkdtemp(prefix="dmdove", dir="/tmp"))
    d.chmod(0o755)
    (d / "home").mkdir(parents=True)
    user = pwd.getpwnam("mail") if _has_user("mail") else pwd.getpwnam("nobody")
    os.chown(d / "home", user.pw_uid, user.pw_gid)
    root = d / "home" / ("Maildir" if fmt == "maildir" else "mail")
    location = f"maildir:{root}" if fmt == "maildir" else f"mbox:{root}:INBOX={root}/inbox"
    conf = d / "dovecot.conf"
    conf.write_text(CONF.format(d=d, location=location, uid=user.pw_uid, gid=user.pw_gid))
    env = {**os.environ, "TZ": "UTC"}

    def doveadm(*args: str, stdin: bytes | None = None) -> str:
        res = subprocess.run(["doveadm", "-c", str(conf), *args], input=stdin, capture_output=True,
                             timeout=30, env=env)
        assert res.returncode == 0, res.stderr.decode(errors="replace")
        return res.stdout.decode()

    # dovecot daemonizes; its daemon keeps inherited pipes open, so no pipes
    with open(d / "start.err", "wb") as err:
        started = subprocess.run(["dovecot", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err, timeout=30, env=env)
    if started.returncode != 0:
        pytest.skip(f"dovecot does not start here: {(d / 'start.err').read_text(errors='replace').strip()}")
    try:
        deadline = time.monotonic() + 10
        while not (d / "run" / "auth-userdb").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield root, doveadm
    finally:
        subprocess.run(["doveadm", "-c", str(conf), "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, env=env)
        shutil.rmtree(d, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _message(rnd: random.Random, n: int) -> bytes:
    lines = [f"From: a{n}@example.org", f"Subject: message {n}", f"Message-ID: <{n}@example.org>", ""]
    for _ in range(rnd.randrange(1, 12)):
        lines.append(rnd.choice(["From the start of a line", ">From a quoted one", "", "plain text",
                                 "From x Mon Jan  1 00:00:00 2001", "Status: RO"]))
    return ("\n".join(lines) + "\n").encode()


def _flags(text: str) -> frozenset[str]:
    return frozenset(f for f in text.split() if f != "\\Recent")


@pytest.mark.parametrize("dovecot", ["maildir", "mbox"], indirect=True)
def test_dovecot_written_mail_imports_as_dovecot_serves_it(dovecot: tuple[Path, Callable[..., str]],
                                                            tmp_path: Path) -> None:
    root, doveadm = dovecot
    rnd = random.Random(5)
    doveadm("mailbox", "create", "-u", "test", *MAILBOXES[1:])
    counts = dict.fromkeys(MAILBOXES, 0)
    for n in range(30):
        mailbox = MAILBOXES[n % len(MAILBOXES)]
        doveadm("save", "-u", "test", "-m", mailbox, stdin=_message(rnd, n))
        counts[mailbox] += 1
        flags = rnd.sample(SYSTEM, rnd.randrange(0, 3)) + rnd.sample(KEYWORDS, rnd.randrange(0, 3))
        if flags:
            doveadm("flags", "add", "-u", "test", " ".join(flags), "mailbox", mailbox, "uid", str(counts[mailbox]))
    rows = json.loads(doveadm("-f", "json", "fetch", "-u", "test",
                              "mailbox uid flags date.received.unixtime text", "all"))
    expected: dict[str, list[tuple[bytes, frozenset[str], int]]] = {}
    for row in sorted(rows, key=lambda r: (r["mailbox"], int(r["uid"]))):
        expected.setdefault(row["mailbox"], []).append(
            (row["text"].encode(), _flags(row["flags"]), int(row["date.received.unixtime"])))
    assert sum(len(v) for v in expected.values()) == 30
    doveadm("stop")  # everything flushed to the files; the importer reads them cold

    async def main() -> tuple[dict[str, Any], dict[str, list[tuple[bytes, frozenset[str], int]]]]:
        store = await FileMailStore().open_account(tmp_path / "acct", 1)
        try:
            report = (await import_into(store, str(root), "auto")).as_json()
            got: dict[str, list[tuple[bytes, frozenset[str], int]]] = {}
            for listing in await store.list_mailboxes():
                view = await store.select(listing.name, read_only=True)
                for uid in view.uids():  # UID order: the order Dovecot had
                    info = view.info(uid)
                    data = (await view.read(uid)).replace(b"\r\n", b"\n")
                    got.setdefault(listing.name, []).append((data, info.flags, int(info.internal_date.timestamp())))
                view.close()
            return report, got
        finally:
            await store.close()

    report, got = asyncio.run(main())
    assert (report["imported"], report["skipped"]) == (30, 0), report["problems"]
    assert got == expected
