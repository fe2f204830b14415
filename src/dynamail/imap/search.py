"""Evaluating SEARCH keys (RFC 9051 section 6.4.4) and SORT (RFC 5256).

A key is evaluated over a *universe* of UIDs and returns the matching
subset; AND narrows the universe as it goes, cheapest keys first, so text
keys (which read message data through ``MailboxView.search_text``) only see
the messages every index-only key already accepted.  RECENT, NEW and OLD
(RFC 3501 6.4.4) use the session's ``\\Recent`` record
(:mod:`dynamail.imap.recent`); an IMAP4rev2 session has none (RFC 9051
dropped ``\\Recent``), so RECENT and NEW match nothing and OLD everything.
"""

from __future__ import annotations

import datetime
import email.header
import email.utils
import re
from collections.abc import Sequence

from dynamail.imap import objectid
from dynamail.imap.parser import SearchKey
from dynamail.imap.selected import Selected, flags_of

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True), "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False), "UNFLAGGED": ("\\Flagged", False), "UNSEEN": ("\\Seen", False),
}
_TEXT_KEYS = {"BODY": "BODY", "TEXT": "TEXT", "FROM": "From", "TO": "To", "CC": "Cc",
              "BCC": "Bcc", "SUBJECT": "Subject"}
_ADDRESS_FIELDS = {"FROM": 2, "TO": 5, "CC": 6, "BCC": 7}  # ENVELOPE positions
_COST = {"AND": 3, "OR": 3, "NOT": 3, "HEADER": 4, "SENTBEFORE": 4, "SENTON": 4, "SENTSINCE": 4}


def _cost(k: SearchKey) -> int:
    if k.name in _TEXT_KEYS:
        return 5
    return _COST.get(k.name, 1)


class Searcher:
    def __init__(self, sel: Selected, saved: list[int] | None, now: datetime.datetime) -> None:
        self.sel = sel
        self.view = sel.view
        self.saved = saved
        self.now = now
        self.max_modseq = 0
        self.uses_modseq = False

    async def run(self, keys: Sequence[SearchKey]) -> list[int]:
        return sorted(await self._and(keys, list(self.sel.uids)))

    async def _and(self, keys: Sequence[SearchKey], universe: list[int]) -> list[int]:
        for k in sorted(keys, key=_cost):
            if not universe:
                break
            universe = await self._key(k, universe)
        return universe

    async def _key(self, k: SearchKey, universe: list[int]) -> list[int]:
        name = k.name
        info = self.view.info
        if name == "ALL":
            return universe
        if name in ("RECENT", "NEW", "OLD"):
            recent = self.sel.recent
            if name == "OLD":
                return universe if recent is None else [u for u in universe if u not in recent]
            if recent is None:
                return []
            hits = [u for u in universe if u in recent]
            if name == "NEW":  # RFC 3501 6.4.4: RECENT UNSEEN
                hits = [u for u, fl in zip(hits, flags_of(self.view, hits), strict=True) if "\\Seen" not in fl]
            return hits
        if name in _FLAG_KEYS:
            flag, want = _FLAG_KEYS[name]
            return [u for u, fl in zip(universe, flags_of(self.view, universe), strict=True) if (flag in fl) == want]
        if name == "KEYWORD":
            return [u for u, fl in zip(universe, flags_of(self.view, universe), strict=True) if k.value in fl]
        if name == "UNKEYWORD":
            return [u for u, fl in zip(universe, flags_of(self.view, universe), strict=True) if k.value not in fl]
        if name == "LARGER":
            return [u for u in universe if info(u).size > int(k.value)]  # type: ignore[call-overload]
        if name == "SMALLER":
            return [u for u in universe if info(u).size < int(k.value)]  # type: ignore[call-overload]
        if name in ("BEFORE", "ON", "SINCE"):
            d = k.value
            assert isinstance(d, datetime.date)
            return [u for u in universe if _cmp_date(info(u).internal_date.date(), name, d)]
        if name in ("OLDER", "YOUNGER"):
            secs = int(k.value)  # type: ignore[call-overload]
            limit = self.now - datetime.timedelta(seconds=secs)
            if name == "OLDER":
                return [u for u in universe if info(u).internal_date <= limit]
            return [u for u in universe if info(u).internal_date >= limit]
        if name == "UID":
            chosen = set(self.sel.by_uid(k.value, self.saved))  # type: ignore[arg-type]
            return [u for u in universe if u in chosen]
        if name == "EMAILID":  # RFC 8474 section 6
            ident = objectid.parse_email_id(str(k.value))
            if ident is None:
                return []
            seconds, digest = ident
            # the index narrows it to that internal date; digests decide
            same_date = [u for u in universe if objectid.date_seconds(info(u).internal_date) == seconds]
            return [u for u in same_date if await self.view.digest(u) == digest]
        if name == "THREADID":  # we have no thread identifiers
            return []
        if name == "SEQ":
            chosen = set(self.sel.by_seq(k.value, self.saved))  # type: ignore[arg-type]
            return [u for u in universe if u in chosen]
        if name == "MODSEQ":
            self.uses_modseq = True
            ms = int(k.value)  # type: ignore[call-overload]
            return [u for u in universe if info(u).modseq >= ms]
        if name == "AND":
            return await self._and(k.value, universe)  # type: ignore[arg-type]
        if name == "NOT":
            hit = set(await self._key(k.value, universe))  # type: ignore[arg-type]
            return [u for u in universe if u not in hit]
        if name == "OR":
            a = set(await self._key(k.value, universe))  # type: ignore[arg-type]
            rest = [u for u in universe if u not in a]
            b = set(await self._key(k.value2, rest)) if rest else set()  # type: ignore[arg-type]
            return [u for u in universe if u in a or u in b]
        if name in _TEXT_KEYS:
            text = str(k.value)
            if text == "":
                return universe if name in ("BODY", "TEXT") else await self._has_header(_TEXT_KEYS[name], universe)
            hits = await self.view.search_text(universe, _TEXT_KEYS[name], text)
            if name in _ADDRESS_FIELDS:
                hits = await self._addresses(universe, set(hits), _ADDRESS_FIELDS[name], text)
            return sorted(hits)
        if name == "HEADER":
            field, text = str(k.value), str(k.value2)
            if text == "":
                return await self._has_header(field, universe)
            return sorted(await self.view.search_text(universe, field, text))
        if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            d = k.value
            assert isinstance(d, datetime.date)
            out = []
            for u in universe:
                sent = await self._sent_date(u)
                if sent is not None and _cmp_date(sent, name[4:], d):
                    out.append(u)
            return out
        return []

    async def _addresses(self, universe: list[int], hits: set[int], index: int, text: str) -> list[int]:
        """Also the messages whose parsed addresses contain ``text``, written
        as ``name <mailbox@host>``: an address written with comments or
        folding inside it (``user (x) @ domain``) still matches
        ``user@domain``, as it does in Dovecot."""
        needle = text.casefold()
        out = set(hits)
        for u in universe:
            if u in out:
                continue
            env = await self.view.envelope(u)
            field = env[index] if isinstance(env, list) and len(env) > index else None
            if isinstance(field, list) and needle in address_text(field).casefold():
                out.add(u)
        return sorted(out)

    async def _has_header(self, field: str, universe: list[int]) -> list[int]:
        pat = re.compile(rb"(?im)^" + re.escape(field.encode()) + rb"[ \t]*:")
        return [u for u in universe if pat.search(await self.view.header(u))]

    async def _sent_date(self, uid: int) -> datetime.date | None:
        return parse_date_header(await self.view.header(uid))


def address_text(addresses: list[object]) -> str:
    """An ENVELOPE address list as text (``name <mailbox@host>, ...``; group
    markers give their name), with RFC 2047 words in names decoded."""
    out = []
    for a in addresses:
        if not isinstance(a, list) or len(a) < 4:
            continue
        name, _adl, mailbox, host = (_text(x) for x in a[:4])
        if "=?" in name:
            try:
                name = str(email.header.make_header(email.header.decode_header(name)))
            except (ValueError, LookupError, UnicodeError, AssertionError):
                pass
        if not host:
            if mailbox:
                out.append(mailbox + ":")
            continue
        out.append(f"{name} <{mailbox}@{host}>" if name else f"<{mailbox}@{host}>")
    return ", ".join(out)


def parse_date_header(header: bytes) -> datetime.date | None:
    m = re.search(rb"(?im)^date[ \t]*:(.*(?:\r\n[ \t].*)*)", header)
    if m is None:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(m.group(1).decode("latin-1").strip())
    except (TypeError, ValueError, IndexError):
        return None
    return dt.date() if dt is not None else None


def _cmp_date(value: datetime.date, op: str, d: datetime.date) -> bool:
    if op == "BEFORE":
        return value < d
    if op == "ON":
        return value == d
    return value >= d


# -- SORT (RFC 5256) -----------------------------------------------------

_SUBJ_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?)\s*(?:\[[^\]]*\])?\s*:\s*|\[[^\]]*\]\s*)+", re.I)
_SUBJ_TRAILER = re.compile(r"(?:\s*\(fwd\))+\s*$", re.I)


def base_subject(s: str) -> str:
    """RFC 5256 section 2.1, the common steps (no RFC 2047 decoding)."""
    s = " ".join(s.split())
    while True:
        t = _SUBJ_TRAILER.sub("", s)
        t = _SUBJ_PREFIX.sub("", t)
        if t.lower().startswith("[fwd:") and t.endswith("]"):
            t = t[5:-1].strip()
        if t == s:
            return s.lower()
        s = t


def _text(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v if isinstance(v, str) else ""


def _first_mailbox(addrs: object, *, display: bool = False) -> str:
    if not isinstance(addrs, list) or not addrs:
        return ""
    a = addrs[0]
    if not isinstance(a, list) or len(a) < 4:
        return ""
    if display and a[0]:
        return _text(a[0]).lower()
    return _text(a[2]).lower()


async def sort_uids(sel: Selected, uids: list[int], criteria: Sequence[tuple[str, bool]]) -> list[int]:
    view = sel.view
    rows: list[tuple[list[object], int]] = []
    for u in uids:
        info = view.info(u)
        env: object = None
        key: list[object] = []
        for name, _rev in criteria:
            if name == "ARRIVAL":
                key.append(info.internal_date.timestamp())
            elif name == "SIZE":
                key.append(info.size)
            else:
                if env is None:
                    env = await view.envelope(u)
                e = env if isinstance(env, list) else [None] * 10
                if name == "DATE":
                    try:
                        dt = email.utils.parsedate_to_datetime(_text(e[0]))
                        key.append(dt.timestamp())
                    except (TypeError, ValueError, IndexError):
                        key.append(info.internal_date.timestamp())
                elif name == "SUBJECT":
                    key.append(base_subject(_text(e[1])))
                elif name in ("FROM", "DISPLAYFROM"):
                    key.append(_first_mailbox(e[2], display=name == "DISPLAYFROM"))
                elif name in ("TO", "DISPLAYTO"):
                    key.append(_first_mailbox(e[5], display=name == "DISPLAYTO"))
                elif name == "CC":
                    key.append(_first_mailbox(e[6]))
        rows.append((key, u))
    # stable multi-key sort: last key first; ties fall back to sequence order
    rows.sort(key=lambda r: r[1])
    for i in range(len(criteria) - 1, -1, -1):
        rev = criteria[i][1]
        rows.sort(key=lambda r, i=i: r[0][i], reverse=rev)  # type: ignore[misc]
    return [u for _, u in rows]
