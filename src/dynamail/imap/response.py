"""Writing IMAP responses (RFC 9051 section 7 and the formal syntax in 9).

Strings go out as atoms only where the grammar allows an atom and the text
is made of atom characters; otherwise quoted when printable 7-bit (or UTF-8
when the client enabled UTF8=ACCEPT / IMAP4rev2) and short, else as a
literal.  Nested values (ENVELOPE, BODYSTRUCTURE from the storage engine)
are lists of str/bytes/int/None and are written recursively.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterable

from dynamail.imap import utf7

_ATOM_OK = frozenset(
    b"!#$&'+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz|}~"
)
_QUOTED_MAX = 1024


def quoted_or_literal(data: bytes, *, utf8: bool = False) -> bytes:
    if len(data) <= _QUOTED_MAX and b"\r" not in data and b"\n" not in data and b"\x00" not in data:
        if data.isascii() or utf8:
            if b"\\" in data or b'"' in data:
                data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            return b'"' + data + b'"'
    return b"{%d}\r\n" % len(data) + data


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def nstring(value: bytes | str | None, *, utf8: bool = False) -> bytes:
    if value is None:
        return b"NIL"
    if isinstance(value, str):
        value = value.encode("utf-8")
    return quoted_or_literal(value, utf8=utf8)


def astring(value: str | bytes, *, utf8: bool = False) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    if data and all(c in _ATOM_OK for c in data) and data.upper() != b"NIL":
        return data
    return quoted_or_literal(data, utf8=utf8)


def mailbox(name: str, *, utf8: bool) -> bytes:
    """A mailbox name as the client expects it (modified UTF-7 unless UTF-8)."""
    if not utf8:
        name = utf7.encode(name)
    return astring(name, utf8=utf8)


def value(v: object, *, utf8: bool = False) -> bytes:
    """Nested storage values: None→NIL, int→number, str/bytes→string, list→(...)."""
    if v is None:
        return b"NIL"
    if isinstance(v, bool):
        return b"1" if v else b"0"
    if isinstance(v, int):
        return str(v).encode("ascii")
    if isinstance(v, bytes):
        return quoted_or_literal(v, utf8=utf8)
    if isinstance(v, str):
        return quoted_or_literal(v.encode("utf-8"), utf8=utf8)
    if isinstance(v, (list, tuple)):
        # A leading run of lists is written without separating spaces: that
        # is the grammar of address lists ("(" 1*address ")") and of the
        # bodies of a multipart (body-type-mpart = 1*body SP subtype).
        out = bytearray(b"(")
        prev_list = True
        for i, x in enumerate(v):
            is_list = isinstance(x, (list, tuple))
            if i and not (prev_list and is_list):
                out += b" "
            prev_list = prev_list and is_list
            out += value(x, utf8=utf8)
        out += b")"
        return bytes(out)
    raise TypeError(f"cannot write {type(v).__name__} as IMAP")


def flags(fl: Iterable[str]) -> bytes:
    if isinstance(fl, frozenset):
        return _flags_cached(fl)
    return b"(" + " ".join(sorted(fl)).encode("utf-8") + b")"


@functools.lru_cache(maxsize=4096)
def _flags_cached(fl: frozenset[str]) -> bytes:
    # a mailbox uses few distinct flag sets; FETCH FLAGS writes them per message
    return b"(" + " ".join(sorted(fl)).encode("utf-8") + b")"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def date_time(dt: datetime.datetime) -> bytes:
    """RFC 9051 "date-time": ``"dd-Mon-yyyy hh:mm:ss +zzzz"``."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    off = dt.utcoffset() or datetime.timedelta(0)
    minutes = int(off.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return (
        f'"{dt.day:2d}-{_MONTHS[dt.month - 1]}-{dt.year:04d} '
        f'{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"'
    ).encode("ascii")


def tagged(tag: str, status: str, text: str, code: str = "") -> bytes:
    if code:
        return f"{tag} {status} [{code}] {text}\r\n".encode()
    return f"{tag} {status} {text}\r\n".encode()


def untagged(text: str | bytes) -> bytes:
    if isinstance(text, str):
        text = text.encode()
    return b"* " + text + b"\r\n"


def sequence_set(nums: Iterable[int]) -> str:
    """Compact form of ascending numbers: ``1:3,7,9:10``."""
    out: list[str] = []
    start = prev = -2
    for n in nums:
        if n == prev + 1:
            prev = n
            continue
        if start >= 0:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start >= 0:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)
