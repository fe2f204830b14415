"""Generated Maildir and mbox trees with the messages they must import as.

Every generator returns the expected result: for each mailbox, the list of
(content with LF line ends, flags, internal date) in source order, so tests
compare what the store holds against what was written, not against
constants.
"""

from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from dynamail.imap import utf7
from dynamail.migrate.source import write_mboxrd

BASE_TIME = 1_600_000_000

MAILDIR_LETTERS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
                   "S": "\\Seen", "T": "\\Deleted"}
KEYWORDS = ["$Junk", "Work", "$label1"]


@dataclass
class Expected:
    messages: dict[str, list[tuple[bytes, frozenset[str], datetime.datetime]]] = field(default_factory=dict)
    skipped: int = 0

    def add(self, mailbox: str, data: bytes, flags: frozenset[str], when: datetime.datetime) -> None:
        self.messages.setdefault(mailbox, []).append((data, flags, when))

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.messages.values())


def message(rnd: random.Random, n: int, *, crlf: bool = False) -> bytes:
    lines = [f"From: Sender {n} <s{n}@example.org>", "To: someone@example.net",
             f"Subject: message {n} {rnd.randrange(10**9)}",
             f"Message-ID: <{n}.{rnd.randrange(10**9)}@example.org>", "", ]
    for _ in range(rnd.randrange(1, 40)):
        kind = rnd.random()
        if kind < 0.08:
            lines.append("From the body, a line that looks like a separator")
        elif kind < 0.12:
            lines.append(">From a quoted line")
        elif kind < 0.15:
            lines.append("")
        else:
            lines.append("".join(rnd.choice("abcdefgh ijklmnop") for _ in range(rnd.randrange(0, 90))))
    eol = "\r\n" if crlf else "\n"
    return (eol.join(lines) + eol).encode()


def _info(rnd: random.Random, keywords: bool) -> tuple[str, frozenset[str]]:
    letters = sorted(rnd.sample(sorted(MAILDIR_LETTERS), rnd.randrange(0, 4)))
    flags = {MAILDIR_LETTERS[c] for c in letters}
    kw = ""
    if keywords:
        for i, name in enumerate(KEYWORDS):
            if rnd.random() < 0.3:
                kw += chr(ord("a") + i)
                flags.add(name)
    return "".join(letters) + kw, frozenset(flags)


def make_maildir(root: Path, count: int, seed: int = 1) -> Expected:
    """A Maildir++ tree: INBOX, Sent, Work/Projects (Work has no messages
    of its own), a non-ASCII folder; broken entries: an empty file, a
    symlink, a FIFO, a subdirectory in cur/, a folder name dynamail refuses."""
    rnd = random.Random(seed)
    exp = Expected()
    folders = {"INBOX": root, "Sent": root / ".Sent", "Work/Projects": root / ".Work.Projects",
               "Entwürfe/Alt": root / f".{utf7.encode('Entwürfe')}.Alt"}
    for name, path in folders.items():
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        if name != "Sent":
            (path / "dovecot-keywords").write_text("".join(f"{i} {k}\n" for i, k in enumerate(KEYWORDS)))
    names = list(folders)
    for n in range(count):
        mailbox = names[n % len(names)] if n % 5 else "INBOX"
        path = folders[mailbox]
        data = message(rnd, n, crlf=n % 7 == 0)
        when = BASE_TIME + n * 3600
        if n % 6 == 0:
            fname = f"{when}.M{n}P1.host"
            target = path / "new" / fname
            flags: frozenset[str] = frozenset()
        else:
            info, flags = _info(rnd, keywords=mailbox != "Sent")
            if mailbox == "Sent" and rnd.random() < 0.5:
                info += "b"  # a keyword letter without dovecot-keywords: ignored
            fname = f"{when}.M{n}P1.host,S={len(data)}:2,{info}"
            target = path / "cur" / fname
        target.write_bytes(data)
        os.utime(target, (when, when))
        exp.add(mailbox, data, flags, datetime.datetime.fromtimestamp(when, datetime.UTC))
    # broken entries
    (root / "cur" / "1.empty:2,S").write_bytes(b"")
    outside = root.parent / "outside-secret"
    outside.write_bytes(b"Subject: secret\n\nnot to be imported\n")
    (root / "cur" / "2.link:2,S").symlink_to(outside)
    os.mkfifo(root / "new" / "3.fifo")
    (root / "cur" / "4.dir").mkdir()
    exp.skipped += 4
    bad = root / ".bad\x01name"
    for sub in ("cur", "new"):
        (bad / sub).mkdir(parents=True)
    (bad / "cur" / "5.x:2,S").write_bytes(b"Subject: x\n\nbody\n")
    exp.skipped += 1
    # a Maildir-looking symlink to a folder outside is not followed
    outdir = root.parent / "outside-maildir"
    for sub in ("cur", "new"):
        (outdir / sub).mkdir(parents=True)
    (outdir / "new" / "6.y").write_bytes(b"Subject: outside\n\nbody\n")
    (root / ".Linked").symlink_to(outdir)
    return exp


def status_headers(rnd: random.Random) -> tuple[bytes, frozenset[str]]:
    flags: set[str] = set()
    status = "O"
    if rnd.random() < 0.5:
        status = "RO"
        flags.add("\\Seen")
    xs = "".join(c for c in "AFTD" if rnd.random() < 0.25)
    flags.update({"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}[c] for c in xs)
    head = f"Status: {status}\n".encode()
    if xs:
        head += f"X-Status: {xs}\n".encode()
    return head, frozenset(flags)


def make_mbox(path: Path, count: int, mailbox: str, exp: Expected, seed: int = 2, garbage: bool = True) -> None:
    """One mboxrd file of ``count`` messages with Status/X-Status headers."""
    rnd = random.Random(seed)
    out: list[tuple[bytes, datetime.datetime | None]] = []
    for n in range(count):
        data = message(rnd, n)
        when = datetime.datetime.fromtimestamp(BASE_TIME + n * 7200, datetime.UTC)
        head, flags = status_headers(rnd)
        end = data.index(b"\n\n") + 1
        stored = data[:end] + head + data[end:]
        out.append((stored, when))
        exp.add(mailbox, data, flags, when)
    with open(path, "wb") as f:
        if garbage:
            f.write(b"garbage before the first separator\n")
            exp.skipped += 1
        write_mboxrd(out, f)
        if garbage:
            # an empty message (a From line and nothing else) at the end
            f.write(b"From nobody Thu Jan  1 00:00:00 2015\n\n")
            exp.skipped += 1
