"""Client workers of the fault campaign: real protocol clients (``smtplib``,
``imaplib``, ``poplib``, the admin CLI protocol over a socket, the JSON API
over ``urllib``) on threads, each connecting to a random member.

Every operation is recorded in the :class:`~dynamail.chaos.history.History`
with its outcome (see there for what ``refused`` and ``unknown`` mean).

Each IMAP account has exactly one IMAP worker, so the IMAP operations on one
account form a sequence and the checker can reason about "the last STORE";
SMTP deliveries into the same accounts run concurrently with them.  The IMAP
worker moves messages one way only (INBOX → Work → Archive) and never puts
the same Message-ID into the same mailbox twice, so every (mailbox,
Message-ID) pair is created by at most one operation and "exactly once" has
a precise meaning.
"""

from __future__ import annotations

import contextlib
import imaplib
import itertools
import json
import poplib
import random
import re
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from dynamail.chaos.history import OK, REFUSED, UNKNOWN, History, Op

DOMAIN = "chaos.test"
MAILBOXES = ("INBOX", "Work", "Archive")
# the flags a STORE sets (FLAGS replaces them); \Seen and \Deleted are left out
# of the comparison because FETCH BODY[] and RETR may set \Seen
CHAOS_FLAGS = ("\\Flagged", "\\Answered", "$Chaos1", "$Chaos2")
IO_TIMEOUT = 10.0  # seconds a client waits for one answer before calling it unknown
# IMAP response codes that mean the command certainly did not take effect
# (RFC 5530); NO [UNAVAILABLE], [SERVERBUG] and a NO without a code are unknown
DEFINITE_NO = ("TRYCREATE", "NONEXISTENT", "OVERQUOTA", "LIMIT", "CANNOT", "ALREADYEXISTS",
               "AUTHENTICATIONFAILED", "NOPERM")
CLI_UNAVAILABLE = 530  # the admin CLI's code for a temporary failure

_ids = itertools.count(1)
_CODE = re.compile(rb"^\s*\[([A-Z-]+)")
_UID = re.compile(rb"UID (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_MSGID = re.compile(rb"(?im)^message-id:\s*(<[^>\r\n]*>)")
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
_UIDVALIDITY = re.compile(rb"(\d+)")


@dataclass(slots=True)
class Env:
    """What every worker needs: members (cluster.json rows), accounts and
    their password, the admin credentials, the recorder and the stop flag."""

    members: list[dict[str, Any]]
    accounts: list[str]
    password: str
    admin: dict[str, str]
    history: History
    seed: int
    stop: threading.Event = field(default_factory=threading.Event)
    serverbugs: list[str] = field(default_factory=list)

    def new_msgid(self, kind: str) -> str:
        return f"<c{self.seed}.{kind}.{next(_ids)}@{DOMAIN}>"


def insecure_tls() -> ssl.SSLContext:
    """The members' certificates are self-signed; the campaign does not verify them."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def imap_connect(member: dict[str, Any], timeout: float = IO_TIMEOUT) -> imaplib.IMAP4:
    """An IMAP connection to ``member``; STARTTLS first unless on loopback
    (the server refuses a plaintext LOGIN elsewhere)."""
    conn = imaplib.IMAP4(member["host"], member["ports"]["imap"], timeout=timeout)
    if not member["host"].startswith("127."):
        conn.starttls(insecure_tls())
    return conn


def message(msgid: str, account: str, subject: str, rng: random.Random) -> bytes:
    body = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz \r\n") for _ in range(rng.randint(40, 2000)))
    body = body.replace("\r\n", "\n").replace("\r", "").replace("\n", "\r\n")
    head = (f"From: chaos <chaos@example.org>\r\nTo: {account}\r\nSubject: {subject}\r\n"
            f"Date: {formatdate()}\r\nMessage-ID: {msgid}\r\n\r\n")
    return head.encode() + body.encode() + b"\r\n"


def _text(data: Any) -> str:
    parts = data if isinstance(data, list) else [data]
    out = []
    for p in parts:
        if isinstance(p, bytes):
            out.append(p.decode(errors="replace"))
        elif isinstance(p, tuple):
            out.append(" ".join(x.decode(errors="replace") for x in p if isinstance(x, bytes)))
        elif p is not None:
            out.append(str(p))
    return " ".join(out)


def imap_outcome(typ: str, data: Any) -> str:
    """OK → ok; NO with a code of :data:`DEFINITE_NO` → refused; else unknown."""
    if typ == "OK":
        return OK
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], bytes) else b""
    m = _CODE.match(first)
    if typ == "NO" and m and m.group(1).decode() in DEFINITE_NO:
        return REFUSED
    return UNKNOWN


def parse_fetch(data: list[Any]) -> list[list[Any]]:
    """``[uid, msgid, flags]`` of each message in a UID FETCH answer for
    ``(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])``."""
    out: list[list[Any]] = []
    items = list(data)
    for i, item in enumerate(items):
        if not isinstance(item, tuple):
            continue
        meta = item[0]
        trailing = items[i + 1] if i + 1 < len(items) and isinstance(items[i + 1], bytes) else b""
        both = meta + b" " + trailing
        uid = _UID.search(both)
        flags = _FLAGS.search(both)
        mid = _MSGID.search(item[1] or b"")
        if uid is None:
            continue
        out.append([int(uid.group(1)), mid.group(1).decode() if mid else "",
                    sorted(flags.group(1).decode().split()) if flags else []])
    return out


class Worker(threading.Thread):
    def __init__(self, env: Env, name: str, seed: int) -> None:
        super().__init__(name=name, daemon=True)
        self.env = env
        self.rng = random.Random(seed)
        self.error: BaseException | None = None

    def member(self) -> dict[str, Any]:
        return self.rng.choice(self.env.members)

    def pause(self, low: float = 0.05, high: float = 0.3) -> None:
        self.env.stop.wait(self.rng.uniform(low, high))

    def note_reply(self, op: Op, reply: str) -> None:
        if "[SERVERBUG]" in reply:
            self.env.serverbugs.append(f"op {op.id} {op.kind} via {op.member}: {reply[:200]}")

    def run(self) -> None:
        try:
            while not self.env.stop.is_set():
                self.step()
        except BaseException as exc:  # a worker bug must not pass silently
            self.error = exc
            raise

    def step(self) -> None:
        raise NotImplementedError


# -- SMTP ----------------------------------------------------------------------
class SmtpWorker(Worker):
    """One delivery per step, to a random account through a random member."""

    def step(self) -> None:
        m = self.member()
        account = self.rng.choice(self.env.accounts)
        msgid = self.env.new_msgid("smtp")
        h = self.env.history
        op = h.begin("deliver", self.name, m["name"], account=account, mailbox="INBOX", msgid=msgid)
        data = message(msgid, account, f"delivery {msgid}", self.rng)
        sent = False
        try:
            with smtplib.SMTP(m["host"], m["ports"]["smtp"], timeout=IO_TIMEOUT) as s:
                s.ehlo("chaos.example.org")
                code, text = s.mail("chaos@example.org")
                if code != 250:
                    h.finish(op, REFUSED, f"MAIL {code} {text.decode(errors='replace')}")
                    return
                code, text = s.rcpt(account)
                if code not in (250, 251):
                    h.finish(op, REFUSED, f"RCPT {code} {text.decode(errors='replace')}")
                    return
                sent = True
                answer: bytes | str
                try:
                    code, answer = s.data(data)
                except smtplib.SMTPDataError as exc:
                    code, answer = exc.smtp_code, exc.smtp_error
                reply = f"{code} {answer.decode(errors='replace') if isinstance(answer, bytes) else answer}"
                self.note_reply(op, reply)
                h.finish(op, OK if code == 250 else REFUSED if 500 <= code < 600 else UNKNOWN, reply)
        except (OSError, smtplib.SMTPException, EOFError) as exc:
            h.finish(op, UNKNOWN if sent else REFUSED, f"{'' if sent else 'not sent: '}{exc!r}")
        self.pause(0.1, 0.5)


# -- IMAP ----------------------------------------------------------------------
class ImapWorker(Worker):
    """The one IMAP client of ``account``: sessions through random members,
    each a few rounds of SELECT + FETCH (an observation) followed by APPEND,
    STORE, COPY, MOVE or EXPUNGE on what it saw."""

    def __init__(self, env: Env, name: str, seed: int, account: str) -> None:
        super().__init__(env, name, seed)
        self.account = account
        self.placed: set[tuple[str, str]] = set()  # (mailbox, msgid) we ever tried to create

    def step(self) -> None:
        m = self.member()
        h = self.env.history
        op = h.begin("login", self.name, m["name"], account=self.account)
        try:
            conn = imap_connect(m)
            _typ, data = conn.login(self.account, self.env.password)
        except (OSError, imaplib.IMAP4.error, EOFError) as exc:
            h.finish(op, UNKNOWN, repr(exc))
            self.pause(0.2, 0.5)
            return
        h.finish(op, OK, _text(data))
        try:
            for _ in range(self.rng.randint(3, 10)):
                if self.env.stop.is_set() or not self.round(conn, m["name"]):
                    break
        finally:
            with contextlib.suppress(Exception):
                conn.shutdown() if self.env.stop.is_set() else conn.logout()

    def _cmd(self, op: Op, fn: Any, *args: Any) -> tuple[str, Any] | None:
        """Run one imaplib call; on a dropped connection or timeout finish
        ``op`` as unknown and return None (the session is over)."""
        try:
            typ, data = fn(*args)
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            self.env.history.finish(op, UNKNOWN, repr(exc))
            return None
        except imaplib.IMAP4.error as exc:  # BAD: the command was refused
            self.note_reply(op, str(exc))
            self.env.history.finish(op, REFUSED, f"BAD {exc}")
            return None
        self.note_reply(op, _text(data))
        return typ, data

    def round(self, conn: imaplib.IMAP4, member: str) -> bool:
        h = self.env.history
        mailbox = self.rng.choice(MAILBOXES)
        op = h.begin("fetch", self.name, member, account=self.account, mailbox=mailbox)
        r = self._cmd(op, conn.select, mailbox)
        if r is None:
            return False
        if r[0] != "OK":
            h.finish(op, imap_outcome(*r), "SELECT " + _text(r[1]))
            return True
        uv = conn.response("UIDVALIDITY")[1]
        uidvalidity = int(_UIDVALIDITY.search(uv[0]).group(1)) if uv and uv[0] else 0  # type: ignore[union-attr]
        r = self._cmd(op, conn.uid, "FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        if r is None:
            return False
        if r[0] != "OK":
            h.finish(op, imap_outcome(*r), _text(r[1]))
            return True
        seen = parse_fetch(r[1])
        h.finish(op, OK, "", uidvalidity=uidvalidity, observed=[list(x) for x in seen])
        for _ in range(self.rng.randint(1, 4)):
            self.pause()
            if self.env.stop.is_set():
                return False
            if not self.mutate(conn, member, mailbox, uidvalidity, seen):
                return False
        return True

    def mutate(self, conn: imaplib.IMAP4, member: str, mailbox: str, uidvalidity: int,
               seen: list[list[Any]]) -> bool:
        kinds = ["append", "append", "store", "store"]
        if seen:
            kinds += ["expunge"]
            if mailbox == "INBOX":
                kinds += ["copy", "move"]
            elif mailbox == "Work":
                kinds += ["move"]
        kind = self.rng.choice(kinds)
        if kind == "append":
            return self.append(conn, member)
        victim = self.rng.choice(seen) if seen else None
        if victim is None or not victim[1]:
            return True
        uid, msgid = victim[0], victim[1]
        h = self.env.history
        base = {"account": self.account, "mailbox": mailbox, "msgid": msgid}
        if kind == "store":
            flags = sorted(f for f in CHAOS_FLAGS if self.rng.random() < 0.5)
            op = h.begin("store", self.name, member, **base)
            r = self._cmd(op, conn.uid, "STORE", str(uid), "FLAGS.SILENT", "(" + " ".join(flags) + ")")
            if r is None:
                return False
            h.finish(op, imap_outcome(*r), _text(r[1]), uid=uid, uidvalidity=uidvalidity, flags=flags)
            return True
        if kind in ("copy", "move"):
            target = "Work" if mailbox == "INBOX" else "Archive"
            if (target, msgid) in self.placed:
                return True
            self.placed.add((target, msgid))
            op = h.begin(kind, self.name, member, target=target, **base)
            r = self._cmd(op, conn.uid, kind.upper(), str(uid), target)
            if r is None:
                self._forget(seen, victim, kind)
                return False
            h.finish(op, imap_outcome(*r), _text(r[1]), uid=uid, uidvalidity=uidvalidity)
            self._forget(seen, victim, kind)
            return True
        op = h.begin("expunge", self.name, member, **base)
        r = self._cmd(op, conn.uid, "STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
        if r is None:
            self._forget(seen, victim, kind)
            return False
        if r[0] != "OK":
            h.finish(op, imap_outcome(*r), "STORE " + _text(r[1]), uid=uid, uidvalidity=uidvalidity)
            return True
        r = self._cmd(op, conn.uid, "EXPUNGE", str(uid))
        self._forget(seen, victim, kind)
        if r is None:
            return False
        outcome = imap_outcome(*r)
        # the \Deleted flag is set; a refused EXPUNGE still leaves the message
        h.finish(op, outcome, _text(r[1]), uid=uid, uidvalidity=uidvalidity)
        return True

    def _forget(self, seen: list[list[Any]], victim: list[Any], kind: str) -> None:
        if kind in ("move", "expunge") and victim in seen:
            seen.remove(victim)

    def append(self, conn: imaplib.IMAP4, member: str) -> bool:
        mailbox = self.rng.choice(("INBOX", "Work"))
        msgid = self.env.new_msgid("append")
        self.placed.add((mailbox, msgid))
        flags = sorted(f for f in CHAOS_FLAGS if self.rng.random() < 0.3)
        h = self.env.history
        op = h.begin("append", self.name, member, account=self.account, mailbox=mailbox, msgid=msgid)
        data = message(msgid, self.account, f"append {msgid}", self.rng)
        r = self._cmd(op, conn.append, mailbox, "(" + " ".join(flags) + ")", None, data)
        if r is None:
            return False
        au = _APPENDUID.search(r[1][0] if r[1] and isinstance(r[1][0], bytes) else b"")
        extra: dict[str, Any] = {"flags": flags}
        if au:
            extra.update(uidvalidity=int(au.group(1)), uid=int(au.group(2)))
        h.finish(op, imap_outcome(*r), _text(r[1]), **extra)
        return True


# -- POP3 ----------------------------------------------------------------------
class Pop3Worker(Worker):
    """Retrieves a random message of a random account (no DELE): what it
    sees is an observation of INBOX."""

    def step(self) -> None:
        m = self.member()
        account = self.rng.choice(self.env.accounts)
        h = self.env.history
        op = h.begin("pop3", self.name, m["name"], account=account, mailbox="INBOX")
        try:
            p = poplib.POP3(m["host"], m["ports"]["pop3"], timeout=IO_TIMEOUT)
        except OSError as exc:
            h.finish(op, REFUSED, f"not sent: {exc!r}")
            self.pause(0.5, 1.5)
            return
        try:
            p.stls(insecure_tls())  # the server refuses plaintext USER/PASS
            p.user(account)
            p.pass_(self.env.password)
            count = p.stat()[0]
            got: list[str] = []
            if count:
                lines = p.retr(self.rng.randint(1, count))[1]
                mid = _MSGID.search(b"\r\n".join(lines))
                got.append(mid.group(1).decode() if mid else "")
            h.finish(op, OK, f"{count} messages", observed=got)
            with contextlib.suppress(Exception):
                p.quit()
        except (OSError, EOFError, poplib.error_proto) as exc:
            self.note_reply(op, str(exc))
            h.finish(op, UNKNOWN, repr(exc))
            with contextlib.suppress(Exception):
                p.close()
        self.pause(0.5, 1.5)


# -- administration ------------------------------------------------------------
def cli_session(member: dict[str, Any], admin: dict[str, str], *commands: str) -> list[str]:
    """Log in to ``member``'s admin CLI and send ``commands``; one reply line
    each (the data line of a ``200 data follow`` reply)."""
    with socket.create_connection((member["host"], member["ports"]["cli"]), timeout=IO_TIMEOUT) as s:
        f = s.makefile("rwb")
        f.readline()
        out = []
        for c in (f"USER {admin['user']}", f"PASS {admin['password']}", *commands):
            f.write(c.encode() + b"\r\n")
            f.flush()
            line = f.readline().decode(errors="replace").rstrip()
            if not line:
                raise ConnectionError("connection closed")
            if line.startswith("200 data follow"):
                line = f.readline().decode(errors="replace").rstrip()
            out.append(line)
        if not out[1].startswith("2"):
            raise PermissionError(f"login refused: {out[1]}")
        return out[2:]


def cli_outcome(reply: str) -> str:
    code = int(reply[:3]) if reply[:3].isdigit() else 0
    if 200 <= code < 300:
        return OK
    if code == CLI_UNAVAILABLE or not 500 <= code < 600:
        return UNKNOWN
    return REFUSED


def api_call(member: dict[str, Any], admin: dict[str, str], method: str, path: str,
             body: dict[str, Any] | None) -> tuple[int, str]:
    """Log in to the JSON API of ``member`` and make one call; (status, text)."""
    base = f"http://{member['host']}:{member['ports']['http']}/api/v1"

    def call(method: str, url: str, payload: Any, token: str = "") -> tuple[int, str]:
        req = urllib.request.Request(url, method=method, data=json.dumps(payload).encode()
                                     if payload is not None else None)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=IO_TIMEOUT) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    status, text = call("POST", base + "/session", {"user": admin["user"], "password": admin["password"]})
    if status != 201:
        raise PermissionError(f"API login {status}: {text[:200]}")
    token = json.loads(text)["token"]
    return call(method, base + path, body, token)


def api_outcome(status: int) -> str:
    if 200 <= status < 300:
        return OK
    if 400 <= status < 500 and status not in (408, 429):
        return REFUSED
    return UNKNOWN


class AdminWorker(Worker):
    """Settings changes of the mail accounts (RealName) and the life of
    scratch accounts (create, rename, delete), alternating between the admin
    CLI and the JSON API of random members."""

    def __init__(self, env: Env, name: str, seed: int) -> None:
        super().__init__(env, name, seed)
        self.scratch: dict[str, str] = {}  # current name -> state ("exists" / "unsure")
        self.serial = 0

    def step(self) -> None:
        kinds = ["setting", "setting", "create"]
        if self.scratch:
            kinds += ["rename", "delete"]
        kind = self.rng.choice(kinds)
        via = self.rng.choice(("cli", "api"))
        m = self.member()
        if kind == "setting":
            account = self.rng.choice(self.env.accounts)
            value = f"Chaos {self.rng.randrange(10**6)}"
            self.admin_op("setting", m, via, account, value=value)
        elif kind == "create":
            self.serial += 1
            name = f"s{self.env.seed % 1000}x{self.serial}"
            if self.admin_op("account-create", m, via, f"{name}@{DOMAIN}") != REFUSED:
                self.scratch[name] = "exists"
        elif kind == "rename":
            old = self.rng.choice(sorted(self.scratch))
            new = f"{old}r"
            outcome = self.admin_op("account-rename", m, via, f"{old}@{DOMAIN}", new=f"{new}@{DOMAIN}")
            if outcome != REFUSED:
                del self.scratch[old]
                if len(new) < 60:
                    self.scratch[new] = "exists"
        else:
            old = self.rng.choice(sorted(self.scratch))
            if self.admin_op("account-delete", m, via, f"{old}@{DOMAIN}") != REFUSED:
                del self.scratch[old]
        self.pause(0.5, 2.0)

    def admin_op(self, kind: str, m: dict[str, Any], via: str, account: str, **data: Any) -> str:
        h = self.env.history
        op = h.begin(kind, self.name, m["name"], account=account, data={"via": via, **data})
        name, _, domain = account.partition("@")
        if via == "cli":
            command = {
                "setting": f'UPDATEACCOUNTSETTINGS {account} {{RealName="{data.get("value")}";}}',
                "account-create": f'CREATEACCOUNT {account} {{Password="{self.env.password}";}}',
                "account-rename": f"RENAMEACCOUNT {account} into {data.get('new')}",
                "account-delete": f"DELETEACCOUNT {account}",
            }[kind]
            try:
                reply = cli_session(m, self.env.admin, command)[0]
            except PermissionError as exc:
                h.finish(op, REFUSED, f"not sent: {exc}")
                return REFUSED
            except (OSError, IndexError) as exc:
                h.finish(op, UNKNOWN, repr(exc))
                return UNKNOWN
            outcome = cli_outcome(reply)
        else:
            path = f"/domains/{domain}/accounts/{name}"
            table: dict[str, tuple[str, dict[str, Any] | None]] = {
                "setting": ("PATCH", {"RealName": data.get("value")}),
                "account-create": ("POST", {"name": name, "password": self.env.password}),
                "account-rename": ("POST", {"new_name": data.get("new")}),
                "account-delete": ("DELETE", None),
            }
            method, body = table[kind]
            if kind == "account-create":
                path = f"/domains/{domain}/accounts"
            elif kind == "account-rename":
                path += "/rename"
            try:
                status, text = api_call(m, self.env.admin, method, path, body)
            except PermissionError as exc:
                h.finish(op, REFUSED, f"not sent: {exc}")
                return REFUSED
            except (OSError, ValueError) as exc:
                h.finish(op, UNKNOWN, repr(exc))
                return UNKNOWN
            reply = f"{status} {text[:200]}"
            outcome = api_outcome(status)
            if status == 500:
                self.env.serverbugs.append(f"op {op.id} {kind} via API on {m['name']}: {reply}")
        self.note_reply(op, reply)
        h.finish(op, outcome, reply)
        return outcome


def wait_all(workers: list[Worker], timeout: float) -> list[str]:
    """Join the workers; names of those still running (stuck) after ``timeout``."""
    deadline = time.monotonic() + timeout
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))
    return [w.name for w in workers if w.is_alive()]
