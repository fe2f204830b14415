"""NOTIFY (RFC 5465): changes of other mailboxes pushed to one session."""

from __future__ import annotations

import asyncio
import re

from tests.imap.conftest import Harness
from tests.imap.test_commands import MSG1, append, tagged


def test_notify_status_of_other_mailboxes(imap) -> None:
    async def go(h: Harness) -> None:
        a = await h.login()
        b = await h.login()
        await a.ok("CREATE Lists")
        await a.ok("CREATE Other")
        assert "NOTIFY" in (await a.ok("CAPABILITY"))[0].split()
        # STATUS: the current state of every watched mailbox first (5.1)
        lines = await a.ok("NOTIFY SET STATUS (SELECTED (MessageNew MessageExpunge)) "
                           "(MAILBOXES (Lists INBOX) (MessageNew MessageExpunge FlagChange MailboxName))")
        assert "* STATUS INBOX (MESSAGES 0 UIDNEXT 1 UIDVALIDITY" in "\n".join(lines)
        assert any(x.startswith("* STATUS Lists (MESSAGES 0 UIDNEXT 1") for x in lines)
        assert not any("Other" in x for x in lines)
        await a.ok("SELECT INBOX")
        # another session delivers to a watched mailbox: STATUS at the next command
        await append(b, MSG1, box="Lists")
        await append(b, MSG1, box="Other")  # not watched
        lines = await a.ok("NOOP")
        assert [x for x in lines if x.startswith("* STATUS")] == [
            x for x in lines if re.match(r"\* STATUS Lists \(MESSAGES 1 UIDNEXT 2 UIDVALIDITY \d+ UNSEEN 1\)", x)
        ]
        assert len([x for x in lines if x.startswith("* STATUS")]) == 1
        # during IDLE it comes at once; the selected mailbox gets EXISTS as usual
        await a.raw(b"i IDLE\r\n")
        assert await a.line() == "+ idling"
        await append(b, MSG1, box="Lists")
        line = await asyncio.wait_for(a.line(), 5)
        assert re.match(r"\* STATUS Lists \(MESSAGES 2 UIDNEXT 3 UIDVALIDITY \d+ UNSEEN 2\)", line), line
        await append(b, MSG1)
        assert await asyncio.wait_for(a.line(), 5) == "* 1 EXISTS"
        assert await asyncio.wait_for(a.line(), 5) == "* 1 RECENT"
        # a watched mailbox that goes away (MailboxName)
        await b.ok("DELETE Lists")
        assert await asyncio.wait_for(a.line(), 5) == '* LIST (\\NonExistent) "/" Lists'
        await a.raw(b"DONE\r\n")
        assert (await a.until_tagged("i"))[-1] == "i OK IDLE terminated"
        # NOTIFY NONE stops it
        await a.ok("NOTIFY NONE")
        await append(b, MSG1, box="Other")
        assert not any(x.startswith("* STATUS") for x in await a.ok("NOOP"))
    imap(go)


def test_notify_errors(imap) -> None:
    async def go(h: Harness) -> None:
        a = await h.login()
        assert tagged(await a.cmd("NOTIFY SET (PERSONAL (SubscriptionChange))")).startswith("NO [BADEVENT (")
        assert tagged(await a.cmd("NOTIFY SET (PERSONAL (MessageNew))")).startswith("BAD")  # needs MessageExpunge
        assert tagged(await a.cmd("NOTIFY SET (NOWHERE (MessageNew MessageExpunge))")).startswith("BAD")
        assert tagged(await a.cmd("NOTIFY BOGUS")).startswith("BAD")
        await a.ok("NOTIFY SET (PERSONAL (MessageNew (UID FLAGS) MessageExpunge)) (SELECTED NONE)")
        await a.ok("NOTIFY NONE")
    imap(go)
