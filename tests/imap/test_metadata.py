"""METADATA (RFC 5464) transcripts and limits."""

from __future__ import annotations

from tests.imap.conftest import Harness
from tests.imap.test_commands import lit, tagged

from dynamail.imap import limits
from dynamail.imap.metadata import valid_entry


def test_server_and_mailbox_metadata(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        caps = (await c.ok("CAPABILITY"))[0].split()
        assert "METADATA" in caps and "METADATA-SERVER" in caps
        # server entries (RFC 5464 4.3 / 4.2)
        await c.ok('SETMETADATA "" (/private/comment "My server note")')
        assert (await c.ok('GETMETADATA "" /private/comment'))[0] == '* METADATA "" (/private/comment "My server note")'
        # mailbox entries, several at once, a literal value, depth
        await c.ok("CREATE Work")
        await c.ok(b'SETMETADATA Work (/private/comment "work" /shared/vendor/x/a "1" /shared/vendor/x/a/b '
                   + lit(b"deep") + b")")
        lines = await c.ok("GETMETADATA Work (/private/comment /shared/missing)")
        assert lines[0] == '* METADATA Work (/private/comment "work" /shared/missing NIL)'
        lines = await c.ok("GETMETADATA (DEPTH 1) Work /shared/vendor/x")
        assert lines[0] == '* METADATA Work (/shared/vendor/x NIL /shared/vendor/x/a "1")'
        lines = await c.ok("GETMETADATA (DEPTH infinity) Work /shared/vendor")
        assert lines[0] == '* METADATA Work (/shared/vendor NIL /shared/vendor/x/a "1" /shared/vendor/x/a/b "deep")'
        # MAXSIZE leaves long values out and says how long the longest was
        lines = await c.ok("GETMETADATA (MAXSIZE 2) Work (/private/comment /shared/vendor/x/a)")
        assert lines[0] == '* METADATA Work (/shared/vendor/x/a "1")'
        assert lines[-1].endswith("OK [METADATA LONGENTRIES 4] GETMETADATA completed")
        # RENAME keeps them (they belong to the mailbox), NIL removes one
        await c.ok("RENAME Work Jobs")
        await c.ok("SETMETADATA Jobs (/shared/vendor/x/a NIL)")
        assert (await c.ok("GETMETADATA Jobs /shared/vendor/x/a"))[0] == '* METADATA Jobs (/shared/vendor/x/a NIL)'
        assert (await c.ok("GETMETADATA Jobs /private/comment"))[0] == '* METADATA Jobs (/private/comment "work")'
        # kept with the account: a new session sees them
        d = await h.login()
        assert (await d.ok("GETMETADATA Jobs /private/comment"))[0] == '* METADATA Jobs (/private/comment "work")'
        # DELETE drops them; a new mailbox of that name starts empty
        await c.ok("DELETE Jobs")
        await c.ok("CREATE Jobs")
        assert (await c.ok("GETMETADATA Jobs /private/comment"))[0] == '* METADATA Jobs (/private/comment NIL)'
        # errors
        assert tagged(await c.cmd("GETMETADATA Nope /private/comment")).startswith("NO [NONEXISTENT]")
        assert tagged(await c.cmd('SETMETADATA "" (/bogus/comment "x")')).startswith("BAD")
        assert tagged(await c.cmd('SETMETADATA "" (/private/a*b "x")')).startswith("BAD")
        assert tagged(await c.cmd('SETMETADATA "" (/private/comment)')).startswith("BAD")
        assert tagged(await c.cmd("GETMETADATA (DEPTH 2) INBOX /private/comment")).startswith("BAD")
    imap(go)


def test_metadata_limits(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        big = b"x" * (limits.METADATA_MAXSIZE + 1)
        lines = await c.cmd(b'SETMETADATA "" (/private/big ' + lit(big) + b")")
        assert tagged(lines) == f"NO [METADATA MAXSIZE {limits.METADATA_MAXSIZE}] Value too large"
        many = " ".join(f'/private/e{i} "v"' for i in range(limits.METADATA_MAX_ENTRIES + 1))
        assert tagged(await c.cmd(f'SETMETADATA INBOX ({many})')) == "NO [METADATA TOOMANY] Too many entries"
        # all or nothing: nothing of the refused command was stored
        assert (await c.ok("GETMETADATA INBOX /private/e0"))[0] == "* METADATA INBOX (/private/e0 NIL)"
    imap(go)


def test_entry_names() -> None:
    assert valid_entry("/private/comment") and valid_entry("/shared/vendor/acme/x")
    assert not valid_entry("/private/") and not valid_entry("/other/x") and not valid_entry("/private//x")
    assert not valid_entry("/private/a%") and not valid_entry("/private/" + "a" * 300)
