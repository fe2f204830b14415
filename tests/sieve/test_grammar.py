"""The Sieve lexer and parser: the grammar of RFC 5228 section 8, limits,
and property tests (round trips of generated scripts, random input)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamail.sieve import limits
from dynamail.sieve.grammar import Command, Number, SieveSyntaxError, StringList, Tag, parse
from dynamail.sieve.grammar import Test as SieveTest


def test_commands_tests_and_blocks() -> None:
    tree = parse('if anyof (header :contains "subject" "x", true) { keep; } else { discard; }')
    assert [c.name for c in tree] == ["if", "else"]
    test = tree[0].tests[0]
    assert test.name == "anyof" and [t.name for t in test.tests] == ["header", "true"]
    assert test.tests[0].args == (Tag("contains", 1), StringList(("subject",), False, 1), StringList(("x",), False, 1))
    assert tree[0].block == (Command("keep", (), (), None, 1),)


def test_string_escapes_multiline_and_numbers() -> None:
    script = 'vacation :days 2K "a\\"b\\\\c\\d";\r\nreject text: # comment\r\nline1\r\n..dot\r\n.\r\n;'
    tree = parse(script)
    assert tree[0].args[1] == Number(2048, 1)
    assert tree[0].args[2] == StringList(('a"b\\cd',), False, 1)
    assert tree[1].args[0] == StringList(("line1\r\n.dot\r\n",), False, 2)


def test_comments_and_lists() -> None:
    tree = parse('/* a\n comment */ require ["a", "b"]; # trailing\nstop;')
    assert tree[0].args == (StringList(("a", "b"), True, 2),)
    assert tree[1].line == 3


@pytest.mark.parametrize("bad", [
    "keep", "keep;;", '"x";', "keep :;", "if (true { }", 'a ["x",];',
    "a text:\nno end", '"unterminated', "/* open", "}", "a 99999999999999999999G;", "a 5x;",
    "a [1];", "if true { keep; ", "a $;",
])
def test_bad_scripts_are_refused(bad: str) -> None:
    with pytest.raises(SieveSyntaxError):
        parse(bad)


def test_error_carries_the_line() -> None:
    with pytest.raises(SieveSyntaxError) as err:
        parse("keep;\n\nfileinto \"x\"\n")
    assert err.value.line == 4


def test_limits() -> None:
    deep = "if true {" * (limits.MAX_BLOCK_NESTING + 1) + "}" * (limits.MAX_BLOCK_NESTING + 1)
    with pytest.raises(SieveSyntaxError, match="nested"):
        parse(deep)
    nested = "if " + "not " * (limits.MAX_TEST_NESTING + 1) + "true {}"
    with pytest.raises(SieveSyntaxError, match="nested"):
        parse(nested)
    with pytest.raises(SieveSyntaxError, match="too long"):
        parse('a "' + "x" * (limits.MAX_STRING + 1) + '";')
    with pytest.raises(SieveSyntaxError, match="too long"):
        parse("a [" + ",".join(['"x"'] * (limits.MAX_STRING_LIST + 1)) + "];")
    with pytest.raises(SieveSyntaxError, match="too large"):
        parse(b"#" * (limits.MAX_SCRIPT_SIZE + 1))
    with pytest.raises(SieveSyntaxError, match="UTF-8"):
        parse(b'keep "\xff";')


# -- property tests: print a generated tree, parse it back ------------------

_idents = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
_strings = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_args = st.one_of(
    _idents.map(lambda n: Tag(n)),
    st.integers(0, 10**6).map(lambda n: Number(n)),
    st.lists(_strings, min_size=1, max_size=3).map(lambda v: StringList(tuple(v), True)),
)
_tests = st.recursive(
    st.builds(lambda n, a: SieveTest(n, tuple(a), ()), _idents, st.lists(_args, max_size=3)),
    lambda inner: st.builds(lambda n, t: SieveTest(n, (), tuple(t)), _idents, st.lists(inner, min_size=1, max_size=3)),
    max_leaves=6,
)
_commands = st.recursive(
    st.builds(lambda n, a, t: Command(n, tuple(a), tuple(t), None), _idents,
              st.lists(_args, max_size=3), st.lists(_tests, max_size=1)),
    lambda inner: st.builds(lambda n, b: Command(n, (), (SieveTest("true", (), ()),), tuple(b)),
                            _idents, st.lists(inner, max_size=3)),
    max_leaves=8,
)


def _arg_text(a: object) -> str:
    if isinstance(a, Tag):
        return ":" + a.name
    if isinstance(a, Number):
        return str(a.value)
    assert isinstance(a, StringList)
    return "[" + ", ".join(_quote(v) for v in a.values) + "]"


def _test_text(t: SieveTest) -> str:
    parts = [t.name, *(_arg_text(a) for a in t.args)]
    if t.tests:
        parts.append("(" + ", ".join(_test_text(x) for x in t.tests) + ")")
    return " ".join(parts)


def _command_text(c: Command) -> str:
    parts = [c.name, *(_arg_text(a) for a in c.args)]
    if len(c.tests) == 1:
        parts.append(_test_text(c.tests[0]))
    head = " ".join(parts)
    if c.block is None:
        return head + ";"
    return head + " {\n" + "\n".join(_command_text(x) for x in c.block) + "\n}"


def _strip(x: object) -> object:
    """A tree without line numbers (and bracketed flags), for comparison."""
    if isinstance(x, Command):
        return ("C", x.name, tuple(map(_strip, x.args)), tuple(map(_strip, x.tests)),
                None if x.block is None else tuple(map(_strip, x.block)))
    if isinstance(x, SieveTest):
        return ("T", x.name, tuple(map(_strip, x.args)), tuple(map(_strip, x.tests)))
    if isinstance(x, Tag):
        return ("tag", x.name)
    if isinstance(x, Number):
        return ("num", x.value)
    assert isinstance(x, StringList)
    return ("str", x.values)


@settings(max_examples=60)
@given(st.lists(_commands, max_size=4))
def test_round_trip(commands: list[Command]) -> None:
    commands = [c for c in commands if c.name != "text"]
    text = "\n".join(_command_text(c) for c in commands)
    assert [_strip(c) for c in parse(text)] == [_strip(c) for c in commands]


@given(st.binary(max_size=300))
def test_random_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    try:
        parse(data)
    except SieveSyntaxError:
        pass


@given(st.text(alphabet='ifelsrquat{}()[];,:"\\#*/ \ntext.0123456789K', max_size=200))
def test_random_token_soup_parses_or_fails_cleanly(text: str) -> None:
    try:
        parse(text)
    except SieveSyntaxError:
        pass
