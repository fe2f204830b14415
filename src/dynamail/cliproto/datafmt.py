"""The CommuniGate textual data format, both directions.

Values map to Python as follows:

==========================  ==========================================
text                        Python
==========================  ==========================================
``atom``, ``"quoted"``      ``str``
``[base64]``                ``bytes``
``#123``, ``#-5``           ``int``
``#Tdd-mm-yyyy_hh:mm:ss``   ``datetime.datetime`` (naive, UTC)
``#I[1.2.3.4]:port``        :class:`IPAddress`
``#NULL#``                  :data:`NULL`
``(a,b)``                   ``list``
``{key=value;}``            ``dict[str, value]``
==========================  ==========================================

Quoted strings accept the escapes ``\\" \\\\ \\r \\n \\t`` and ``\\nnn`` (three
decimal digits, one byte; the bytes of a string are UTF-8).  The parser is a
plain recursive-descent reader over a ``str`` with explicit nesting and size
limits (:mod:`dynamail.cliproto.limits`): hostile input produces
:class:`DataFormatError`, never unbounded recursion or memory.

The writer has two dialects.  ``answer=True`` (what the server sends) avoids
the constructs existing client libraries trip over: no ``#NULL#`` (a null
dictionary value is left out, a null array element becomes ``""``), no
``\\nnn`` escapes (a string holding other control characters is sent as a
``[base64]`` data block of its UTF-8 bytes) and no ``#I[...]`` addresses
(sent as a quoted ``"[1.2.3.4]:port"`` string).  ``answer=False`` is the full,
lossless dialect used for round trips and for requests.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from dataclasses import dataclass
from typing import Final, TypeAlias

from dynamail.cliproto.limits import MAX_DATA_NESTING, MAX_DATA_SIZE


class _Null:
    """The ``#NULL#`` object (a named sentinel, not ``None``)."""

    _instance: _Null | None = None

    def __new__(cls) -> _Null:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NULL"

    def __bool__(self) -> bool:
        return False


NULL: Final = _Null()


@dataclass(frozen=True, slots=True)
class IPAddress:
    """``#I[host]:port``; ``port`` 0 when absent."""

    host: str
    port: int = 0


Value: TypeAlias = "str | bytes | int | datetime.datetime | IPAddress | _Null | list[Value] | dict[str, Value]"


class DataFormatError(ValueError):
    """Malformed data; ``str(exc)`` says where, fit to send to a client."""


# Characters allowed in an unquoted atom (CommuniGate accepts these plus 8-bit).
_ATOM_EXTRA = frozenset("-_.@!%:*+/'$&?^|~")
_SAFE_ATOM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*\Z")
_TIME_RE = re.compile(r"(\d\d)-(\d\d)-(\d\d\d\d)_(\d\d):(\d\d):(\d\d)")
_INT_RE = re.compile(r"-?[0-9]{1,19}")
_DIGITS3 = re.compile(r"[0-9]{3}")
_PORT_RE = re.compile(r"[0-9]{1,5}")


def is_atom_char(ch: str) -> bool:
    return ch.isalnum() or ch in _ATOM_EXTRA or ord(ch) >= 0x80


class Reader:
    """Reads values (and bare words) from one ``str`` left to right."""

    def __init__(self, text: str, *, max_nesting: int = MAX_DATA_NESTING) -> None:
        if len(text) > MAX_DATA_SIZE:
            raise DataFormatError("data too large")
        self.text = text
        self.pos = 0
        self.max_nesting = max_nesting

    # -- helpers -------------------------------------------------------
    def _error(self, what: str) -> DataFormatError:
        near = self.text[self.pos : self.pos + 12]
        return DataFormatError(f"{what} at position {self.pos}" + (f" near {near!r}" if near else ""))

    def skip_spaces(self) -> None:
        t = self.text
        while self.pos < len(t) and t[self.pos] in " \t\r\n":
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_spaces()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        self.skip_spaces()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def rest(self) -> str:
        return self.text[self.pos :]

    # -- words -----------------------------------------------------------
    def read_atom(self) -> str:
        t = self.text
        start = self.pos
        while self.pos < len(t) and (is_atom_char(t[self.pos]) or (t[self.pos] == "#" and self.pos > start)):
            self.pos += 1
        if self.pos == start:
            raise self._error("expected a word")
        return t[start : self.pos]

    def read_quoted(self) -> str:
        t = self.text
        assert t[self.pos] == '"'
        self.pos += 1
        out = bytearray()
        while True:
            if self.pos >= len(t):
                raise self._error("unterminated quoted string")
            ch = t[self.pos]
            if ch == '"':
                self.pos += 1
                break
            if ch == "\\":
                nxt = t[self.pos + 1 : self.pos + 2]
                if nxt in ('"', "\\"):
                    out += nxt.encode()
                    self.pos += 2
                elif nxt == "r":
                    out += b"\r"
                    self.pos += 2
                elif nxt == "n":
                    out += b"\n"
                    self.pos += 2
                elif nxt == "t":
                    out += b"\t"
                    self.pos += 2
                elif nxt == "e":  # CommuniGate's line separator inside strings
                    out += b"\n"
                    self.pos += 2
                elif _DIGITS3.fullmatch(t[self.pos + 1 : self.pos + 4]):
                    code = int(t[self.pos + 1 : self.pos + 4])
                    if code > 255:
                        raise self._error("bad \\nnn escape")
                    out.append(code)
                    self.pos += 4
                else:
                    raise self._error("bad escape")
                continue
            if ch in "\r\n":
                raise self._error("line break inside a quoted string")
            out += ch.encode("utf-8", "surrogatepass")
            self.pos += 1
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError:
            return out.decode("latin-1")

    def read_string(self) -> str:
        """An atom or a quoted string (command arguments such as names)."""
        if self.peek() == '"':
            return self.read_quoted()
        if self.peek() == "":
            raise self._error("missing argument")
        return self.read_atom()

    def read_block(self) -> bytes:
        t = self.text
        assert t[self.pos] == "["
        end = t.find("]", self.pos + 1)
        if end < 0:
            raise self._error("unterminated data block")
        body = "".join(t[self.pos + 1 : end].split())
        self.pos = end + 1
        try:
            return base64.b64decode(body.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise self._error("bad base64 in data block") from None

    def _read_hash(self) -> Value:
        t = self.text
        assert t[self.pos] == "#"
        if t.startswith("#NULL#", self.pos):
            self.pos += 6
            return NULL
        if t.startswith("#T", self.pos):
            m = _TIME_RE.match(t, self.pos + 2)
            if not m:
                raise self._error("bad time value")
            dd, mm, yyyy, hh, mi, ss = (int(x) for x in m.groups())
            try:
                value = datetime.datetime(yyyy, mm, dd, hh, mi, ss)
            except ValueError:
                raise self._error("bad time value") from None
            self.pos = m.end()
            return value
        if t.startswith("#I[", self.pos):
            end = t.find("]", self.pos + 3)
            if end < 0:
                raise self._error("bad address value")
            host = t[self.pos + 3 : end]
            if not host or any(c in host for c in " \t\"[](){},;="):
                raise self._error("bad address value")
            self.pos = end + 1
            port = 0
            if t.startswith(":", self.pos):
                m = _PORT_RE.match(t, self.pos + 1)
                if not m or int(m.group()) > 65535:
                    raise self._error("bad address port")
                port = int(m.group())
                self.pos = m.end()
            return IPAddress(host, port)
        m = _INT_RE.match(t, self.pos + 1)
        if not m:
            raise self._error("bad number")
        self.pos = m.end()
        return int(m.group())

    # -- values ----------------------------------------------------------
    def read_value(self, depth: int = 0) -> Value:
        if depth > self.max_nesting:
            raise self._error("data nested too deeply")
        ch = self.peek()
        if ch == "":
            raise self._error("missing value")
        if ch == "{":
            return self._read_dict(depth + 1)
        if ch == "(":
            return self._read_array(depth + 1)
        if ch == '"':
            return self.read_quoted()
        if ch == "[":
            return self.read_block()
        if ch == "#":
            return self._read_hash()
        return self.read_atom()

    def _read_array(self, depth: int) -> list[Value]:
        self.pos += 1
        out: list[Value] = []
        if self.peek() == ")":
            self.pos += 1
            return out
        while True:
            out.append(self.read_value(depth))
            ch = self.peek()
            self.pos += 1
            if ch == ")":
                return out
            if ch != ",":
                self.pos -= 1
                raise self._error("expected ',' or ')'")

    def _read_dict(self, depth: int) -> dict[str, Value]:
        self.pos += 1
        out: dict[str, Value] = {}
        while True:
            ch = self.peek()
            if ch == "}":
                self.pos += 1
                return out
            if ch == "":
                raise self._error("unterminated dictionary")
            key = self.read_string()
            if self.peek() != "=":
                raise self._error("expected '='")
            self.pos += 1
            out[key] = self.read_value(depth)
            if self.peek() != ";":
                raise self._error("expected ';'")
            self.pos += 1


def parse(text: str) -> Value:
    """Parse exactly one value (surrounding white space allowed)."""
    r = Reader(text)
    value = r.read_value()
    if not r.at_end():
        raise r._error("unexpected data after the value")
    return value


# -- writing -----------------------------------------------------------------

_ESC_ALWAYS = {'"': '\\"', "\\": "\\\\", "\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _needs_block(s: str) -> bool:
    return any((ord(c) < 0x20 and c not in "\r\n\t") or ord(c) == 0x7F for c in s)


def _write_str(s: str, answer: bool, out: list[str]) -> None:
    if _SAFE_ATOM.match(s):
        out.append(s)
        return
    if answer and _needs_block(s):
        out.append("[" + base64.b64encode(s.encode("utf-8", "surrogatepass")).decode("ascii") + "]")
        return
    parts = ['"']
    for c in s:
        esc = _ESC_ALWAYS.get(c)
        if esc is not None:
            parts.append(esc)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            parts.append(f"\\{ord(c):03d}")
        elif 0xD800 <= ord(c) <= 0xDFFF:
            raise DataFormatError("string holds a lone surrogate")
        else:
            parts.append(c)
    parts.append('"')
    out.append("".join(parts))


def _write(value: object, answer: bool, out: list[str], depth: int) -> None:
    if depth > MAX_DATA_NESTING:
        raise DataFormatError("data nested too deeply")
    if isinstance(value, bool):
        out.append("YES" if value else "NO")
    elif isinstance(value, str):
        _write_str(value, answer, out)
    elif isinstance(value, int):
        out.append(f"#{value}")
    elif isinstance(value, float):  # no such type in the format: its text
        _write_str(repr(value), answer, out)
    elif isinstance(value, bytes | bytearray | memoryview):
        out.append("[" + base64.b64encode(bytes(value)).decode("ascii") + "]")
    elif isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        out.append(
            f"#T{value.day:02d}-{value.month:02d}-{value.year:04d}_"
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
        )
    elif isinstance(value, IPAddress):
        text = f"[{value.host}]" + (f":{value.port}" if value.port else "")
        if answer:
            _write_str(text, answer, out)
        else:
            out.append("#I" + text)
    elif isinstance(value, _Null) or value is None:
        out.append('""' if answer else "#NULL#")
    elif isinstance(value, list | tuple):
        out.append("(")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, answer, out, depth + 1)
        out.append(")")
    elif isinstance(value, dict):
        out.append("{")
        for key, item in value.items():
            if answer and (item is None or isinstance(item, _Null)):
                continue
            _write_str(str(key), False, out)
            out.append("=")
            _write(item, answer, out, depth + 1)
            out.append(";")
        out.append("}")
    else:
        raise DataFormatError(f"cannot write a {type(value).__name__}")


def write(value: object, *, answer: bool = False) -> str:
    """Serialise ``value`` on one line (no CR or LF in the result)."""
    out: list[str] = []
    _write(value, answer, out, 0)
    return "".join(out)
