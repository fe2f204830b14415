"""An account's Sieve scripts: stored with the account, one of them active.

Scripts live in the account's small per-account blobs
(``FileAccountStore.get_meta``/``put_meta``), so they follow the same
ownership and fencing rules as its mail: only the owner reads or writes
them.  Keys (``[A-Za-z0-9._-]{1,64}``):

* ``sieve.index`` — JSON ``{"active": name or null, "scripts": {name: key}}``;
* ``sieve.s.<hash of the name>`` — one script's text (UTF-8);
* ``sieve.vacation`` — the vacation response log (:mod:`dynamail.sieve.vacation`);
* ``sieve.duplicate`` — message ids seen by the ``duplicate`` test (RFC 7352).

A script is written before the index that names it, and the index is
written last, so a crash between the two leaves at most an unnamed blob,
never an index naming a missing script.  Names follow RFC 5804 1.6.

In a cluster the owner does all of this; another member reaches the blobs
through the routed mailbox operations ``get_meta``/``put_meta``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

from dynamail.sieve import limits

INDEX_KEY = "sieve.index"
VACATION_KEY = "sieve.vacation"
DUPLICATE_KEY = "sieve.duplicate"


class ScriptError(Exception):
    """A script operation refused; ``code`` is the RFC 5804 response code."""

    def __init__(self, text: str, code: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class Blobs(Protocol):
    async def get_meta(self, key: str) -> bytes | None: ...

    async def put_meta(self, key: str, value: bytes | None) -> None: ...


def blobs_of(store: Any) -> Blobs:
    """The account's blob storage: its store (``get_meta``/``put_meta``)."""
    if not (hasattr(store, "get_meta") and hasattr(store, "put_meta")):
        raise TypeError(f"{type(store).__name__} keeps no per-account blobs")
    return store  # type: ignore[no-any-return]


def check_name(name: str) -> None:
    """RFC 5804 1.6: 1..MAX_SCRIPT_NAME characters, no controls, no NUL."""
    if not name or len(name) > limits.MAX_SCRIPT_NAME:
        raise ScriptError("Bad script name length")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in name):
        raise ScriptError("Script name contains control characters")


def _key(name: str) -> str:
    return "sieve.s." + hashlib.sha256(name.encode("utf-8")).hexdigest()[:40]


class ScriptStore:
    """The scripts of one account (its owner holds it open)."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    async def _index(self) -> dict[str, Any]:
        raw = await self.blobs.get_meta(INDEX_KEY)
        if not raw:
            return {"active": None, "scripts": {}}
        try:
            index = json.loads(raw)
        except ValueError:
            return {"active": None, "scripts": {}}
        if not isinstance(index, dict) or not isinstance(index.get("scripts"), dict):
            return {"active": None, "scripts": {}}
        return index

    async def _save(self, index: dict[str, Any]) -> None:
        await self.blobs.put_meta(INDEX_KEY, json.dumps(index, sort_keys=True).encode())

    async def list(self) -> list[tuple[str, bool]]:
        index = await self._index()
        return [(name, name == index.get("active")) for name in sorted(index["scripts"])]

    async def get(self, name: str) -> str | None:
        index = await self._index()
        key = index["scripts"].get(name)
        if key is None:
            return None
        raw = await self.blobs.get_meta(key)
        return None if raw is None else raw.decode("utf-8", "replace")

    async def put(self, name: str, text: str) -> None:
        check_name(name)
        data = text.encode("utf-8")
        if len(data) > limits.MAX_SCRIPT_SIZE:
            raise ScriptError("Script too large", "QUOTA/MAXSIZE")
        index = await self._index()
        if name not in index["scripts"] and len(index["scripts"]) >= limits.MAX_SCRIPTS:
            raise ScriptError("Too many scripts", "QUOTA/MAXSCRIPTS")
        key = _key(name)
        await self.blobs.put_meta(key, data)
        index["scripts"][name] = key
        await self._save(index)

    async def delete(self, name: str) -> None:
        index = await self._index()
        if name not in index["scripts"]:
            raise ScriptError("No such script", "NONEXISTENT")
        if index.get("active") == name:
            raise ScriptError("The active script cannot be deleted", "ACTIVE")
        key = index["scripts"].pop(name)
        await self._save(index)
        await self.blobs.put_meta(key, None)

    async def rename(self, old: str, new: str) -> None:
        check_name(new)
        index = await self._index()
        if old not in index["scripts"]:
            raise ScriptError("No such script", "NONEXISTENT")
        if new in index["scripts"]:
            raise ScriptError("A script with that name exists", "ALREADYEXISTS")
        text = await self.get(old)
        key = _key(new)
        await self.blobs.put_meta(key, (text or "").encode("utf-8"))
        index["scripts"][new] = key
        old_key = index["scripts"].pop(old)
        if index.get("active") == old:
            index["active"] = new
        await self._save(index)
        await self.blobs.put_meta(old_key, None)

    async def activate(self, name: str) -> None:
        """Make ``name`` the active script; "" deactivates (RFC 5804 2.8)."""
        index = await self._index()
        if name and name not in index["scripts"]:
            raise ScriptError("No such script", "NONEXISTENT")
        index["active"] = name or None
        await self._save(index)

    async def active(self) -> tuple[str, str] | None:
        """(name, text) of the active script, if any."""
        index = await self._index()
        name = index.get("active")
        if not name:
            return None
        text = await self.get(name)
        return None if text is None else (name, text)
