"""Dot-stuffing in both directions, streaming, in bounded memory.

SMTP DATA (RFC 5321 4.5.2) and POP3 multi-line responses (RFC 1939 3) end
with a line holding a single ``.``; a line of content that starts with ``.``
is sent with one more.  :class:`Unstuffer` decodes a received stream chunk by
chunk; :class:`Stuffer` encodes a stored message chunk by chunk.  Neither ever
holds more than one chunk plus one partial line.

The end of data is only ever ``CRLF . CRLF``: a bare LF before or after the
dot does not end the message (this is what prevents "SMTP smuggling", where
two servers disagree on where a message ends).

Outbound, the same disagreement works the other way round: a stored message
may hold a bare CR or bare LF (accepted inbound, where it never ends DATA),
and a next hop that ends DATA on ``LF . LF`` would read what follows as new
commands in our name (CVE-2023-51766 class).  :class:`CanonicalStuffer`
therefore sends only canonical lines: every bare CR, bare LF and CRLF becomes
one CRLF, and dots are stuffed on that canonical form, so no next hop,
however lenient, can see a terminator before ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(slots=True)
class Unstuffed:
    data: bytes  # decoded content (to append to the message)
    done: bool  # the terminating ".CRLF" line was seen
    rest: bytes  # bytes after the terminator (pipelined commands)
    line_too_long: bool  # a line exceeded the limit since the last call


@dataclass(slots=True)
class Unstuffer:
    """Decode a DATA stream.  ``max_line`` counts octets including CRLF."""

    max_line: int = 1000
    _partial: bytearray = field(default_factory=bytearray)
    _mid_line: bool = False  # the partial line's start was already consumed
    _long: re.Pattern[bytes] | None = None

    def __post_init__(self) -> None:
        # a line of more than max_line octets (CRLF included) holds at least
        # max_line characters other than LF
        self._long = re.compile(rb"[^\n]{%d}" % self.max_line)

    def feed(self, chunk: bytes) -> Unstuffed:
        buf = self._partial
        buf += chunk
        assert self._long is not None
        too_long = False
        out: list[bytes] = []
        last = buf.rfind(b"\r\n")
        if last < 0:
            complete_end = 0
        else:
            complete_end = last + 2
        region = bytes(buf[:complete_end])
        pos = 0
        done = False
        fast = (
            region
            and not self._mid_line
            and not region.startswith(b".")
            and b"\r\n." not in region
            and not self._long.search(region)
        )
        if fast:
            out.append(region)
            pos = complete_end
        else:
            while pos < complete_end:
                idx = region.find(b"\r\n", pos)
                line = region[pos : idx + 2]
                pos = idx + 2
                if self._mid_line:
                    self._mid_line = False
                    too_long = True
                    continue
                if line == b".\r\n":
                    done = True
                    break
                if line.startswith(b"."):
                    line = line[1:]
                    if len(line) + 1 > self.max_line and self._long.search(line):
                        too_long = True
                elif len(line) > self.max_line and self._long.search(line):
                    too_long = True
                out.append(line)
        if done:
            rest = bytes(buf[pos:])
            buf.clear()
            self._mid_line = False
            return Unstuffed(b"".join(out), True, rest, too_long)
        del buf[:pos]
        if len(buf) > self.max_line + 1:
            # an unterminated line already longer than allowed: keep it out of
            # memory; its content is lost (the message will be refused)
            too_long = True
            keep_cr = buf.endswith(b"\r")
            buf.clear()
            if keep_cr:
                buf += b"\r"
            self._mid_line = True
        return Unstuffed(b"".join(out), False, b"", too_long)


@dataclass(slots=True)
class Stuffer:
    """Encode content for sending: double every leading dot (CRLF lines).

    Line endings pass through as stored; POP3 (whose sizes count the stored
    octets) uses it.  Anything sent to another SMTP server goes through
    :class:`CanonicalStuffer`.

    Call :meth:`feed` with consecutive chunks and :meth:`end` once; the output
    concatenated is the dot-stuffed content followed by ``CRLF.CRLF``
    (a final CRLF is added when the content does not end with one).
    """

    _at_line_start: bool = True
    _last_cr: bool = False
    _empty: bool = True

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        self._empty = False
        out = chunk.replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and chunk.startswith(b"."):
            out = b"." + out
        elif self._last_cr and chunk.startswith(b"\n."):
            out = b"\n.." + out[2:]
        self._at_line_start = chunk.endswith(b"\r\n") or (chunk == b"\n" and self._last_cr)
        self._last_cr = chunk.endswith(b"\r")
        return out

    def end(self) -> bytes:
        if self._empty or self._at_line_start:
            return b".\r\n"
        return b"\r\n.\r\n"


_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(slots=True)
class CanonicalStuffer:
    """Encode content for another SMTP server: canonical CRLF lines, dots stuffed.

    Every bare CR, bare LF and CRLF of the content becomes CRLF (RFC 5321
    2.3.8: lines end only with CRLF), then a leading dot is doubled.  A CR at
    the end of a chunk is held back until the next chunk shows whether an LF
    follows it, so chunk boundaries never change the output.
    """

    _at_line_start: bool = True
    _held_cr: bool = False
    _empty: bool = True

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        self._empty = False
        if self._held_cr:
            chunk = b"\r" + chunk
        self._held_cr = chunk.endswith(b"\r")
        if self._held_cr:
            chunk = chunk[:-1]
        if not chunk:
            return b""
        out = _LINE_END.sub(b"\r\n", chunk).replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and out.startswith(b"."):
            out = b"." + out
        self._at_line_start = out.endswith(b"\r\n")
        return out

    def end(self) -> bytes:
        if self._held_cr:
            return b"\r\n.\r\n"
        if self._empty or self._at_line_start:
            return b".\r\n"
        return b"\r\n.\r\n"
