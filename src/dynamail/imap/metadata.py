"""METADATA (RFC 5464): annotations on the server ("" mailbox) and on each
mailbox, kept with the account.

Entries live in one per-account blob (``AccountStore.put_meta``, key
:data:`BLOB_KEY`, JSON), under the same ownership and fencing as the mail.
A mailbox's entries are filed under its MAILBOXID (``M`` + UIDVALIDITY, see
:mod:`dynamail.imap.objectid`), so RENAME keeps them and a mailbox deleted
and created again starts empty (DELETE drops them).  Server entries and
``/shared`` entries belong to the account too: nobody else sees its
mailboxes, so ``/shared`` and ``/private`` differ only by name.

Limits (:mod:`dynamail.imap.limits`): ``METADATA_MAXSIZE`` octets per value
(``NO [METADATA MAXSIZE n]``), ``METADATA_MAX_ENTRIES`` entries per
mailbox and ``METADATA_TOTAL`` octets per account (``NO [METADATA
TOOMANY]``), entry names at most ``METADATA_NAME`` octets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from dynamail.imap import limits

BLOB_KEY = "imap-metadata"
SERVER = ""  # the key of server entries


class MetadataError(Exception):
    """A refused SETMETADATA; ``code`` is the response code."""

    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.code = code


def valid_entry(name: str) -> bool:
    """RFC 5464 section 3.2 entry names: ``/private/...`` or ``/shared/...``,
    printable ASCII without ``*``, ``%``, ``//`` or a trailing ``/``."""
    low = name.lower()
    if not (low.startswith("/private/") or low.startswith("/shared/")):
        return False
    if len(name) > limits.METADATA_NAME or name.endswith("/") or "//" in name:
        return False
    return all(0x21 <= ord(c) <= 0x7E and c not in "*%" for c in name)


class Store:
    """The account's entries: ``{owner: {entry: value}}``; owner is
    :data:`SERVER` or a MAILBOXID.  Entry names compare case-insensitively
    (kept in lower case)."""

    def __init__(self, data: dict[str, dict[str, str]] | None = None) -> None:
        self.data = data or {}

    @classmethod
    def load(cls, blob: bytes | None) -> Store:
        if not blob:
            return cls()
        try:
            raw = json.loads(blob)
        except ValueError:
            return cls()
        if not isinstance(raw, dict):
            return cls()
        return cls({str(k): {str(e): str(v) for e, v in d.items()} for k, d in raw.items() if isinstance(d, dict)})

    def dump(self) -> bytes | None:
        kept = {k: v for k, v in self.data.items() if v}
        return json.dumps(kept, sort_keys=True).encode() if kept else None

    def size(self) -> int:
        return sum(len(e) + len(v.encode()) for d in self.data.values() for e, v in d.items())

    def get(self, owner: str, entries: Iterable[str], depth: str) -> list[tuple[str, str | None]]:
        """Requested entries (NIL when absent) and, with depth "1" or
        "infinity", their descendants that have values."""
        have = self.data.get(owner, {})
        out: dict[str, str | None] = {}
        for e in entries:
            key = e.lower()
            out[e] = have.get(key)
            if depth != "0":
                prefix = key + "/"
                for name in sorted(have):
                    if name.startswith(prefix) and (depth == "infinity" or "/" not in name[len(prefix):]):
                        out[name] = have[name]
        return list(out.items())

    def set(self, owner: str, changes: list[tuple[str, str | None]]) -> None:
        """Apply all of ``changes`` or none (RFC 5464 section 4.3)."""
        box = dict(self.data.get(owner, {}))
        for entry, value in changes:
            if value is None:
                box.pop(entry.lower(), None)
            else:
                if len(value.encode()) > limits.METADATA_MAXSIZE:
                    raise MetadataError("Value too large", f"METADATA MAXSIZE {limits.METADATA_MAXSIZE}")
                box[entry.lower()] = value
        if len(box) > limits.METADATA_MAX_ENTRIES:
            raise MetadataError("Too many entries", "METADATA TOOMANY")
        before = self.data.get(owner)
        self.data[owner] = box
        if self.size() > limits.METADATA_TOTAL:
            if before is None:
                del self.data[owner]
            else:
                self.data[owner] = before
            raise MetadataError("Too much metadata", "METADATA TOOMANY")

    def drop(self, owner: str) -> bool:
        return self.data.pop(owner, None) is not None
