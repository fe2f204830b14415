"""Parse a message once: header fields, MIME tree with part offsets,
ENVELOPE and BODYSTRUCTURE.

The storage engine calls :func:`parse` when a message is appended and keeps
the result, so FETCH never parses MIME again.  The parser never raises on
any input: broken MIME degrades to the most sensible structure (a missing
closing boundary ends the multipart at the end of the message, a header
block without an empty line is all header, an unknown Content-Type becomes
what it says).  RFC 2047 encoded words are left untouched (RFC 9051 §7.5.2
says ENVELOPE carries them as they are).

**Value representation.**  ENVELOPE, BODYSTRUCTURE and BODY are nested
Python lists whose leaves are ``str``, ``bytes``, ``int`` or ``None``, in
exactly the order of RFC 9051 §7.5.2.  The IMAP writer turns ``None`` into
``NIL``, ``str`` into a quoted string (or a literal when it cannot be
quoted), ``bytes`` into a literal (used only for header text that is not
7-bit), ``int`` into a number and a ``list`` into a parenthesised,
space-separated list — with one exception: in a multipart body
(``body-type-mpart = 1*body SP media-subtype``) the child bodies follow each
other without a space.  A multipart body is recognised by its first element
being a list; a single-part body's first element is a string.

* ENVELOPE: ``[date, subject, from, sender, reply_to, to, cc, bcc,
  in_reply_to, message_id]``; each address list is ``None`` or a list of
  ``[name, adl, mailbox, host]``; a group is ``[None, None, group_name,
  None]`` … ``[None, None, None, None]`` (RFC 9051 §7.5.2 "ENVELOPE").
* BODYSTRUCTURE of a single part: ``[type, subtype, params, id,
  description, encoding, size, …]``; ``text/*`` adds ``lines``;
  ``message/rfc822`` (and ``message/global``) adds ``envelope, body,
  lines``; then the extension data ``md5, disposition, language,
  location``.  ``params`` is ``None`` or a flat list ``[name, value, …]``;
  ``disposition`` is ``None`` or ``[type, params]``.
* BODYSTRUCTURE of a multipart: ``[body, body, …, subtype, params,
  disposition, language, location]``.
* BODY is the same without extension data (for a single part: up to and
  including ``lines``; for a multipart: the bodies and the subtype).

Section addressing (RFC 9051 §6.4.5) is done by :func:`section_range` on the
part tree: every node is ``[header_start, body_start, end, kind, children,
encoding, charset]`` with absolute offsets into the canonical message.

The parse result also carries a digest of the canonical message
(:func:`content_digest`), the ground of the message's EMAILID (RFC 8474
§5.1): it travels with the stored parse result through COPY, MOVE and
compaction.  Results stored before it existed have five elements and an
empty digest; :meth:`Parsed.from_list` reads both forms.
"""

from __future__ import annotations

import hashlib
import mmap
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

# A message body of any size is accepted; these limits bound the parse work
# so a hostile message cannot make it explode (RFC 2046 §5.1.1 sets no
# nesting limit; 100 matches common servers).
MAX_MIME_DEPTH = 100
MAX_MIME_PARTS = 5000
MAX_HEADER_FIELDS = 2000
# Header blocks longer than this are parsed only this far (a block without
# its ending empty line can be the whole message).
MAX_HEADER_BYTES = 1 << 20
# Chunk size of the streaming functions (canonical_copy, MappedMessage.count).
CHUNK = 1 << 20
DIGEST_SIZE = 16  # octets of content_digest (BLAKE2b)

LEAF, MULTIPART, MESSAGE = 0, 1, 2

Value = str | bytes | int | None | list["Value"]
Node = list  # [header_start, body_start, end, kind, children, encoding, charset]


def canonical(data: bytes) -> bytes:
    """The message with every line ending as CRLF (a bare LF becomes CRLF)."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    # the same as re.sub(rb"\r?\n", b"\r\n", data), without a list of pieces
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def canonical_copy(src: BinaryIO, dst: BinaryIO, chunk: int = CHUNK // 4) -> tuple[int, int]:
    """Copy ``src`` to ``dst`` in canonical form (as :func:`canonical`),
    ``chunk`` bytes at a time; returns (length written, CRC-32 of it).  A CR
    at the end of a chunk waits for the next one, so a CRLF split across two
    chunks stays one line end."""
    length = 0
    crc = 0
    held = b""
    while True:
        got = src.read(chunk)
        if not got:
            break
        data = held + got
        held = b""
        if data.endswith(b"\r"):
            data, held = data[:-1], b"\r"
        out = canonical(data)
        dst.write(out)
        length += len(out)
        crc = zlib.crc32(out, crc)
    if held:
        dst.write(held)
        length += 1
        crc = zlib.crc32(held, crc)
    return length, crc


class MappedMessage:
    """A canonical message in a file, parsed by :func:`parse` without reading
    it into memory: the operations the parser uses (``find``, ``count``,
    ``startswith``, slices, ``len``) over a read-only memory map.  Slices the
    parser takes are bounded (header blocks, single lines)."""

    def __init__(self, fileno: int, length: int) -> None:
        self._map = mmap.mmap(fileno, length, access=mmap.ACCESS_READ) if length else None
        self._len = length

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    def __enter__(self) -> MappedMessage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, key: slice) -> bytes:
        if self._map is None:
            return b""
        return self._map[key]

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        if self._map is None:
            return -1
        return self._map.find(sub, start, self._len if end is None else end)

    def startswith(self, prefix: bytes, start: int = 0) -> bool:
        return self[start : start + len(prefix)] == prefix

    def count(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        end = self._len if end is None else min(end, self._len)
        if len(sub) != 1:
            return self[start:end].count(sub)
        n = 0
        for pos in range(start, end, CHUNK):
            n += self[pos : min(end, pos + CHUNK)].count(sub)
        return n


Buf = bytes | MappedMessage


@dataclass(frozen=True, slots=True)
class Parsed:
    """Everything FETCH needs, computed once."""

    envelope: list[Value]
    bodystructure: list[Value]
    body: list[Value]
    tree: Node
    header_end: int  # offset just past the empty line that ends the header
    digest: bytes = b""  # content_digest of the message; b"" if stored without one

    def to_list(self) -> list[object]:
        return [self.envelope, self.bodystructure, self.body, self.tree, self.header_end, self.digest]

    @classmethod
    def from_list(cls, value: Sequence[object]) -> Parsed:
        if len(value) == 5:  # stored before the digest was kept
            env, bs, body, tree, hend = value
            digest: object = b""
        else:
            env, bs, body, tree, hend, digest = value
        if not isinstance(digest, bytes):
            raise ValueError("parse result: digest is not bytes")
        return cls(env, bs, body, tree, int(hend), digest)  # type: ignore[arg-type, call-overload]


def content_digest(msg: Buf) -> bytes:
    """BLAKE2b digest (:data:`DIGEST_SIZE` octets) of a canonical message,
    read :data:`CHUNK` octets at a time when it is mapped from a file."""
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    if isinstance(msg, bytes):
        h.update(msg)
    else:
        for pos in range(0, len(msg), CHUNK):
            h.update(msg[pos : pos + CHUNK])
    return h.digest()


# -- header fields ---------------------------------------------------------


def _header_end(msg: Buf, start: int, end: int) -> int:
    """Offset of the body of the entity starting at ``start`` (just past the
    empty line; ``end`` when there is none)."""
    if msg.startswith(b"\r\n", start) or (start < end and msg[start : start + 1] == b"\n"):
        return start + (2 if msg.startswith(b"\r\n", start) else 1)
    i = msg.find(b"\r\n\r\n", start, end)
    j = msg.find(b"\n\n", start, i + 2 if i >= 0 else end)
    if j >= 0 and (i < 0 or j + 2 <= i + 4):
        return j + 2
    return i + 4 if i >= 0 else end


def header_fields(block: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, unfolded raw value) for each field of a header block."""
    fields: list[tuple[str, bytes]] = []
    name: str | None = None
    value: list[bytes] = []
    for line in block.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and name is not None:
            value.append(line)
            continue
        if name is not None:
            fields.append((name, b"".join(value).strip()))
            if len(fields) >= MAX_HEADER_FIELDS:
                name = None
                break
        colon = line.find(b":")
        if colon <= 0:
            name = None
            continue
        name = line[:colon].strip().decode("latin-1").lower()
        value = [line[colon + 1 :]]
    if name is not None:
        fields.append((name, b"".join(value).strip()))
    return fields


def _first(fields: list[tuple[str, bytes]], name: str) -> bytes | None:
    for n, v in fields:
        if n == name:
            return v
    return None


def _nstr(value: bytes | None) -> str | bytes | None:
    if value is None:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return value


# -- Content-Type and friends (RFC 2045 §5.1) ------------------------------

_TOKEN_RE = re.compile(rb'\s*([^\s;="]+)\s*')
_VALUE_RE = re.compile(rb"[^;\s]*")


def _parse_params(rest: bytes) -> list[Value]:
    params: list[Value] = []
    i, n = 0, len(rest)
    while i < n and len(params) < 200:
        semi = rest.find(b";", i)
        if semi < 0:
            break
        i = semi + 1
        m = _TOKEN_RE.match(rest, i)
        if not m:
            continue
        attr = m.group(1)
        i = m.end()
        if i >= n or rest[i : i + 1] != b"=":
            continue
        i += 1
        while i < n and rest[i : i + 1] in (b" ", b"\t"):
            i += 1
        if rest[i : i + 1] == b'"':
            i += 1
            out = bytearray()
            while i < n and rest[i : i + 1] != b'"':
                if rest[i : i + 1] == b"\\" and i + 1 < n:
                    i += 1
                out += rest[i : i + 1]
                i += 1
            i += 1
            val = bytes(out)
        else:
            m2 = _VALUE_RE.match(rest, i)
            assert m2 is not None
            val = m2.group(0)
            i = m2.end()
        params += [_nstr(attr.upper()), _nstr(val)]
    return params


def _content_type(value: bytes | None) -> tuple[str, str, list[Value], bool]:
    """(type, subtype, params, was_given)."""
    if value is None:
        return "text", "plain", ["CHARSET", "us-ascii"], False
    main, _, _ = value.partition(b";")
    typ, slash, sub = main.strip().partition(b"/")
    t = typ.strip().decode("latin-1").lower()
    s = sub.strip().decode("latin-1").lower()
    params = _parse_params(value[len(main) :])
    if not slash or not t or not s or not re.fullmatch(r"[!-~]+", t + s):
        return "text", "plain", ["CHARSET", "us-ascii"], False
    return t, s, params, True


def _param(params: list[Value], name: str) -> str | None:
    for i in range(0, len(params) - 1, 2):
        if isinstance(params[i], str) and str(params[i]).upper() == name:
            v = params[i + 1]
            return v if isinstance(v, str) else (v.decode("latin-1") if isinstance(v, bytes) else None)
    return None


def _disposition(value: bytes | None) -> Value:
    if value is None:
        return None
    main, _, _ = value.partition(b";")
    kind = main.strip()
    if not kind:
        return None
    params = _parse_params(value[len(main) :])
    return [_nstr(kind), params or None]


def _language(value: bytes | None) -> Value:
    if value is None:
        return None
    langs = [x.strip() for x in value.split(b",") if x.strip()]
    if not langs:
        return None
    if len(langs) == 1:
        return _nstr(langs[0])
    return [_nstr(x) for x in langs]


# -- addresses (RFC 5322 §3.4) ----------------------------------------------


_ADDR_TOKEN_RE = re.compile(rb'"(?:[^"\\]|\\.)*"?|\((?:[^()\\]|\\.)*\)?|<[^>]*>?|[,:;]|[^",:;(<]+|[(<]')


def _split_top(value: bytes, seps: bytes) -> list[tuple[bytes, int]]:
    """Split at separators outside quotes, comments and angle brackets;
    returns (piece, separator) pairs (separator 0 at the end)."""
    out: list[tuple[bytes, int]] = []
    cur: list[bytes] = []
    for m in _ADDR_TOKEN_RE.finditer(value):
        tok = m.group(0)
        if len(tok) == 1 and tok[0] in seps:
            out.append((b"".join(cur), tok[0]))
            cur = []
        else:
            cur.append(tok)
    out.append((b"".join(cur), 0))
    return out


_COMMENT_RE = re.compile(rb"\((?:[^()\\]|\\.)*\)")


def _unquote(b: bytes) -> bytes:
    b = b.strip()
    if len(b) >= 2 and b[:1] == b'"' and b[-1:] == b'"':
        return re.sub(rb"\\(.)", rb"\1", b[1:-1])
    return b


_FWS_RE = re.compile(rb"\s+")


def _no_fws(b: bytes) -> bytes:
    """An unquoted dot-atom or domain without the folding white space RFC
    5322 §3.4.1 (obs-local-part, obs-domain) allows between its pieces."""
    return _FWS_RE.sub(b"", b)


def _mailbox(piece: bytes) -> list[Value] | None:
    piece = piece.strip()
    if not piece:
        return None
    lt = piece.rfind(b"<")
    gt = piece.rfind(b">")
    if lt >= 0 and (gt > lt or gt < 0):  # a missing ">" ends at the end
        name_part = _COMMENT_RE.sub(b" ", piece[:lt]).strip()
        addr = _COMMENT_RE.sub(b"", piece[lt + 1 : gt if gt > lt else len(piece)]).strip()
        name: bytes | None = _unquote(name_part) or None
        if name is not None and not name_part.startswith(b'"'):
            name = b" ".join(name.split())
    else:
        # addr-spec (comment): the comment names the owner (the last one, as
        # written after the address by convention)
        comments = _COMMENT_RE.findall(piece)
        name = b" ".join(comments[-1][1:-1].split()) or None if comments else None
        addr = _COMMENT_RE.sub(b"", piece).strip()
    adl: bytes | None = None
    if addr.startswith(b"@") and b":" in addr:
        adl, _, addr = addr.partition(b":")
    local, at, domain = addr.rpartition(b"@")
    if not at:
        local, domain = addr, b""
    local = local.strip()
    local = _unquote(local) if local.startswith(b'"') else _no_fws(local)
    domain = _no_fws(domain)
    return [_nstr(name), _nstr(adl), _nstr(local) if local else None, _nstr(domain) if at else None]


MAX_ADDRESSES = 1000  # per header field; the rest is not shown in ENVELOPE


def addresses(value: bytes | None) -> Value:
    """An ENVELOPE address list from a raw header value (None when empty).
    One pass over the value (a group is ``name: a, b;``)."""
    if value is None:
        return None
    out: list[Value] = []
    in_group = False
    for piece, sep in _split_top(value, b",:;"):
        if len(out) >= MAX_ADDRESSES:
            break
        if sep == 0x3A and not in_group:
            group_name = _unquote(_COMMENT_RE.sub(b"", piece).strip())
            out.append([None, None, _nstr(group_name), None])
            in_group = True
            continue
        mb = _mailbox(piece)
        if mb is not None:
            out.append(mb)
        if sep == 0x3B and in_group:
            out.append([None, None, None, None])
            in_group = False
    if in_group:
        out.append([None, None, None, None])
    return out or None


def envelope(fields: list[tuple[str, bytes]]) -> list[Value]:
    """The ENVELOPE of a message from its header fields (RFC 9051 §7.5.2)."""
    frm = addresses(_first(fields, "from"))
    sender = addresses(_first(fields, "sender")) or frm
    reply_to = addresses(_first(fields, "reply-to")) or frm
    return [
        _nstr(_first(fields, "date")),
        _nstr(_first(fields, "subject")),
        frm,
        sender,
        reply_to,
        addresses(_first(fields, "to")),
        addresses(_first(fields, "cc")),
        addresses(_first(fields, "bcc")),
        _nstr(_first(fields, "in-reply-to")),
        _nstr(_first(fields, "message-id")),
    ]


# -- MIME tree ---------------------------------------------------------------


def _lines(msg: Buf, start: int, end: int) -> int:
    """body-fld-lines: the line breaks in the body.  A part's body ends
    before the CRLF that precedes its boundary, so its last line has no
    break and is not counted; Dovecot counts the same way."""
    if end <= start:
        return 0
    return msg.count(b"\n", start, end)


class _Budget:
    def __init__(self) -> None:
        self.parts = 0


def _entity(
    msg: Buf,
    start: int,
    end: int,
    depth: int,
    budget: _Budget,
    default_type: bytes | None = None,
    known: tuple[int, list[tuple[str, bytes]]] | None = None,
) -> tuple[list[Value], list[Value], Node]:
    """Parse the entity msg[start:end]; returns (bodystructure, body, node).
    ``known``: its body start and header fields when already parsed."""
    budget.parts += 1
    if known is not None:
        bstart, fields = known
    else:
        bstart = _header_end(msg, start, end)
        fields = header_fields(msg[start : min(bstart, start + MAX_HEADER_BYTES)])
    ctype_raw = _first(fields, "content-type")
    if ctype_raw is None and default_type is not None:
        ctype_raw = default_type
    t, s, params, _given = _content_type(ctype_raw)
    if t == "text" and _param(params, "CHARSET") is None:  # RFC 2046 4.1.2: the default
        params = ["CHARSET", "us-ascii", *params]
    enc_raw = _first(fields, "content-transfer-encoding")
    encoding = enc_raw.strip().decode("latin-1").lower() if enc_raw else "7bit"
    if not encoding or not re.fullmatch(r"[!-~]+", encoding):
        encoding = "7bit"
    ext_tail: list[Value] = [
        _disposition(_first(fields, "content-disposition")),
        _language(_first(fields, "content-language")),
        _nstr(_first(fields, "content-location")),
    ]
    charset = _param(params, "CHARSET") or ""
    size = end - bstart
    deep_ok = depth < MAX_MIME_DEPTH and budget.parts < MAX_MIME_PARTS
    if t == "multipart" and deep_ok:
        boundary = _param(params, "BOUNDARY")
        children: list[Node] = []
        bs_parts: list[Value] = []
        body_parts: list[Value] = []
        child_default = b"message/rfc822" if s == "digest" else None
        for cs, ce in _split_multipart(msg, bstart, end, boundary):
            if budget.parts >= MAX_MIME_PARTS:
                break
            cbs, cbody, cnode = _entity(msg, cs, ce, depth + 1, budget, child_default)
            bs_parts.append(cbs)
            body_parts.append(cbody)
            children.append(cnode)
        if not children:  # RFC 2046 requires one part; present an empty text part
            empty: list[Value] = ["text", "plain", ["CHARSET", "us-ascii"], None, None, "7bit", 0, 0]
            bs_parts.append([*empty, None, None, None, None])
            body_parts.append(empty)
            children.append([bstart, bstart, bstart, LEAF, [], "7bit", "us-ascii"])
        bs = [*bs_parts, s, params or None, *ext_tail]
        body = [*body_parts, s]
        return bs, body, [start, bstart, end, MULTIPART, children, encoding, charset]
    if t == "multipart":  # nested too deep to parse: opaque data
        t, s = "application", "octet-stream"
    basic: list[Value] = [
        t,
        s,
        params or None,
        _nstr(_first(fields, "content-id")),
        _nstr(_first(fields, "content-description")),
        encoding,
        size,
    ]
    if t == "message" and s in ("rfc822", "global") and deep_ok and encoding in ("7bit", "8bit", "binary"):
        inner_end = _header_end(msg, bstart, end)
        inner_fields = header_fields(msg[bstart : min(inner_end, bstart + MAX_HEADER_BYTES)])
        ibs, ibody, inode = _entity(msg, bstart, end, depth + 1, budget, known=(inner_end, inner_fields))
        lines = _lines(msg, bstart, end)
        env = envelope(inner_fields)
        bs = [*basic, env, ibs, lines, _nstr(_first(fields, "content-md5")), *ext_tail]
        body = [*basic, env, ibody, lines]
        return bs, body, [start, bstart, end, MESSAGE, [inode], encoding, charset]
    if t == "message" and s in ("rfc822", "global"):
        # not parsed (encoded, or nested too deep) — RFC 9051's grammar still
        # wants the message form: an empty envelope and an empty text body
        env = [None] * 10
        blank: list[Value] = ["text", "plain", ["CHARSET", "us-ascii"], None, None, "7bit", 0, 0]
        lines = _lines(msg, bstart, end)
        bs = [*basic, env, [*blank, None, None, None, None], lines, _nstr(_first(fields, "content-md5")), *ext_tail]
        return bs, [*basic, env, blank, lines], [start, bstart, end, LEAF, [], encoding, charset]
    if t == "text":
        basic.append(_lines(msg, bstart, end))
    bs = [*basic, _nstr(_first(fields, "content-md5")), *ext_tail]
    return bs, basic, [start, bstart, end, LEAF, [], encoding, charset]


def _split_multipart(msg: Buf, start: int, end: int, boundary: str | None) -> list[tuple[int, int]]:
    """(start, end) of each body part between ``--boundary`` delimiter lines
    (RFC 2046 §5.1.1); the CRLF before a delimiter belongs to the delimiter."""
    if not boundary:
        return []
    delim = b"--" + boundary.encode("latin-1", "replace")
    parts: list[tuple[int, int]] = []
    pos = start
    cur: int | None = None
    while pos <= end:
        i = msg.find(delim, pos, end)
        if i < 0:
            break
        at_line_start = i == start or msg[i - 1 : i] == b"\n"
        after = i + len(delim)
        if not at_line_start:
            pos = after
            continue
        closing = msg.startswith(b"--", after)
        eol = msg.find(b"\n", after, end)
        line_end = end if eol < 0 else eol + 1
        if not closing and msg[after:line_end].strip(b" \t\r\n"):
            # "--b1" is not a delimiter of boundary "b": only transport
            # padding may follow the boundary (RFC 2046 §5.1.1)
            pos = after
            continue
        if cur is not None:
            pend = i
            if pend > cur and msg[pend - 1 : pend] == b"\n":
                pend -= 1
                if pend > cur and msg[pend - 1 : pend] == b"\r":
                    pend -= 1
            parts.append((cur, max(cur, pend)))
        if closing:
            cur = None
            break
        cur = line_end
        pos = line_end
        if len(parts) >= MAX_MIME_PARTS:
            break
    if cur is not None:  # no closing delimiter: the part runs to the end
        parts.append((cur, end))
    return parts


def parse(msg: Buf) -> Parsed:
    """Parse a canonical message (bytes, or a :class:`MappedMessage` for
    one too big to hold in memory); never raises on malformed input."""
    hend = _header_end(msg, 0, len(msg))
    fields = header_fields(msg[: min(hend, MAX_HEADER_BYTES)])
    bs, body, tree = _entity(msg, 0, len(msg), 0, _Budget(), known=(hend, fields))
    return Parsed(envelope(fields), bs, body, tree, hend, content_digest(msg))


# -- section addressing (RFC 9051 §6.4.5) ------------------------------------


def _embedded(node: Node) -> Node:
    return node[4][0] if node[3] == MESSAGE and node[4] else node


def find_part(tree: Node, section: Sequence[int]) -> Node | None:
    """The node addressed by section numbers (empty: the message itself)."""
    cur = tree
    for depth, n in enumerate(section):
        if depth > 0:
            if cur[3] == MESSAGE:
                cur = _embedded(cur)
            elif cur[3] != MULTIPART:
                return None
        if cur[3] == MULTIPART:
            if not 1 <= n <= len(cur[4]):
                return None
            cur = cur[4][n - 1]
        elif n != 1:
            return None
    return cur


def section_range(tree: Node, section: Sequence[int], what: str = "") -> tuple[int, int] | None:
    """(start, end) offsets of ``BODY[section.what]``; None if it does not exist.

    ``what`` is "" (the part's content, or the whole message for an empty
    section), "HEADER", "TEXT" (of the message, or of an encapsulated
    message/rfc822 part) or "MIME" (the part's own MIME header)."""
    node = find_part(tree, section)
    if node is None:
        return None
    what = what.upper()
    if what == "":
        return (node[0], node[2]) if not section else (node[1], node[2])
    if what == "MIME":
        return None if not section else (node[0], node[1])
    if section:
        if node[3] != MESSAGE:
            return None
        node = _embedded(node)
    if what == "HEADER":
        return node[0], node[1]
    if what == "TEXT":
        return node[1], node[2]
    return None


def text_leaves(tree: Node) -> list[Node]:
    """Every single-part node, depth first (for body search)."""
    out: list[Node] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if node[3] == LEAF:
            out.append(node)
        else:
            stack.extend(reversed(node[4]))
    return out
