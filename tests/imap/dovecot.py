"""A private Dovecot IMAP server (Debian dovecot-imapd) on a loopback port,
and a raw-socket IMAP client that reads whole responses (literals included)
and normalises them, so one scripted session can be compared between
Dovecot and dynamail.

The instance runs from a private configuration in a temporary directory:
static passdb (every user, one password), Maildir under that directory,
IMAP only, no TLS.  Dovecot refuses to run its login processes as root, so
they run as ``nobody``; starting it at all needs root (as in CI).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamail.imap.parser import Token, tokenize

PASSWORD = "secret-pw"

CONF = """\
base_dir = {d}/run
log_path = {d}/dovecot.log
mail_location = maildir:{d}/home/%u/Maildir
first_valid_uid = 1
mail_uid = {uid}
mail_gid = {gid}
ssl = no
protocols = imap
listen = {host}
default_internal_user = nobody
default_login_user = nobody
auth_mechanisms = plain login
disable_plaintext_auth = no
mail_max_userip_connections = 100
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home/%u
}}
passdb {{
  driver = static
  args = password={password}
}}
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
  }}
}}
"""


def skip_reason() -> str | None:
    if shutil.which("dovecot") is None or shutil.which("doveadm") is None:
        return "dovecot not installed (Debian dovecot-imapd)"
    if os.geteuid() != 0:
        return "a private Dovecot instance needs root"
    return None


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def dovecot_imap(host: str = "127.0.0.1") -> Iterator[tuple[str, int]]:
    """(host, port) of a running private Dovecot; stopped on exit."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    d = Path(tempfile.mkdtemp(prefix="dmdiff", dir="/tmp"))  # the mail user must reach it
    d.chmod(0o755)
    (d / "home").mkdir()
    user = pwd.getpwnam("mail")
    os.chown(d / "home", user.pw_uid, user.pw_gid)
    port = _free_port(host)
    conf = d / "dovecot.conf"
    conf.write_text(CONF.format(d=d, uid=user.pw_uid, gid=user.pw_gid, host=host, port=port, password=PASSWORD))
    env = {**os.environ, "TZ": "UTC"}
    with open(d / "start.err", "wb") as err:  # dovecot daemonizes: no pipes
        started = subprocess.run(["dovecot", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err, timeout=30, env=env)
    if started.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"dovecot does not start here: {(d / 'start.err').read_text(errors='replace').strip()}")
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection((host, port), timeout=2) as s:
                    if s.recv(100).startswith(b"* OK"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.skip("dovecot did not answer: " + (d / "dovecot.log").read_text(errors="replace")[-500:])
            time.sleep(0.1)
        yield host, port
    finally:
        subprocess.run(["doveadm", "-c", str(conf), "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, env=env)
        shutil.rmtree(d, ignore_errors=True)


class RawClient:
    """Sends commands as given and reads whole responses (with literals)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=20)
        self.buf = b""
        self.greeting = self.response()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self) -> bytes:
        """One response: a line, and for each literal it announces, the
        literal and the rest of the line."""
        out = self._line()
        while True:
            m = re.search(rb"~?\{(\d+)\}\r\n\Z", out)
            if m is None:
                return out
            out += self._exactly(int(m.group(1)))
            out += self._line()

    def command(self, tag: str, text: bytes) -> list[bytes]:
        """Send ``tag text`` (synchronising literals wait for "+"); every
        response up to the tagged one."""
        parts = re.split(rb"(\{\d+\}\r\n)", text)
        out: list[bytes] = []
        self.sock.sendall(tag.encode() + b" " + parts[0])
        i = 1
        while i < len(parts):
            self.sock.sendall(parts[i])
            while True:
                r = self.response()
                if r.startswith(b"+"):
                    break
                out.append(r)
                if r.startswith(tag.encode() + b" "):
                    return out
            self.sock.sendall(parts[i + 1])
            i += 2
        self.sock.sendall(b"\r\n")
        while True:
            r = self.response()
            out.append(r)
            if r.startswith(tag.encode() + b" "):
                return out


# -- normalising -------------------------------------------------------------

_STATUS = re.compile(rb"^(\S+) (OK|NO|BAD|BYE|PREAUTH)(?: \[([^\]]*)\])?", re.I)
_NUMBERED = {"UIDVALIDITY", "HIGHESTMODSEQ", "MODSEQ", "NOMODSEQ"}


def _code(code: str) -> str:
    words = code.split()
    if not words:
        return ""
    head = words[0].upper()
    if head in ("CAPABILITY", "PERMANENTFLAGS"):
        return head + (" " + " ".join(sorted(words[1:])) if head == "PERMANENTFLAGS" else "")
    if head in ("UIDVALIDITY", "HIGHESTMODSEQ"):
        return head + " <n>"
    if head in ("BADCHARSET", "CLIENTBUG"):  # the charset list is optional; CLIENTBUG a hint
        return head
    if head in ("APPENDUID", "COPYUID") and len(words) > 1:
        return " ".join([head, "<v>", *words[2:]])
    return " ".join([head, *words[1:]])


def _sorted_list(t: Token) -> Token:
    if isinstance(t, list):
        return sorted(t, key=lambda x: str(x).upper())
    return t


def _fetch_items(items: list[Token]) -> dict[str, Token]:
    out: dict[str, Token] = {}
    for i in range(0, len(items) - 1, 2):
        name = str(items[i]).upper() if not isinstance(items[i], list) else str(items[i])
        val = items[i + 1]
        if name == "FLAGS":
            val = _sorted_list(val)
        elif name in ("INTERNALDATE", "SAVEDATE"):
            val = "<date>"
        elif name == "MODSEQ":
            val = "<n>"
        elif name in ("BODY", "BODYSTRUCTURE"):
            val = _lower(val)  # type, subtype and parameter names are case-insensitive
        elif isinstance(val, memoryview):
            val = bytes(val)
        out[name] = val
    return out


def _lower(t: Token) -> Token:
    if isinstance(t, list):
        return [_lower(x) for x in t]
    if isinstance(t, str):
        return t.lower()
    if isinstance(t, bytes | memoryview):
        return bytes(t).lower()
    return t


def _plain(t: Token) -> object:
    if isinstance(t, list):
        return [_plain(x) for x in t]
    if isinstance(t, memoryview):
        return bytes(t)
    if isinstance(t, bytes):
        return bytes(t)
    return t


def _freeze(x: object) -> object:
    """Hashable, and strings as text: an astring is the same whether sent
    as an atom, quoted or as a literal."""
    if isinstance(x, list | tuple):
        return tuple(_freeze(i) for i in x)
    if isinstance(x, bytes | memoryview):
        return bytes(x).decode("utf-8", "replace")
    return x


def normalise(resp: bytes) -> object:
    return _freeze(_normalise(resp))


def _normalise(resp: bytes) -> object:
    """A comparable form of one response: status responses keep only their
    status and response code; FETCH becomes a dict of items; flag and
    attribute lists are sorted; UIDVALIDITY, MODSEQ and dates are masked."""
    m = _STATUS.match(resp)
    if m:
        who = "*" if m.group(1) == b"*" else "tagged"
        code = _code(m.group(3).decode("utf-8", "replace")) if m.group(3) is not None else ""
        return (who, m.group(2).decode().upper(), code)
    if resp.startswith(b"+"):
        return ("+",)
    try:
        toks = tokenize(resp.rstrip(b"\r\n"))
    except Exception:
        return ("unparsed", resp)
    toks = _plain(toks)  # type: ignore[assignment]
    if len(toks) >= 3 and isinstance(toks[2], str) and toks[2].upper() == "FETCH" and isinstance(toks[3], list):
        return ("FETCH", toks[1], tuple(sorted(_fetch_items(toks[3]).items(), key=lambda kv: kv[0])))
    if len(toks) >= 2 and isinstance(toks[1], str):
        kind = toks[1].upper()
        if kind in ("FLAGS", "LIST", "LSUB") and len(toks) > 2:
            toks[2] = _sorted_list(toks[2])
        if kind == "STATUS" and len(toks) > 3 and isinstance(toks[3], list):
            items = toks[3]
            pairs = {str(items[i]).upper(): items[i + 1] for i in range(0, len(items) - 1, 2)}
            for k in ("UIDVALIDITY", "HIGHESTMODSEQ"):
                if k in pairs:
                    pairs[k] = "<n>"
            toks[3] = sorted(pairs.items())
        if kind in ("SEARCH", "SORT") and toks and isinstance(toks[-1], list):
            toks[-1] = ["MODSEQ", "<n>"]
        if kind == "ESEARCH":
            for i, t in enumerate(toks):
                if isinstance(t, str) and t.upper() == "MODSEQ" and i + 1 < len(toks):
                    toks[i + 1] = "<n>"
    return toks
