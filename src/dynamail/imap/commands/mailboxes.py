"""Commands on mailboxes (RFC 9051 section 6.3; RFC 5258 LIST-EXTENDED,
RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE, RFC 3502 MULTIAPPEND, RFC 4315
APPENDUID, RFC 7162 CONDSTORE/QRESYNC on SELECT, RFC 9208 QUOTA)."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dynamail.imap import notify, objectid, response
from dynamail.imap.errors import CommandBad, CommandNo
from dynamail.imap.listing import SEP, Pattern, list_entries, lsub_entries
from dynamail.imap.parser import (
    Args,
    Command,
    Literal,
    ParseError,
    Token,
    date_time,
    flag_list,
    number,
    sequence_set,
)
from dynamail.imap.recent import SessionRecent
from dynamail.imap.selected import Selected, flags_of
from dynamail.imap.state import State, Transition
from dynamail.storage.api import (
    AppendRequest,
    MailboxExists,
    MailboxListing,
    MailboxStatus,
    NoSuchMailbox,
)

if TYPE_CHECKING:
    from dynamail.imap.session import Session



# -- SELECT / EXAMINE ----------------------------------------------------


async def select(s: Session, cmd: Command) -> str:
    return await _select(s, cmd, read_only=False)


async def examine(s: Session, cmd: Command) -> str:
    return await _select(s, cmd, read_only=True)


async def _select(s: Session, cmd: Command, *, read_only: bool) -> str:
    store = s.need_store()
    args = Args(cmd.args)
    name = s.mailbox_arg(args.astring("mailbox"))
    qresync: list[Token] | None = None
    if args.more():
        for p in _pairs(args.list("select parameters")):
            key, val = p
            if key == "CONDSTORE":
                s.enabled.add("CONDSTORE")
            elif key == "QRESYNC":
                if not s.qresync:
                    raise CommandBad("QRESYNC must be enabled first")
                if not isinstance(val, list) or len(val) < 2:
                    raise CommandBad("Bad QRESYNC parameter")
                qresync = val
            else:
                raise CommandBad(f"Unknown SELECT parameter {key}")
    args.end()
    if s.selected is not None:
        s.selected.close()
        s.selected = None
        if s.rev2 or s.condstore:
            s.write(b"* OK [CLOSED] Previous mailbox closed\r\n")
    try:
        view = await store.select(name, read_only)
    except Exception:
        if s.state is State.SELECTED:
            s.transition(Transition.SELECT_FAILED)
        raise
    recent = None
    if not s.rev2:  # RFC 3501 2.3.2; EXAMINE does not claim (6.3.2)
        recent = SessionRecent(s.recent_book, s.recent_key(name, view.uidvalidity), take=not view.read_only)
    sel = Selected(view, name, view.read_only, recent)
    first_unseen, kw = _scan(s, sel)
    sel.keywords.update(kw)
    flags_line, permanent_line = sel.flags_lines().split(b"\r\n", 1)
    s.write(flags_line + b"\r\n")
    s.write(b"* %d EXISTS\r\n" % len(sel.uids))
    if recent is not None:
        s.write(b"* %d RECENT\r\n" % len(recent))
        if first_unseen:
            s.write(b"* OK [UNSEEN %d] First unseen\r\n" % first_unseen)
    s.write(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % view.uidvalidity)
    s.write(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % view.uidnext())
    s.write(permanent_line)
    s.write(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % view.highestmodseq())
    s.write(b"* OK [MAILBOXID (" + objectid.mailbox_id(view.uidvalidity).encode() + b")] Ok\r\n")  # RFC 8474
    if s.rev2:
        s.write(b"* LIST () \"/\" " + s.mailbox_out(name) + b"\r\n")
    s.uidvalidity_cache[name] = view.uidvalidity
    s.selected = sel
    s.saved_search = None
    s.transition(Transition.SELECTED)
    if qresync is not None:
        _qresync(s, sel, qresync)
    code = "READ-ONLY" if sel.read_only else "READ-WRITE"
    return f"[{code}] {cmd.name} completed"


# (account, mailbox, uidvalidity, highestmodseq, messages) -> (first unseen, keywords):
# every change to a mailbox raises its HIGHESTMODSEQ, so an entry never goes stale.
_SCAN_CACHE: collections.OrderedDict[tuple[object, ...], tuple[int, tuple[str, ...]]] = collections.OrderedDict()
_SCAN_CACHE_MAX = 10000


def _scan(s: Session, sel: Selected) -> tuple[int, tuple[str, ...]]:
    """First unseen message (RFC 3501 UNSEEN) and the keywords in use (FLAGS)."""
    view = sel.view
    key = (s.ref, sel.name, view.uidvalidity, view.highestmodseq(), len(sel.uids))
    hit = _SCAN_CACHE.get(key)
    if hit is not None:
        _SCAN_CACHE.move_to_end(key)
        return hit
    keywords: set[str] = set()
    first_unseen = 0
    for i, fl in enumerate(flags_of(view, sel.uids)):
        if not first_unseen and "\\Seen" not in fl:
            first_unseen = i + 1
        for f in fl:
            if not f.startswith("\\"):
                keywords.add(f)
    result = (first_unseen, tuple(sorted(keywords)))
    _SCAN_CACHE[key] = result
    if len(_SCAN_CACHE) > _SCAN_CACHE_MAX:
        _SCAN_CACHE.popitem(last=False)
    return result


def _pairs(items: list[Token]) -> list[tuple[str, Token]]:
    out = []
    i = 0
    while i < len(items):
        k = items[i]
        if not isinstance(k, str):
            raise CommandBad("Bad parameter list")
        key = k.upper()
        val: Token = ""
        if i + 1 < len(items) and isinstance(items[i + 1], list):
            val = items[i + 1]
            i += 1
        out.append((key, val))
        i += 1
    return out


def _qresync(s: Session, sel: Selected, params: list[Token]) -> None:
    """RFC 7162 section 3.2.5: VANISHED (EARLIER) and changed flags since modseq."""
    uidvalidity = number(_atom(params[0]), "uidvalidity")
    modseq = number(_atom(params[1]), "mod-sequence", big=True)
    known = None
    if len(params) > 2 and isinstance(params[2], str):
        known = sequence_set(params[2])
    if uidvalidity != sel.view.uidvalidity:
        return
    top = sel.view.uidnext() - 1
    ranges = known.resolve(top) if known is not None else [(1, top)]
    vanished = sel.vanished_in(ranges)
    if vanished and modseq < sel.view.highestmodseq():
        s.write(b"* VANISHED (EARLIER) " + response.sequence_set(vanished).encode() + b"\r\n")
    view = sel.view
    for i, u in enumerate(sel.uids):
        info = view.info(u)
        if info.modseq > modseq:
            s.write(
                b"* %d FETCH (UID %d FLAGS " % (i + 1, u)
                + sel.flags_out(u, info.flags)
                + b" MODSEQ (%d))\r\n" % info.modseq
            )


def _atom(t: Token) -> str:
    if not isinstance(t, str):
        raise CommandBad("Expected a number")
    return t


# -- CREATE / DELETE / RENAME / (UN)SUBSCRIBE -----------------------------


_SPECIAL = {"\\SENT": "\\Sent", "\\TRASH": "\\Trash", "\\DRAFTS": "\\Drafts", "\\JUNK": "\\Junk",
            "\\ARCHIVE": "\\Archive", "\\ALL": "\\All", "\\FLAGGED": "\\Flagged"}


async def create(s: Session, cmd: Command) -> str:
    store = s.need_store()
    args = Args(cmd.args)
    raw = args.astring("mailbox")
    special = None
    if args.more():  # RFC 6154 section 3: CREATE name (USE (\Sent))
        for key, val in _pairs(args.list("create parameters")):
            if key != "USE" or not isinstance(val, list) or len(val) != 1 or not isinstance(val[0], str):
                raise CommandBad("Unknown CREATE parameter")
            special = _SPECIAL.get(val[0].upper())
            if special is None or special in ("\\All", "\\Flagged"):
                raise CommandNo("Unsupported special-use attribute", "USEATTR")
    args.end()
    text = raw.decode("utf-8", "replace").rstrip(SEP) if raw.endswith(SEP.encode()) else None
    name = s.mailbox_arg(text.encode() if text is not None else raw, creating=True)
    if name == "INBOX":
        raise CommandNo("INBOX always exists", "ALREADYEXISTS")
    parts = name.split(SEP)
    try:
        for i in range(1, len(parts)):  # RFC 9051 6.3.4: create superior names too
            with contextlib.suppress(MailboxExists):
                await store.create_mailbox(SEP.join(parts[:i]))
        await store.create_mailbox(name, special)
    finally:
        await notify.own_change(s, name)
    validity = (await store.status(name)).uidvalidity
    s.uidvalidity_cache[name] = validity
    return f"[MAILBOXID ({objectid.mailbox_id(validity)})] CREATE completed"  # RFC 8474 section 4.1


async def delete(s: Session, cmd: Command) -> str:
    store = s.need_store()
    args = Args(cmd.args)
    name = s.mailbox_arg(args.astring("mailbox"))
    args.end()
    if name == "INBOX":
        raise CommandNo("INBOX cannot be deleted", "CANNOT")
    if s.selected is not None and s.selected.name == name:
        raise CommandNo("Mailbox is selected", "INUSE")
    validity = (await store.status(name)).uidvalidity
    try:
        await store.delete_mailbox(name)
    finally:
        await notify.own_change(s, name)
    from dynamail.imap.commands.metadata import drop_mailbox

    await drop_mailbox(s, validity)
    return "DELETE completed"


async def rename(s: Session, cmd: Command) -> str:
    store = s.need_store()
    args = Args(cmd.args)
    old = s.mailbox_arg(args.astring("mailbox"))
    new = s.mailbox_arg(args.astring("new name"), creating=True)
    args.end()
    if new == "INBOX":
        raise CommandNo("Cannot rename to INBOX", "ALREADYEXISTS")
    try:
        await store.rename_mailbox(old, new)
    finally:
        await notify.own_change(s, old, new)
    s.uidvalidity_cache.clear()
    return "RENAME completed"


async def subscribe(s: Session, cmd: Command) -> str:
    return await _subscribe(s, cmd, True)


async def unsubscribe(s: Session, cmd: Command) -> str:
    return await _subscribe(s, cmd, False)


async def _subscribe(s: Session, cmd: Command, on: bool) -> str:
    store = s.need_store()
    args = Args(cmd.args)
    name = s.mailbox_arg(args.astring("mailbox"))
    args.end()
    try:
        await store.subscribe(name, on)
    finally:
        await notify.own_change(s, name)
    return f"{cmd.name} completed"


# -- LIST / LSUB / NAMESPACE / STATUS --------------------------------------


def _list_pattern(s: Session, ref: bytes, pat: bytes) -> str:
    text = (ref + pat).decode("utf-8", "replace")
    if not s.utf8:
        from dynamail.imap import utf7

        try:
            text = utf7.decode(text)
        except ValueError:
            raise CommandBad("Pattern is not modified UTF-7") from None
    return text


async def list_(s: Session, cmd: Command) -> str:
    store = s.need_store()
    args = Args(cmd.args)
    selection: set[str] = set()
    # RFC 5258 3: selection options (even none: "()"), a list of patterns
    # or RETURN make it an extended LIST
    extended = isinstance(args.peek(), list)
    if extended:
        for t in args.list():
            if not isinstance(t, str):
                raise CommandBad("Bad selection option")
            selection.add(t.upper())
    ref = args.astring("reference")
    pat_tok = args.next("pattern")
    if isinstance(pat_tok, list):
        extended = True
        pats = [p.encode() if isinstance(p, str) else p for p in pat_tok if not isinstance(p, list)]
    else:
        pats = [pat_tok.encode() if isinstance(pat_tok, str) else pat_tok]
    returns: set[str] = set()
    status_items: list[str] = []
    if args.more():
        kw = args.atom("RETURN")
        if kw.upper() != "RETURN":
            raise CommandBad("Expected RETURN")
        extended = True
        opts = args.list("return options")
        i = 0
        while i < len(opts):
            o = opts[i]
            if not isinstance(o, str):
                raise CommandBad("Bad return option")
            up = o.upper()
            if up == "STATUS":
                i += 1
                if i >= len(opts) or not isinstance(opts[i], list):
                    raise CommandBad("STATUS needs items")
                status_items = _status_items(opts[i])  # type: ignore[arg-type]
            elif up in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "MYRIGHTS"):
                returns.add(up)
            else:
                raise CommandBad(f"Unknown return option {o[:30]}")
            i += 1
    args.end()
    for opt in selection:
        if opt not in ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"):
            raise CommandBad(f"Unknown selection option {opt[:30]}")
    if "RECURSIVEMATCH" in selection and not selection & {"SUBSCRIBED"}:
        raise CommandBad("RECURSIVEMATCH needs another selection option")
    if pats == [b""]:
        s.write(b'* LIST (\\Noselect) "/" ""\r\n')
        return "LIST completed"
    listings = await store.list_mailboxes()
    patterns = [Pattern(_list_pattern(s, ref, p)) for p in pats]
    entries = list_entries(
        listings, _subscriptions(store), patterns, frozenset(selection), frozenset(returns),
        extended=extended,
    )
    for e in entries:
        line = b"* LIST (" + " ".join(e.attrs).encode() + b') "/" ' + s.mailbox_out(e.name)
        if e.childinfo:
            line += b' ("CHILDINFO" ("SUBSCRIBED"))'
        s.write(line + b"\r\n")
        if status_items and e.exists:  # RFC 5819 section 2: only selectable names
            try:
                st = await store.status(e.name)
            except NoSuchMailbox:
                continue
            s.write(await _status_line(s, e.name, st, status_items))
    return "LIST completed"


def _subscriptions(store: object) -> list[str]:
    """Subscribed names, existing or not (the engine's ``subscriptions()``
    when it has one; else the subscribed mailboxes of the listing)."""
    subs = getattr(store, "subscriptions", None)
    return list(subs()) if callable(subs) else []


async def lsub(s: Session, cmd: Command) -> str:
    store = s.need_store()
    args = Args(cmd.args)
    ref = args.astring("reference")
    pat = args.astring("pattern")
    args.end()
    rx = Pattern(_list_pattern(s, ref, pat))
    for e in lsub_entries(await store.list_mailboxes(), _subscriptions(store), rx):
        s.write(b"* LSUB (" + " ".join(e.attrs).encode() + b') "/" ' + s.mailbox_out(e.name) + b"\r\n")
    return "LSUB completed"


async def namespace(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    s.write(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
    return "NAMESPACE completed"


_STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT", "SIZE",
                 "HIGHESTMODSEQ", "DELETED", "APPENDLIMIT", "MAILBOXID")


def _status_items(toks: list[Token]) -> list[str]:
    items = []
    for t in toks:
        if not isinstance(t, str) or t.upper() not in _STATUS_ITEMS:
            raise CommandBad("Unknown STATUS item")
        items.append(t.upper())
    if not items:
        raise CommandBad("Empty STATUS item list")
    return items


async def _recent_count(s: Session, name: str, st: MailboxStatus) -> int:
    """Messages of the mailbox no session has seen as \\Recent yet (RFC
    3501 6.3.10); 0 for IMAP4rev2 sessions (RFC 9051 dropped RECENT)."""
    if s.rev2:
        return 0
    book, key = s.recent_book, s.recent_key(name, st.uidvalidity)
    if book.mark(key) == 0:
        return st.messages
    sel = s.selected
    if sel is not None and sel.name == name:
        uids: Sequence[int] = sel.view.uids()
    else:
        view = await s.need_store().select(name, True)
        try:
            uids = view.uids()
        finally:
            view.close()
    return book.count(key, uids)


async def _status_line(s: Session, name: str, st: MailboxStatus, items: list[str]) -> bytes:
    recent = await _recent_count(s, name, st) if "RECENT" in items else 0
    values = {
        "MESSAGES": st.messages, "UIDNEXT": st.uidnext, "UIDVALIDITY": st.uidvalidity,
        "UNSEEN": st.unseen, "RECENT": recent, "SIZE": st.size, "HIGHESTMODSEQ": st.highestmodseq,
        "DELETED": st.deleted, "APPENDLIMIT": s.settings.append_limit,
        "MAILBOXID": f"({objectid.mailbox_id(st.uidvalidity)})",
    }
    body = " ".join(f"{i} {values[i]}" for i in items)
    return b"* STATUS " + s.mailbox_out(name) + b" (" + body.encode() + b")\r\n"


status_line = _status_line  # for NOTIFY (imap/notify.py)


async def status(s: Session, cmd: Command) -> str:
    store = s.need_store()
    args = Args(cmd.args)
    name = s.mailbox_arg(args.astring("mailbox"))
    items = _status_items(args.list("status items"))
    args.end()
    st = await store.status(name)
    s.uidvalidity_cache[name] = st.uidvalidity
    s.write(await _status_line(s, name, st, items))
    return "STATUS completed"


# -- APPEND (RFC 9051 6.3.12, RFC 3502 MULTIAPPEND) ------------------------


async def append(s: Session, cmd: Command) -> str:
    store = s.need_store()
    args = Args(cmd.args)
    name = s.mailbox_arg(args.astring("mailbox"))
    requests: list[AppendRequest] = []
    while args.more():
        flags: frozenset[str] = frozenset()
        when = None
        if isinstance(args.peek(), list):
            flags = flag_list(args.next())
        nxt = args.peek()
        # date-time is a quoted string; a literal here is the message itself
        # (RFC 3502: [SP flag-list] [SP date-time] SP literal per message)
        if isinstance(nxt, bytes) and not isinstance(nxt, Literal):
            when = date_time(args.next())
        msg = args.next("message literal")
        if isinstance(msg, str) and msg.upper() == "UTF8":
            inner = args.list("UTF8 message")
            if len(inner) != 1 or not isinstance(inner[0], bytes):
                raise CommandBad("Bad UTF8 message")
            msg = inner[0]
        if not isinstance(msg, bytes):
            raise ParseError("Expected message literal")
        if len(msg) > s.settings.append_limit:
            raise CommandNo("Message too large", "TOOBIG")
        requests.append(AppendRequest(msg, flags, when))
    if not requests:
        raise CommandBad("Missing message literal")
    uids = await store.append(name, requests)
    validity = await _uidvalidity(s, name)
    return f"[APPENDUID {validity} {response.sequence_set(sorted(uids))}] APPEND completed"


async def _uidvalidity(s: Session, name: str) -> int:
    if s.selected is not None and s.selected.name == name:
        return s.selected.view.uidvalidity
    v = s.uidvalidity_cache.get(name)
    if v is None:
        v = (await s.need_store().status(name)).uidvalidity
        s.uidvalidity_cache[name] = v
    return v


# -- QUOTA (RFC 9208) ------------------------------------------------------


async def _quota_line(s: Session) -> bytes:
    store = s.need_store()
    used, _count = await store.quota_usage()
    limit = await _quota_limit(s)
    if limit is None:
        return b'* QUOTA "" ()\r\n'
    return b'* QUOTA "" (STORAGE %d %d)\r\n' % ((used + 1023) // 1024, limit // 1024)


async def _quota_limit(s: Session) -> int | None:
    ref = s.ref
    if ref is None:
        return None
    from dynamail.directory import model

    def lookup() -> int | None:
        value = s.ctx.directory.effective_account_settings(ref).get("MaxAccountSize")
        return model.parse_size(value) if value is not None else None

    try:
        return await s.io.run_blocking(lookup)
    except Exception:
        return None


async def getquotaroot(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    name = s.mailbox_arg(args.astring("mailbox"))
    args.end()
    await s.need_store().status(name)  # NONEXISTENT for unknown mailboxes
    s.write(b'* QUOTAROOT ' + s.mailbox_out(name) + b' ""\r\n')
    s.write(await _quota_line(s))
    return "GETQUOTAROOT completed"


async def getquota(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    root = args.astring("quota root")
    args.end()
    if root != b"":
        raise CommandNo("No such quota root", "NONEXISTENT")
    s.write(await _quota_line(s))
    return "GETQUOTA completed"


async def setquota(s: Session, cmd: Command) -> str:
    raise CommandNo("Quotas are set by the administrator", "NOPERM")


__all__ = ["MailboxListing"]
