"""The readers on their own: Maildir file names, folder names, mbox
splitting and quoting, From_ dates, and an mboxrd property test."""

from __future__ import annotations

import datetime
import io
import mailbox as stdlib_mailbox
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamail.migrate import source
from dynamail.migrate.source import Found, Skipped
from dynamail.names import BadName


def test_maildir_info_flags() -> None:
    kw = {"a": "$Junk", "c": "Work"}
    assert source.parse_maildir_info("123.M1P2.host,S=10:2,DFPRST", None) == frozenset(
        {"\\Draft", "\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted"})
    assert source.parse_maildir_info("1.x:2,Sac", kw) == frozenset({"\\Seen", "$Junk", "Work"})
    assert source.parse_maildir_info("1.x:2,Sb", kw) == frozenset({"\\Seen"})  # no keyword b
    assert source.parse_maildir_info("1.x:2,Sa", None) == frozenset({"\\Seen"})
    assert source.parse_maildir_info("1.x;2,R", None) == frozenset({"\\Answered"})
    assert source.parse_maildir_info("1.x", None) == frozenset()


def test_maildir_folder_names() -> None:
    assert source.maildir_folder_name(".Sub.Folder") == "Sub/Folder"
    assert source.maildir_folder_name(".Entw&APw-rfe") == "Entwürfe"
    assert source.maildir_folder_name(".inbox.x") == "INBOX/x"
    for bad in (".a..b", ".a\x01", "."):
        with pytest.raises(BadName):
            source.maildir_folder_name(bad)


def test_mbox_folder_names() -> None:
    assert source.mbox_folder_name(["inbox"]) == "INBOX"
    assert source.mbox_folder_name(["Archive.sbd", "2019"]) == "Archive/2019"
    assert source.mbox_folder_name(["Sent.mbox"]) == "Sent"
    assert source.mbox_folder_name(["a", "inbox"]) == "a/inbox"


@pytest.mark.parametrize(("line", "expected"), [
    (b"From a@b Sat Jan  3 01:05:34 1996\n", datetime.datetime(1996, 1, 3, 1, 5, 34, tzinfo=datetime.UTC)),
    (b"From a@b Mon Dec 31 23:59 2001\n", datetime.datetime(2001, 12, 31, 23, 59, tzinfo=datetime.UTC)),
    (b"From a@b Tue Feb  1 10:00:00 +0200 2022\n",
     datetime.datetime(2022, 2, 1, 8, 0, tzinfo=datetime.UTC)),
    (b"From a@b Tue Feb  1 10:00:00 2022 -0500\n",
     datetime.datetime(2022, 2, 1, 15, 0, tzinfo=datetime.UTC)),
    (b"From a@b Tue Feb 31 10:00:00 2022\n", None),
    (b"From someone\n", None),
])
def test_from_line_dates(line: bytes, expected: datetime.datetime | None) -> None:
    assert source.from_line_date(line) == expected


def split(data: bytes, limit: int = source.DEFAULT_MAX_MESSAGE) -> list[Found | Skipped]:
    return list(source._split_mbox(io.BytesIO(data), "INBOX", "f", limit))


def test_mbox_split_quoting_and_status() -> None:
    items = split(
        b"From a Thu Jan  1 00:00:00 2015\nSubject: one\nStatus: RO\nX-Status: AF\nX-Keywords: Work $Junk\n"
        b"X-UID: 7\n\n>From quoted\n>>From twice\nFrom unquoted mid-paragraph\n\n"
        b"From b Thu Jan  1 00:00:01 2015\nSubject: two\n\nbody\n"
    )
    one, two = items
    assert isinstance(one, Found) and isinstance(two, Found)
    assert one.data == b"Subject: one\n\nFrom quoted\n>From twice\nFrom unquoted mid-paragraph\n"
    assert one.flags == frozenset({"\\Seen", "\\Answered", "\\Flagged", "Work", "$Junk"})
    assert two.data == b"Subject: two\n\nbody\n" and two.flags == frozenset()
    assert two.internal_date == datetime.datetime(2015, 1, 1, 0, 0, 1, tzinfo=datetime.UTC)


def test_mbox_broken_input_never_raises() -> None:
    items = split(b"junk\n\x00\xff\n\nFrom x\n\nFrom y Thu Jan  1 00:00:00 2015\n" + b"L" * 200_000 + b"\n")
    kinds = [(type(i).__name__, getattr(i, "reason", "")) for i in items]
    assert kinds[0] == ("Skipped", "data before the first From line")
    assert kinds[1] == ("Skipped", "empty message")
    assert isinstance(items[2], Found) and len(items[2].data) == 200_001
    assert split(b"") == []
    assert [type(i) for i in split(b"no separator at all\n")] == [Skipped]


def test_long_line_with_from_inside_is_not_a_separator() -> None:
    # a line longer than the read chunk whose continuation starts with "From "
    filler = b"x" * (source.READ_CHUNK - 1) + b"\n"  # exactly one chunk, then a new line
    tricky = b"y" * source.READ_CHUNK + b"From not a separator\n"
    items = split(b"From a Thu Jan  1 00:00:00 2015\nS: 1\n\n" + filler + tricky)
    assert len(items) == 1 and isinstance(items[0], Found)
    assert items[0].data.endswith(tricky)


line_text = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\r\n"),
            max_size=60),
    st.builds(lambda q, rest: ">" * q + "From " + rest, st.integers(0, 3), st.text(max_size=20).map(
        lambda s: s.replace("\n", " ").replace("\r", " "))),
    st.just(""),
)
bodies = st.lists(line_text, max_size=25).map(lambda lines: "".join(x + "\n" for x in lines).encode())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="abcXYZ ", min_size=1, max_size=20), bodies), min_size=1, max_size=6),
       st.booleans())
def test_mboxrd_export_import_is_identity(msgs: list[tuple[str, bytes]], crlf: bool) -> None:
    datas = []
    for subject, body in msgs:
        data = b"Subject: " + subject.encode() + b"\n\n" + body
        if crlf:
            data = data.replace(b"\n", b"\r\n")
        datas.append(data)
    when = datetime.datetime(2020, 5, 17, 12, 30, 1, tzinfo=datetime.UTC)
    out = io.BytesIO()
    source.write_mboxrd([(d, when) for d in datas], out)
    items = split(out.getvalue())
    assert all(isinstance(i, Found) for i in items)
    assert [i.data for i in items if isinstance(i, Found)] == datas
    assert all(i.internal_date == when for i in items if isinstance(i, Found))


@settings(max_examples=100, deadline=None)
@given(st.lists(bodies.filter(lambda b: b">From " not in b), min_size=1, max_size=5))
def test_mbox_written_by_python_mailbox_module_imports_unchanged(tmp: list[bytes]) -> None:
    # an independent writer (mboxo: "From " lines quoted as ">From ")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m")
        box = stdlib_mailbox.mbox(path)
        datas = [b"Subject: t\n\n" + b for b in tmp]
        for data in datas:
            box.add(data)
        box.close()
        fd = os.open(path, os.O_RDONLY)
        try:
            items = list(source.read_mbox(fd, "INBOX", "m"))
        finally:
            os.close(fd)
    assert [i.data for i in items if isinstance(i, Found)] == datas


def test_read_maildir_skips_links_and_special_files(tmp_path: Path) -> None:
    root = tmp_path / "md"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "cur" / "1.a:2,S").write_bytes(b"Subject: a\n\nx\n")
    (root / "cur" / "2.b:2,S").symlink_to("/etc/passwd")
    (root / "tmp" / "3.c").write_bytes(b"Subject: in tmp: not delivered yet\n\nx\n")
    fd, is_dir = source.open_root(str(root))
    try:
        assert is_dir
        items = list(source.read_maildir(fd))
    finally:
        os.close(fd)
    found = [i for i in items if isinstance(i, Found)]
    assert [f.data for f in found] == [b"Subject: a\n\nx\n"]
    assert [(i.where, i.reason) for i in items if isinstance(i, Skipped)] == [("cur/2.b:2,S", "a symbolic link")]


def test_mbox_content_length_bodies() -> None:
    body = b"From here, not quoted (mboxcl2)\n\nFrom x Mon Jan  1 00:00:00 2001\n"
    msg = b"Subject: cl\nContent-Length: %d\nStatus: RO\n\n" % len(body) + body
    items = split(b"From a Thu Jan  1 00:00:00 2015\n" + msg + b"\nFrom b Thu Jan  1 00:00:01 2015\nS: 2\n\nx\n")
    assert [type(i) for i in items] == [Found, Found]
    first = items[0]
    assert isinstance(first, Found)
    assert first.data == b"Subject: cl\n\n" + body and first.flags == frozenset({"\\Seen"})
    # a length that does not end at a message boundary is not trusted
    for wrong in (len(body) - 5, len(body) + 3, 10**9):
        bad = b"From a Thu Jan  1 00:00:00 2015\nSubject: cl\nContent-Length: %d\n\nline one\n\nFrom b Thu Jan  1 00:00:01 2015\nS: 2\n\nx\n" % wrong
        got = split(bad)
        assert [i.data for i in got if isinstance(i, Found)] == [b"Subject: cl\n\nline one\n", b"S: 2\n\nx\n"]
    # a body longer than the limit is skipped by its length without being read into memory
    big = b"y" * 3000 + b"\n"
    items = split(b"From a Thu Jan  1 00:00:00 2015\nContent-Length: %d\n\n" % len(big) + big
                  + b"From b Thu Jan  1 00:00:01 2015\nS: 2\n\nx\n", limit=1000)
    assert [type(i) for i in items] == [Skipped, Found]


_pieces = st.sampled_from([b"From a Thu Jan  1 00:00:00 2015\n", b"From \n", b"\n", b"\r\n", b">From x\n",
                           b"Content-Length: 5\n", b"Content-Length: 99999999999\n", b"Status: RO\n",
                           b"X-Keywords: a b\n", b"Subject: s\n", b"\x00\xff", b"x" * 70])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_pieces, st.binary(max_size=40)), max_size=40), st.integers(1, 300))
def test_mbox_reader_never_raises_and_loses_no_byte_budget(chunks: list[bytes], limit: int) -> None:
    data = b"".join(chunks)
    items = split(data, limit=limit)
    for item in items:
        if isinstance(item, Found):
            assert item.data.strip() and len(item.data) <= limit + 1
            assert item.mailbox == "INBOX"
        else:
            assert item.reason
