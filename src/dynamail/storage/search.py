"""Text search over one stored message (RFC 9051 §6.4.4: BODY, TEXT, HEADER).

Matching is a case-insensitive substring test on decoded text: header
values have their RFC 2047 encoded words decoded, body parts their
Content-Transfer-Encoding (base64, quoted-printable) and charset.  Runs on a
reader thread, on bytes already read from the data file.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.header

from dynamail import mime


def _decode_header_value(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError, AssertionError):
        return text


def _decode_part(data: bytes, encoding: str, charset: str) -> str:
    if encoding == "base64":
        try:
            data = base64.b64decode(b"".join(data.split()), validate=False)
        except (binascii.Error, ValueError):
            pass
    elif encoding == "quoted-printable":
        try:
            data = binascii.a2b_qp(data)
        except (binascii.Error, ValueError):
            pass
    name = charset or "utf-8"
    try:
        codecs.lookup(name)
    except LookupError:
        name = "utf-8"
    return data.decode(name, "replace")


def header_text(message: bytes, header_end: int, field: str | None) -> str:
    """Decoded header values (of one field, or all fields with names)."""
    out = []
    for name, value in mime.header_fields(message[:header_end]):
        if field is None:
            out.append(f"{name}: {_decode_header_value(value)}")
        elif name == field:
            out.append(_decode_header_value(value))
    return "\n".join(out)


def body_text(message: bytes, tree: mime.Node) -> str:
    pieces = []
    for node in mime.text_leaves(tree):
        pieces.append(_decode_part(message[node[1] : node[2]], str(node[5]), str(node[6])))
    return "\n".join(pieces)


def matches(message: bytes, parsed: mime.Parsed, where: str, text: str) -> bool:
    """Whether ``text`` occurs (case-insensitively) in ``where`` of the message:
    "TEXT", "BODY" or a header field name."""
    needle = text.casefold()
    key = where.upper()
    if key == "BODY":
        return needle in body_text(message, parsed.tree).casefold()
    if key == "TEXT":
        if needle in message.decode("utf-8", "replace").casefold():
            return True
        if needle in header_text(message, parsed.header_end, None).casefold():
            return True
        return needle in body_text(message, parsed.tree).casefold()
    field = where.lower()
    present = any(name == field for name, _ in mime.header_fields(message[: parsed.header_end]))
    if not present:
        return False
    return needle in header_text(message, parsed.header_end, field).casefold()
