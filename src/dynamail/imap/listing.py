"""Which names a LIST or LSUB returns, with which attributes (RFC 9051
6.3.9, RFC 3501 6.3.8/6.3.9, RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE).

Pure functions over the account's mailbox listing and subscriptions, so the
rules are tested without a session:

* A name that is not a mailbox but has mailboxes below it is ``\\Noselect``
  (with ``\\HasChildren``); a subscribed name that is neither is
  ``\\NonExistent`` (RFC 5258 section 3.4; it implies ``\\Noselect``).
* ``(SUBSCRIBED)`` returns the subscribed names, existing or not, each
  ``\\Subscribed`` (RFC 5258 3.1); ``RETURN (SUBSCRIBED)`` adds the attribute
  to an ordinary LIST.
* ``(SUBSCRIBED RECURSIVEMATCH)``: a name matching the pattern that has a
  subscribed descendant the pattern does not return (``%``) comes back as
  well, with ``("CHILDINFO" ("SUBSCRIBED"))``, whether or not it is itself
  subscribed or exists (RFC 5258 3.5, examples 5 and 8).
* ``\\HasChildren`` / ``\\HasNoChildren`` count existing mailboxes only
  (RFC 5258 4: a child that is only subscribed is no child).  An extended
  LIST (selection options, even ``()``, a list of patterns, or RETURN,
  RFC 5258 3) reports them only when asked
  (``RETURN (CHILDREN)``) and calls a name that is only a parent
  ``\\NonExistent`` (RFC 5258 3.4), as Dovecot does; the plain RFC 3501
  form keeps ``\\Noselect \\HasChildren`` for it and reports children always
  (RFC 3348).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dynamail.storage.api import MailboxListing

SEP = "/"


class Pattern:
    """A LIST pattern (RFC 9051 6.3.9: ``*`` matches anything, ``%`` anything
    but the hierarchy separator).  Matched by simulating the pattern as a
    set of positions, so hostile patterns (``*a*a*a*…``) cost at most
    len(pattern) × len(name) steps instead of exponential backtracking."""

    __slots__ = ("pat",)

    def __init__(self, pattern: str) -> None:
        if pattern[:5].upper() == "INBOX" and pattern[5:6] in ("", SEP, "*", "%"):
            pattern = "INBOX" + pattern[5:]
        self.pat = pattern

    def _closure(self, states: set[int]) -> set[int]:
        pat = self.pat
        out = set(states)
        for i in states:
            while i < len(pat) and pat[i] in "*%":
                i += 1
                out.add(i)
        return out

    def match(self, name: str) -> bool:
        pat = self.pat
        states = self._closure({0})
        for ch in name:
            nxt: set[int] = set()
            for i in states:
                if i >= len(pat):
                    continue
                p = pat[i]
                if p == "*" or (p == "%" and ch != SEP):
                    nxt.add(i)
                elif p == ch:
                    nxt.add(i + 1)
            if not nxt:
                return False
            states = self._closure(nxt)
        return len(pat) in states


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    attrs: tuple[str, ...]
    exists: bool  # a selectable mailbox (LIST-STATUS answers only for these)
    childinfo: bool = False  # ("CHILDINFO" ("SUBSCRIBED"))


def _order(name: str) -> tuple[bool, str]:
    return (name != "INBOX", name)


def _parents(name: str) -> Iterable[str]:
    parts = name.split(SEP)
    for i in range(1, len(parts)):
        yield SEP.join(parts[:i])


def list_entries(
    listings: Sequence[MailboxListing],
    subscriptions: Iterable[str],
    patterns: Sequence[Pattern],
    selection: frozenset[str] = frozenset(),
    returns: frozenset[str] = frozenset(),
    *,
    extended: bool | None = None,
) -> list[Entry]:
    """The LIST responses, in order (INBOX first, then by name).
    ``extended``: the command had selection or return options (default:
    whether ``selection`` or ``returns`` is non-empty)."""
    if extended is None:
        extended = bool(selection or returns)
    children = not extended or "CHILDREN" in returns
    by_name = {m.name: m for m in listings}
    subs = set(subscriptions) | {m.name for m in listings if m.subscribed}
    parents_of_existing: set[str] = set()
    for listing in listings:
        parents_of_existing.update(p for p in _parents(listing.name) if p not in by_name)

    def matches(name: str) -> bool:
        return any(p.match(name) for p in patterns)

    def has_children(name: str) -> bool:
        found = by_name.get(name)
        return found.has_children if found is not None else name in parents_of_existing

    subscribed_only = "SUBSCRIBED" in selection
    recursive = "RECURSIVEMATCH" in selection
    if subscribed_only:
        candidates = set(subs)
        if recursive:
            for name in subs:
                candidates.update(_parents(name))
    else:
        candidates = set(by_name) | parents_of_existing
    out: list[Entry] = []
    for name in sorted(candidates, key=_order):
        if not matches(name):
            continue
        m = by_name.get(name)
        if "SPECIAL-USE" in selection and (m is None or not m.special_use):
            continue
        childinfo = False
        if recursive:
            prefix = name + SEP
            childinfo = any(d.startswith(prefix) and not matches(d) for d in subs)
        if subscribed_only and name not in subs and not childinfo:
            continue
        attrs: list[str] = []
        if m is None:
            if name in parents_of_existing and not extended:
                attrs.append("\\Noselect")
            else:
                attrs.append("\\NonExistent")
        if children and (m is not None or name in parents_of_existing):
            attrs.append("\\HasChildren" if has_children(name) else "\\HasNoChildren")
        if m is not None and m.special_use:
            attrs.append(m.special_use)
        if name in subs and (subscribed_only or "SUBSCRIBED" in returns):
            attrs.append("\\Subscribed")
        out.append(Entry(name, tuple(attrs), m is not None, childinfo))
    return out


def lsub_entries(
    listings: Sequence[MailboxListing], subscriptions: Iterable[str], pattern: Pattern
) -> list[Entry]:
    """LSUB (RFC 3501 6.3.9): subscribed names matching the pattern; a name
    that ``%`` stops at which has subscribed names below it and is not itself
    subscribed comes back as ``\\Noselect``."""
    by_name = {m.name for m in listings}
    subs = set(subscriptions) | {m.name for m in listings if m.subscribed}
    out: dict[str, Entry] = {}
    for name in subs:
        if pattern.match(name):
            out[name] = Entry(name, (), name in by_name)
            continue
        for parent in _parents(name):
            if parent not in subs and parent not in out and pattern.match(parent):
                out[parent] = Entry(parent, ("\\Noselect",), parent in by_name)
    return [out[n] for n in sorted(out, key=_order)]
