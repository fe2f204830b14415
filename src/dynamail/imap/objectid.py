"""OBJECTID (RFC 8474) and PREVIEW (RFC 8970) values.

Object identifiers are derived from what the storage engine keeps stable:

* MAILBOXID is ``M`` + the mailbox's UIDVALIDITY in hex.  UIDVALIDITY values
  are assigned per account in increasing order and survive RENAME, so the
  id is unique within the account and stays the same across a rename
  (RFC 8474 section 4); a mailbox deleted and created again gets a new one.
* EMAILID is ``E`` + the message's internal date (seconds since 1970, hex,
  as an unsigned 64-bit number) + ``-`` + the digest of its bytes that the
  storage engine keeps in its parse result (``MailboxView.digest``).  Both
  are immutable for a message and both travel with it through COPY and
  MOVE (RFC 8474 section 5.1: the copy keeps the EMAILID), compaction and
  the rename of INBOX.  Messages with different bytes or a different
  internal date have different EMAILIDs; the same bytes appended twice
  with the same internal date (to the second) are the same content and
  share one.  SEARCH EMAILID (section 6) looks at the messages of that
  internal date only, and compares their digests.
* THREADID is NIL (RFC 8474 section 5.2 allows a server without thread
  identifiers to return NIL).

PREVIEW: the first text part (text/plain, else text/html without its
markup), its transfer encoding and charset undone, white space folded, at
most :data:`PREVIEW_CHARS` characters (RFC 8970 section 3: 256 at most);
the empty string when the message has no text (NIL would mean "not yet
available", RFC 8970 section 3.2); the same as Dovecot's.
"""

from __future__ import annotations

import codecs
import datetime
import html
import re

PREVIEW_CHARS = 200  # RFC 8970 section 3.1: no more than 256 characters
PREVIEW_SOURCE = 4096  # octets of the part read to make a preview

_EMAILID = re.compile(r"^E([0-9a-f]{1,16})-((?:[0-9a-f]{2})+)$")
_U64 = (1 << 64) - 1


def mailbox_id(uidvalidity: int) -> str:
    return f"M{uidvalidity:x}"


def date_seconds(when: datetime.datetime) -> int:
    """An internal date as the storage engine keeps it: whole seconds."""
    return int(when.timestamp())


def email_id(internal_date: datetime.datetime, digest: bytes) -> str:
    """The EMAILID of a message (an RFC 8474 objectid: at most 255 of
    letters, digits, ``-`` and ``_``; here at most 50)."""
    return f"E{date_seconds(internal_date) & _U64:x}-{digest.hex()}"


def parse_email_id(text: str) -> tuple[int, bytes] | None:
    """(internal date in seconds, digest) of one of our EMAILIDs, else None."""
    m = _EMAILID.match(text)
    if m is None:
        return None
    seconds = int(m.group(1), 16)
    if seconds > _U64 >> 1:
        seconds -= 1 << 64
    return seconds, bytes.fromhex(m.group(2))


def first_text_part(bs: object, path: tuple[int, ...] = ()) -> tuple[tuple[int, ...], str, str] | None:
    """(section path, subtype, charset) of the first text/plain part, else
    of the first text/html one, in a BODYSTRUCTURE value."""
    found: dict[str, tuple[tuple[int, ...], str, str]] = {}

    def walk(node: object, at: tuple[int, ...]) -> None:
        if not isinstance(node, list) or not node:
            return
        if isinstance(node[0], list):  # multipart: the children, then the subtype
            for i, child in enumerate(node):
                if not isinstance(child, list):
                    break
                walk(child, (*at, i + 1))
            return
        kind = str(node[0]).lower()
        sub = str(node[1]).lower() if len(node) > 1 else ""
        if kind == "text" and sub in ("plain", "html") and sub not in found:
            charset = "utf-8"
            params = node[2] if len(node) > 2 else None
            if isinstance(params, list):
                for k, v in zip(params[::2], params[1::2], strict=False):
                    if str(k).lower() == "charset":
                        charset = str(v)
            found[sub] = (at or (1,), sub, charset)

    walk(bs, path)
    return found.get("plain") or found.get("html")


_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.I | re.S)


def preview_text(data: bytes, subtype: str, charset: str) -> str:
    try:
        if codecs.lookup(charset).name == "ascii":  # the default label: UTF-8 reads it and more
            charset = "utf-8"
    except LookupError:
        charset = "utf-8"
    text = data.decode(charset, "replace")
    if subtype == "html":
        text = html.unescape(_TAG.sub(" ", text))
    return " ".join(text.split())[:PREVIEW_CHARS].rstrip()
