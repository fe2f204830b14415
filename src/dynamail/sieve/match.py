"""Comparators and match types (RFC 5228 2.7, RFC 4790, RFC 5231 relational).

Comparators: ``i;octet``, ``i;ascii-casemap`` (the default; folds only
ASCII letters) and ``i;ascii-numeric`` (a leading run of digits is the
value; a string without one is positive infinity, RFC 4790 9.1).  Match
types: ``:is``, ``:contains``, ``:matches`` (``*`` and ``?`` wildcards,
``\\`` escapes), and the relational ``:value``/``:count``.

``:matches`` is our own matcher rather than a regular expression: it
remembers failed (pattern position, text position) pairs, so its work is at
most pattern length x text length, charged to the run's :class:`Budget`;
the first match it finds gives each ``*`` the shortest text (RFC 5229 3.2),
which the variables extension exposes as ``${1}``..``${9}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dynamail.sieve import limits
from dynamail.sieve.grammar import SieveError


class SieveRuntimeError(SieveError):
    """The script failed while running (a limit, a bad value): the message is kept."""


class Budget:
    """The CPU budget of one run: abstract steps plus the thread's CPU time."""

    def __init__(self, steps: int = limits.MAX_STEPS, seconds: float = limits.MAX_CPU_SECONDS) -> None:
        self.left = steps
        self.deadline = time.thread_time() + seconds
        self._tick = 0

    def charge(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise SieveRuntimeError("script exceeded its CPU limit (steps)")
        self._tick += n
        if self._tick >= 4096:
            self._tick = 0
            if time.thread_time() > self.deadline:
                raise SieveRuntimeError("script exceeded its CPU limit (time)")


_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FOLD = str.maketrans(_UPPER, _UPPER.lower())


def ascii_fold(s: str) -> str:
    return s.translate(_FOLD)


def numeric(s: str) -> int | None:
    """The i;ascii-numeric value; None for positive infinity."""
    n = 0
    while n < len(s) and "0" <= s[n] <= "9":
        n += 1
    return int(s[:n]) if n else None


def _fold(comparator: str, s: str) -> str:
    return ascii_fold(s) if comparator == "i;ascii-casemap" else s


def compare(comparator: str, a: str, b: str) -> int:
    """-1, 0 or 1: ``a`` against ``b`` in the comparator's order."""
    if comparator == "i;ascii-numeric":
        x, y = numeric(a), numeric(b)
        if x is None or y is None:
            return 0 if x is y else (1 if x is None else -1)
        return (x > y) - (x < y)
    fa, fb = _fold(comparator, a), _fold(comparator, b)
    if comparator == "i;octet":
        ea, eb = fa.encode("utf-8", "surrogateescape"), fb.encode("utf-8", "surrogateescape")
        return (ea > eb) - (ea < eb)
    return (fa > fb) - (fa < fb)


def relation(op: str, cmp: int) -> bool:
    return {
        "gt": cmp > 0, "ge": cmp >= 0, "lt": cmp < 0, "le": cmp <= 0, "eq": cmp == 0, "ne": cmp != 0,
    }[op]


@dataclass(frozen=True, slots=True)
class Glob:
    """A compiled ``:matches`` key: literal runs and wildcards."""

    parts: tuple[str, ...]  # "*" , "?" or a literal prefixed with "="


def compile_glob(key: str) -> Glob:
    parts: list[str] = []
    lit: list[str] = []
    wild = 0
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key):
            lit.append(key[i + 1])
            i += 2
            continue
        if c in "*?":
            if lit:
                parts.append("=" + "".join(lit))
                lit = []
            wild += 1
            if wild > limits.MAX_WILDCARDS:
                raise SieveRuntimeError("too many wildcards in a :matches key")
            parts.append(c)
        else:
            lit.append(c)
        i += 1
    if lit:
        parts.append("=" + "".join(lit))
    return Glob(tuple(parts))


def glob_match(glob: Glob, text: str, comparator: str, budget: Budget) -> list[str] | None:
    """The wildcard captures if ``text`` matches, else None."""
    if comparator == "i;ascii-casemap":
        text_c = ascii_fold(text)
        parts = tuple(p if p[0] != "=" else "=" + ascii_fold(p[1:]) for p in glob.parts)
    else:
        text_c, parts = text, glob.parts
    failed: set[tuple[int, int]] = set()
    caps: list[str] = []

    def walk(pi: int, ti: int) -> bool:
        budget.charge()
        if pi == len(parts):
            return ti == len(text_c)
        if (pi, ti) in failed:
            return False
        p = parts[pi]
        if p == "?":
            if ti < len(text_c):
                caps.append(text[ti])
                if walk(pi + 1, ti + 1):
                    return True
                caps.pop()
        elif p == "*":
            if pi + 1 == len(parts):
                caps.append(text[ti:])
                return True
            nxt = parts[pi + 1]
            pos = ti
            while pos <= len(text_c):
                if nxt[0] == "=":
                    pos = text_c.find(nxt[1:], pos)
                    if pos < 0:
                        break
                caps.append(text[ti:pos])
                if walk(pi + 1, pos):
                    return True
                caps.pop()
                pos += 1
        else:
            lit = p[1:]
            budget.charge(len(lit))
            if text_c.startswith(lit, ti) and walk(pi + 1, ti + len(lit)):
                return True
        failed.add((pi, ti))
        return False

    return caps if walk(0, 0) else None


class Matcher:
    """One test's match type and comparator, applied to values and keys."""

    def __init__(self, tags: object, budget: Budget) -> None:
        get = tags.get  # type: ignore[attr-defined]
        self.comparator = str(get("comparator", "i;ascii-casemap")).lower()
        self.budget = budget
        self.kind = "is"
        self.relation = ""
        for kind in ("is", "contains", "matches", "value", "count"):
            if kind in tags:  # type: ignore[operator]
                self.kind = kind
                if kind in ("value", "count"):
                    self.relation = str(get(kind)).lower()
        #: captures of the last successful :matches (${0} is the whole value)
        self.captures: list[str] | None = None

    def match_any(self, values: list[str], keys: tuple[str, ...]) -> bool:
        """RFC 5228 2.7.1: true if any value matches any key."""
        if self.kind == "count":
            count = str(len(values))
            return any(relation(self.relation, compare(self.comparator, count, k)) for k in keys)
        for v in values:
            for k in keys:
                if self.match_one(v, k):
                    return True
        return False

    def match_one(self, value: str, key: str) -> bool:
        self.budget.charge(1 + (len(value) + len(key)) // 64)
        c = self.comparator
        if self.kind == "is":
            return compare(c, value, key) == 0
        if self.kind == "value":
            return relation(self.relation, compare(c, value, key))
        if self.kind == "contains":
            if c == "i;ascii-numeric":
                raise SieveRuntimeError("i;ascii-numeric cannot do :contains")
            self.budget.charge(len(value) // 16)
            return _fold(c, key) in _fold(c, value)
        caps = glob_match(compile_glob(key), value, c, self.budget)
        if caps is None:
            return False
        self.captures = [value, *caps]
        return True
