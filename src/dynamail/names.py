"""Validation of every name that becomes part of a file path.

Domain, account and mailbox names end up as directory or file names on the
(possibly shared) storage, so a hostile name must never be able to escape its
directory or collide with the files the server keeps beside it.  Every layer
(directory, storage, protocols) calls these functions before touching the
file system; the error carries a message fit to show to a client.
"""

from __future__ import annotations

import re
import unicodedata

MAX_DOMAIN_NAME = 253  # RFC 1035 section 2.3.4
MAX_ACCOUNT_NAME = 64  # RFC 5321 section 4.5.3.1.1 (local-part)
MAX_MAILBOX_COMPONENT = 200
MAX_MAILBOX_NAME = 1000
MAX_MAILBOX_DEPTH = 32

_DOMAIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_ACCOUNT_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._+-]*[a-z0-9_+-])?$")


class BadName(ValueError):
    """A name that cannot be used; ``str(exc)`` is a message for the client."""


def _reject_controls(name: str, what: str) -> None:
    for ch in name:
        if ch == "\x00" or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise BadName(f"{what} contains a control or invalid character")


def domain_name(name: str) -> str:
    """Return the canonical (lower-case) form of a domain name or raise BadName."""
    if not isinstance(name, str) or not name:
        raise BadName("domain name is empty")
    if len(name) > MAX_DOMAIN_NAME:
        raise BadName("domain name is too long")
    _reject_controls(name, "domain name")
    canon = name.strip().lower().rstrip(".")
    if canon in ("", ".", "..") or "/" in canon or "\\" in canon or not _DOMAIN_RE.match(canon):
        raise BadName(f"invalid domain name: {name!r}")
    return canon


def account_name(name: str) -> str:
    """Return the canonical (lower-case) form of an account name or raise BadName."""
    if not isinstance(name, str) or not name:
        raise BadName("account name is empty")
    if len(name) > MAX_ACCOUNT_NAME:
        raise BadName("account name is too long")
    _reject_controls(name, "account name")
    canon = name.strip().lower()
    if canon in (".", "..") or ".." in canon or not _ACCOUNT_RE.match(canon):
        raise BadName(f"invalid account name: {name!r}")
    return canon


def mailbox_name(name: str, separator: str = "/") -> str:
    """Validate a mailbox name (components separated by ``separator``).

    Returns the name with the INBOX component canonicalised to ``INBOX``.
    Empty components, ``.``/``..`` components, control characters and
    over-long names or nesting are refused.
    """
    if not isinstance(name, str) or not name:
        raise BadName("mailbox name is empty")
    if len(name) > MAX_MAILBOX_NAME:
        raise BadName("mailbox name is too long")
    _reject_controls(name, "mailbox name")
    if "\\" in name:
        raise BadName("mailbox name contains a backslash")
    parts = name.split(separator)
    if len(parts) > MAX_MAILBOX_DEPTH:
        raise BadName("mailbox name is nested too deeply")
    for part in parts:
        if part in ("", ".", ".."):
            raise BadName(f"invalid mailbox name: {name!r}")
        if len(part) > MAX_MAILBOX_COMPONENT:
            raise BadName("mailbox name component is too long")
    if parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    return separator.join(parts)
