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
        assert tagged(await a.cmd("NOTIFY SET (PERSONAL (MailboxMetadataChange))")).startswith("NO [BADEVENT (")
        assert tagged(await a.cmd("NOTIFY SET (PERSONAL (MessageNew))")).startswith("BAD")  # needs MessageExpunge
        assert tagged(await a.cmd("NOTIFY SET (NOWHERE (MessageNew MessageExpunge))")).startswith("BAD")
        assert tagged(await a.cmd("NOTIFY BOGUS")).startswith("BAD")
        await a.ok("NOTIFY SET (PERSONAL (MessageNew (UID FLAGS) MessageExpunge)) (SELECTED NONE)")
        await a.ok("NOTIFY NONE")
    imap(go)


def test_notify_mailbox_names(imap) -> None:
    """RFC 5465 section 5.4 (MailboxName): another session's CREATE, RENAME
    and DELETE are told with untagged LIST; a rename carries OLDNAME (for
    the children too); the session's own changes are not told back."""
    async def go(h: Harness) -> None:
        a = await h.login()
        b = await h.login()
        await b.ok("CREATE Keep")
        await a.ok("NOTIFY SET (PERSONAL (MailboxName))")
        await b.ok("CREATE Fresh")
        assert (await a.ok("NOOP"))[:-1] == ['* LIST () "/" Fresh']
        await b.ok("RENAME Fresh Renamed")
        assert (await a.ok("NOOP"))[:-1] == ['* LIST () "/" Renamed ("OLDNAME" (Fresh))']
        await b.ok("CREATE Sub/Child")  # the superior name is created too
        assert (await a.ok("NOOP"))[:-1] == ['* LIST () "/" Sub', '* LIST () "/" Sub/Child']
        await b.ok("RENAME Sub Top")
        assert (await a.ok("NOOP"))[:-1] == ['* LIST () "/" Top ("OLDNAME" (Sub))',
                                             '* LIST () "/" Top/Child ("OLDNAME" (Sub/Child))']
        await b.ok("DELETE Renamed")
        assert (await a.ok("NOOP"))[:-1] == ['* LIST (\\NonExistent) "/" Renamed']
        # RENAME INBOX moves its messages to a new mailbox; INBOX stays
        await b.ok("RENAME INBOX Old")
        assert (await a.ok("NOOP"))[:-1] == ['* LIST () "/" Old ("OLDNAME" (INBOX))']
        # during IDLE at once
        await a.raw(b"i IDLE\r\n")
        assert await a.line() == "+ idling"
        await b.ok("CREATE Later")
        assert await asyncio.wait_for(a.line(), 5) == '* LIST () "/" Later'
        await a.raw(b"DONE\r\n")
        assert (await a.until_tagged("i"))[-1] == "i OK IDLE terminated"
        # its own changes: only the tagged replies
        for command in ("CREATE Mine/Deep", "RENAME Mine Ours", "SUBSCRIBE Ours", "DELETE Ours/Deep"):
            assert len(await a.ok(command)) == 1, command
        assert (await a.ok("NOOP"))[:-1] == []
        # a mailbox filter: the old or the new name must be watched
        await a.ok("NOTIFY SET (MAILBOXES (Watched Keep) (MailboxName))")
        await b.ok("CREATE Elsewhere")
        await b.ok("RENAME Keep Kept")
        assert (await a.ok("NOOP"))[:-1] == ['* LIST () "/" Kept ("OLDNAME" (Keep))']
        await b.ok("RENAME Elsewhere Watched")
        assert (await a.ok("NOOP"))[:-1] == ['* LIST () "/" Watched ("OLDNAME" (Elsewhere))']
        # created and renamed between two looks: told as created, under its last name
        await b.ok("DELETE Watched")
        await b.ok("CREATE Unwatched")
        await b.ok("RENAME Unwatched Watched")
        assert (await a.ok("NOOP"))[:-1] == ['* LIST () "/" Watched']
    imap(go)


def test_notify_subscription_change(imap) -> None:
    """RFC 5465 section 5.5 (SubscriptionChange): LIST with \\Subscribed when
    another session subscribes a name, without it when it unsubscribes."""
    async def go(h: Harness) -> None:
        a = await h.login()
        b = await h.login()
        await b.ok("CREATE Lists")
        await a.ok("NOTIFY SET (PERSONAL (SubscriptionChange))")
        await b.ok("SUBSCRIBE Lists")
        assert (await a.ok("NOOP"))[:-1] == ['* LIST (\\Subscribed) "/" Lists']
        await b.ok("UNSUBSCRIBE Lists")
        assert (await a.ok("NOOP"))[:-1] == ['* LIST () "/" Lists']
        await b.ok("SUBSCRIBE Later")  # a name that does not exist (RFC 3501 6.3.6)
        assert (await a.ok("NOOP"))[:-1] == ['* LIST (\\NonExistent \\Subscribed) "/" Later']
        # without MailboxName a create or rename says nothing; a subscription
        # that moves with a RENAME is no subscription change
        await b.ok("SUBSCRIBE Lists")
        await a.ok("NOOP")
        await b.ok("RENAME Lists Letters")
        await b.ok("CREATE Other")
        assert (await a.ok("NOOP"))[:-1] == []
        # both events, on subscribed mailboxes only: the rename carries \Subscribed
        await a.ok("NOTIFY SET (SUBSCRIBED (MailboxName SubscriptionChange))")
        await b.ok("RENAME Letters Mail")
        await b.ok("CREATE Unsubscribed")
        assert (await a.ok("NOOP"))[:-1] == ['* LIST (\\Subscribed) "/" Mail ("OLDNAME" (Letters))']
        await b.ok("UNSUBSCRIBE Mail")  # was subscribed: told
        assert (await a.ok("NOOP"))[:-1] == ['* LIST () "/" Mail']
        # its own subscriptions are not told back
        await a.ok("SUBSCRIBE Other")
        assert (await a.ok("NOOP"))[:-1] == []
        # what stays unsupported is refused by name
        lines = await a.cmd("NOTIFY SET (PERSONAL (AnnotationChange))")
        assert tagged(lines).startswith("NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)")
    imap(go)
