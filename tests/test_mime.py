"""dynamail.mime: ENVELOPE, BODYSTRUCTURE, section addressing, broken input."""

from __future__ import annotations

import io
import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamail import mime

SIMPLE = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
    b"Subject: afternoon meeting\r\n"
    b"To: mooch@owatagu.siam.edu.example\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)

NESTED = (
    b"From: a@example.org\r\n"
    b"To: Team: b@example.org, \"C D\" <c@example.org>;, e@example.org\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"first part\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Disposition: attachment; filename=fwd.eml\r\n"
    b"\r\n"
    b"From: x@example.net\r\n"
    b"Subject: inner\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"plain\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"PGI+aHRtbDwvYj4=\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: application/octet-stream; name=\"a b.bin\"\r\n"
    b"Content-Language: en, de\r\n"
    b"\r\n"
    b"\x00\x01\x02\r\n"
    b"--outer--\r\n"
    b"epilogue\r\n"
)


def section(msg: bytes, sec: list[int], what: str = "") -> bytes | None:
    p = mime.parse(msg)
    r = mime.section_range(p.tree, sec, what)
    return None if r is None else msg[r[0] : r[1]]


def test_rfc_example_envelope_and_bodystructure() -> None:
    p = mime.parse(SIMPLE)
    assert p.envelope == [
        "Mon, 7 Feb 1994 21:52:25 -0800",
        "afternoon meeting",
        [["Fred Foobar", None, "foobar", "Blurdybloop.example"]],
        [["Fred Foobar", None, "foobar", "Blurdybloop.example"]],
        [["Fred Foobar", None, "foobar", "Blurdybloop.example"]],
        [[None, None, "mooch", "owatagu.siam.edu.example"]],
        None,
        None,
        None,
        "<B27397-0100000@Blurdybloop.example>",
    ]
    assert p.bodystructure == ["text", "plain", ["CHARSET", "US-ASCII"], None, None, "7bit", 55, 1, None, None, None, None]
    assert p.body == ["text", "plain", ["CHARSET", "US-ASCII"], None, None, "7bit", 55, 1]
    assert SIMPLE[: p.header_end].endswith(b"CHARSET=US-ASCII\r\n\r\n")


def test_nested_structure() -> None:
    p = mime.parse(NESTED)
    bs = p.bodystructure
    assert isinstance(bs, list)
    assert bs[3:5] == ["mixed", ["BOUNDARY", "outer"]]
    text, rfc822, binary = bs[0], bs[1], bs[2]
    # "first part" has no line break of its own (the CRLF before the
    # boundary belongs to the boundary): 0 lines, as Dovecot counts
    assert text[:2] == ["text", "plain"] and text[7] == 0  # type: ignore[index]
    assert rfc822[:2] == ["message", "rfc822"]  # type: ignore[index]
    assert rfc822[7][1] == "inner"  # type: ignore[index]  # envelope of the inner message
    inner = rfc822[8]  # type: ignore[index]
    assert inner[2] == "alternative"  # type: ignore[index]
    assert rfc822[11] == ["attachment", ["FILENAME", "fwd.eml"]]  # type: ignore[index]
    assert binary[2] == ["NAME", "a b.bin"] and binary[9] == ["en", "de"]  # type: ignore[index]
    body = p.body
    assert body[3] == "mixed" and len(body) == 4  # type: ignore[arg-type]
    env = p.envelope
    assert env[1] == "=?utf-8?q?caf=C3=A9?="  # RFC 2047 left as is
    assert env[5] == [
        [None, None, "Team", None],
        [None, None, "b", "example.org"],
        ["C D", None, "c", "example.org"],
        [None, None, None, None],
        [None, None, "e", "example.org"],
    ]


def test_section_addressing() -> None:
    assert section(NESTED, [1]) == b"first part"
    assert section(NESTED, [1], "MIME") == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    assert section(NESTED, [2], "HEADER") == b"From: x@example.net\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
    assert section(NESTED, [2, 1]) == b"plain"
    assert section(NESTED, [2, 2]) == b"PGI+aHRtbDwvYj4="
    assert section(NESTED, [2, 2], "MIME") == b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    assert section(NESTED, [3]) == b"\x00\x01\x02"
    assert section(NESTED, [4]) is None
    assert section(NESTED, [1, 1]) is None
    assert section(NESTED, [], "HEADER") == NESTED[: NESTED.index(b"\r\n\r\n") + 4]
    assert section(NESTED, [], "TEXT") == NESTED[NESTED.index(b"\r\n\r\n") + 4 :]
    assert section(NESTED, [2]).startswith(b"From: x@example.net")  # type: ignore[union-attr]
    assert section(SIMPLE, [1]) == b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    assert section(SIMPLE, [2]) is None


def test_broken_mime_degrades() -> None:
    # no closing boundary, no blank line after headers, garbage content type
    msg = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhello"
    p = mime.parse(msg)
    assert section(msg, [1]) == b"hello"
    assert p.bodystructure[1] == "mixed"  # type: ignore[index]
    assert mime.parse(b"just text no header").header_end == len(b"just text no header")
    assert mime.parse(b"Content-Type: ///\r\n\r\nx").bodystructure[:2] == ["text", "plain"]
    p = mime.parse(b"Content-Type: multipart/mixed\r\n\r\nno boundary")
    assert p.bodystructure[-5] == "mixed"  # type: ignore[index]
    assert mime.parse(b"").envelope == [None] * 10


def test_eight_bit_header_values_are_bytes() -> None:
    p = mime.parse(b"Subject: caf\xc3\xa9\r\n\r\n")
    assert p.envelope[1] == b"caf\xc3\xa9"


def test_canonical_line_ends() -> None:
    assert mime.canonical(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    assert mime.canonical(b"a\r\n") == b"a\r\n"


def test_deep_nesting_is_bounded() -> None:
    msg = b""
    for i in range(300):
        msg += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
    p = mime.parse(msg + b"x")
    assert isinstance(p.bodystructure, list)
    node = p.bodystructure
    while isinstance(node[0], list):  # type: ignore[index]
        node = node[0]  # type: ignore[index]
    assert node[:2] == ["application", "octet-stream"]  # type: ignore[index]


def _values_ok(v: object) -> bool:
    if isinstance(v, list):
        return all(_values_ok(x) for x in v)
    return v is None or isinstance(v, str | bytes | int)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_parse(data: bytes) -> None:
    msg = mime.canonical(data)
    p = mime.parse(msg)
    assert _values_ok(p.envelope) and _values_ok(p.bodystructure) and _values_ok(p.body)
    assert 0 <= p.header_end <= len(msg)
    for sec in ([], [1], [1, 1], [2, 1]):
        for what in ("", "HEADER", "TEXT", "MIME"):
            r = mime.section_range(p.tree, sec, what)
            if r is not None:
                assert 0 <= r[0] <= r[1] <= len(msg)


PART = st.sampled_from([
    b"Content-Type: text/plain\r\n\r\nhi",
    b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nbody",
    b"\r\nno header",
    b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n\r\nq\r\n--zz--",
    b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n",
])


@settings(max_examples=200, deadline=None)
@given(st.lists(PART, min_size=0, max_size=5), st.booleans())
def test_generated_multiparts(parts: list[bytes], close: bool) -> None:
    msg = b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
    for part in parts:
        msg += b"--b1\r\n" + part + b"\r\n"
    if close:
        msg += b"--b1--\r\n"
    p = mime.parse(msg)
    children = list(itertools.takewhile(lambda x: isinstance(x, list), p.bodystructure))
    assert len(children) == max(1, len(parts))
    for i in range(len(parts)):
        r = mime.section_range(p.tree, [i + 1], "MIME")
        assert r is not None
        assert msg[r[0] : r[1]] == parts[i][: r[1] - r[0]]


def test_many_addresses_are_parsed_in_one_pass() -> None:
    value = b", ".join(b"User %d <u%d@example.org>" % (i, i) for i in range(20000))
    p = mime.parse(b"To: " + value + b"\r\n\r\n")
    to = p.envelope[5]
    assert isinstance(to, list) and len(to) == mime.MAX_ADDRESSES
    assert to[1] == ["User 1", None, "u1", "example.org"]
    assert mime.addresses(b"undisclosed-recipients:;") == [[None, None, "undisclosed-recipients", None], [None, None, None, None]]
    assert mime.addresses(b"a@b, (comment) <c@d>, \"x, y\" <e@f>") == [
        [None, None, "a", "b"],
        [None, None, "c", "d"],
        ["x, y", None, "e", "f"],
    ]


def test_boundary_that_prefixes_another() -> None:
    msg = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\n"
        b"Content-Type: multipart/alternative; boundary=b1\r\n\r\n"
        b"--b1\r\n\r\nplain\r\n"
        b"--b1\r\nContent-Type: text/html\r\n\r\nhtml\r\n"
        b"--b1--\r\n"
        b"--b \r\n\r\nsecond\r\n"
        b"--b--\r\n"
    )
    assert section(msg, [1, 1]) == b"plain"
    assert section(msg, [1, 2]) == b"html"
    assert section(msg, [2]) == b"second"
    assert section(msg, [3]) is None


def test_unparsed_message_part_keeps_the_message_form() -> None:
    msg = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"U3ViamVjdDogeA0KDQp5DQo=\r\n--b--\r\n"
    )
    part = mime.parse(msg).bodystructure[0]  # type: ignore[index]
    assert part[:2] == ["message", "rfc822"]  # type: ignore[index]
    assert part[7] == [None] * 10 and part[8][:2] == ["text", "plain"]  # type: ignore[index]
    assert isinstance(part[9], int)  # type: ignore[index]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64).map(lambda b: b.replace(b"x", b"\r").replace(b"y", b"\n")), st.integers(1, 9))
def test_canonical_forms_agree(data: bytes, chunk: int) -> None:
    # canonical() (two replaces), the regular expression it stands for, and
    # the streaming copy in chunks of any size give the same bytes
    want = re.sub(rb"\r?\n", b"\r\n", data)
    assert mime.canonical(data) == want
    out = io.BytesIO()
    n, _crc = mime.canonical_copy(io.BytesIO(data), out, chunk)
    assert out.getvalue() == want and n == len(want)


def test_text_part_without_charset_gets_the_default() -> None:
    """RFC 2046 4.1.2: a text part without a charset parameter is US-ASCII;
    BODYSTRUCTURE says so, as for a message without Content-Type."""
    html = mime.parse(b"Content-Type: text/html\r\n\r\n<b>x</b>\r\n")
    assert html.bodystructure[2] == ["CHARSET", "us-ascii"]
    flowed = mime.parse(b"Content-Type: text/plain; format=flowed\r\n\r\nx\r\n")
    assert flowed.body[2] == ["CHARSET", "us-ascii", "FORMAT", "flowed"]
    assert mime.parse(b"Content-Type: image/png\r\n\r\nx").body[2] is None
