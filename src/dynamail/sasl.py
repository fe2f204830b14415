"""SASL response decoding shared by the protocol cores (RFC 4422, RFC 4616).

Sans-IO and policy-free: the cores keep their own replies.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["decode_response", "split_plain"]


def decode_response(text: str) -> str | None:
    """The client's base64 response as text (``=`` is empty); None if undecodable."""
    try:
        decoded = b"" if text == "=" else base64.b64decode(text, validate=True)
        return decoded.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def split_plain(value: str) -> tuple[str, str, str] | None:
    """A PLAIN message as (authzid, authcid, password); None if malformed."""
    parts = value.split("\0")
    if len(parts) != 3 or not parts[1]:
        return None
    return parts[0], parts[1], parts[2]
