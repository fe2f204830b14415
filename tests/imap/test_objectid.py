"""OBJECTID (RFC 8474) and PREVIEW (RFC 8970) transcripts."""

from __future__ import annotations

import re

from tests.imap.conftest import Harness
from tests.imap.memory import Client
from tests.imap.test_commands import MSG1, MSG2, append, lit, tagged

from dynamail import mime
from dynamail.imap.objectid import email_id, first_text_part, parse_email_id, preview_text

ALT = (
    b"From: a@b.c\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello <b>there</b></p>\r\n"
    b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Plain   caf=E9\r\n  second line\r\n--b--\r\n"
)


def test_mailboxid_emailid_threadid(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        assert "OBJECTID" in (await c.ok("CAPABILITY"))[0].split()
        m = re.match(r"t\d+ OK \[MAILBOXID \((M[0-9a-f]+)\)\] CREATE completed", (await c.ok("CREATE Work"))[-1])
        assert m
        work = m.group(1)
        # the id survives RENAME (RFC 8474 section 4.2) and is in STATUS and SELECT
        await c.ok("RENAME Work Jobs")
        assert (await c.ok("STATUS Jobs (MAILBOXID)"))[0] == f"* STATUS Jobs (MAILBOXID ({work}))"
        assert f"* OK [MAILBOXID ({work})] Ok" in await c.ok("SELECT Jobs")
        inbox = (await c.ok("STATUS INBOX (MAILBOXID)"))[0]
        assert work not in inbox
        await append(c, MSG1, box="Jobs")
        await append(c, MSG2, box="Jobs")
        lines = await c.ok("FETCH 1:2 (EMAILID THREADID)")
        ids = re.findall(r"EMAILID \((E[0-9a-f]+-[0-9a-f]+)\) THREADID NIL", "\n".join(lines))
        assert len(ids) == 2 and ids[0] != ids[1]
        assert (await c.ok(f"SEARCH EMAILID {ids[1]}"))[0] == "* SEARCH 2"
        assert (await c.ok("SEARCH THREADID T1"))[0] == "* SEARCH"
        assert (await c.ok("SEARCH EMAILID bogus"))[0] == "* SEARCH"
        assert parse_email_id(ids[0]) is not None
    imap(go)


DATE = '"01-Feb-2024 10:00:00 +0100"'


async def emailids(c: Client, box: str) -> list[str]:
    await c.ok(f"SELECT {box}")
    lines = await c.ok("FETCH 1:* (EMAILID)")
    return [re.fullmatch(r"\* \d+ FETCH \(EMAILID \((E[0-9a-f]+-[0-9a-f]+)\)\)", line).group(1) for line in lines[:-1]]  # type: ignore[union-attr]


def test_emailid_kept_by_copy_and_move(imap) -> None:
    """RFC 8474 section 5.1: a message keeps its EMAILID when it is COPYed
    or MOVEd to another mailbox; different messages have different ones."""
    async def go(h: Harness) -> None:
        c = await h.login()
        await c.ok("CREATE Copies")
        await c.ok("CREATE Moved")
        await append(c, MSG1)
        await append(c, MSG2)
        await c.ok(f"APPEND INBOX () {DATE} ".encode() + lit(MSG1))  # same bytes, another date
        first = await emailids(c, "INBOX")
        assert len(set(first)) == 3
        await c.ok("COPY 1:3 Copies")
        await c.ok("MOVE 1:2 Moved")
        assert await emailids(c, "Copies") == first
        assert await emailids(c, "Moved") == first[:2]
        # and from there on, once more, back to INBOX
        await c.ok("MOVE 2 INBOX")
        assert await emailids(c, "INBOX") == [first[2], first[1]]
        # SEARCH EMAILID finds the copy in its new mailbox (RFC 8474 section 6)
        await c.ok("SELECT Copies")
        assert (await c.ok(f"SEARCH EMAILID {first[1]}"))[0] == "* SEARCH 2"
        assert (await c.ok(f"UID SEARCH EMAILID {first[2]}"))[0] == "* SEARCH 3"
        assert (await c.ok(f"SEARCH EMAILID {first[1][:-2]}00"))[0] == "* SEARCH"
        assert (await c.ok("SEARCH OR EMAILID E0-00 EMAILID " + first[0]))[0] == "* SEARCH 1"
    imap(go)


def test_emailid_of_messages_stored_without_digest(imap, monkeypatch) -> None:
    """A parse result written before the digest was kept has five elements:
    it is still read, and the EMAILID comes from the message bytes, equal to
    what a new append of the same message and date gets."""
    async def go(h: Harness) -> None:
        c = await h.login()
        with monkeypatch.context() as m:
            m.setattr(mime.Parsed, "to_list", lambda self: [self.envelope, self.bodystructure, self.body,
                                                           self.tree, self.header_end])
            await c.ok(f"APPEND INBOX () {DATE} ".encode() + lit(MSG2))
        await c.ok(f"APPEND INBOX () {DATE} ".encode() + lit(MSG2))
        await c.ok("SELECT INBOX")
        lines = await c.ok("FETCH 1:2 (EMAILID ENVELOPE)")
        ids = re.findall(r"EMAILID \((E[0-9a-f]+-[0-9a-f]+)\)", "\n".join(lines))
        assert len(ids) == 2 and ids[0] == ids[1]
        assert lines[0].split("ENVELOPE", 1)[1] == lines[1].split("ENVELOPE", 1)[1]
        assert (await c.ok(f"SEARCH EMAILID {ids[0]}"))[0] == "* SEARCH 1 2"
    imap(go)


def test_email_id_helpers() -> None:
    import datetime

    digest = mime.content_digest(MSG1)
    assert len(digest) == mime.DIGEST_SIZE and mime.parse(MSG1).digest == digest
    old = datetime.datetime(1960, 1, 1, tzinfo=datetime.UTC)
    for when in (old, datetime.datetime(2024, 2, 1, 9, tzinfo=datetime.UTC)):
        eid = email_id(when, digest)
        assert len(eid) <= 255 and re.fullmatch(r"[A-Za-z0-9_-]+", eid)
        assert parse_email_id(eid) == (int(when.timestamp()), digest)
    assert parse_email_id("E1-0") is None and parse_email_id("M1") is None
    assert mime.Parsed.from_list(mime.parse(MSG2).to_list()) == mime.parse(MSG2)


def test_preview(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        assert "PREVIEW" in (await c.ok("CAPABILITY"))[0].split()
        await append(c, ALT)
        await append(c, b"Subject: x\r\nContent-Type: image/png\r\n\r\nxxxx\r\n")
        await c.ok("ENABLE UTF8=ACCEPT")
        await c.ok("EXAMINE INBOX")
        lines = await c.ok("FETCH 1:2 (PREVIEW (LAZY))")
        assert lines[0] == '* 1 FETCH (PREVIEW "Plain café second line")'  # text/plain first
        assert lines[1] == '* 2 FETCH (PREVIEW "")'  # no text: empty, NIL is "not yet"
        assert tagged(await c.cmd("FETCH 1 (PREVIEW (FUZZY))")).startswith("BAD")
        assert tagged(await c.cmd(b"FETCH 1 " + lit(b"PREVIEW"))).startswith("BAD")
    imap(go)


def test_preview_helpers() -> None:
    assert preview_text(b"<p>a &amp; <b>b</b><script>x()</script></p>", "html", "utf-8") == "a & b"
    assert preview_text(b"w " * 300, "plain", "bogus-charset") == ("w " * 100).strip()
    assert preview_text("café".encode(), "plain", "us-ascii") == "café"  # the default label, 8-bit text
    bs = [["text", "html", None, None, None, "7bit", 3, 1], ["text", "plain", ["CHARSET", "x"], None, None, "7bit", 3, 1],
          "alternative", ["BOUNDARY", "b"], None, None, None]
    assert first_text_part(bs) == ((2,), "plain", "x")
    assert first_text_part(["text", "plain", None]) == ((1,), "plain", "utf-8")
    assert first_text_part(["image", "png", None]) is None
