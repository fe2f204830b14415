"""What the server adds to a message: the ``Received`` trace field, and on
submission (587/465) the ``Date`` and ``Message-ID`` a client left out.

RFC 6409 section 8.2 and 8.3: a Message Submission Agent may add a missing
``Date:`` and ``Message-ID:``.  A message streams through the server, so the
header section is not known when the first bytes arrive: :class:`HeaderCompleter`
holds back the start of the message until the header section is complete (the
first empty line), at most ``MAX_HEADER_SCAN`` bytes, then hands everything on
preceded by the missing fields.  Memory stays bounded by that limit; the body
is never held.  A header section longer than the limit is passed on as seen
(fields beyond the limit are not looked at, so a field may be added twice;
RFC 5322 3.6 says the receiver keeps the first).

The ``Received`` field (RFC 5321 4.4) names the protocol per RFC 3848
(``ESMTPSA`` = ESMTP over TLS, authenticated) and, on submission, the
authenticated identity: never anything of the credentials themselves.

Sans-IO: no sockets, no files, no clock reads that a caller cannot replace.
"""

from __future__ import annotations

import email.utils
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from dynamail.smtp.limits import MAX_HEADER_SCAN

__all__ = ["HeaderCompleter", "header_names", "message_id", "received_field"]


def _clean(text: str, limit: int = 200) -> str:
    """A value safe inside a header field: one line, bounded, no parentheses games."""
    return "".join(c for c in text if c >= " " and c != "\x7f")[:limit]


def received_field(
    *,
    helo: str | None,
    peer: str,
    hostname: str,
    protocol: str,
    session_id: str,
    recipients: Sequence[str],
    identity: str | None = None,
    now: float | None = None,
) -> bytes:
    """The ``Received:`` field for one message (RFC 5321 4.4, RFC 3848)."""
    auth = f" (authenticated as {_clean(identity, 320)})" if identity else ""
    for_part = f"\r\n\tfor <{_clean(recipients[0], 320)}>" if len(recipients) == 1 else ""
    text = (
        f"Received: from {_clean(helo or 'unknown')} ([{_clean(peer, 64)}]){auth}\r\n"
        f"\tby {hostname} (dynamail) with {protocol} id {session_id}"
        f"{for_part};\r\n\t{email.utils.formatdate(now, localtime=False)}\r\n"
    )
    return text.encode("utf-8", "replace")


def message_id(hostname: str) -> str:
    """A globally unique ``msg-id`` (RFC 5322 3.6.4) made up here."""
    return f"<{int(time.time())}.{secrets.token_hex(10)}@{hostname}>"


def header_names(header: bytes) -> set[str]:
    """Lower-case names of the fields in a header section (continuations skipped)."""
    found: set[str] = set()
    for line in header.split(b"\n"):
        if not line or line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        if colon and name and all(33 <= c <= 126 for c in name):
            found.add(name.decode("ascii").lower())
    return found


def _header_end(buf: bytes | bytearray) -> int:
    """Length of the header section including its empty line, or -1."""
    if buf.startswith(b"\r\n"):
        return 2
    if buf.startswith(b"\n"):
        return 1
    ends = [i + n for i, n in ((buf.find(b"\r\n\r\n"), 4), (buf.find(b"\n\n"), 2)) if i >= 0]
    return min(ends) if ends else -1


class HeaderCompleter:
    """Adds ``Date:`` and ``Message-ID:`` in front of a message that lacks them.

    Feed the content in order with :meth:`feed`; each call returns the bytes
    that may be passed on now (possibly none).  :meth:`finish` returns the
    rest at the end of the message.  ``added`` lists what was added.
    """

    def __init__(self, hostname: str, *, now: float | None = None, limit: int = MAX_HEADER_SCAN) -> None:
        self.hostname = hostname
        self.now = now
        self.limit = limit
        self.added: list[str] = []
        self._buf = bytearray()
        self._done = False

    def feed(self, data: bytes) -> bytes:
        if self._done:
            return data
        self._buf += data
        end = _header_end(self._buf)
        if end < 0 and len(self._buf) < self.limit:
            return b""
        return self._release(self._buf[: end if end >= 0 else self.limit])

    def finish(self) -> bytes:
        if self._done:
            return b""
        return self._release(self._buf)

    def _release(self, header: bytes | bytearray) -> bytes:
        names = header_names(bytes(header))
        fields = b""
        if "date" not in names:
            when = datetime.fromtimestamp(self.now if self.now is not None else time.time(), UTC)
            fields += b"Date: " + email.utils.format_datetime(when).encode("ascii") + b"\r\n"
            self.added.append("Date")
        if "message-id" not in names:
            fields += b"Message-ID: " + message_id(self.hostname).encode("ascii", "replace") + b"\r\n"
            self.added.append("Message-ID")
        out = fields + bytes(self._buf)
        self._buf.clear()
        self._done = True
        return out
