"""Hostile and broken input: each gets BAD/NO and the session stays usable."""

from __future__ import annotations

from tests.imap.conftest import Harness
from tests.imap.test_commands import tagged


def test_malformed_commands_keep_the_session_usable(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        cases = [
            b"SELECT (INBOX",
            b"SELECT INBOX)",
            b'SELECT "INBOX',
            b"FETCH 1 (FLAGS (UID)",
            b"SEARCH " + b"(" * 50 + b"ALL" + b")" * 50,
            b"LIST \"\" \"a\x00b\"",
            b"SELECT a\x00b",
            b"CREATE \xff\xfe",
        ]
        for raw in cases:
            lines = await c.cmd(raw)
            assert tagged(lines).startswith(("BAD", "NO")), (raw, lines)
            await c.ok("NOOP")
        # a NUL byte in the tag position
        await c.raw(b"\x00 NOOP\r\n")
        assert (await c.line()).startswith("* BAD")
        await c.ok("NOOP")
    imap(go)


def test_bad_mailbox_names(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        for name in ("../etc", "a/../../b", "..", "a//b", "/abs", "&Jjo", "&AGE-", "x&", '"a\\\\b"'):
            lines = await c.cmd(f"CREATE {name}")
            assert tagged(lines).startswith(("NO", "BAD")), (name, lines)
            lines = await c.cmd(f"SELECT {name}")
            assert tagged(lines).startswith(("NO", "BAD")), (name, lines)
        # a UTF-8 name without UTF8=ACCEPT is refused; with it, accepted
        assert tagged(await c.cmd("CREATE \"Grüße\"")).startswith("BAD")
        await c.ok("ENABLE UTF8=ACCEPT")
        await c.ok("CREATE \"Grüße\"")
        assert tagged(await c.cmd(b'CREATE "\xc3\x28"')).startswith("BAD")
        lines = await c.ok('LIST "" *')
        assert not any(".." in x for x in lines)
    imap(go)


def test_literal_overflow_and_long_lines(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        lines = await c.cmd("APPEND INBOX {999999999999}", tag="big")
        assert lines == ["big NO [TOOBIG] Message too large for APPENDLIMIT"]
        lines = await c.cmd("LOGIN {99999999999999999999}", tag="ovf")
        assert lines[-1].startswith("ovf BAD")
        await c.ok("NOOP")
        # 10 MB line in pieces
        await c.raw(b"long SEARCH SUBJECT ")
        for _ in range(160):
            await c.raw(b"x" * 65536)
        await c.raw(b"\r\n")
        assert await c.until_tagged("long") == ["long BAD Command line too long"]
        await c.ok("NOOP")
        # non-synchronising literal over the command limit is skipped
        await c.raw(b"nl LOGIN {200000+}\r\n" + b"a" * 200000 + b" x\r\n")
        assert (await c.until_tagged("nl"))[-1] == "nl BAD Literal too large"
        await c.ok("NOOP")
    imap(go)


def test_too_many_bad_commands_disconnects(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.connect()
        for _ in range(19):
            assert tagged(await c.cmd("BOGUS")) == "BAD Unknown command"
        await c.ok("NOOP")  # a good command: the count starts again
        for _ in range(19):
            assert tagged(await c.cmd("BOGUS")) == "BAD Unknown command"
        lines = await c.cmd("BOGUS", tag="last")
        assert lines == ["last BAD Unknown command"]
        assert await c.line() == "* BYE Too many invalid commands"
    imap(go)


def test_client_disconnect_mid_literal(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        await c.raw(b"a APPEND INBOX {100+}\r\nonly part")
        c.conn.feed_eof()
        for t in h.tasks:
            await t
        d = await h.login()
        assert (await d.ok("STATUS INBOX (MESSAGES)"))[0] == "* STATUS INBOX (MESSAGES 0)"
    imap(go)


def test_autologout_of_idle_clients(imap) -> None:
    async def go(h: Harness) -> None:
        limits = h.ctx.config.limits
        saved = limits.login_timeout
        limits.login_timeout = 0.2
        try:
            c = await h.connect()
            assert await c.line() == "* BYE Autologout; idle for too long"
            await h.tasks[-1]
            assert c.conn.closed
        finally:
            limits.login_timeout = saved
    imap(go)


def test_idle_timeout_ends_the_session(imap, monkeypatch) -> None:
    from dynamail.imap import limits

    async def go(h: Harness) -> None:
        c = await h.login()
        await c.ok("SELECT INBOX")
        monkeypatch.setattr(limits, "IDLE_TIMEOUT", 0.2)
        await c.raw(b"i IDLE\r\n")
        assert await c.line() == "+ idling"
        assert await c.line() == "* BYE Autologout; idle for too long"
        await h.tasks[-1]
        assert c.conn.closed
    imap(go)


def test_hostile_qresync_ranges_are_cheap(imap) -> None:
    async def go(h: Harness) -> None:
        from tests.imap.test_commands import MSG1, append

        c = await h.login()
        for _ in range(4):
            await append(c, MSG1)
        await c.ok("ENABLE QRESYNC")
        await c.ok("SELECT INBOX")
        await c.ok("STORE 2 +FLAGS (\\Deleted)")
        await c.ok("EXPUNGE")
        huge = ",".join(["1:4294967295"] * 4000)
        lines = await c.ok(f"UID FETCH {huge} (FLAGS) (CHANGEDSINCE 1 VANISHED)")
        assert lines[0] == "* VANISHED (EARLIER) 2"
        lines = await c.ok(f"SELECT INBOX (QRESYNC (1 1 {huge}))")
        assert not any("VANISHED" in x for x in lines)  # wrong UIDVALIDITY: no VANISHED
    imap(go)


def test_repeated_ranges_and_many_search_keys(imap) -> None:
    async def go(h: Harness) -> None:
        from tests.imap.test_commands import MSG1, append

        c = await h.login()
        for _ in range(3):
            await append(c, MSG1)
        await c.ok("SELECT INBOX")
        many = ",".join(["1:*", "2", "3:1"] * 3000)
        lines = await c.ok(f"FETCH {many} (UID)")
        assert lines[:-1] == ["* 1 FETCH (UID 1)", "* 2 FETCH (UID 2)", "* 3 FETCH (UID 3)"]
        lines = await c.ok(f"UID SEARCH UID {many}")
        assert lines[0] == "* SEARCH 1 2 3"
        lines = await c.cmd("SEARCH " + " ".join(["1:*"] * 2000))
        assert lines[-1].split(" ", 1)[1] == "BAD Too many search keys"
        await c.ok("NOOP")
    imap(go)


def test_hostile_list_patterns(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        await c.ok("CREATE " + "a" * 150)
        lines = await c.ok('LIST "" "' + "*a" * 400 + '*b"')
        assert len(lines) == 1
        lines = await c.ok('LIST "" "' + "%a" * 100 + '"')
        assert len(lines) == 2
        lines = await c.ok('LIST "" inbox')
        assert lines[0] == '* LIST (\\HasNoChildren) "/" INBOX'
    imap(go)


def test_list_pattern_matching() -> None:
    from dynamail.imap.listing import Pattern

    assert Pattern("*").match("a/b/c")
    assert Pattern("%").match("abc") and not Pattern("%").match("a/b")
    assert Pattern("a/%").match("a/b") and not Pattern("a/%").match("a/b/c")
    assert Pattern("a*c").match("abbbc") and not Pattern("a*c").match("abbb")
    assert Pattern("inbox/*").match("INBOX/x") and not Pattern("inboxes").match("INBOXES")
    assert Pattern("").match("") and not Pattern("").match("x")
