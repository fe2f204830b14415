"""OBJECTID (RFC 8474) and PREVIEW (RFC 8970) transcripts."""

from __future__ import annotations

import re

from tests.imap.conftest import Harness
from tests.imap.test_commands import MSG1, MSG2, append, lit, tagged

from dynamail.imap.objectid import first_text_part, parse_email_id, preview_text

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
    bs = [["text", "html", None, None, None, "7bit", 3, 1], ["text", "plain", ["CHARSET", "x"], None, None, "7bit", 3, 1],
          "alternative", ["BOUNDARY", "b"], None, None, None]
    assert first_text_part(bs) == ((2,), "plain", "x")
    assert first_text_part(["text", "plain", None]) == ((1,), "plain", "utf-8")
    assert first_text_part(["image", "png", None]) is None
