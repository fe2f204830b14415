"""Variables (RFC 5229): ``set``, ``${name}`` expansion and match variables.

Names are case-insensitive; values are bounded by ``MAX_VARIABLE_SIZE`` and
their number by ``MAX_VARIABLES`` (RFC 5229 6).  Expansion is not recursive
(RFC 5229 3: the result of a substitution is not expanded again).  A
reference to a name outside our namespace (``${a.b}``) is left as written;
an unset variable expands to the empty string.  Without ``require
"variables"`` strings are taken literally.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping

from dynamail.sieve import limits
from dynamail.sieve.match import Budget, SieveRuntimeError

# RFC 5229 4.1: modifiers by precedence (higher first)
_PRECEDENCE = (("lower", 40), ("upper", 40), ("lowerfirst", 30), ("upperfirst", 30),
               ("quotewildcard", 20), ("length", 10))


def _quote_wildcard(s: str) -> str:
    return s.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


_MODIFY = {
    "lower": str.lower,
    "upper": str.upper,
    "lowerfirst": lambda s: s[:1].lower() + s[1:],
    "upperfirst": lambda s: s[:1].upper() + s[1:],
    "quotewildcard": _quote_wildcard,
    "length": lambda s: str(len(s)),
}


class Variables:
    def __init__(self, enabled: bool, budget: Budget) -> None:
        self.enabled = enabled
        self.budget = budget
        self.values: dict[str, str] = {}  # the current script's own variables
        self.matches: list[str] = []
        #: include (RFC 6609): variables shared by the scripts that declare them global
        self.globals: dict[str, str] = {}
        self.global_names: set[str] = set()  # names the current script declared global

    def _table(self, key: str) -> dict[str, str]:
        return self.globals if key in self.global_names else self.values

    def get(self, name: str) -> str:
        key = name.lower()
        return self._table(key).get(key, "")

    def set(self, name: str, value: str) -> None:
        key = name.lower()
        table = self._table(key)
        if key not in table and len(self.values) + len(self.globals) >= limits.MAX_VARIABLES:
            raise SieveRuntimeError("too many variables")
        table[key] = _truncate(value)

    def enter(self) -> tuple[dict[str, str], builtins.set[str]]:
        """A new scope for an included script (RFC 6609 3.3: variables are local)."""
        saved = (self.values, self.global_names)
        self.values, self.global_names = {}, set()
        return saved

    def leave(self, saved: tuple[dict[str, str], builtins.set[str]]) -> None:
        self.values, self.global_names = saved

    def set_with_modifiers(self, name: str, value: str, tags: Mapping[str, object]) -> None:
        for mod, _prec in _PRECEDENCE:
            if mod in tags:
                value = _MODIFY[mod](value)
        self.set(name, value)

    def set_matches(self, captures: list[str]) -> None:
        if self.enabled:
            self.matches = [_truncate(c) for c in captures[:10]]

    def expand(self, text: str) -> str:
        if not self.enabled or "${" not in text:
            return text
        self.budget.charge(1 + len(text) // 32)
        out: list[str] = []
        i = 0
        n = len(text)
        while i < n:
            j = text.find("${", i)
            if j < 0:
                out.append(text[i:])
                break
            out.append(text[i:j])
            k = text.find("}", j + 2)
            if k < 0:
                out.append(text[j:])
                break
            name = text[j + 2:k]
            value = self._lookup(name)
            if value is None:
                out.append("${")  # not a reference: keep it and go on after "${"
                i = j + 2
                continue
            out.append(value)
            i = k + 1
        return _truncate("".join(out), limits.MAX_STRING)

    def _lookup(self, name: str) -> str | None:
        if name.isascii() and name.isdigit():
            idx = int(name)
            return self.matches[idx] if idx < len(self.matches) else ""
        if not name or not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
            return None  # a namespace (a.b) or not a name: left as written
        if name[0].isdigit():
            return None
        return self.get(name)


def _truncate(value: str, size: int = limits.MAX_VARIABLE_SIZE) -> str:
    if len(value.encode("utf-8")) <= size:
        return value
    return value.encode("utf-8")[:size].decode("utf-8", "ignore")
