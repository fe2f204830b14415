"""A write the file system refuses (full, I/O error) is a temporary failure
(RFC 5530 UNAVAILABLE), not a server bug, and the session goes on."""

from __future__ import annotations

import errno

from tests.imap.conftest import Harness
from tests.imap.test_commands import MSG1, lit

from dynamail.storage import faults


def test_full_file_system_answers_unavailable_and_the_session_goes_on(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        await c.ok("SELECT INBOX")

        def full(point: str) -> None:
            if point == "write":
                raise OSError(errno.ENOSPC, "No space left on device")

        faults.set_hook(full)
        try:
            lines = await c.cmd(b"APPEND INBOX () " + lit(MSG1))
        finally:
            faults.set_hook(None)
        assert "NO [UNAVAILABLE]" in lines[-1], lines
        assert "SERVERBUG" not in "".join(lines)
        await c.ok("NOOP")  # the session was not ended
        lines = await c.ok(b"APPEND INBOX () " + lit(MSG1))
        assert "APPENDUID" in lines[-1]
        status = await c.ok("STATUS INBOX (MESSAGES)")
        assert status[0].endswith("(MESSAGES 1)"), status
    imap(go)
