"""Reading mail to import: Maildir (Maildir++) folders and mbox files.

Both readers are generators of :class:`Found` (one message) and
:class:`Skipped` (an entry that could not be imported, with the reason).
They hold one message in memory at a time, never follow a symbolic link,
never open anything but regular files and directories, and never raise on
broken input: whatever cannot be read becomes a :class:`Skipped`.

Files are opened relative to an open directory descriptor with
``O_NOFOLLOW`` (``openat``), so a symbolic link anywhere under the import
root — also one swapped in while the import runs — is never followed out
of it.
"""

from __future__ import annotations

import datetime
import email.utils
import os
import re
import stat
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from dynamail import names
from dynamail.imap import utf7

DEFAULT_MAX_MESSAGE = 50 * 1024 * 1024
READ_CHUNK = 1 << 16

# Maildir info flags (the part after ":2,"), https://cr.yp.to/proto/maildir.html
MAILDIR_FLAGS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",  # "passed": resent/forwarded/bounced
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",  # "trashed"
}
# mbox Status: / X-Status: letters (as written by mutt, Dovecot, Thunderbird)
STATUS_FLAGS = {"R": "\\Seen"}
X_STATUS_FLAGS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
# Header fields that are mbox bookkeeping, not part of the message: dropped
# on import (as Dovecot hides them) and turned into flags.
MBOX_META_FIELDS = (b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase",
                    b"content-length")

_KEYWORD = re.compile(r"^[!#-'+-Z^-z|~]{1,100}$")  # an IMAP atom without ( ) { % * " \ ]


@dataclass(frozen=True, slots=True)
class Found:
    mailbox: str  # validated dynamail mailbox name
    data: bytes
    flags: frozenset[str]
    internal_date: datetime.datetime | None
    where: str  # path relative to the import root, for reports


@dataclass(frozen=True, slots=True)
class Skipped:
    where: str
    reason: str


Item = Found | Skipped


class SourceError(Exception):
    """The import root itself is unusable (the whole import is refused)."""


# ---------------------------------------------------------------- file access
def open_root(path: str) -> tuple[int, bool]:
    """Open the import root without following a symbolic link in its last
    component: (descriptor, is_directory).  Refuses anything but a regular
    file or a directory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        return fd, True
    if stat.S_ISREG(st.st_mode):
        return fd, False
    os.close(fd)
    raise SourceError(f"{path} is neither a directory nor a regular file")


def _open_at(dir_fd: int, name: str, directory: bool) -> int:
    """Open ``name`` in ``dir_fd``, never following a link; OSError when it
    is a link or not of the expected kind."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if directory:
        flags |= os.O_DIRECTORY
    fd = os.open(name, flags, dir_fd=dir_fd)
    st = os.fstat(fd)
    ok = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    if not ok:
        os.close(fd)
        raise OSError(0, "not a regular file" if not directory else "not a directory")
    return fd


def _entries(dir_fd: int) -> list[tuple[str, str]]:
    """(name, kind) of a directory's entries, sorted; kind is "dir",
    "file", "link" or "other" (links are never followed)."""
    out: list[tuple[str, str]] = []
    with os.scandir(dir_fd) as it:
        for e in it:
            try:
                if e.is_symlink():
                    kind = "link"
                elif e.is_dir(follow_symlinks=False):
                    kind = "dir"
                elif e.is_file(follow_symlinks=False):
                    kind = "file"
                else:
                    kind = "other"
            except OSError:
                kind = "other"
            out.append((e.name, kind))
    out.sort()
    return out


def _read_file(dir_fd: int, name: str, limit: int) -> tuple[bytes, float]:
    """(content, mtime) of a regular file; OSError, or ValueError when it
    is larger than ``limit``."""
    fd = _open_at(dir_fd, name, directory=False)
    try:
        st = os.fstat(fd)
        if st.st_size > limit:
            raise ValueError(f"larger than {limit} bytes")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise ValueError(f"larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks), st.st_mtime
    finally:
        os.close(fd)


def _display(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# ---------------------------------------------------------------- Maildir
def is_maildir(dir_fd: int) -> bool:
    kinds = dict(_entries(dir_fd))
    return kinds.get("cur") == "dir" or kinds.get("new") == "dir"


def maildir_folder_name(dirname: str) -> str:
    """``.Sub.Folder`` (Maildir++, modified UTF-7 components) → ``Sub/Folder``.
    Raises names.BadName for a name dynamail cannot use."""
    parts = dirname[1:].split(".")
    decoded = []
    for part in parts:
        try:
            decoded.append(utf7.decode(part))
        except ValueError:
            decoded.append(part)  # not mUTF-7 (written by a UTF-8 aware server): as is
    return names.mailbox_name("/".join(decoded))


def parse_maildir_info(filename: str, keywords: dict[str, str] | None) -> frozenset[str]:
    """Flags from a Maildir file name's info part (``:2,FRS`` or ``;2,``/``!2,``).
    Lower-case letters are Dovecot keywords (``dovecot-keywords`` maps
    a-z to names); without that file they are ignored."""
    base = maildir_base_name(filename)
    if base == filename:
        return frozenset()
    info = filename[len(base) + 3 :]
    flags = set()
    for ch in info:
        if ch in MAILDIR_FLAGS:
            flags.add(MAILDIR_FLAGS[ch])
        elif "a" <= ch <= "z" and keywords is not None and ch in keywords:
            flags.add(keywords[ch])
    return frozenset(flags)


def read_dovecot_keywords(dir_fd: int) -> dict[str, str] | None:
    """``dovecot-keywords``: lines ``<index> <name>``; index 0 is letter a."""
    try:
        data, _ = _read_file(dir_fd, "dovecot-keywords", 1 << 20)
    except (OSError, ValueError):
        return None
    out: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        idx, _, name = line.strip().partition(" ")
        name = name.strip()
        if idx.isdigit() and int(idx) < 26 and _KEYWORD.match(name) and not name.startswith("\\"):
            out[chr(ord("a") + int(idx))] = name
    return out


def maildir_base_name(filename: str) -> str:
    """A Maildir file name without its info part (``:2,…``)."""
    for sep in (":2,", ";2,", "!2,"):
        pos = filename.rfind(sep)
        if pos >= 0:
            return filename[:pos]
    return filename


def read_dovecot_uidlist(dir_fd: int) -> dict[str, int]:
    """``dovecot-uidlist``: base file name → UID Dovecot gave the message,
    so an import keeps the messages' order.  Lines are ``<uid> [ext…]
    :<name>`` (version 3) or ``<uid> <name>`` (versions 1 and 2)."""
    try:
        data, _ = _read_file(dir_fd, "dovecot-uidlist", 256 << 20)
    except (OSError, ValueError):
        return {}
    out: dict[str, int] = {}
    for line in data.decode("utf-8", "surrogateescape").splitlines()[1:]:
        head, colon, name = line.partition(" :")
        if not colon:
            parts = line.split()
            if len(parts) != 2:
                continue
            head, name = parts
        uid = head.split(" ", 1)[0]
        if uid.isdigit() and name:
            out[maildir_base_name(name)] = int(uid)
    return out


_NO_UID = 1 << 62


def _maildir_folder(dir_fd: int, mailbox: str | None, prefix: str, bad_name: str, limit: int) -> Iterator[Item]:
    """The messages of one folder (``new/`` and ``cur/``) in Dovecot's UID
    order when ``dovecot-uidlist`` knows them, else by modification time."""
    keywords = read_dovecot_keywords(dir_fd)
    uids = read_dovecot_uidlist(dir_fd)
    fds: dict[str, int] = {}
    try:
        entries: list[tuple[int, float, str, str, str]] = []
        for sub in ("new", "cur"):
            try:
                fds[sub] = _open_at(dir_fd, sub, directory=True)
            except OSError:
                continue
            for name, kind in _entries(fds[sub]):
                if name.startswith("."):
                    continue
                mtime = 0.0
                if kind == "file":
                    with suppress(OSError):
                        mtime = os.stat(name, dir_fd=fds[sub], follow_symlinks=False).st_mtime
                entries.append((uids.get(maildir_base_name(name), _NO_UID), mtime, name, sub, kind))
        entries.sort()
        for _uid, _mtime, name, sub, kind in entries:
            where = f"{prefix}{sub}/{_display(name)}"
            if mailbox is None:
                yield Skipped(where, bad_name)
                continue
            if kind != "file":
                yield Skipped(where, "a symbolic link" if kind == "link" else "not a regular file")
                continue
            try:
                data, mtime = _read_file(fds[sub], name, limit)
            except ValueError as exc:
                yield Skipped(where, f"message {exc}")
                continue
            except OSError as exc:
                yield Skipped(where, f"unreadable: {exc.strerror or exc}")
                continue
            if not data.strip():
                yield Skipped(where, "empty file")
                continue
            flags = parse_maildir_info(name, keywords)  # Dovecot may leave flagged files in new/
            when = datetime.datetime.fromtimestamp(mtime, datetime.UTC)
            yield Found(mailbox, data, flags, when, where)
    finally:
        for fd in fds.values():
            os.close(fd)


def read_maildir(root_fd: int, limit: int = DEFAULT_MAX_MESSAGE) -> Iterator[Item]:
    """Every message of a Maildir++ tree: the root is INBOX, ``.A.B``
    subdirectories are mailbox ``A/B``."""
    yield from _maildir_folder(root_fd, "INBOX", "", "", limit)
    for name, kind in _entries(root_fd):
        if not name.startswith(".") or name in (".", ".."):
            continue
        if kind != "dir":
            continue
        try:
            fd = _open_at(root_fd, name, directory=True)
        except OSError:
            continue
        try:
            if not is_maildir(fd):
                continue
            mailbox: str | None
            reason = ""
            try:
                mailbox = maildir_folder_name(name)
            except names.BadName as exc:
                mailbox, reason = None, f"folder name not usable: {exc}"
            yield from _maildir_folder(fd, mailbox, _display(name) + "/", reason, limit)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- mbox
_FROM_DATE = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+(\d{1,2})\s+"
    rb"(\d{1,2}):(\d{2})(?::(\d{2}))?\s+(?:([+-]\d{4}|[A-Z]{1,5})\s+)?(\d{4})(?:\s+([+-]\d{4}))?\s*$"
)
_MONTHS = {m: i + 1 for i, m in enumerate(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())}
_QUOTED_FROM = re.compile(rb"^>+From ")


def from_line_date(line: bytes) -> datetime.datetime | None:
    """The date of an mbox ``From sender Sat Jan  3 01:05:34 1996`` line
    (UTC unless the line names a numeric zone)."""
    m = _FROM_DATE.search(line.rstrip(b"\r\n"))
    if m is None:
        return None
    mon, day, hh, mm, ss, zone1, year, zone2 = m.groups()
    tz = datetime.UTC
    for zone in (zone1, zone2):
        if zone and zone[:1] in b"+-" and zone[1:].isdigit():
            sign = -1 if zone[:1] == b"-" else 1
            tz = datetime.timezone(sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])))
    try:
        return datetime.datetime(int(year), _MONTHS[mon], int(day), int(hh), int(mm), int(ss or 0), tzinfo=tz)
    except ValueError:
        return None


def _is_separator(line: bytes, prev_blank: bool) -> bool:
    """A ``From `` line starts a message when the line before it is blank
    (or it is the first line), or when it carries a valid date (sloppy
    writers omit the blank line)."""
    if not line.startswith(b"From "):
        return False
    return prev_blank or from_line_date(line) is not None


def _header_end(data: bytes) -> int:
    """Offset just past the blank line ending the header block (len when none)."""
    if data.startswith((b"\n", b"\r\n")):
        return 0
    m = re.search(rb"\n\r?\n", data)
    return m.end() if m else len(data)


def _mbox_metadata(data: bytes) -> tuple[bytes, frozenset[str], datetime.datetime | None]:
    """Strip the mbox bookkeeping fields from the header block; flags from
    Status/X-Status/X-Keywords; the Date field's date (a fall-back internal date)."""
    end = _header_end(data)
    head, body = data[:end], data[end:]
    lines = head.splitlines(keepends=True)
    kept: list[bytes] = []
    flags: set[str] = set()
    date: datetime.datetime | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        j = i + 1
        while j < len(lines) and lines[j][:1] in (b" ", b"\t"):
            j += 1
        name, colon, value = line.partition(b":")
        key = name.strip().lower()
        if colon and key in MBOX_META_FIELDS and b" " not in name.strip():
            text = b" ".join(x.strip() for x in [value, *lines[i + 1 : j]]).decode("latin-1")
            if key == b"status":
                flags.update(STATUS_FLAGS[c] for c in text if c in STATUS_FLAGS)
            elif key == b"x-status":
                flags.update(X_STATUS_FLAGS[c] for c in text if c in X_STATUS_FLAGS)
            elif key == b"x-keywords":
                for word in re.split(r"[\s,]+", text):
                    if word and _KEYWORD.match(word):
                        flags.add(word)
        else:
            if colon and key == b"date" and date is None:
                with suppress(TypeError, ValueError, IndexError, OverflowError):
                    raw = b" ".join(x.strip() for x in [value, *lines[i + 1 : j]]).decode("latin-1")
                    parsed = email.utils.parsedate_to_datetime(raw)
                    if parsed.tzinfo is not None:
                        date = parsed
            kept.extend(lines[i:j])
        i = j
    return b"".join(kept) + body, frozenset(flags), date


def read_mbox(fd: int, mailbox: str, where: str, limit: int = DEFAULT_MAX_MESSAGE) -> Iterator[Item]:
    """Messages of one mbox file (mboxrd, mboxo, or mboxcl2), read in bounded chunks.

    ``>From `` lines are unquoted (mboxrd: one ``>`` removed from
    ``>>…From `` lines).  A ``Content-Length`` field that ends exactly at a
    message boundary delimits the body, which is then taken as it is
    (Dovecot writes mbox this way, without quoting ``From `` lines).  The blank line a writer puts before the next
    ``From `` line is not part of the message.  A message larger than
    ``limit`` is skipped without being held in memory."""
    with os.fdopen(os.dup(fd), "rb", buffering=READ_CHUNK) as f:
        yield from _split_mbox(f, mailbox, where, limit)


_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*(\d{1,12})[ \t]*\r?$", re.IGNORECASE)


def _content_length(header_lines: list[bytes]) -> int | None:
    for line in header_lines:
        m = _CONTENT_LENGTH.match(line.rstrip(b"\n"))
        if m:
            return int(m.group(1))
    return None


def _body_by_length(f: Any, length: int, room: int) -> tuple[bytes, bool] | None:
    """Read a body of ``length`` bytes (mboxcl2, as Dovecot and others write
    it: ``From `` lines in the body are not quoted) if what follows it is a
    message boundary: end of file, or a (blank line and a) ``From `` line.
    Returns (body, too_big) with the file positioned after the body, or None
    with the file where it was when the length does not check out."""
    start = f.tell()
    try:
        if length <= room:
            body = f.read(length)
            too_big = False
            if len(body) != length or (body and not body.endswith(b"\n")):
                f.seek(start)
                return None
        else:
            body, too_big, left, last = b"", True, length, b""
            while left:
                chunk = f.read(min(left, READ_CHUNK))
                if not chunk:
                    f.seek(start)
                    return None
                left -= len(chunk)
                last = chunk
            if not last.endswith(b"\n"):
                f.seek(start)
                return None
        after = f.tell()
        line = f.readline(READ_CHUNK)
        if line in (b"\n", b"\r\n"):
            line = f.readline(READ_CHUNK)
        if line == b"" or line.startswith(b"From "):
            f.seek(after)
            return body, too_big
        f.seek(start)
    except (OSError, ValueError):
        with suppress(OSError, ValueError):
            f.seek(start)
    return None


def _split_mbox(f: Any, mailbox: str, where: str, limit: int) -> Iterator[Item]:
    readline = f.readline
    index = 0  # 1-based number of the message being read
    from_line = b""
    parts: list[bytes] = []
    size = 0
    too_big = False
    preamble = False  # non-blank data before the first From line
    prev_blank = True
    at_line_start = True
    in_header = False

    def finish() -> Item | None:
        nonlocal parts, size, too_big
        label = f"{where}#{index}"
        data = b"".join(parts)
        parts, size = [], 0
        if too_big:
            too_big = False
            return Skipped(label, f"message larger than {limit} bytes")
        # the blank line before the next From line belongs to the separator
        if data.endswith(b"\r\n\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n\n"):
            data = data[:-1]
        if not data.strip():
            return Skipped(label, "empty message")
        data, flags, header_date = _mbox_metadata(data)
        if not data.strip():  # nothing but mbox bookkeeping fields
            return Skipped(label, "empty message")
        return Found(mailbox, data, flags, from_line_date(from_line) or header_date, label)

    while True:
        try:
            line = readline(READ_CHUNK)
        except OSError as exc:
            if index:
                yield Skipped(f"{where}#{index}", f"read error: {exc.strerror or exc}")
                parts, size = [], 0
            else:
                yield Skipped(where, f"read error: {exc.strerror or exc}")
            return
        if not line:
            break
        starts_line = at_line_start
        at_line_start = line.endswith(b"\n")
        if starts_line and _is_separator(line, prev_blank):
            if index:
                item = finish()
                if item is not None:
                    yield item
            elif preamble:
                yield Skipped(f"{where}#0", "data before the first From line")
            index += 1
            from_line = line
            prev_blank = False
            in_header = True
            continue
        if starts_line:
            prev_blank = line in (b"\n", b"\r\n")
            if _QUOTED_FROM.match(line):
                line = line[1:]
        else:
            prev_blank = False
        if not index:
            if line.strip():
                preamble = True
            continue
        if too_big:
            continue
        size += len(line)
        if size > limit:
            too_big = True
            parts = []
            continue
        parts.append(line)
        if in_header and starts_line and line in (b"\n", b"\r\n"):
            in_header = False
            length = _content_length(parts)
            got = _body_by_length(f, length, limit - size) if length is not None else None
            if got is not None:
                body, too_big = got
                if too_big:
                    parts = []
                else:
                    parts.append(body)
                    size += len(body)
                prev_blank = at_line_start = True
    if index:
        item = finish()
        if item is not None:
            yield item
    elif preamble:
        yield Skipped(where, "not an mbox file (no From line)")


def write_mboxrd(messages: Iterator[tuple[bytes, datetime.datetime | None]] | list[tuple[bytes, datetime.datetime | None]],
                 out: object, sender: str = "MAILER-DAEMON") -> None:
    """Write messages as mboxrd (``>*From `` lines get one more ``>``); the
    inverse of :func:`read_mbox` (used by tests and for exports)."""
    write = out.write  # type: ignore[attr-defined]
    for data, when in messages:
        when = when or datetime.datetime.now(datetime.UTC)
        stamp = when.astimezone(datetime.UTC).strftime("%a %b %d %H:%M:%S %Y").encode()
        write(b"From " + sender.encode() + b" " + stamp + b"\n")
        lines = data.splitlines(keepends=True)
        for line in lines:
            if _QUOTED_FROM.match(line) or line.startswith(b"From "):
                line = b">" + line
            write(line)
        if lines and not lines[-1].endswith(b"\n"):
            write(b"\n")
        write(b"\n")


# ---------------------------------------------------------------- mbox trees
MBOX_INBOX_NAMES = ("inbox", "mbox")
_IGNORED_SUFFIXES = (".msf", ".lock", ".dat", ".db", ".idx", ".toc")


def mbox_folder_name(parts: list[str]) -> str:
    """Path components of an mbox file under the root → mailbox name:
    ``inbox``/``mbox`` at the top is INBOX, Thunderbird ``X.sbd`` directories
    become ``X``, a ``.mbox`` suffix is dropped."""
    out = [p[:-4] if p.endswith(".sbd") else p for p in parts[:-1]]
    last = parts[-1]
    if last.lower().endswith(".mbox") and len(last) > 5:
        last = last[:-5]
    if not out and last.lower() in MBOX_INBOX_NAMES:
        last = "INBOX"
    return names.mailbox_name("/".join([*out, last]))


def read_mbox_tree(root_fd: int, limit: int = DEFAULT_MAX_MESSAGE, _parts: tuple[str, ...] = ()) -> Iterator[Item]:
    """Every mbox file under a directory (dot files and index files ignored)."""
    for name, kind in _entries(root_fd):
        if name.startswith(".") or name.lower().endswith(_IGNORED_SUFFIXES):
            continue
        parts = [*_parts, name]
        where = "/".join(_display(p) for p in parts)
        if kind == "link":
            yield Skipped(where, "a symbolic link")
            continue
        if kind == "dir":
            if len(parts) > names.MAX_MAILBOX_DEPTH:
                yield Skipped(where, "nested too deeply")
                continue
            try:
                fd = _open_at(root_fd, name, directory=True)
            except OSError as exc:
                yield Skipped(where, f"unreadable: {exc.strerror or exc}")
                continue
            try:
                yield from read_mbox_tree(fd, limit, tuple(parts))
            finally:
                os.close(fd)
            continue
        if kind != "file":
            yield Skipped(where, "not a regular file")
            continue
        try:
            mailbox = mbox_folder_name([_display(p) for p in parts])
        except names.BadName as exc:
            yield Skipped(where, f"folder name not usable: {exc}")
            continue
        try:
            fd = _open_at(root_fd, name, directory=False)
        except OSError as exc:
            yield Skipped(where, f"unreadable: {exc.strerror or exc}")
            continue
        try:
            yield from read_mbox(fd, mailbox, where, limit)
        finally:
            os.close(fd)
