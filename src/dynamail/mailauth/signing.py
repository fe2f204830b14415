"""DKIM signing of outgoing mail (RFC 6376; Ed25519 per RFC 8463) with dkimpy.

The signing domain is the domain of the message's ``From:`` address (so
DMARC finds the signature aligned) when it is one of our domains with
active keys (``dynamail.directory.dkim``); every active key signs, so a
domain with an RSA and an Ed25519 key adds two ``DKIM-Signature`` fields.
Canonicalization is relaxed/relaxed, headers are dkimpy's recommended set
with ``From`` over-signed.

:meth:`Signer.signature` returns the fields to put in front of the message
(``b""`` when nothing signs): callers sign once, before the first delivery
attempt, and keep the signed bytes, so every retry sends the same message.
The whole message is read into memory once while it is signed (dkimpy
hashes a byte string): at most the SMTP ``max_message_size``.

Sans-IO apart from the directory read of the keys; the callers run it in a
worker thread.
"""

from __future__ import annotations

import email.utils
import logging
from pathlib import Path
from typing import Any

import dkim

from dynamail.directory.dkim import SigningKey

log = logging.getLogger("dynamail.mailauth")

MAX_HEADER_SCAN = 256 * 1024
def header_section(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n", 0, MAX_HEADER_SCAN)
    if end < 0:
        end = message.find(b"\n\n", 0, MAX_HEADER_SCAN)
    return message[: end if end >= 0 else MAX_HEADER_SCAN]


def header_values(header: bytes, name: bytes) -> list[str]:
    """Unfolded values of every field called ``name`` (case-insensitive)."""
    values: list[str] = []
    current: list[bytes] | None = None
    want = name.lower() + b":"
    for line in header.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            values.append(b" ".join(x.strip() for x in current).decode("utf-8", "replace"))
            current = None
        if line.lower().startswith(want):
            current = [line[len(want):]]
    if current is not None:
        values.append(b" ".join(x.strip() for x in current).decode("utf-8", "replace"))
    return values


def from_domain(message: bytes) -> str | None:
    """The domain of the single ``From:`` address, lower case (None if not exactly one)."""
    values = header_values(header_section(message), b"from")
    if len(values) != 1:
        return None
    addresses = [a for _, a in email.utils.getaddresses(values) if a]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    domain = addresses[0].rpartition("@")[2].strip().rstrip(".").lower()
    return domain or None


def read_message(message: Path | bytes) -> bytes:
    return message if isinstance(message, bytes) else message.read_bytes()


def read_head(message: Path | bytes) -> bytes:
    """The start of the message, enough for its header section."""
    if isinstance(message, bytes):
        return message[:MAX_HEADER_SCAN]
    with open(message, "rb") as fh:
        return fh.read(MAX_HEADER_SCAN)


class Signer:
    """Signs messages with the keys of our domains (read from the directory)."""

    def __init__(self, directory: Any) -> None:
        self.directory = directory

    def keys_for(self, domain: str) -> list[SigningKey]:
        getter = getattr(self.directory, "dkim_signing_keys", None)
        if getter is None:
            return []
        keys: list[SigningKey] = getter(domain)
        return keys

    def signature(self, message: Path | bytes) -> bytes:
        """The ``DKIM-Signature`` fields for ``message`` (``b""`` when none)."""
        domain = from_domain(read_head(message))
        keys = self.keys_for(domain) if domain is not None else []
        if not keys:
            return b""  # the body is never read for nothing
        data = read_message(message)
        out = b""
        for key in keys:
            algorithm = b"ed25519-sha256" if key.algorithm == "ed25519" else b"rsa-sha256"
            out += dkim.sign(
                data, key.selector.encode("ascii"), key.domain.encode("ascii"), key.private,
                canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=algorithm,
            )
        return out
