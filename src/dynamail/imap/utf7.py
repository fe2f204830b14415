"""Modified UTF-7 for mailbox names (RFC 3501 section 5.1.3).

IMAP4rev1 clients name mailboxes in modified UTF-7; clients that ENABLE
UTF8=ACCEPT or IMAP4rev2 (RFC 9051 section 5.1) use UTF-8 directly.  The
decoder is strict: anything a correct encoder would not produce (bad base64,
a lone ``&``, an encoded printable ASCII character, an unpaired surrogate)
raises :class:`ValueError`, so each name has exactly one wire form.
"""

from __future__ import annotations

import base64


def encode(name: str) -> str:
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            data = "".join(run).encode("utf-16-be")
            b64 = base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",")
            out.append("&" + b64 + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def decode(name: str) -> str:
    out: list[str] = []
    i = 0
    n = len(name)
    while i < n:
        ch = name[i]
        o = ord(ch)
        if o < 0x20 or o > 0x7E:
            raise ValueError("mailbox name is not modified UTF-7")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated modified UTF-7 sequence")
        chunk = name[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        b64 = chunk.replace(",", "/")
        if any(c not in _B64 for c in b64) or len(b64) % 4 == 1:
            raise ValueError("bad modified UTF-7 base64")
        raw = base64.b64decode(b64 + "=" * (-len(b64) % 4))
        if len(raw) % 2:
            raise ValueError("bad modified UTF-7 length")
        try:
            text = raw.decode("utf-16-be")
        except UnicodeDecodeError:
            raise ValueError("bad UTF-16 in modified UTF-7") from None
        if any(0x20 <= ord(c) <= 0x7E for c in text):
            raise ValueError("printable ASCII must not be encoded")
        out.append(text)
    result = "".join(out)
    if encode(result) != name:
        raise ValueError("mailbox name is not in canonical modified UTF-7")
    return result


_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
