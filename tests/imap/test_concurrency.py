"""Two sessions on one mailbox: updates appear at legal moments only."""

from __future__ import annotations

import asyncio

from tests.imap.conftest import Harness
from tests.imap.test_commands import MSG1, append


def test_exists_fetch_expunge_between_sessions(imap) -> None:
    async def go(h: Harness) -> None:
        a = await h.login()
        b = await h.login()
        for _ in range(3):
            await append(a, MSG1)
        await a.ok("SELECT INBOX")
        await b.ok("SELECT INBOX")
        # b changes flags, expunges message 2, appends one
        await b.ok("STORE 1 +FLAGS (\\Flagged)")
        await b.ok("STORE 2 +FLAGS (\\Deleted)")
        await b.ok("EXPUNGE")
        await append(b, MSG1)
        # FETCH/STORE/SEARCH by sequence number: no EXPUNGE, numbers unchanged
        lines = await a.ok("FETCH 1:3 UID")
        assert not any("EXPUNGE" in x for x in lines)
        assert lines[:3] == ["* 1 FETCH (UID 1)", "* 2 FETCH (UID 2)", "* 3 FETCH (UID 3)"]
        lines = await a.ok("SEARCH ALL")
        assert not any("EXPUNGE" in x for x in lines) and lines[0] == "* SEARCH 1 2 3"
        lines = await a.ok("STORE 3 +FLAGS (\\Seen)")
        assert not any("EXPUNGE" in x for x in lines)
        # NOOP is a legal moment: everything arrives
        lines = await a.ok("NOOP")
        assert "* 2 EXPUNGE" in lines
        assert "* 3 EXISTS" in lines
        # a selected first: the three messages are \Recent to a (RFC 3501 2.3.2);
        # the one b appended is not, as b was told of it first (its APPEND)
        assert "* 2 RECENT" in lines
        assert "* 1 FETCH (FLAGS (\\Flagged \\Recent))" in lines
        assert lines.index("* 2 EXPUNGE") < lines.index("* 3 EXISTS")
        lines = await a.ok("UID SEARCH ALL")
        assert lines[0] == "* SEARCH 1 3 4"
        # UID commands may carry EXPUNGE before their tagged reply
        await b.ok("STORE 1 +FLAGS (\\Deleted)")
        await b.ok("EXPUNGE")
        lines = await a.ok("UID FETCH 3 FLAGS")
        assert "* 1 EXPUNGE" in lines
    imap(go)


def test_idle_wakes_on_changes_from_another_session(imap) -> None:
    async def go(h: Harness) -> None:
        a = await h.login()
        b = await h.login()
        await a.ok("SELECT INBOX")
        await a.raw(b"i IDLE\r\n")
        assert await a.line() == "+ idling"
        await append(b, MSG1)  # b has not selected INBOX: a is told first
        assert await asyncio.wait_for(a.line(), 5) == "* 1 EXISTS"
        assert await asyncio.wait_for(a.line(), 5) == "* 1 RECENT"
        await b.ok("SELECT INBOX")
        await b.ok("STORE 1 +FLAGS (\\Seen)")
        assert await asyncio.wait_for(a.line(), 5) == "* 1 FETCH (FLAGS (\\Recent \\Seen))"
        await b.ok("STORE 1 +FLAGS (\\Deleted)")
        await asyncio.wait_for(a.line(), 5)
        await b.ok("EXPUNGE")
        assert await asyncio.wait_for(a.line(), 5) == "* 1 EXPUNGE"
        assert await asyncio.wait_for(a.line(), 5) == "* 0 RECENT"  # the count changed
        await a.raw(b"DONE\r\n")
        assert await a.until_tagged("i") == ["i OK IDLE terminated"]
        await a.ok("NOOP")
    imap(go)


def test_pipelined_commands(imap) -> None:
    async def go(h: Harness) -> None:
        a = await h.login()
        await append(a, MSG1)
        await a.raw(b"p1 SELECT INBOX\r\np2 FETCH 1 UID\r\np3 STORE 1 +FLAGS (x)\r\np4 NOOP\r\n")
        lines = await a.until_tagged("p4")
        tags = [x.split()[0] for x in lines if not x.startswith(("*", "+"))]
        assert tags == ["p1", "p2", "p3", "p4"]
    imap(go)


def test_fetch_of_message_expunged_by_another_session(imap) -> None:
    async def go(h: Harness) -> None:
        a = await h.login()
        b = await h.login()
        await append(a, MSG1)
        await append(a, MSG1.replace(b"Hello world", b"Second"))
        await a.ok("SELECT INBOX")
        await b.ok("SELECT INBOX")
        await b.ok("STORE 1 +FLAGS (\\Deleted)")
        await b.ok("EXPUNGE")
        lines = await a.cmd("FETCH 1:2 (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[])", tag="x1")
        text = "\r\n".join(lines)
        assert "Subject: Second" in text
        assert not any("EXPUNGE" in x for x in lines)
        assert lines[-1].startswith(("x1 OK", "x1 NO [EXPUNGEISSUED]")), lines[-1]
        lines = await a.ok("NOOP")
        assert "* 1 EXPUNGE" in lines
        await a.ok("FETCH 1 BODY.PEEK[]")
    imap(go)
