"""Commands of the selected state (RFC 9051 section 6.4; RFC 4315 UID
EXPUNGE, RFC 6851 MOVE, RFC 4731 ESEARCH, RFC 5182 SEARCHRES, RFC 5256
SORT, RFC 7162 CHANGEDSINCE/UNCHANGEDSINCE/VANISHED, RFC 3691 UNSELECT)."""

from __future__ import annotations

import datetime
import email.utils
import re
from typing import TYPE_CHECKING

from dynamail.imap import limits, response
from dynamail.imap import thread as thread_alg
from dynamail.imap.errors import CommandBad, CommandNo
from dynamail.imap.fetch import FetchWriter
from dynamail.imap.parser import (
    STAR,
    Args,
    Command,
    ParseError,
    SearchKey,
    SequenceSet,
    count_keys,
    fetch_atts,
    flag_list,
    number,
    search_key,
    search_program,
    sequence_set,
    sort_criteria,
)
from dynamail.imap.search import Searcher, sort_uids
from dynamail.imap.selected import Selected, flags_of, modseq_of
from dynamail.imap.state import Transition

if TYPE_CHECKING:
    from dynamail.imap.session import Session


FETCH_BATCH = 32  # messages whose data is read ahead concurrently


def _uids(s: Session, sel: Selected, cmd: Command, tok: object) -> list[int]:
    seqset = sequence_set(tok)  # type: ignore[arg-type]
    if cmd.name.startswith("UID "):
        return sel.by_uid(seqset, s.saved_search)
    _check_seqnums(seqset, len(sel.uids))
    return sel.by_seq(seqset, s.saved_search)


def _check_seqnums(seqset: SequenceSet, exists: int) -> None:
    """RFC 9051 section 9 (seq-number): a sequence number above the number
    of messages, or ``*`` in an empty mailbox, is a client error (BAD), as in
    Dovecot."""
    if seqset.saved:
        return
    for lo, hi in seqset.ranges:
        for v in (lo, hi):
            if (v == STAR and exists == 0) or v > exists:
                raise CommandBad("Invalid message sequence number")


def _writable(sel: Selected) -> None:
    if sel.read_only:
        raise CommandNo("Mailbox is read-only", "READ-ONLY")


# -- CLOSE / UNSELECT / EXPUNGE -------------------------------------------


async def close(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    sel = s.need_selected()
    if not sel.read_only:
        await sel.view.expunge()
    sel.close()
    s.selected = None
    s.transition(Transition.CLOSED)
    return "CLOSE completed"


async def unselect(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    sel = s.need_selected()
    sel.close()
    s.selected = None
    s.transition(Transition.CLOSED)
    return "UNSELECT completed"


async def expunge(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    sel = s.need_selected()
    _writable(sel)
    gone = await sel.view.expunge()
    sel.announce_expunged(gone, s.write, qresync=s.qresync)
    sel.announce_recent(s.write)
    return _expunged_text(s, sel, gone, "EXPUNGE completed")


def _expunged_text(s: Session, sel: Selected, gone: list[int], text: str) -> str:
    """RFC 7162 3.2.7 and 3.2.9: with QRESYNC, an EXPUNGE that removed
    messages ends with the mailbox's new HIGHESTMODSEQ."""
    if s.qresync and gone:
        return f"[HIGHESTMODSEQ {sel.view.highestmodseq()}] {text}"
    return text


async def uid_expunge(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    sel = s.need_selected()
    uids = _uids(s, sel, cmd, args.next("UID set"))
    args.end()
    _writable(sel)
    if not uids:
        return "UID EXPUNGE completed"
    gone = await sel.view.expunge(uids)
    sel.announce_expunged(gone, s.write, qresync=s.qresync)
    sel.announce_recent(s.write)
    return _expunged_text(s, sel, gone, "UID EXPUNGE completed")


# -- SEARCH / SORT ---------------------------------------------------------


async def search(s: Session, cmd: Command) -> str:
    sel = s.need_selected()
    uid_mode = cmd.name.startswith("UID ")
    prog = search_program(Args(cmd.args))
    searcher = Searcher(sel, s.saved_search, datetime.datetime.now(datetime.UTC))
    uids = await searcher.run(prog.keys)
    returns = prog.returns
    if returns is not None and "SAVE" in returns:
        returns = tuple(r for r in returns if r != "SAVE")
        s.saved_search = _saved(uids, returns)
        if not returns:
            return "SEARCH completed, result saved"
    modseq = b""
    if searcher.uses_modseq and uids:
        modseq = b" (MODSEQ %d)" % max(sel.view.info(u).modseq for u in uids)
    nums = uids if uid_mode else [sel.seq_of(u) for u in uids]
    if returns is None and not s.rev2:
        s.write(b"* SEARCH" + b"".join(b" %d" % n for n in nums) + modseq + b"\r\n")
        return "SEARCH completed"
    s.write(_esearch(cmd.tag, uid_mode, nums, returns or ("ALL",), modseq))
    return "SEARCH completed"


def _saved(uids: list[int], returns: tuple[str, ...]) -> list[int]:
    """What SAVE keeps (RFC 5182 2.4): with MIN and/or MAX and no other
    result option, only those messages; else the whole result."""
    if not uids or not returns or not set(returns) <= {"MIN", "MAX"}:
        return uids
    return sorted({uids[0] if r == "MIN" else uids[-1] for r in returns})


def _esearch(tag: str, uid_mode: bool, nums: list[int], returns: tuple[str, ...], modseq: bytes) -> bytes:
    out = b'* ESEARCH (TAG "' + tag.encode() + b'")'
    if uid_mode:
        out += b" UID"
    if nums:
        if "MIN" in returns:
            out += b" MIN %d" % nums[0]
        if "MAX" in returns:
            out += b" MAX %d" % nums[-1]
    if nums and "ALL" in returns:
        out += b" ALL " + response.sequence_set(nums).encode()
    if "COUNT" in returns:
        out += b" COUNT %d" % len(nums)
    if modseq and nums:
        out += b" MODSEQ " + modseq[len(b" (MODSEQ "):-1]
    return out + b"\r\n"


async def sort(s: Session, cmd: Command) -> str:
    sel = s.need_selected()
    uid_mode = cmd.name.startswith("UID ")
    args = Args(cmd.args)
    criteria = sort_criteria(args.next("sort criteria"))
    charset = args.astring("charset").decode("ascii", "replace").upper()
    if charset not in ("US-ASCII", "UTF-8"):
        raise CommandNo("Unsupported charset", "BADCHARSET (US-ASCII UTF-8)")
    keys: list[SearchKey] = []
    while args.more():
        keys.append(search_key(args, 0))
    if not keys:
        raise ParseError("Missing search criteria")
    if count_keys(keys) > limits.MAX_SEARCH_KEYS:
        raise ParseError("Too many search keys")
    searcher = Searcher(sel, s.saved_search, datetime.datetime.now(datetime.UTC))
    uids = await searcher.run(tuple(keys))
    ordered = await sort_uids(sel, uids, criteria)
    nums = ordered if uid_mode else [sel.seq_of(u) for u in ordered]
    s.write(b"* SORT" + b"".join(b" %d" % n for n in nums) + b"\r\n")
    return "SORT completed"


async def thread(s: Session, cmd: Command) -> str:
    """RFC 5256 THREAD: ``THREAD algorithm charset search-criteria``."""
    sel = s.need_selected()
    uid_mode = cmd.name.startswith("UID ")
    args = Args(cmd.args)
    alg = args.atom("threading algorithm").upper()
    if alg not in ("ORDEREDSUBJECT", "REFERENCES"):
        raise CommandBad("Unsupported threading algorithm")
    charset = args.astring("charset").decode("ascii", "replace").upper()
    if charset not in ("US-ASCII", "UTF-8"):
        raise CommandNo("Unsupported charset", "BADCHARSET (US-ASCII UTF-8)")
    keys: list[SearchKey] = []
    while args.more():
        keys.append(search_key(args, 0))
    if not keys:
        raise ParseError("Missing search criteria")
    if count_keys(keys) > limits.MAX_SEARCH_KEYS:
        raise ParseError("Too many search keys")
    searcher = Searcher(sel, s.saved_search, datetime.datetime.now(datetime.UTC))
    uids = await searcher.run(tuple(keys))
    msgs = await thread_records(sel, uids, uid_mode=uid_mode, with_references=alg == "REFERENCES")
    text = thread_alg.references(msgs) if alg == "REFERENCES" else thread_alg.orderedsubject(msgs)
    s.write(b"* THREAD " + text.encode() + b"\r\n" if text else b"* THREAD\r\n")
    return "THREAD completed"


async def thread_records(sel: Selected, uids: list[int], *, uid_mode: bool, with_references: bool) -> list[thread_alg.Msg]:
    view = sel.view
    out: list[thread_alg.Msg] = []
    for u in uids:
        info = view.info(u)
        env = await view.envelope(u)
        e = env if isinstance(env, list) and len(env) >= 10 else [None] * 10
        date = info.internal_date.timestamp()
        if e[0]:
            try:
                date = email.utils.parsedate_to_datetime(_str(e[0])).timestamp()
            except (TypeError, ValueError, IndexError):
                pass
        mids = thread_alg.message_ids(_str(e[9])) if e[9] else []
        refs: list[str] = []
        if with_references:
            m = _REFERENCES.search(await view.header(u))
            if m is not None:
                refs = thread_alg.message_ids(m.group(1).decode("latin-1"))
            if not refs and e[8]:
                refs = thread_alg.message_ids(_str(e[8]))[:1]
        seq = sel.seq_of(u)
        out.append(thread_alg.Msg(u if uid_mode else seq, seq, date, _str(e[1]), mids[0] if mids else None, refs))
    return out


_REFERENCES = re.compile(rb"(?im)^references[ \t]*:(.*(?:\r?\n[ \t].*)*)")


def _str(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v if isinstance(v, str) else ""


# -- FETCH -----------------------------------------------------------------


async def fetch(s: Session, cmd: Command) -> str:
    sel = s.need_selected()
    uid_mode = cmd.name.startswith("UID ")
    args = Args(cmd.args)
    set_tok = args.next("sequence set")
    atts = fetch_atts(args.next("fetch attributes"))
    changedsince: int | None = None
    vanished = False
    if args.more():
        mods = args.list("fetch modifiers")
        i = 0
        while i < len(mods):
            m = mods[i]
            if not isinstance(m, str):
                raise CommandBad("Bad fetch modifier")
            up = m.upper()
            if up == "CHANGEDSINCE":
                i += 1
                if i >= len(mods) or not isinstance(mods[i], str):
                    raise CommandBad("CHANGEDSINCE needs a mod-sequence")
                changedsince = number(mods[i], "mod-sequence", big=True)  # type: ignore[arg-type]
            elif up == "VANISHED":
                vanished = True
            else:
                raise CommandBad(f"Unknown fetch modifier {m[:30]}")
            i += 1
    args.end()
    if vanished and not (uid_mode and s.qresync and changedsince is not None):
        raise CommandBad("VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE")
    if changedsince is not None:
        s.enabled.add("CONDSTORE")
    uids = _uids(s, sel, cmd, set_tok)
    if vanished and changedsince is not None:
        _vanished_earlier(s, sel, set_tok, changedsince)
    if changedsince is not None:
        info = sel.view.info
        uids = [u for u in uids if info(u).modseq > changedsince]
    writer = FetchWriter(
        sel, s.io, atts, uid_mode=uid_mode, condstore=changedsince is not None, utf8=s.utf8,
        condstore_on=s.condstore,
    )
    await writer.mark_seen(uids)
    if writer.wants_flags:
        sel.announce_keywords(flags_of(sel.view, uids), s.write)
    if writer.flags_only:
        for i in range(0, len(uids), 1000):
            writer.flags_batch(uids[i : i + 1000])
            if s.io.pending() >= 65536:
                await s.io.flush()
        return "FETCH completed"
    for i in range(0, len(uids), FETCH_BATCH):
        batch = uids[i : i + FETCH_BATCH]
        await writer.prefetch(batch)
        for u in batch:
            await writer.message(u)
    if writer.missing:
        raise CommandNo("Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return "FETCH completed"


def _vanished_earlier(s: Session, sel: Selected, tok: object, since: int) -> None:
    if since >= sel.view.highestmodseq():
        return
    seqset = sequence_set(tok)  # type: ignore[arg-type]
    gone = sel.vanished_in(seqset.resolve(sel.view.uidnext() - 1))
    if gone:
        s.write(b"* VANISHED (EARLIER) " + response.sequence_set(gone).encode() + b"\r\n")


# -- STORE -----------------------------------------------------------------

_STORE_MODES = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove"}


async def store(s: Session, cmd: Command) -> str:
    sel = s.need_selected()
    uid_mode = cmd.name.startswith("UID ")
    args = Args(cmd.args)
    set_tok = args.next("sequence set")
    unchanged: int | None = None
    if isinstance(args.peek(), list):
        mods = args.list()
        if len(mods) != 2 or not isinstance(mods[0], str) or mods[0].upper() != "UNCHANGEDSINCE":
            raise CommandBad("Unknown STORE modifier")
        if not isinstance(mods[1], str):
            raise CommandBad("UNCHANGEDSINCE needs a mod-sequence")
        unchanged = number(mods[1], "mod-sequence", big=True)
        s.enabled.add("CONDSTORE")
    item = args.atom("store item").upper()
    silent = item.endswith(".SILENT")
    mode = _STORE_MODES.get(item.removesuffix(".SILENT"))
    if mode is None:
        raise CommandBad("Unknown STORE item")
    if not args.more():
        raise CommandBad("Missing flags")
    if isinstance(args.peek(), list):
        flags = flag_list(args.next())
    else:
        toks = []
        while args.more():
            toks.append(args.next())
        flags = flag_list(toks)
    args.end()
    uids = _uids(s, sel, cmd, set_tok)
    _writable(sel)
    if not uids:
        return "STORE completed"
    res = await sel.view.store(uids, mode, flags, unchanged)
    failed = set(res.failed_unchangedsince)
    modified = set(res.modified)
    condstore = s.condstore
    view = sel.view
    if mode != "remove":  # RFC 3501 7.2.6: new keywords are announced before the FETCHes
        sel.announce_keywords([flags], s.write)
    for u in uids:
        if u in failed:
            continue
        modseq = modseq_of(view, u)
        if u in modified:
            sel.reported[u] = modseq
        if silent and not (condstore and u in modified):
            continue
        items: list[bytes] = []
        if uid_mode or condstore:  # RFC 7162 3.2.4: UID and MODSEQ once CONDSTORE is on
            items.append(b"UID %d" % u)
        if not silent:
            items.append(b"FLAGS " + sel.flags_out(u, flags_of(view, [u])[0]))
        if condstore:
            items.append(b"MODSEQ (%d)" % modseq)
        s.write(b"* %d FETCH (" % sel.seq_of(u) + b" ".join(items) + b")\r\n")
    if failed:
        nums = sorted(failed) if uid_mode else sorted(sel.seq_of(u) for u in failed)
        return f"[MODIFIED {response.sequence_set(nums)}] Conditional STORE failed"
    return "STORE completed"


# -- COPY / MOVE -------------------------------------------------------------


async def copy(s: Session, cmd: Command) -> str:
    sel = s.need_selected()
    args = Args(cmd.args)
    uids = _uids(s, sel, cmd, args.next("sequence set"))
    dest = s.mailbox_arg(args.astring("mailbox"))
    args.end()
    if not uids:
        return "COPY completed (no messages)"
    res = await sel.view.copy(uids, dest)
    s.uidvalidity_cache[dest] = res.uidvalidity
    return f"[COPYUID {_copyuid(res.uidvalidity, res.source_uids, res.dest_uids)}] COPY completed"


def _copyuid(validity: int, src: list[int], dst: list[int]) -> str:
    pairs = sorted(zip(src, dst, strict=False))
    return (
        f"{validity} {response.sequence_set([p[0] for p in pairs])} "
        f"{_set_in_order([p[1] for p in pairs])}"
    )


def _set_in_order(nums: list[int]) -> str:
    if nums == sorted(nums):
        return response.sequence_set(nums)
    return ",".join(str(n) for n in nums)


async def move(s: Session, cmd: Command) -> str:
    sel = s.need_selected()
    args = Args(cmd.args)
    uids = _uids(s, sel, cmd, args.next("sequence set"))
    dest = s.mailbox_arg(args.astring("mailbox"))
    args.end()
    _writable(sel)
    if not uids:
        return "MOVE completed (no messages)"
    res = await sel.view.move(uids, dest)
    s.uidvalidity_cache[dest] = res.uidvalidity
    s.write(f"* OK [COPYUID {_copyuid(res.uidvalidity, res.source_uids, res.dest_uids)}] Moved\r\n".encode())
    still = set(sel.view.uids())
    sel.announce_expunged([u for u in res.source_uids if u not in still], s.write, qresync=s.qresync)
    if dest == sel.name:
        # RFC 6851 section 3.3 allows a MOVE within one mailbox (the copies
        # get new UIDs); this session learns of them at once, as from a COPY.
        await s.sync_selected()
    sel.announce_recent(s.write)
    return "MOVE completed"
