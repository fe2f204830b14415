"""THREAD (RFC 5256 sections 3 and 4): ORDEREDSUBJECT and REFERENCES.

Pure functions over :class:`Msg` records (number, sent date, subject,
Message-ID, references); the command handler builds the records from the
index and the message headers and writes the result.  Both algorithms are
bounded by the number of messages searched: every container is visited a
fixed number of times, loops in References are refused when linking.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from dynamail.imap.search import base_subject

_MSGID = re.compile(r"<([^<>\s]+)>")
_REPLY = re.compile(r"^\s*(?:\[[^\]]*\]\s*)*(?:re|fwd?)\s*(?:\[[^\]]*\])?\s*:|\(fwd\)\s*$", re.I)


@dataclass(slots=True)
class Msg:
    num: int  # what the response names (sequence number or UID)
    order: int  # tie-breaker: position in the mailbox (RFC 5256: sequence order)
    date: float  # sent date (Date: header, else INTERNALDATE), POSIX time
    subject: str
    message_id: str | None = None
    references: list[str] = field(default_factory=list)


def message_ids(text: str) -> list[str]:
    return _MSGID.findall(text)


def is_reply(subject: str) -> bool:
    """RFC 5256 section 2.1: the subject had a "Re:"/"Fwd:" or "(fwd)" removed."""
    return bool(_REPLY.search(subject)) or subject.strip().lower().startswith("[fwd:")


class _Node:
    __slots__ = ("children", "msg", "parent")

    def __init__(self, msg: Msg | None = None) -> None:
        self.msg = msg
        self.parent: _Node | None = None
        self.children: list[_Node] = []

    def add(self, child: _Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def is_ancestor_of(self, other: _Node) -> bool:
        p: _Node | None = other
        while p is not None:
            if p is self:
                return True
            p = p.parent
        return False

    def first_msg(self) -> Msg | None:
        """The message, or (dummy) that of its first child after sorting."""
        if self.msg is not None:
            return self.msg
        return self.children[0].first_msg() if self.children else None


def _key(n: _Node) -> tuple[float, int]:
    m = n.first_msg()
    return (m.date, m.order) if m is not None else (0.0, 0)


def _sort(nodes: list[_Node]) -> None:
    for n in nodes:
        _sort(n.children)
    nodes.sort(key=_key)


def render(node: _Node) -> str:
    parts: list[str] = []
    cur = node
    while True:
        if cur.msg is not None:
            parts.append(str(cur.msg.num))
        kids = cur.children
        if len(kids) == 1 and cur.msg is not None:
            cur = kids[0]
            continue
        if kids:
            parts.append("".join("(" + render(k) + ")" for k in kids))
        break
    return " ".join(parts)


def _threads(roots: list[_Node]) -> str:
    return "".join("(" + render(r) + ")" for r in roots)


def orderedsubject(msgs: Sequence[Msg]) -> str:
    """RFC 5256 section 3 ORDEREDSUBJECT: messages of one base subject form a
    thread under its first (by sent date) message; threads by that date."""
    groups: dict[str, list[Msg]] = {}
    for m in sorted(msgs, key=lambda m: (m.date, m.order)):
        groups.setdefault(base_subject(m.subject), []).append(m)
    roots = []
    for members in groups.values():
        root = _Node(members[0])
        for m in members[1:]:
            root.add(_Node(m))
        roots.append(root)
    roots.sort(key=_key)
    return _threads(roots)


def references(msgs: Sequence[Msg]) -> str:
    """RFC 5256 section 3 REFERENCES (the algorithm of section 3, steps 1-6)."""
    table: dict[str, _Node] = {}
    uniq = 0
    for m in sorted(msgs, key=lambda m: m.order):
        mid = m.message_id
        node = table.get(mid) if mid else None
        if node is None or node.msg is not None:  # no ID, or a duplicate: a unique one
            uniq += 1
            mid = mid if mid and node is None else f"\x00{uniq}"
            node = table.setdefault(mid, _Node())
        node.msg = m
        # 1A: link the references parent to child, never making a loop
        prev: _Node | None = None
        for ref in m.references:
            cur = table.get(ref)
            if cur is None:
                cur = table[ref] = _Node()
            if prev is not None and cur.parent is None and cur is not prev and not cur.is_ancestor_of(prev):
                prev.add(cur)
            prev = cur
        # 1B: the last reference is the message's parent
        if prev is not None and prev is not node and not node.is_ancestor_of(prev):
            prev.add(node)
        elif node.parent is not None and prev is None:
            node.parent.children.remove(node)
            node.parent = None
    roots = [n for n in table.values() if n.parent is None]
    roots = _prune(roots, top=True)
    _sort(roots)
    roots = _group_by_subject(roots)
    _sort(roots)
    return _threads(roots)


def _prune(nodes: list[_Node], *, top: bool) -> list[_Node]:
    """Step 4: drop empty dummies; a dummy's children take its place, except
    a dummy with several children at the top level."""
    out: list[_Node] = []
    for n in nodes:
        n.children = _prune(n.children, top=False)
        for c in n.children:
            c.parent = n
        if n.msg is None:
            if not n.children:
                continue
            if not top or len(n.children) == 1:
                for c in n.children:
                    c.parent = None
                out.extend(n.children)
                n.children = []
                continue
        out.append(n)
    if top:
        for n in out:
            n.parent = None
    return out


def _subject_of(n: _Node) -> tuple[str, bool]:
    m = n.first_msg()
    if m is None:
        return "", False
    return base_subject(m.subject), is_reply(m.subject)


def _group_by_subject(roots: list[_Node]) -> list[_Node]:
    """Step 5: gather the top-level threads of one base subject."""
    table: dict[str, _Node] = {}
    for r in roots:
        subj, reply = _subject_of(r)
        if not subj:
            continue
        old = table.get(subj)
        if old is None or (r.msg is None and old.msg is not None) or (
            old.msg is not None and r.msg is not None and _subject_of(old)[1] and not reply
        ):
            table[subj] = r
    out: list[_Node] = []
    for r in roots:
        subj, reply = _subject_of(r)
        target = table.get(subj) if subj else None
        if target is None or target is r:
            out.append(r)
            continue
        if target.msg is None and r.msg is None:
            for c in list(r.children):
                target.add(c)
        elif target.msg is None:
            target.add(r)
        elif reply and not _subject_of(target)[1]:
            target.add(r)
        else:
            dummy = _Node()
            if target in out:
                out[out.index(target)] = dummy
            else:
                out.append(dummy)
            dummy.add(target)
            dummy.add(r)
            table[subj] = dummy
    return out
