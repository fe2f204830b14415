"""GETMETADATA and SETMETADATA (RFC 5464 sections 4.2 and 4.3); the model
and its limits are in :mod:`dynamail.imap.metadata`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynamail.imap import metadata as md
from dynamail.imap import objectid, response
from dynamail.imap.errors import CommandBad, CommandNo
from dynamail.imap.parser import Args, Command, Token, number

if TYPE_CHECKING:
    from dynamail.imap.session import Session


async def _owner(s: Session, raw: bytes) -> tuple[str, str]:
    """(display name, owner key): "" is the server, else the mailbox's id."""
    if raw == b"":
        return "", md.SERVER
    name = s.mailbox_arg(raw)
    st = await s.need_store().status(name)  # NO [NONEXISTENT] when absent
    return name, objectid.mailbox_id(st.uidvalidity)


async def _load(s: Session) -> md.Store:
    get = getattr(s.need_store(), "get_meta", None)
    if get is None:
        raise CommandNo("Metadata is not available here", "UNAVAILABLE")
    return md.Store.load(await get(md.BLOB_KEY))


def _entry(t: Token) -> str:
    if isinstance(t, list):
        raise CommandBad("Expected an entry name")
    name = t if isinstance(t, str) else bytes(t).decode("ascii", "replace")
    if not md.valid_entry(name):
        raise CommandBad("Invalid entry name")
    return name


async def getmetadata(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    maxsize: int | None = None
    depth = "0"
    if isinstance(args.peek(), list):
        opts = args.list("options")
        i = 0
        while i < len(opts):
            o = opts[i]
            if not isinstance(o, str) or i + 1 >= len(opts) or not isinstance(opts[i + 1], str):
                raise CommandBad("Bad GETMETADATA option")
            val = str(opts[i + 1])
            if o.upper() == "MAXSIZE":
                maxsize = number(val, "MAXSIZE")
            elif o.upper() == "DEPTH" and val.lower() in ("0", "1", "infinity"):
                depth = val.lower()
            else:
                raise CommandBad("Bad GETMETADATA option")
            i += 2
    raw = args.astring("mailbox")
    t = args.next("entries")
    entries = [_entry(e) for e in t] if isinstance(t, list) else [_entry(t)]
    args.end()
    if not entries:
        raise CommandBad("No entries")
    name, owner = await _owner(s, raw)
    store = await _load(s)
    items: list[bytes] = []
    longest = 0
    for entry, value in store.get(owner, entries, depth):
        if value is not None and maxsize is not None and len(value.encode()) > maxsize:
            longest = max(longest, len(value.encode()))
            continue
        items.append(entry.encode() + b" " + response.value(value, utf8=True))
    if items:
        s.write(b"* METADATA " + (b'""' if raw == b"" else s.mailbox_out(name)) + b" (" + b" ".join(items) + b")\r\n")
    if longest:
        return f"[METADATA LONGENTRIES {longest}] GETMETADATA completed"
    return "GETMETADATA completed"


async def setmetadata(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    raw = args.astring("mailbox")
    pairs = args.list("entries and values")
    args.end()
    if not pairs or len(pairs) % 2:
        raise CommandBad("Expected entry value pairs")
    changes: list[tuple[str, str | None]] = []
    for e, v in zip(pairs[::2], pairs[1::2], strict=True):
        entry = _entry(e)
        if isinstance(v, list):
            raise CommandBad("Expected a value")
        if isinstance(v, str):
            if v.upper() != "NIL":
                raise CommandBad("A value is a string or NIL")
            changes.append((entry, None))
            continue
        try:
            changes.append((entry, bytes(v).decode("utf-8")))
        except UnicodeDecodeError:
            raise CommandNo("Values must be UTF-8 text", "CANNOT") from None
    _name, owner = await _owner(s, raw)
    store = await _load(s)
    try:
        store.set(owner, changes)
    except md.MetadataError as exc:
        raise CommandNo(str(exc), exc.code) from None
    await s.need_store().put_meta(md.BLOB_KEY, store.dump())  # type: ignore[attr-defined]
    return "SETMETADATA completed"


async def drop_mailbox(s: Session, uidvalidity: int) -> None:
    """DELETE: the mailbox's entries go with it."""
    get = getattr(s.need_store(), "get_meta", None)
    if get is None:
        return
    store = md.Store.load(await get(md.BLOB_KEY))
    if store.drop(objectid.mailbox_id(uidvalidity)):
        await s.need_store().put_meta(md.BLOB_KEY, store.dump())  # type: ignore[attr-defined]
