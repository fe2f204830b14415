from __future__ import annotations

import datetime

from hypothesis import given
from hypothesis import strategies as st

from dynamail.imap import response, utf7
from dynamail.imap.parser import tokenize


def test_string_forms() -> None:
    assert response.astring("INBOX") == b"INBOX"
    assert response.astring("a b") == b'"a b"'
    assert response.astring("NIL") == b'"NIL"'
    assert response.astring("") == b'""'
    assert response.nstring(None) == b"NIL"
    assert response.quoted_or_literal(b'a"b\\') == b'"a\\"b\\\\"'
    assert response.quoted_or_literal(b"a\r\nb") == b"{4}\r\na\r\nb"
    assert response.quoted_or_literal("ü".encode()) == b"{2}\r\n\xc3\xbc"
    assert response.quoted_or_literal("ü".encode(), utf8=True) == '"ü"'.encode()


def test_nested_values_follow_the_grammar() -> None:
    env = ["date", "subj", [["A", None, "a", "x.test"], ["B", None, "b", "x.test"]], None]
    assert response.value(env) == b'("date" "subj" (("A" NIL "a" "x.test")("B" NIL "b" "x.test")) NIL)'
    mp = [["text", "plain", None, None, None, "7bit", 1, 1], ["text", "html", None, None, None, "7bit", 1, 1],
          "alternative", ["boundary", "b"], ["inline", None], None, None]
    out = response.value(mp)
    assert out.startswith(b'(("text" "plain" NIL NIL NIL "7bit" 1 1)("text" "html"')
    assert b'"alternative" ("boundary" "b") ("inline" NIL) NIL NIL)' in out


def test_date_time() -> None:
    dt = datetime.datetime(2024, 3, 5, 7, 8, 9, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    assert response.date_time(dt) == b'" 5-Mar-2024 07:08:09 -0500"'


@given(st.binary(max_size=100))
def test_any_bytes_survive_the_writer(data: bytes) -> None:
    assert tokenize(b"x " + response.quoted_or_literal(data)) == ["x", data] or b"\x00" in data


@given(st.text(max_size=30))
def test_utf7_round_trip(name: str) -> None:
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return
    assert utf7.decode(utf7.encode(name)) == name
