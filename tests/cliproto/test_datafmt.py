"""The CommuniGate textual data format: examples, round trips, hostile input."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamail.cliproto import datafmt
from dynamail.cliproto.datafmt import NULL, DataFormatError, IPAddress, parse, write
from dynamail.cliproto.limits import MAX_DATA_NESTING


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("abc", "abc"),
        ("alice@example.test", "alice@example.test"),
        ('"a b"', "a b"),
        ('"q\\"\\\\"', 'q"\\'),
        ('"\\r\\n\\t"', "\r\n\t"),
        ('"\\001x"', "\x01x"),
        ('"\\208\\159"', "П"),  # UTF-8 bytes given as \nnn
        ('"Привет"', "Привет"),
        ("[aGVsbG8=]", b"hello"),
        ("[]", b""),
        ("#123", 123),
        ("#-5", -5),
        ("#T02-01-2024_03:04:05", datetime.datetime(2024, 1, 2, 3, 4, 5)),
        ("#I[1.2.3.4]:25", IPAddress("1.2.3.4", 25)),
        ("#I[::1]", IPAddress("::1", 0)),
        ("#NULL#", NULL),
        ("()", []),
        ("(a, b ,c)", ["a", "b", "c"]),
        ("{}", {}),
        ('{ RealName = "Alice A" ; MaxAccountSize=100M;}', {"RealName": "Alice A", "MaxAccountSize": "100M"}),
        ("{a=(x,{b=#1;});}", {"a": ["x", {"b": 1}]}),
    ],
)
def test_parse_examples(text: str, value: object) -> None:
    assert parse(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"unterminated',
        "(a,b",
        "(a b)",
        "{a=b}",
        "{a b;}",
        "{=b;}",
        "[not base64!]",
        "[abc",
        "#T99-99-2024_00:00:00",
        "#Tsoon",
        "#I[1.2.3.4]:99999",
        "#I[]",
        "#x",
        '"bad \\q escape"',
        '"\\999"',
        "a b",
        ")",
        '"line\nbreak"',
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(DataFormatError):
        parse(text)


def test_nesting_limit() -> None:
    deep = "(" * (MAX_DATA_NESTING + 5) + ")" * (MAX_DATA_NESTING + 5)
    with pytest.raises(DataFormatError, match="nested too deeply"):
        parse(deep)
    ok = "(" * (MAX_DATA_NESTING - 1) + ")" * (MAX_DATA_NESTING - 1)
    assert parse(ok) is not None


def test_size_limit() -> None:
    with pytest.raises(DataFormatError, match="too large"):
        parse('"' + "x" * (datafmt.MAX_DATA_SIZE + 1) + '"')


def test_write_examples() -> None:
    assert write("abc") == "abc"
    assert write("a b") == '"a b"'
    assert write("") == '""'
    assert write("#5") == '"#5"'
    assert write(5) == "#5"
    assert write(True) == "YES"
    assert write(1.5) == "1.5" and write(-0.25) == '"-0.25"'

    assert write(["a", 1]) == "(a,#1)"
    assert write({"k": "v", "n": NULL}) == "{k=v;n=#NULL#;}"
    assert write(datetime.datetime(2024, 1, 2, 3, 4, 5)) == "#T02-01-2024_03:04:05"
    assert write(IPAddress("1.2.3.4", 25)) == "#I[1.2.3.4]:25"


def test_answer_dialect_avoids_null_nnn_and_addresses() -> None:
    value = {"a": NULL, "b": ["x", NULL], "c": "ctl\x01", "d": IPAddress("1.2.3.4", 25), "e": "l\n"}
    text = write(value, answer=True)
    assert "#NULL#" not in text
    assert "\\001" not in text
    assert "#I" not in text
    back = parse(text)
    assert isinstance(back, dict)
    assert "a" not in back
    assert back["b"] == ["x", ""]
    assert back["c"] == b"ctl\x01"
    assert back["d"] == "[1.2.3.4]:25"
    assert back["e"] == "l\n"


def test_write_never_contains_line_breaks() -> None:
    assert "\n" not in write({"a": "x\ny", "b": ["\r"]})
    assert "\n" not in write({"a": "x\ny"}, answer=True)


# -- properties ---------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x10FFFF), max_size=30
)
_scalars = st.one_of(
    _text,
    st.binary(max_size=30),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31)).map(
        lambda d: d.replace(microsecond=0)
    ),
    st.builds(IPAddress, st.from_regex(r"[0-9a-f.:]{1,20}", fullmatch=True), st.integers(0, 65535)),
    st.just(NULL),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(_text, children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(_values)
def test_round_trip(value: object) -> None:
    text = write(value)
    assert "\n" not in text and "\r" not in text
    assert parse(text) == value


@settings(max_examples=100, deadline=None)
@given(_values)
def test_answer_dialect_always_parses(value: object) -> None:
    back = parse(write(value, answer=True))

    def walk(v: object) -> None:
        assert v is not NULL
        assert not isinstance(v, IPAddress)
        if isinstance(v, list):
            for item in v:
                walk(item)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)

    walk(back)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        parse(data.decode("utf-8", "replace"))
    except DataFormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='{}()[]#"\\=;,aZ09 .@-TIN', max_size=60))
def test_grammar_soup_never_crashes(text: str) -> None:
    try:
        parse(text)
    except DataFormatError:
        pass
