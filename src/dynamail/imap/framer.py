"""Splits the client's byte stream into whole commands (RFC 9051 section 2.2).

A command is one or more lines joined by literals: a line that ends in
``{n}`` (synchronising), ``{n+}`` (LITERAL+, RFC 7888) or ``~{n}`` (literal8,
RFC 3516) is followed by exactly ``n`` octets and then more of the command.
The framer is sans-IO: :meth:`Framer.feed` takes bytes, :meth:`Framer.next_event`
returns the next :class:`Frame`, :class:`Continue` (send a continuation
request, the client waits for it before a synchronising literal),
:class:`FrameError` (reply with the carried text) or ``NEED_DATA``.

Invariants: memory held is bounded by the limits in :mod:`dynamail.imap.limits`
(a line that is too long is discarded as it arrives; an oversize literal is
refused before the client sends it, or skipped while it arrives when it was
non-synchronising); after every :class:`FrameError` the framer is at the start
of the next command, so the connection stays usable.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from dynamail.imap import limits

_LITERAL_END = re.compile(rb"(~?)\{(\d{1,20})([+-]?)\}\r?\n\Z")
_TAG_RE = re.compile(rb"^([\x21-\x7e]{1,128}?)[ \r\n]")
_APPEND_RE = re.compile(rb"^[^ ]+ +(?:UID +)?APPEND[ \r\n]", re.IGNORECASE)


class _Need(enum.Enum):
    NEED_DATA = "need-data"


NEED_DATA = _Need.NEED_DATA


@dataclass(frozen=True, slots=True)
class Frame:
    """One whole command as it was sent, literals included, CRLF stripped."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class Continue:
    """The client waits for ``+`` before sending a literal of ``size`` octets."""

    size: int


@dataclass(frozen=True, slots=True)
class FrameError:
    """The command was refused while being framed; answer ``tag reply``
    (``tag`` is ``"*"`` when none could be read); ``fatal`` ends the session."""

    tag: str
    reply: str
    fatal: bool = False


FrameEvent = Frame | Continue | FrameError | _Need


def _tag_of(data: bytes) -> str:
    m = _TAG_RE.match(data)
    if m is None:
        return "*"
    tag = m.group(1).decode("ascii", "replace")
    if any(c in tag for c in '(){%*"\\+'):
        return "*"
    return tag


class Framer:
    """Incremental command framing for one connection."""

    def __init__(self, *, append_limit: int = limits.APPEND_LIMIT) -> None:
        self.append_limit = append_limit
        # Large (APPEND) literals only once logged in: before that every
        # literal is bounded by MAX_COMMAND_LITERAL, so an unauthenticated
        # client cannot make us buffer a message-sized literal.
        self.authenticated = False
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._literal_left = 0  # octets of the current literal still to come
        self._literal_total = 0  # literal octets in this command so far
        self._line_bytes = 0  # octets of this command outside literals
        self._skip: FrameError | None = None  # refuse this command at its end
        self._skip_line = False  # discarding an over-long line
        self._is_append = False
        self._first = True  # at the first line of a command
        self._head = b""  # start of the command's first line (for its tag)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf)

    def take_buffered(self) -> bytes:
        """Remove and return input read ahead but not yet framed."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def discard_buffered(self) -> None:
        """Forget input read ahead (plaintext pipelined before STARTTLS,
        RFC 9051 section 6.2.1)."""
        self._buf.clear()

    @property
    def in_command(self) -> bool:
        """True while part of a command has arrived (used by timeouts)."""
        return not self._first or bool(self._buf)

    def expecting_literal(self) -> int:
        """Octets of literal data still expected (0 when reading lines)."""
        return self._literal_left

    def _reset(self) -> None:
        self._parts = []
        self._literal_left = 0
        self._literal_total = 0
        self._line_bytes = 0
        self._skip = None
        self._is_append = False
        self._first = True
        self._head = b""

    def next_event(self) -> FrameEvent:
        while True:
            if self._literal_left:
                take = min(self._literal_left, len(self._buf))
                if take == 0:
                    return NEED_DATA
                if self._skip is None:
                    self._parts.append(bytes(self._buf[:take]))
                del self._buf[:take]
                self._literal_left -= take
                if self._literal_left:
                    return NEED_DATA
                continue
            idx = self._buf.find(b"\n")
            if self._skip_line:
                if idx < 0:
                    self._buf.clear()
                    return NEED_DATA
                del self._buf[: idx + 1]
                self._skip_line = False
                err = self._skip or FrameError(self._tag, "BAD Command line too long")
                self._reset()
                return err
            if idx < 0:
                if len(self._buf) + self._line_bytes > limits.MAX_LINE:
                    if self._first:
                        self._head = bytes(self._buf[:200])
                    self._skip_line = True
                    if self._skip is None:
                        self._skip = FrameError(self._tag, "BAD Command line too long")
                    self._buf.clear()
                return NEED_DATA
            line = bytes(self._buf[: idx + 1])
            del self._buf[: idx + 1]
            if self._first:
                self._first = False
                self._head = line[:200]
                self._is_append = _APPEND_RE.match(line) is not None
            self._line_bytes += len(line)
            if self._line_bytes > limits.MAX_LINE and self._skip is None:
                self._skip = FrameError(self._tag, "BAD Command line too long")
            m = _LITERAL_END.search(line)
            if m is None:
                if self._skip is not None:
                    err = self._skip
                    self._reset()
                    return err
                self._parts.append(line)
                raw = b"".join(self._parts)
                self._reset()
                if raw.endswith(b"\r\n"):
                    raw = raw[:-2]
                elif raw.endswith(b"\n"):
                    raw = raw[:-1]
                return Frame(raw)
            size = int(m.group(2))
            sync = m.group(3) == b""
            error = self._literal_error(size, sync, m.group(3) == b"-")
            if error is not None and self._skip is None:
                self._skip = error
            if self._skip is not None:
                if sync:
                    # the client waits for "+" that will not come: answer now
                    err = self._skip
                    self._reset()
                    return err
                self._literal_left = size
                continue
            self._literal_total += size
            self._parts.append(line)
            self._literal_left = size
            if sync:
                return Continue(size)

    @property
    def _tag(self) -> str:
        """Tag of the command being framed (computed only for errors)."""
        return _tag_of(self._head)

    def _literal_error(self, size: int, sync: bool, minus: bool) -> FrameError | None:
        if minus and size > limits.LITERAL_MINUS_MAX:
            return FrameError(self._tag, "BAD Non-synchronizing literal too large (RFC 7888)")
        if self._is_append and self.authenticated:
            if size > self.append_limit:
                return FrameError(self._tag, "NO [TOOBIG] Message too large for APPENDLIMIT")
            if self._literal_total + size > limits.MAX_APPEND_TOTAL:
                return FrameError(self._tag, "NO [TOOBIG] Too much data in one APPEND")
            return None
        if self._literal_total + size > limits.MAX_COMMAND_LITERAL:
            return FrameError(self._tag, "BAD Literal too large")
        return None
