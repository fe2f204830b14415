"""Differential check: the same scripts and messages through our interpreter
and through Dovecot Pigeonhole's ``sieve-test`` (Debian ``dovecot-sieve``);
the verdicts (folders and flags, redirects, reject, discard, vacation, a
failed run resolved by implicit keep) must agree."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamail.sieve.actions import Envelope, FileInto, Redirect, Reject, Vacation
from dynamail.sieve.commands import compile_script
from dynamail.sieve.interpreter import run
from dynamail.sieve.match import SieveRuntimeError

SIEVE_TEST = shutil.which("sieve-test")
pytestmark = pytest.mark.skipif(SIEVE_TEST is None, reason="sieve-test (Debian dovecot-sieve) is not installed")

MESSAGES = {
    "plain": (
        b"Received: from a by b; Tue, 1 Dec 2026 09:00:00 +0000\r\n"
        b"From: Alice Example <alice@example.org>\r\n"
        b"To: Bob <bob@example.com>, carol+work@example.com\r\n"
        b"Cc: team@lists.example.com\r\n"
        b"Subject: Meeting =?utf-8?q?m=C3=BCnchen?= tomorrow\r\n"
        b"Date: Tue, 1 Dec 2026 10:30:15 +0100\r\n"
        b"Message-ID: <m1@example.org>\r\n"
        b"X-Spam-Score: 12\r\n"
        b"X-Priority: 3 (Normal)\r\n"
        b"\r\n"
        b"Hello Bob,\r\nlet's meet tomorrow at noon.\r\n"
    ),
    "multipart": (
        b"From: shop@news.example.net\r\n"
        b"To: bob@example.com\r\n"
        b"Subject: [SALE] 50% off\r\n"
        b"Date: Sat, 05 Dec 2026 23:59:00 -0800\r\n"
        b"List-Id: <news.example.net>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/alternative; boundary=XX\r\n"
        b"\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Gro=C3=9Fe Rabatte heute.\r\n"
        b"--XX\r\nContent-Type: text/html\r\n\r\n<p>big discount</p>\r\n--XX--\r\n"
    ),
}

SCRIPTS = [
    "",
    "keep;",
    "discard;",
    'require "fileinto"; fileinto "Work";',
    'require ["fileinto", "copy"]; fileinto :copy "Work"; redirect :copy "x@example.net";',
    'redirect "x@example.net";',
    'require "reject"; reject "go away";',
    'require ["reject", "fileinto"]; fileinto "x"; reject "no";',
    'require "fileinto"; if header :contains "subject" "MÜNCHEN" { fileinto "a"; } else { fileinto "b"; }',
    'require "fileinto"; if header :contains "subject" "münchen" { fileinto "a"; }',
    'require "fileinto"; if address :domain :is ["to", "cc"] "lists.example.com" { fileinto "lists"; }',
    'require "fileinto"; if address :localpart :matches "from" "a*e" { fileinto "a"; }',
    'require "fileinto"; if header :matches "subject" "*[SALE]*" { fileinto "sale"; }',
    'require "fileinto"; if exists "list-id" { fileinto "lists"; } elsif exists "cc" { fileinto "cc"; }',
    'require "fileinto"; if size :over 400 { fileinto "big"; }',
    'require "fileinto"; if not anyof (size :under 10, false) { fileinto "x"; stop; } fileinto "y";',
    'require ["envelope", "fileinto"]; if envelope :domain "from" "example.org" { fileinto "env"; }',
    'require ["envelope", "fileinto"]; if envelope :is "to" "bob@example.com" { fileinto "to"; }',
    'require ["imap4flags"]; addflag ["\\\\Flagged", "work"]; removeflag "work"; keep;',
    'require ["imap4flags", "fileinto"]; setflag "\\\\Seen"; fileinto :flags "x y" "F"; ',
    'require ["imap4flags"]; addflag "a"; if hasflag :contains "a" { addflag "seen-a"; }',
    'require ["variables", "fileinto"]; if header :matches "from" "* <*@*>" { fileinto "${1}-${3}"; }',
    'require ["variables", "fileinto"]; set :upperfirst :lower "v" "HELLO"; fileinto "${v}";',
    'require ["variables", "fileinto"]; set "a" "x"; if string :is "${a}${b}" "x" { fileinto "ok"; }',
    'require ["relational", "comparator-i;ascii-numeric", "fileinto"]; '
    'if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "10" { fileinto "Junk"; }',
    'require ["relational", "comparator-i;ascii-numeric", "fileinto"]; '
    'if address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] "3" { fileinto "many"; }',
    'require ["relational", "comparator-i;ascii-numeric", "fileinto"]; '
    'if header :value "lt" :comparator "i;ascii-numeric" "x-priority" "4" { fileinto "p"; }',
    'require ["body", "fileinto"]; if body :contains "noon" { fileinto "noon"; }',
    'require ["body", "fileinto"]; if body :contains "Große" { fileinto "de"; }',
    'require ["body", "fileinto"]; if body :raw :contains "=C3=9F" { fileinto "raw"; }',
    'require ["body", "fileinto"]; if body :content "text/html" :contains "discount" { fileinto "html"; }',
    'require ["date", "fileinto"]; if date :originalzone "date" "hour" "10" { fileinto "ten"; }',
    'require ["date", "fileinto"]; if date :zone "+0000" "date" "date" "2026-12-06" { fileinto "utc"; }',
    'require ["date", "fileinto"]; if date :zone "+0000" "date" "weekday" "0" { fileinto "sunday"; }',
    'require ["date", "relational", "fileinto"]; if currentdate :value "ge" "year" "2020" { fileinto "now"; }',
    'require ["vacation"]; vacation :days 3 :subject "away" "I am away until Monday.";',
    'require ["vacation", "fileinto"]; fileinto "x"; vacation "away";',
    'require ["vacation", "reject"]; vacation "x"; reject "y";',
    'require ["mailbox", "fileinto"]; fileinto :create "New/Box";',
    'require ["mailbox", "fileinto"]; if mailboxexists "INBOX" { fileinto "there"; }',
    'require "editheader"; addheader "X-Tag" "one"; deleteheader "received";',
    'require "fileinto"; if header :is "x-missing" "" { fileinto "empty"; }',
    'require "fileinto"; if address :all :is "from" "alice@example.org" { fileinto "alice"; }',
    'require ["subaddress", "fileinto"]; if address :detail "to" "" { fileinto "empty-detail"; }',
    'require ["environment", "fileinto"]; if environment :contains "no-such-item" "" { fileinto "x"; }',
    'require ["encoded-character", "fileinto"]; if header :contains "subject" "${hex:6D C3 BC}nchen" '
    '{ fileinto "${unicode:4D}"; }',
    'require ["subaddress", "fileinto"]; if address :detail :is "to" "work" { fileinto "work"; }',
    'require ["subaddress", "envelope", "fileinto"]; if envelope :user "to" "bob" { fileinto "bob"; }',
    'require ["subaddress", "fileinto"]; if address :user :is "from" "alice" { fileinto "u"; }',
    'require "fileinto"; if header :matches "subject" "Meeting ? *" { fileinto "q"; }',
    'require "fileinto"; if header :contains ["to", "cc"] "LISTS" { fileinto "l"; }',
    'require ["relational", "comparator-i;ascii-numeric", "fileinto"]; '
    'if header :count "eq" :comparator "i;ascii-numeric" "received" "1" { fileinto "one-hop"; }',
    'require ["variables", "fileinto"]; if header :matches "subject" "* *" '
    '{ if string :matches "${2}" "*o*" { fileinto "${1}.${2}"; } }',
    'require ["body", "fileinto"]; if body :text :contains "discount" { fileinto "t"; }',
    'require ["fileinto", "imap4flags"]; fileinto :flags "\\Answered" "A"; keep :flags "k";',
    'require ["fileinto", "variables"]; if header :matches "subject" "*" { set "s" "${0}"; } '
    'if string :contains "${s}" "tomorrow" { fileinto "t"; }',
]


#: Where Pigeonhole 2.3 disagrees with RFC 5228 and we follow the RFC: its
#: ":matches" lets "?" followed by " *" match "Meeting munchen tomorrow"
#: (it reports ${1}="m", ${2}=""), though after "m" the literal " " is missing.
KNOWN_DIFFERENCES = {
    'require "fileinto"; if header :matches "subject" "Meeting ? *" { fileinto "q"; }':
        frozenset({("store", "INBOX", "")}),
}


def _run_ours(script: str, message: bytes) -> frozenset[tuple[str, ...]]:
    env = Envelope("alice@example.org", "bob@example.com")
    try:
        out = run(compile_script(script), message, env)
    except SieveRuntimeError:
        return frozenset({("failed",), ("store", "INBOX", "")})
    verdict: set[tuple[str, ...]] = set()
    for a in out.actions:
        if isinstance(a, FileInto):
            verdict.add(("store", a.mailbox, " ".join(sorted(f.lower() for f in a.flags))))
        elif isinstance(a, Redirect):
            verdict.add(("redirect", a.address))
        elif isinstance(a, Reject):
            verdict.add(("reject",))
        elif isinstance(a, Vacation):
            verdict.add(("vacation",))
    if out.discarded and not out.deliveries:
        verdict.add(("discard",))
    return frozenset(verdict)


_ACTION = re.compile(r"^ \* (.*)$")
_FLAGS = re.compile(r"^\s+\+ add IMAP flags: (.*)$")


def _parse_pigeonhole(output: str, rc: int) -> frozenset[tuple[str, ...]]:
    if rc != 0:
        return frozenset({("failed",), ("store", "INBOX", "")})
    verdict: list[list[str]] = []
    for line in output.splitlines():
        m = _ACTION.match(line)
        if m:
            text = m.group(1)
            if text.startswith("store message in folder: "):
                verdict.append(["store", text.split(": ", 1)[1], ""])
            elif text.startswith("redirect message to: "):
                verdict.append(["redirect", text.split(": ", 1)[1].strip("<>")])
            elif text.startswith("reject message"):
                verdict.append(["reject"])
            elif text.startswith("send vacation message"):
                verdict.append(["vacation"])
            elif text.startswith("discard"):
                verdict.append(["discard"])
            elif text.startswith("create mailbox"):
                continue
            else:
                verdict.append(["other", text])
            continue
        f = _FLAGS.match(line)
        if f and verdict and verdict[-1][0] == "store":
            verdict[-1][2] = " ".join(sorted(f.group(1).lower().split()))
    return frozenset(tuple(v) for v in verdict)


@pytest.fixture(scope="module")
def pigeonhole() -> Iterator[tuple[list[str], Path]]:
    # not under pytest's tmp_path: its parents are private to our user
    with tempfile.TemporaryDirectory(prefix="dynamail-pigeonhole-") as tmp:
        yield _setup(Path(tmp))


def _setup(work: Path) -> tuple[list[str], Path]:
    prefix: list[str] = []
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:  # Dovecot refuses mail access as root: run it as nobody
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
        prefix = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        work.chmod(0o777)
    (work / "home").mkdir()
    (work / "home").chmod(0o777)
    (work / "dovecot.conf").write_text(
        f"first_valid_uid = 0\nfirst_valid_gid = 0\nmail_uid = {uid}\nmail_gid = {gid}\n"
        f"mail_home = {work}/home\nmail_location = maildir:{work}/home/Maildir\n"
        "plugin {\n  sieve_extensions = +editheader +vacation-seconds\n}\n"
    )
    return prefix, work


@pytest.mark.parametrize("name", sorted(MESSAGES))
@pytest.mark.parametrize("index", range(len(SCRIPTS)))
def test_verdicts_agree(pigeonhole: tuple[list[str], Path], name: str, index: int) -> None:
    prefix, work = pigeonhole
    script, message = SCRIPTS[index], MESSAGES[name]
    sfile = work / f"s{index}.sieve"
    mfile = work / f"{name}.eml"
    sfile.write_text(script)
    mfile.write_bytes(message)
    for f in (sfile, mfile):
        f.chmod(0o666)
    assert SIEVE_TEST is not None
    proc = subprocess.run(
        [*prefix, SIEVE_TEST, "-c", str(work / "dovecot.conf"), "-f", "alice@example.org",
         "-r", "bob@example.com", str(sfile), str(mfile)],
        capture_output=True, text=True, timeout=30, cwd=work,
    )
    if proc.returncode not in (0, 1):
        pytest.fail(f"sieve-test failed ({proc.returncode}): {proc.stderr}")
    theirs = _parse_pigeonhole(proc.stdout, proc.returncode)
    ours = _run_ours(script, message)
    if script in KNOWN_DIFFERENCES and name == "plain":
        assert ours == KNOWN_DIFFERENCES[script] != theirs, "Pigeonhole now agrees: drop the known difference"
        return
    assert ours == theirs, f"script {script!r}\npigeonhole:\n{proc.stdout}\n{proc.stderr}"
