"""The message as a Sieve script sees it: header fields, addresses, body.

The header block is split into fields here (not by the ``email`` package),
so that ``editheader`` (RFC 5293) can add and delete fields and the message
is written back with every untouched field byte-for-byte as it arrived; the
body is never changed.  Header values are unfolded and RFC 2047-decoded for
tests (RFC 5228 2.7.2).  The body test (RFC 5173) parses the MIME structure
with the standard ``email`` package, reading at most
``limits.MAX_MESSAGE_SCAN`` octets.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
from dataclasses import dataclass, field

from dynamail.sieve import limits

#: RFC 5293 section 6 / Pigeonhole's defaults: fields a script may neither add nor delete.
PROTECTED_HEADERS = frozenset({"received", "auto-submitted"})


@dataclass(slots=True)
class HeaderField:
    name: str  # as written
    raw: bytes  # the whole field, name through the final line end
    added: bool = False


def _split(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(header block without the blank line, line end style, body)."""
    for sep, nl in ((b"\r\n\r\n", b"\r\n"), (b"\n\n", b"\n")):
        i = data.find(sep)
        if i >= 0:
            other = b"\n\n" if sep == b"\r\n\r\n" else b"\r\n\r\n"
            j = data.find(other)
            if j < 0 or i < j:
                return data[: i + len(nl)], nl, data[i + len(sep):]
    if data.startswith((b"\r\n", b"\n")):
        nl = b"\r\n" if data.startswith(b"\r\n") else b"\n"
        return b"", nl, data[len(nl):]
    return data, b"\r\n", b""


def decode_value(raw: str) -> str:
    """An unfolded field value with RFC 2047 encoded words decoded."""
    text = raw.replace("\r", "").replace("\n", "").strip(" \t")
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return text


@dataclass
class SieveMessage:
    """One message under test, with the edits a script made to its header."""

    data: bytes
    fields: list[HeaderField] = field(default_factory=list)
    nl: bytes = b"\r\n"
    body: bytes = b""
    edited: bool = False

    @classmethod
    def parse(cls, data: bytes) -> SieveMessage:
        head, nl, body = _split(data)
        msg = cls(data, [], nl, body)
        current: list[bytes] = []
        for line in head.splitlines(keepends=True):
            if line[:1] in (b" ", b"\t") and current:
                current.append(line)
                continue
            if current:
                msg._add_raw(b"".join(current))
            current = [line]
        if current:
            msg._add_raw(b"".join(current))
        return msg

    def _add_raw(self, raw: bytes) -> None:
        colon = raw.find(b":")
        if colon <= 0:
            return  # not a field (RFC 5322 2.2): ignored by every test
        name = raw[:colon].decode("latin-1").strip()
        self.fields.append(HeaderField(name, raw))

    @property
    def size(self) -> int:
        return len(self.data)

    def values(self, name: str) -> list[str]:
        """Decoded values of every field named ``name`` (case-insensitive), in order."""
        low = name.lower()
        return [decode_value(self._value_text(f)) for f in self.fields if f.name.lower() == low]

    def raw_values(self, name: str) -> list[str]:
        low = name.lower()
        return [self._value_text(f) for f in self.fields if f.name.lower() == low]

    @staticmethod
    def _value_text(f: HeaderField) -> str:
        raw = f.raw[f.raw.find(b":") + 1:]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def addresses(self, name: str) -> list[tuple[str, str] | None]:
        """(local part, domain) of each address in the fields; None for an
        address that does not parse (RFC 5228 2.7.4: only ``:all`` sees it)."""
        out: list[tuple[str, str] | None] = []
        for value in self.values(name):
            for _display, addr in email.utils.getaddresses([value]):
                if not addr:
                    continue
                out.append(split_address(addr))
        return out

    def raw_addresses(self, name: str) -> list[str]:
        out: list[str] = []
        for value in self.values(name):
            out.extend(addr for _d, addr in email.utils.getaddresses([value]) if addr)
        return out

    # editheader (RFC 5293)
    def add_header(self, name: str, value: str, last: bool) -> None:
        folded = value.replace("\r", "").replace("\n", " ")
        if not folded.isascii():  # RFC 5293 4: non-ASCII text as RFC 2047 encoded words
            folded = email.header.Header(folded, "utf-8", maxlinelen=998).encode(linesep=self.nl.decode())
        raw = f"{name}: {folded}".encode() + self.nl
        entry = HeaderField(name, raw, added=True)
        if last:
            self.fields.append(entry)
        else:
            self.fields.insert(0, entry)
        self.edited = True

    def delete_header(self, index: int) -> None:
        del self.fields[index]
        self.edited = True

    def to_bytes(self) -> bytes:
        """The message with the script's header edits (the original if none)."""
        if not self.edited:
            return self.data
        return b"".join(f.raw for f in self.fields) + self.nl + self.body

    def body_parts(self, transform: str, types: tuple[str, ...]) -> list[str]:
        """RFC 5173: the body as the ``body`` test sees it."""
        data = self.data[: limits.MAX_MESSAGE_SCAN]
        if transform == "raw":
            _h, _nl, body = _split(data)
            return [body.decode("utf-8", "replace")]
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        out: list[str] = []
        for part in msg.walk():
            ctype = part.get_content_type().lower()
            if part.is_multipart():
                if transform == "content" and _type_matches(ctype, types):
                    # RFC 5173 5.2: a multipart's prologue and epilogue
                    out.append((part.preamble or "") + (part.epilogue or ""))
                continue
            if transform == "text":
                if not ctype.startswith("text/"):
                    continue
            elif not _type_matches(ctype, types):
                continue
            out.append(_decoded(part))
        return out


def _type_matches(ctype: str, types: tuple[str, ...]) -> bool:
    main, _, sub = ctype.partition("/")
    for t in types:
        t = t.lower()
        if t == "" or t == ctype or t == main or (t.endswith("/") and t[:-1] == main):
            return True
        if "/" not in t and t == main:
            return True
        if t == f"{main}/{sub}":
            return True
    return False


def _decoded(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def split_address(addr: str) -> tuple[str, str] | None:
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        return None
    return local, domain
