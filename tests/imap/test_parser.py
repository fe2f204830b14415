"""The tokenizer and the grammar pieces: fixed cases, round trips, random input."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamail.imap import response
from dynamail.imap.parser import (
    STAR,
    Args,
    FetchAtt,
    ParseError,
    SearchKey,
    Section,
    SequenceSet,
    date_time,
    fetch_atts,
    flag_list,
    mailbox,
    parse_command,
    search_program,
    sequence_set,
    sort_criteria,
    tokenize,
)


def test_tokens_atoms_strings_lists_literals() -> None:
    toks = tokenize(b'a1 LOGIN "us\\"er" {3}\r\np w (x (y) NIL "NIL")')
    assert toks == ["a1", "LOGIN", b'us"er', b"p w", ["x", ["y"], "NIL", b"NIL"]]


def test_literal_plus_and_literal8() -> None:
    assert tokenize(b"a APPEND INBOX {2+}\r\nhi") == ["a", "APPEND", "INBOX", b"hi"]
    assert tokenize(b"a APPEND INBOX ~{3}\r\n\x00\x01\x02") == ["a", "APPEND", "INBOX", b"\x00\x01\x02"]


def test_bracketed_atom_keeps_spaces() -> None:
    toks = tokenize(b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.10> FLAGS)")
    assert toks[3] == ["BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.10>", "FLAGS"]


@pytest.mark.parametrize(
    "raw",
    [b"a (", b"a )", b'a "abc', b"a {5}\r\nab", b'a "a\\x"', b"a \x00", b"a {x}\r\n",
     b'a "a\x00b"', b"a {3}x"],
)
def test_malformed_tokens(raw: bytes) -> None:
    with pytest.raises(ParseError):
        tokenize(raw)


def test_nesting_is_bounded() -> None:
    with pytest.raises(ParseError):
        tokenize(b"a " + b"(" * 100 + b")" * 100)
    assert tokenize(b"a " + b"(" * 10 + b")" * 10)


def test_command_envelope() -> None:
    cmd = parse_command(b"A001 uid fetch 1:* FLAGS")
    assert (cmd.tag, cmd.name, cmd.args) == ("A001", "UID FETCH", ["1:*", "FLAGS"])
    for bad in (b"", b"(x) NOOP", b'"t" NOOP', b"a+ NOOP", b"tag", b"t (x)"):
        with pytest.raises(ParseError):
            parse_command(bad)


def test_sequence_sets() -> None:
    s = sequence_set("1:3,5,7:*")
    assert s.ranges == ((1, 3), (5, 5), (7, STAR))
    assert s.resolve(10) == [(1, 3), (5, 5), (7, 10)]
    assert sequence_set("*:4").resolve(2) == [(2, 4)]
    assert sequence_set("$").saved
    for bad in ("0", "1:0", "a", "", "1,,2", "-1", "99999999999"):
        with pytest.raises(ParseError):
            sequence_set(bad)


def test_fetch_attributes_and_macros() -> None:
    assert [a.name for a in fetch_atts("ALL")] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
    atts = fetch_atts(["BODY.PEEK[1.2.MIME]", "BINARY[3]<5.10>", "BODY[HEADER.FIELDS.NOT (X-A)]", "BINARY.SIZE[1]"])
    assert atts[0] == FetchAtt("BODY.PEEK", Section((1, 2), "MIME"), None)
    assert atts[0].peek and atts[0].response_name() == "BODY[1.2.MIME]"
    assert atts[1] == FetchAtt("BINARY", Section((3,), ""), (5, 10))
    assert atts[1].response_name() == "BINARY[3]<5>"
    assert atts[2].section == Section((), "HEADER.FIELDS.NOT", ("X-A",))
    for bad in ("BODY[MIME]", "BODY[1.FOO]", "BINARY[HEADER]", "BODY[HEADER.FIELDS]", "XYZ", "BODY[0]"):
        with pytest.raises(ParseError):
            fetch_atts(bad)


def test_search_program() -> None:
    toks = parse_command(b'a SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR (FROM "x" SEEN) NOT 1:3 UID 5:* HEADER X-Y {2}\r\nzz').args
    prog = search_program(Args(toks))
    assert prog.returns == ("MIN", "COUNT")
    assert prog.charset == "UTF-8"
    assert prog.keys[0] == SearchKey(
        "OR",
        SearchKey("AND", (SearchKey("FROM", "x"), SearchKey("SEEN"))),
        SearchKey("NOT", SearchKey("SEQ", SequenceSet(((1, 3),)))),
    )
    assert prog.keys[1] == SearchKey("UID", SequenceSet(((5, STAR),)))
    assert prog.keys[2] == SearchKey("HEADER", "X-Y", "zz")
    with pytest.raises(ParseError):
        search_program(Args(parse_command(b"a SEARCH CHARSET KOI8-R ALL").args))
    with pytest.raises(ParseError):
        search_program(Args(parse_command(b"a SEARCH FOO").args))
    with pytest.raises(ParseError):
        search_program(Args(parse_command(b"a SEARCH " + b"NOT " * 100 + b"ALL").args))


def test_dates_flags_mailboxes_sort() -> None:
    dt = date_time(b"17-Jul-1996 02:44:25 -0700")
    assert dt.utcoffset() == datetime.timedelta(hours=-7)
    with pytest.raises(ParseError):
        date_time(b"32-Jul-1996 02:44:25 -0700")
    assert flag_list(["\\seen", "$Junk"]) == frozenset({"\\Seen", "$Junk"})
    with pytest.raises(ParseError):
        flag_list(["\\Recent"])
    assert mailbox(b"inbox", utf8=False) == "INBOX"
    assert mailbox(b"Entw&APw-rfe", utf8=False) == "Entwürfe"
    assert mailbox("Entwürfe".encode(), utf8=True) == "Entwürfe"
    for bad in (b"&Jjo", b"&AGE-", "ü".encode(), b"a&-&-x&"):
        with pytest.raises(ParseError):
            mailbox(bad, utf8=False)
    assert sort_criteria(["REVERSE", "DATE", "SUBJECT"]) == (("DATE", True), ("SUBJECT", False))


# -- round trips -------------------------------------------------------------

atom_chars = st.sampled_from("abcXYZ019.-_$!&")
atoms = st.text(atom_chars, min_size=1, max_size=8).filter(lambda s: s.upper() != "NIL")
strings = st.binary(max_size=40).filter(lambda b: b"\x00" not in b)
tokens = st.recursive(
    st.one_of(atoms, strings),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


def write_token(t: object) -> bytes:
    if isinstance(t, str):
        return t.encode()
    if isinstance(t, bytes):
        return response.quoted_or_literal(t)
    assert isinstance(t, list)
    return b"(" + b" ".join(write_token(x) for x in t) + b")"


@given(st.lists(tokens, max_size=6))
@settings(max_examples=150, deadline=None)
def test_tokenize_round_trip(toks: list[object]) -> None:
    raw = b"tag CMD" + b"".join(b" " + write_token(t) for t in toks)
    assert tokenize(raw) == ["tag", "CMD", *toks]


ranges = st.tuples(st.integers(0, 50), st.integers(0, 50))


@given(st.lists(ranges, min_size=1, max_size=6))
def test_sequence_set_round_trip(rs: list[tuple[int, int]]) -> None:
    s = SequenceSet(tuple(rs))
    text = str(s)
    assert sequence_set(text) == SequenceSet(tuple((a, b) if a != b else (a, a) for a, b in rs))


@given(st.lists(st.integers(1, 200), max_size=30))
def test_compact_sequence_set(nums: list[int]) -> None:
    nums = sorted(set(nums))
    text = response.sequence_set(nums)
    if not nums:
        assert text == ""
        return
    picked = set()
    for lo, hi in sequence_set(text).resolve(1000):
        picked.update(range(lo, hi + 1))
    assert sorted(picked) == nums


section_parts = st.lists(st.integers(1, 9), max_size=3)
fetch_items = st.one_of(
    st.sampled_from(["FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "MODSEQ"]),
    st.builds(
        lambda name, parts, text, partial: str(
            FetchAtt(name, Section(tuple(parts), text if parts or text != "MIME" else "", ("FROM",) if text.startswith("HEADER.FIELDS") else ()), partial)
        ),
        st.sampled_from(["BODY", "BODY.PEEK"]),
        section_parts,
        st.sampled_from(["", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"]),
        st.one_of(st.none(), st.tuples(st.integers(0, 999), st.integers(1, 999))),
    ),
)


@given(st.lists(fetch_items, min_size=1, max_size=5))
def test_fetch_round_trip(items: list[str]) -> None:
    raw = ("a FETCH 1 (" + " ".join(items) + ")").encode()
    atts = fetch_atts(parse_command(raw).args[1])
    assert [str(a) for a in atts] == items


search_keys = st.recursive(
    st.one_of(
        st.sampled_from(["ALL", "SEEN", "UNSEEN", "DELETED", "FLAGGED", "ANSWERED", "DRAFT"]),
        st.builds(lambda n: f"LARGER {n}", st.integers(0, 10**6)),
        st.builds(lambda t: f'SUBJECT "{t}"', st.text("abc xyz", max_size=5)),
        st.builds(lambda s: f"UID {s}", st.sampled_from(["1:*", "2,4", "5"])),
        st.just("SINCE 1-Feb-2020"),
    ),
    lambda inner: st.one_of(
        st.builds(lambda k: f"NOT {k}", inner),
        st.builds(lambda a, b: f"OR {a} {b}", inner, inner),
        st.builds(lambda ks: "(" + " ".join(ks) + ")", st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=10,
)


def render_key(k: SearchKey) -> str:
    if k.name == "AND":
        return "(" + " ".join(render_key(x) for x in k.value) + ")"  # type: ignore[attr-defined]
    if k.name == "NOT":
        return "NOT " + render_key(k.value)  # type: ignore[arg-type]
    if k.name == "OR":
        return f"OR {render_key(k.value)} {render_key(k.value2)}"  # type: ignore[arg-type]
    if k.name == "LARGER":
        return f"LARGER {k.value}"
    if k.name == "SUBJECT":
        return f'SUBJECT "{k.value}"'
    if k.name == "UID":
        return f"UID {k.value}"
    if k.name == "SINCE":
        d = k.value
        assert isinstance(d, datetime.date)
        return f"SINCE {d.day}-{d.strftime('%b')}-{d.year}"
    return k.name


@given(st.lists(search_keys, min_size=1, max_size=4))
def test_search_round_trip(keys: list[str]) -> None:
    text = " ".join(keys)
    prog = search_program(Args(parse_command(("a SEARCH " + text).encode()).args))
    again = " ".join(render_key(k) for k in prog.keys)
    prog2 = search_program(Args(parse_command(("a SEARCH " + again).encode()).args))
    assert prog2.keys == prog.keys


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        cmd = parse_command(data)
    except ParseError:
        return
    args = Args(cmd.args)
    for fn in (lambda: search_program(Args(cmd.args)), lambda: fetch_atts(cmd.args[-1]) if cmd.args else None,
               lambda: sequence_set(cmd.args[0]) if cmd.args else None):
        try:
            fn()
        except ParseError:
            pass
    assert args.pos == 0
