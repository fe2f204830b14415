"""THREAD (RFC 5256): the pure algorithms, and the command.  The expected
threads are Dovecot's answers for the same messages (tests/imap/
test_dovecot_diff.py runs the same set against a live Dovecot)."""

from __future__ import annotations

from tests.imap.conftest import Harness
from tests.imap.test_commands import append, tagged
from tests.imap.test_dovecot_diff import SCENARIOS

from dynamail.imap.thread import Msg, is_reply, message_ids, orderedsubject, references


def _msgs() -> list[Msg]:
    def m(n: int, mid: str | None, subject: str, refs: str = "") -> Msg:
        return Msg(n, n, float(n), subject, mid, message_ids(refs))

    return [
        m(1, "a@x", "Hello"), m(2, "b@x", "Re: Hello", "<a@x>"), m(3, "c@x", "Re: Hello", "<a@x> <b@x>"),
        m(4, "d@x", "Other"), m(5, "e@x", "Re: Hello", "<a@x>"), m(6, "f@x", "Fwd: other"),
        m(7, "g@x", "Lost parent", "<missing@x>"), m(8, "h@x", "Re: Lost parent", "<missing@x>"),
        m(9, "i@x", "Hello"), m(10, "j@x", "[list] Re: Hello", "<i@x>"), m(11, "b@x", "Duplicate id"),
        m(12, "k@x", "Loop", "<l@x>"), m(13, "l@x", "Loop", "<k@x>"), m(14, None, "No id"), m(15, "m@x", ""),
    ]


def test_references_and_orderedsubject() -> None:
    assert references(_msgs()) == "((1 (2 3)(5))(9 10))(4 6)((7)(8))(11)(13 12)(14)(15)"
    assert orderedsubject(_msgs()) == "(1 (2)(3)(5)(9)(10))(4 6)(7 8)(11)(12 13)(14)(15)"
    assert references([]) == "" and orderedsubject([]) == ""
    assert is_reply("Re: x") and is_reply("[list] Fwd: x") and not is_reply("Hello")


def test_thread_command(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        for line in SCENARIOS["thread"]:
            if line.startswith(b"APPEND INBOX "):
                data = line.split(b"}\r\n", 1)[1]
                await append(c, data)
        await c.ok("SELECT INBOX")
        assert (await c.ok("THREAD REFERENCES UTF-8 ALL"))[0] == (
            "* THREAD ((1 (2 3)(5))(9 10))(4 6)((7)(8))(11)(13 12)(14)(15)"
        )
        assert (await c.ok("UID THREAD ORDEREDSUBJECT UTF-8 SUBJECT hello"))[0] == "* THREAD (1 (2)(3)(5)(9)(10))"
        assert (await c.ok("THREAD REFERENCES UTF-8 SUBJECT nothing-matches"))[0] == "* THREAD"
        assert tagged(await c.cmd("THREAD BOGUS UTF-8 ALL")).startswith("BAD")
        assert tagged(await c.cmd("THREAD REFERENCES KOI8-R ALL")).startswith("NO [BADCHARSET")
    imap(go)
