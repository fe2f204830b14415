"""Command framing: literals, continuation requests, limits, bounded memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamail.imap import limits
from dynamail.imap.framer import NEED_DATA, Continue, Frame, FrameError, Framer


def events(f: Framer) -> list[object]:
    out = []
    while (ev := f.next_event()) is not NEED_DATA:
        out.append(ev)
    return out


def test_lines_and_pipelining() -> None:
    f = Framer()
    f.feed(b"a NOOP\r\nb CAPA")
    assert events(f) == [Frame(b"a NOOP")]
    f.feed(b"BILITY\r\n")
    assert events(f) == [Frame(b"b CAPABILITY")]


def test_synchronising_literal_asks_for_continuation() -> None:
    f = Framer()
    f.feed(b"a LOGIN {5}\r\n")
    assert events(f) == [Continue(5)]
    f.feed(b"alice {2+}\r\npw\r\n")
    assert events(f) == [Frame(b"a LOGIN {5}\r\nalice {2+}\r\npw")]


def test_literal_arriving_in_pieces() -> None:
    f = Framer()
    f.authenticated = True
    data = b"a APPEND INBOX {10+}\r\n0123456789\r\n"
    got = []
    for i in range(len(data)):
        f.feed(data[i : i + 1])
        got += events(f)
    assert got == [Frame(data[:-2])]


def test_long_line_is_refused_in_bounded_memory() -> None:
    f = Framer()
    chunk = b"x" * 65536
    f.feed(b"tag1 NOOP ")
    for _ in range(160):  # 10 MB without a line end
        f.feed(chunk)
        assert events(f) == []
        assert f.buffered() <= limits.MAX_LINE + len(chunk)
    f.feed(b"\r\nt2 NOOP\r\n")
    assert events(f) == [FrameError("tag1", "BAD Command line too long"), Frame(b"t2 NOOP")]


def test_append_before_login_is_bounded_like_any_command() -> None:
    f = Framer()
    f.feed(b"a APPEND INBOX {1000000}\r\n")
    assert events(f) == [FrameError("a", "BAD Literal too large")]


def test_append_over_limit_gets_toobig_before_data() -> None:
    f = Framer(append_limit=1000)
    f.authenticated = True
    f.feed(b"a APPEND INBOX {2000}\r\n")
    assert events(f) == [FrameError("a", "NO [TOOBIG] Message too large for APPENDLIMIT")]
    f.feed(b"b NOOP\r\n")
    assert events(f) == [Frame(b"b NOOP")]


def test_non_sync_oversize_literal_is_skipped() -> None:
    f = Framer(append_limit=1000)
    f.authenticated = True
    f.feed(b"a APPEND INBOX {2000+}\r\n" + b"y" * 2000 + b"\r\nb NOOP\r\n")
    assert events(f) == [FrameError("a", "NO [TOOBIG] Message too large for APPENDLIMIT"), Frame(b"b NOOP")]


def test_literal_in_other_commands_is_bounded() -> None:
    f = Framer()
    f.feed(b"a LOGIN {99999999}\r\n")
    assert events(f) == [FrameError("a", "BAD Literal too large")]


def test_literal_minus_limit() -> None:
    f = Framer()
    f.feed(b"a LOGIN {5000-}\r\n" + b"z" * 5000 + b"\r\n")
    assert events(f) == [FrameError("a", "BAD Non-synchronizing literal too large (RFC 7888)")]


@given(st.lists(st.binary(max_size=200), max_size=20))
@settings(max_examples=300)
def test_random_input_never_crashes(chunks: list[bytes]) -> None:
    f = Framer(append_limit=500)
    for c in chunks:
        f.feed(c)
        for ev in events(f):
            assert isinstance(ev, (Frame, Continue, FrameError))
