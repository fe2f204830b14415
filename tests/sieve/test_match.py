"""Comparators and match types: RFC 4790 comparators, :matches, relational."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamail.sieve.match import (
    Budget,
    Matcher,
    SieveRuntimeError,
    compare,
    compile_glob,
    glob_match,
)


@pytest.mark.parametrize("pattern, text, caps", [
    ("*", "abc", ["abc"]),
    ("a*c", "abc", ["b"]),
    ("a?c", "abc", ["b"]),
    ("*@*", "joe@example.org", ["joe", "example.org"]),
    ("a\\*b", "a*b", []),
    ("a\\*b", "axb", None),
    ("*.*", "a.b.c", ["a", "b.c"]),  # shortest first
    ("??", "a", None),
    ("", "", []),
])
def test_glob(pattern: str, text: str, caps: list[str] | None) -> None:
    assert glob_match(compile_glob(pattern), text, "i;octet", Budget()) == caps


def test_casemap_folds_ascii_only() -> None:
    assert glob_match(compile_glob("HELLO*"), "hello World", "i;ascii-casemap", Budget()) == [" World"]
    assert compare("i;ascii-casemap", "É", "é") != 0
    assert compare("i;octet", "A", "a") != 0


def test_ascii_numeric() -> None:
    assert compare("i;ascii-numeric", "010", "10") == 0
    assert compare("i;ascii-numeric", "9", "10") < 0
    assert compare("i;ascii-numeric", "x", "99999") > 0  # no digits: positive infinity
    assert compare("i;ascii-numeric", "x", "y") == 0


def test_relational_and_count() -> None:
    m = Matcher({"value": "gt", "comparator": "i;ascii-numeric"}, Budget())
    assert m.match_any(["12"], ("10",)) and not m.match_any(["9"], ("10",))
    c = Matcher({"count": "eq", "comparator": "i;ascii-numeric"}, Budget())
    assert c.match_any(["a", "b"], ("2",)) and not c.match_any(["a"], ("2",))


def test_hostile_pattern_is_bounded() -> None:
    glob = compile_glob("*a" * 30 + "b")
    with pytest.raises(SieveRuntimeError, match="CPU"):
        glob_match(glob, "a" * 4000, "i;octet", Budget(steps=100_000))
    with pytest.raises(SieveRuntimeError, match="wildcards"):
        compile_glob("*" * 100)


@given(st.text(alphabet="ab*?", max_size=8), st.text(alphabet="ab", max_size=10))
def test_glob_agrees_with_fnmatch(pattern: str, text: str) -> None:
    import fnmatch
    import re

    regex = fnmatch.translate(pattern.replace("[", "[[]"))
    expected = re.match(regex, text, re.DOTALL) is not None
    assert (glob_match(compile_glob(pattern), text, "i;octet", Budget()) is not None) == expected
