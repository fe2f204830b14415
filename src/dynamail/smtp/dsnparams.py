"""The DSN parameters ENVID and ORCPT (RFC 3461 4.2, 4.4): validate, decode, re-encode.

Both arrive as *xtext* (RFC 3461 4): printable ASCII except ``+`` and ``=``,
with ``+XX`` (two upper-case hex digits) for anything else.  They travel a
long way: into the queue on disk, to the next hop's ``MAIL``/``RCPT`` and,
decoded, into the header fields of a delivery status notification
(``Original-Envelope-Id``, ``Original-Recipient``, RFC 3464 2.2.1, 2.3.2).
A value that decodes to a CR or LF would therefore inject header fields into
a report, so the rule here is strict: a value is accepted only if it is
well-formed xtext whose decoded text is printable, and what is kept is the
canonical re-encoding of that text.  The report side decodes again and still
refuses anything unprintable, so a queue entry written before these checks
cannot inject either.

For ``ORCPT=utf-8;…`` (RFC 6533 3) the address may also carry UTF-8
characters (the client announced SMTPUTF8); they are kept as they are.
"""

from __future__ import annotations

import re

#: RFC 3461 4.4: "the ENVID parameter value MUST NOT exceed 100 characters".
MAX_ENVID = 100
#: RFC 3461 4.2: an ORCPT parameter "MUST NOT exceed 500 characters".
MAX_ORCPT = 500

_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}")
_HEX = frozenset("0123456789ABCDEF")


class DsnParamError(ValueError):
    """A malformed ENVID or ORCPT value; the text names what is wrong."""


def _printable(ch: str, utf8: bool) -> bool:
    return 32 <= ord(ch) <= 126 or (utf8 and ord(ch) >= 0x80 and ch.isprintable())


def decode_xtext(value: str, *, utf8: bool = False) -> str:
    """The text of an xtext ``value``; :class:`DsnParamError` unless it is
    well-formed and decodes to printable characters only."""
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "+":
            hexpair = value[i + 1 : i + 3]
            if len(hexpair) != 2 or not set(hexpair) <= _HEX:
                raise DsnParamError("bad xtext escape")
            ch = chr(int(hexpair, 16))
            i += 3
        elif ch == "=" or not (33 <= ord(ch) <= 126 or (utf8 and ord(ch) >= 0x80)):
            raise DsnParamError("character not allowed in xtext")
        else:
            i += 1
        if not _printable(ch, utf8):
            raise DsnParamError("xtext decodes to a control character")
        out.append(ch)
    return "".join(out)


def encode_xtext(text: str, *, utf8: bool = False) -> str:
    """Canonical xtext of ``text``: ``+XX`` exactly for ``+``, ``=``, space
    and (unless ``utf8``) non-ASCII octets."""
    parts: list[str] = []
    for ch in text:
        if (33 <= ord(ch) <= 126 and ch not in "+=") or (utf8 and ord(ch) >= 0x80):
            parts.append(ch)
        else:
            parts.append("".join(f"+{b:02X}" for b in ch.encode()))
    return "".join(parts)


def check_envid(value: str | None) -> str:
    """The canonical form of an ``ENVID=`` value (RFC 3461 4.4)."""
    if not value:
        raise DsnParamError("ENVID needs a value")
    if len(value) > MAX_ENVID:
        raise DsnParamError("ENVID longer than 100 characters")
    return encode_xtext(decode_xtext(value))


def check_orcpt(value: str | None, *, utf8: bool = False) -> str:
    """The canonical form of an ``ORCPT=addr-type;xtext`` value (RFC 3461 4.2)."""
    if not value:
        raise DsnParamError("ORCPT needs a value")
    if len(value) > MAX_ORCPT:
        raise DsnParamError("ORCPT longer than 500 characters")
    addr_type, semi, address = value.partition(";")
    if not semi or not _ADDR_TYPE.fullmatch(addr_type):
        raise DsnParamError("ORCPT needs addr-type;address")
    wide = utf8 and addr_type.lower() == "utf-8"
    text = decode_xtext(address, utf8=wide)
    if not text:
        raise DsnParamError("ORCPT address is empty")
    return f"{addr_type};{encode_xtext(text, utf8=wide)}"


def envid_for_report(value: str | None) -> str | None:
    """The decoded ENVID for an ``Original-Envelope-Id`` field, or None when
    there is none or it is not valid (never a control character)."""
    if not value:
        return None
    try:
        return decode_xtext(check_envid(value))
    except DsnParamError:
        return None


def orcpt_for_report(value: str | None) -> str | None:
    """``addr-type;address`` decoded for an ``Original-Recipient`` field, or
    None when there is none or it is not valid."""
    if not value:
        return None
    try:
        canonical = check_orcpt(value, utf8=True)
    except DsnParamError:
        return None
    addr_type, _, address = canonical.partition(";")
    return f"{addr_type};{decode_xtext(address, utf8=addr_type.lower() == 'utf-8')}"
