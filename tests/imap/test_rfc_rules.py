"""Transcripts of client-visible rules, each test naming the RFC section it
holds the server to (flags and keywords, \\Recent, MOVE, CONDSTORE search,
BINARY, the astring grammar)."""

from __future__ import annotations

import re

from tests.imap.conftest import PASSWORD, Harness
from tests.imap.test_commands import MSG1, append, claim_recent, lit, tagged

SYSTEM = "\\Answered \\Flagged \\Deleted \\Seen \\Draft"


# -- RFC 3501 7.2.6 / RFC 9051 7.3.5: keywords are announced before use ----


def test_new_keyword_is_announced_before_the_fetch_that_carries_it(imap) -> None:
    async def go(h: Harness) -> None:
        a = await h.login()
        b = await h.login()
        await append(a, MSG1)
        await append(a, MSG1)
        await claim_recent(h)
        assert (await a.ok("SELECT INBOX"))[0] == f"* FLAGS ({SYSTEM})"
        await b.ok("SELECT INBOX")
        # this session's STORE: FLAGS and PERMANENTFLAGS first, then FETCH
        lines = await a.ok("STORE 1 +FLAGS ($Label1)")
        assert lines[:3] == [
            f"* FLAGS ({SYSTEM} $Label1)",
            f"* OK [PERMANENTFLAGS ({SYSTEM} $Label1 \\*)] Flags permitted",
            "* 1 FETCH (FLAGS ($Label1))",
        ]
        # a keyword the client already knows is not announced again
        assert (await a.ok("STORE 2 +FLAGS ($Label1)"))[0] == "* 2 FETCH (FLAGS ($Label1))"
        # another session learns of it before the FETCH of the change
        lines = await b.ok("NOOP")
        assert lines[0] == f"* FLAGS ({SYSTEM} $Label1)"
        assert lines.index(f"* FLAGS ({SYSTEM} $Label1)") < lines.index("* 1 FETCH (FLAGS ($Label1))")
        # a new message carrying a new keyword: FLAGS before EXISTS
        await append(a, MSG1, "$keyword2", box="INBOX")
        lines = await b.ok("NOOP")
        assert lines[0] == f"* FLAGS ({SYSTEM} $Label1 $keyword2)"
        assert lines[2] == "* 3 EXISTS"
        # a FETCH never shows a keyword the mailbox's FLAGS did not list
        for c in (a, b):
            lines = await c.ok("FETCH 1:* FLAGS")
            listed = set()
            for line in lines:
                if line.startswith("* FLAGS ("):
                    listed |= set(line[9:-1].split())
                m = re.match(r"\* \d+ FETCH \(FLAGS \((.*)\)\)", line)
                if m:
                    assert {f for f in m.group(1).split() if not f.startswith("\\")} <= listed | {"$Label1", "$keyword2"}
        # EXAMINE lists them too, with an empty PERMANENTFLAGS
        lines = await b.ok("EXAMINE INBOX")
        assert lines[0] == f"* FLAGS ({SYSTEM} $Label1 $keyword2)"
        assert "* OK [PERMANENTFLAGS ()] Read-only mailbox" in lines
    imap(go)


def test_copy_with_keywords_reaches_the_destination_session(imap) -> None:
    """RFC 3501 7.2.6 and 7.3.1: the session that has the destination
    selected sees FLAGS (new keywords), EXISTS and the new message's flags."""
    async def go(h: Harness) -> None:
        a = await h.login()
        b = await h.login()
        await a.ok("CREATE Dest")
        await append(a, MSG1, "$Label1 \\Flagged")
        await a.ok("SELECT INBOX")
        lines = await b.ok("SELECT Dest")
        assert "* 0 EXISTS" in lines
        assert re.match(r"t\d+ OK \[COPYUID \d+ 1 1\]", (await a.ok("COPY 1 Dest"))[-1])
        lines = await b.ok("NOOP")
        assert lines[:4] == [
            f"* FLAGS ({SYSTEM} $Label1)",
            f"* OK [PERMANENTFLAGS ({SYSTEM} $Label1 \\*)] Flags permitted",
            "* 1 EXISTS",
            "* 1 RECENT",
        ]
        assert (await b.ok("FETCH 1 FLAGS"))[0] == "* 1 FETCH (FLAGS ($Label1 \\Flagged \\Recent))"
    imap(go)


def test_keyword_nil_is_refused(imap) -> None:
    """RFC 3501/9051 section 9: NIL in a flag list is the nil token, not a
    keyword a FETCH could ever return distinguishably."""
    async def go(h: Harness) -> None:
        c = await h.login()
        await append(c, MSG1)
        await c.ok("SELECT INBOX")
        assert tagged(await c.cmd("STORE 1 +FLAGS (NIL)")).startswith("BAD")
        assert tagged(await c.cmd("STORE 1 +FLAGS nil")).startswith("BAD")
        assert tagged(await c.cmd(b"APPEND INBOX (NIL) " + lit(MSG1))).startswith("BAD")
        assert tagged(await c.cmd("SEARCH KEYWORD NIL")).startswith("BAD")
        assert "NIL" not in (await c.ok("FETCH 1 FLAGS"))[0]
    imap(go)


# -- RFC 3501 2.3.2, 6.3.1, 6.3.2, 6.3.10, 6.4.4, 7.3.2: \Recent ---------------


def test_recent_in_select_status_search_and_fetch(imap) -> None:
    async def go(h: Harness) -> None:
        a = await h.login()
        for flags in ("", "\\Seen", ""):
            await append(a, MSG1, flags)
        # STATUS (RECENT) before anybody selected the mailbox: all three
        assert (await a.ok("STATUS INBOX (RECENT MESSAGES)"))[0] == "* STATUS INBOX (RECENT 3 MESSAGES 3)"
        # EXAMINE shows them \Recent without taking the flag away (6.3.2)
        lines = await a.ok("EXAMINE INBOX")
        assert "* 3 RECENT" in lines
        assert (await a.ok("STATUS INBOX (RECENT)"))[0] == "* STATUS INBOX (RECENT 3)"
        # the first SELECT gets them (6.3.1 / 7.3.2)
        lines = await a.ok("SELECT INBOX")
        assert "* 3 RECENT" in lines
        assert (await a.ok("FETCH 2 FLAGS"))[0] == "* 2 FETCH (FLAGS (\\Recent \\Seen))"
        assert (await a.ok("SEARCH RECENT"))[0] == "* SEARCH 1 2 3"
        assert (await a.ok("SEARCH NEW"))[0] == "* SEARCH 1 3"  # RECENT UNSEEN
        assert (await a.ok("SEARCH OLD"))[0] == "* SEARCH"
        # a later session sees none of them as \Recent, though STATUS counts
        # them while they are \Recent in a (as Dovecot does)
        b = await h.login()
        assert (await b.ok("STATUS INBOX (RECENT)"))[0] == "* STATUS INBOX (RECENT 3)"
        lines = await b.ok("SELECT INBOX")
        assert "* 0 RECENT" in lines
        assert (await b.ok("SEARCH OLD"))[0] == "* SEARCH 1 2 3"
        assert (await b.ok("SEARCH RECENT"))[0] == "* SEARCH"
        assert (await b.ok("FETCH 2 FLAGS"))[0] == "* 2 FETCH (FLAGS (\\Seen))"
        # a message arriving is \Recent to the first session told of it
        c = await h.login()
        await append(c, MSG1)
        assert (await c.ok("STATUS INBOX (RECENT)"))[0] == "* STATUS INBOX (RECENT 4)"
        lines = await b.ok("NOOP")
        assert lines[:2] == ["* 4 EXISTS", "* 1 RECENT"]
        lines = await a.ok("NOOP")
        assert lines[0] == "* 4 EXISTS" and not any("RECENT" in x for x in lines)  # a's count is unchanged
        assert (await b.ok("SEARCH RECENT"))[0] == "* SEARCH 4"
        assert (await a.ok("SEARCH RECENT"))[0] == "* SEARCH 1 2 3"
        # an expunged \Recent message leaves the count (7.3.2 after EXPUNGE)
        await a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        assert (await a.ok("EXPUNGE"))[:2] == ["* 1 EXPUNGE", "* 2 RECENT"]
        assert (await a.ok("SEARCH RECENT"))[0] == "* SEARCH 1 2"
        # leaving the mailbox ends \Recent for a's messages
        await a.ok("UNSELECT")
        assert (await c.ok("STATUS INBOX (RECENT)"))[0] == "* STATUS INBOX (RECENT 1)"
    imap(go)


def test_imap4rev2_sessions_have_no_recent(imap) -> None:
    """RFC 9051 removed \\Recent: after ENABLE IMAP4rev2 no RECENT response,
    no \\Recent flag, and STATUS RECENT is 0."""
    async def go(h: Harness) -> None:
        c = await h.login()
        await append(c, MSG1)
        await c.ok("ENABLE IMAP4rev2")
        assert (await c.ok("STATUS INBOX (MESSAGES)"))[0] == "* STATUS INBOX (MESSAGES 1)"
        lines = await c.ok("SELECT INBOX")
        assert not any("RECENT" in x for x in lines)
        assert (await c.ok("FETCH 1 FLAGS"))[0] == "* 1 FETCH (FLAGS ())"
        # the rev2 session did not claim the message: a rev1 session still sees it
        d = await h.login()
        assert "* 1 RECENT" in await d.ok("SELECT INBOX")
    imap(go)


# -- RFC 6851 section 3.3: MOVE within one mailbox ----------------------------


def test_move_to_the_selected_mailbox(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        await append(c, MSG1, "\\Flagged")
        await append(c, MSG1)
        await claim_recent(h)
        await c.ok("SELECT INBOX")
        lines = await c.ok("UID MOVE 1 INBOX")
        assert re.match(r"\* OK \[COPYUID \d+ 1 3\] Moved", lines[0])
        assert lines[1:3] == ["* 1 EXPUNGE", "* 2 EXISTS"]
        assert (await c.ok("UID FETCH 1:* FLAGS"))[:2] == [
            "* 1 FETCH (UID 2 FLAGS ())",
            "* 2 FETCH (UID 3 FLAGS (\\Flagged \\Recent))",
        ]
    imap(go)


# -- RFC 7162 section 3.1.5: SEARCH MODSEQ with an entry name -------------------


def test_search_modseq_entry_name_and_type(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        for _ in range(3):
            await append(c, MSG1)
        await c.ok("SELECT INBOX")
        lines = await c.ok("STORE 2 +FLAGS (\\Seen)")
        lines = await c.cmd('SEARCH RETURN (ALL) 2:3 MODSEQ "/flags/\\\\seen" all 1', tag="M1")
        assert re.fullmatch(r'\* ESEARCH \(TAG "M1"\) ALL 2:3 MODSEQ \d+', lines[0])
        assert tagged(lines) == "OK SEARCH completed"
        lines = await c.ok('SEARCH MODSEQ "/flags/$Label1" priv 4')
        assert re.fullmatch(r"\* SEARCH 2 \(MODSEQ \d+\)", lines[0])
        assert tagged(await c.cmd('SEARCH MODSEQ "/flags/\\\\seen" bogus 1')).startswith("BAD")
    imap(go)


# -- RFC 3516: BINARY decodes the part's Content-Transfer-Encoding -------------

QP_MESSAGE = (
    b"From: a@example.test\r\nSubject: qp\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"soft=\r\nbreak =3D =3d\r\npadding   \r\nsoft with padding=  \r\nnext=C3=A9 =ZZ\r\n"
)


# -- RFC 7162 3.2.4: UID and MODSEQ in every FETCH once CONDSTORE is on ----


def test_condstore_fetch_responses_carry_uid_and_modseq(imap) -> None:
    """RFC 7162 3.2.4: after a CONDSTORE enabling command, the untagged
    FETCH of a STORE, of another session's change and of a FETCH that sets
    \\Seen carry UID and MODSEQ; 3.2.7 and 3.2.9: with QRESYNC, an EXPUNGE
    that removed messages ends with OK [HIGHESTMODSEQ]."""
    async def go(h: Harness) -> None:
        a = await h.login()
        b = await h.login()
        for _ in range(3):
            await append(a, MSG1)
        await claim_recent(h)
        await a.ok("SELECT INBOX")
        assert (await a.ok("STORE 1 +FLAGS (\\Flagged)"))[0] == "* 1 FETCH (FLAGS (\\Flagged))"  # not yet
        await a.ok("ENABLE CONDSTORE")
        assert re.fullmatch(r"\* 2 FETCH \(UID 2 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)",
                            (await a.ok("STORE 2 +FLAGS (\\Flagged)"))[0])
        assert re.fullmatch(r"\* 2 FETCH \(UID 2 MODSEQ \(\d+\)\)",
                            (await a.ok("STORE 2 -FLAGS.SILENT (\\Flagged)"))[0])
        await b.ok("SELECT INBOX")
        await b.ok("STORE 3 +FLAGS (\\Answered)")
        assert re.fullmatch(r"\* 3 FETCH \(UID 3 FLAGS \(\\Answered\) MODSEQ \(\d+\)\)", (await a.ok("NOOP"))[0])
        lines = await a.ok("FETCH 1 (BODY[TEXT])")
        assert lines[0] == "* 1 FETCH (BODY[TEXT] {17}"
        assert re.fullmatch(r" FLAGS \(\\Flagged \\Seen\) UID 1 MODSEQ \(\d+\)\)", lines[2]), lines
        # a FETCH that changes nothing is answered as asked
        assert (await a.ok("FETCH 1 (FLAGS)"))[0] == "* 1 FETCH (FLAGS (\\Flagged \\Seen))"
        # EXPUNGE: HIGHESTMODSEQ on the tagged OK with QRESYNC only
        await a.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
        assert (await a.ok("EXPUNGE"))[-1].endswith(" OK EXPUNGE completed")
        await a.ok("ENABLE QRESYNC")
        await a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
        lines = await a.ok("EXPUNGE")
        assert lines[0] == "* VANISHED 2"
        m = re.fullmatch(r"t\d+ OK \[HIGHESTMODSEQ (\d+)\] EXPUNGE completed", lines[-1])
        assert m, lines
        status = (await b.ok("STATUS INBOX (HIGHESTMODSEQ)"))[0]
        assert status.endswith(f"(HIGHESTMODSEQ {m.group(1)})")
        assert (await a.ok("EXPUNGE"))[-1].endswith(" OK EXPUNGE completed")  # nothing removed
        assert (await a.ok("UID EXPUNGE 1"))[-1].endswith(" OK UID EXPUNGE completed")
    imap(go)


def test_searchres_save_with_min_max(imap) -> None:
    """RFC 5182 2.4: SAVE with MIN and/or MAX (and no other result option)
    saves only those messages; with ALL or COUNT the whole result."""
    async def go(h: Harness) -> None:
        c = await h.login()
        for _ in range(4):
            await append(c, MSG1)
        await c.ok("SELECT INBOX")
        await c.ok("SEARCH RETURN (SAVE MIN) 2:4")
        assert (await c.ok("SEARCH $"))[0] == "* SEARCH 2"
        lines = await c.cmd("SEARCH RETURN (SAVE MIN MAX) 2:4", tag="S1")
        assert lines[0] == '* ESEARCH (TAG "S1") MIN 2 MAX 4'
        assert (await c.ok("UID SEARCH $"))[0] == "* SEARCH 2 4"
        await c.ok("SEARCH RETURN (SAVE MAX COUNT) 2:3")
        assert (await c.ok("SEARCH $"))[0] == "* SEARCH 2 3"
    imap(go)


def test_extended_list_forms(imap) -> None:
    """RFC 5258 3: empty selection options, a list of patterns or an empty
    RETURN make an extended LIST: no child attributes unless asked, and a
    name that is only a parent is \\NonExistent."""
    async def go(h: Harness) -> None:
        c = await h.login()
        await c.ok("CREATE a/b")
        await c.ok("DELETE a")  # a stays as the parent of a/b
        assert (await c.ok('LIST "" "a"'))[0] == '* LIST (\\Noselect \\HasChildren) "/" a'
        for command in ('LIST () "" "a"', 'LIST "" ("a")', 'LIST "" "a" RETURN ()'):
            assert (await c.ok(command))[:-1] == ['* LIST (\\NonExistent) "/" a'], command
        lines = await c.ok('LIST "" ("INBOX" "a/%")')
        assert lines[:-1] == ['* LIST () "/" INBOX', '* LIST () "/" a/b']
        assert (await c.ok('LIST () "" "a/%" RETURN (CHILDREN)'))[0] == '* LIST (\\HasNoChildren) "/" a/b'
    imap(go)


def test_binary_fetch_of_quoted_printable(imap) -> None:
    """RFC 3516 section 4.2 with the decoding rules of RFC 2045 section 6.7:
    soft line breaks (also after transport padding) join lines, trailing
    whitespace is padding, =XX is case-insensitive, a bad escape stays."""
    async def go(h: Harness) -> None:
        c = await h.login()
        await append(c, QP_MESSAGE)
        await c.ok("SELECT INBOX")
        decoded = "softbreak = =\r\npadding\r\nsoft with paddingnexté =ZZ\r\n"
        size = len(decoded.encode())
        lines = await c.ok("FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])")
        text = "\r\n".join(lines)
        assert f"BINARY.SIZE[1] {size} BINARY[1] {{{size}}}\r\n{decoded}" in text
    imap(go)


def test_append_literal8_and_nul_in_body_sections(imap) -> None:
    """RFC 3516 section 4.4: APPEND takes a literal8 (~{n}); the selected
    session gets EXISTS (and RECENT, rev1) then the tagged OK.  BINARY[]
    returns NUL as it is (literal8); BODY[] may not carry NUL (RFC 9051 4.3)."""
    async def go(h: Harness) -> None:
        c = await h.login()
        await c.ok("SELECT INBOX")
        msg = b"Subject: x\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\r\n"
        await c.raw(b"b1 APPEND INBOX ~{%d}\r\n" % len(msg))
        assert await c.line() == "+ Ready for literal data"
        await c.raw(msg + b"\r\n")
        lines = await c.until_tagged("b1")
        assert lines[:2] == ["* 1 EXISTS", "* 1 RECENT"]
        assert re.match(r"b1 OK \[APPENDUID \d+ 1\] APPEND completed", lines[2])
        await c.raw(b"b2 FETCH 1 (BINARY.PEEK[1] BODY.PEEK[1])\r\n")
        await c.until_tagged("b2")
        out = bytes(c.conn.out)
        assert b"BINARY[1] ~{4}\r\n\x00\x01\r\n BODY[1] {4}\r\n\x80\x01\r\n)" in out
    imap(go)


# -- RFC 3501 section 9: "[" and "}" are ATOM-CHARs of an astring ----------------


def test_astring_atom_with_brackets_and_brace(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        name = "!#$&'+,-.0123456789:;<=>?@^_`|[}"
        assert tagged(await c.cmd(f"SELECT {name}")).startswith("NO [NONEXISTENT]")
        assert tagged(await c.cmd(f"CREATE {name}")).startswith("NO [CANNOT]")  # a lone & is not modified UTF-7
        plain = "!#$&-'+,-.0123456789:;<=>?@^_`|[}"
        assert tagged(await c.cmd(f"SELECT {plain}")) == "NO [NONEXISTENT] No such mailbox"
        await c.ok(f"CREATE {plain}")
        lines = await c.ok(f"SELECT {plain}")
        assert lines[-1].endswith("OK [READ-WRITE] SELECT completed")
        lines = await c.ok(f'LIST "" {plain}')
        assert lines[0] == f'* LIST (\\HasNoChildren) "/" "{plain}"'
        await c.ok("NOOP")  # the connection stays up
    imap(go)


# -- RFC 3501 6.4.4: SEARCH FROM/TO/CC/BCC match the address ------------------

FROMS = [
    b"user-from@domain.org",
    b'"Real Name" <user-from@domain.org>',
    b"(comment) user-from@domain.org",
    b"user-from (comment) @ domain.org",
    b"user-from@\r\n domain.org",
    b"group: user-from@domain.org;",
    b"=?utf-8?q?R=C3=A9al?= <user-from@domain.org>",
    b"Name <user-from@domain.org",
    b"other@domain.org",
]


def test_search_from_matches_every_form_of_the_address(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        for f in FROMS:
            await append(c, b"From: " + f + b"\r\nTo: x@y.z\r\nSubject: s\r\n\r\nbody\r\n")
        await c.ok("SELECT INBOX")
        assert (await c.ok("SEARCH FROM user-from@domain.org"))[0] == "* SEARCH 1 2 3 4 5 6 7 8"
        assert (await c.ok("SEARCH FROM USER-FROM@Domain.Org"))[0] == "* SEARCH 1 2 3 4 5 6 7 8"
        assert (await c.ok('SEARCH FROM "Real Name"'))[0] == "* SEARCH 2"
        assert (await c.ok(b"SEARCH CHARSET UTF-8 FROM " + lit("Réal".encode())))[0] == "* SEARCH 7"
        assert (await c.ok("SEARCH NOT FROM user-from"))[0] == "* SEARCH 9"
        assert (await c.ok("SEARCH TO user-from"))[0] == "* SEARCH"
    imap(go)


# -- RFC 3501 7.4.2 / RFC 9051 7.5.2: ENVELOPE of groups and odd addresses -----


def test_envelope_groups_and_display_names() -> None:
    from dynamail import mime

    assert mime.addresses(b'group: g1@d1.org, "Name" <g2@d2.org>;, empty:;, "Real, Name" <a@b.c>') == [
        [None, None, "group", None],  # group start: (NIL NIL "group" NIL)
        [None, None, "g1", "d1.org"],
        ["Name", None, "g2", "d2.org"],  # a display name inside a group
        [None, None, None, None],  # group end: (NIL NIL NIL NIL)
        [None, None, "empty", None],
        [None, None, None, None],
        ["Real, Name", None, "a", "b.c"],
    ]
    # white space and comments inside an address are not part of it (RFC 5322 3.4.1)
    assert mime.addresses(b"user (c) @ domain.org (Owner)") == [["Owner", None, "user", "domain.org"]]
    assert mime.addresses(b"Real (x)  Name <a@b>") == [["Real Name", None, "a", "b"]]
    assert mime.addresses(b"Name <a@b") == [["Name", None, "a", "b"]]


def test_envelope_of_group_in_fetch(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        await append(c, b'From: a@b.c\r\nTo: group: g1@d1.org, "Name" <g2@d2.org>;\r\nCc: undisclosed:;\r\n\r\nx\r\n')
        await c.ok("EXAMINE INBOX")
        line = (await c.ok("FETCH 1 ENVELOPE"))[0]
        assert (
            '((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")("Name" NIL "g2" "d2.org")(NIL NIL NIL NIL))'
            ' ((NIL NIL "undisclosed" NIL)(NIL NIL NIL NIL)) NIL NIL NIL))'
        ) in line
    imap(go)


# -- logins by plain user name (directory/logins.py) ---------------------------


def test_login_by_plain_name_in_the_default_login_domain(imap) -> None:
    async def go(h: Harness) -> None:
        directory = h.ctx.directory
        directory.create_domain("shared.test", shared=True)
        directory.create_account("shared.test", "carol", password=PASSWORD)
        assert tagged(await (await h.connect()).cmd(f"LOGIN carol {PASSWORD}")).startswith("NO")
        directory.update_cluster_domain_defaults({"DefaultLoginDomain": "shared.test"})
        c = await h.connect()
        await c.ok(f"LOGIN carol {PASSWORD}")
        await c.ok("SELECT INBOX")
        c = await h.connect()
        await c.ok(f"LOGIN carol%shared.test {PASSWORD}")
        c = await h.connect()
        await c.ok(f"LOGIN alice {PASSWORD}")  # a Main Domain account by plain name still
        # the domain of the address the client connected to (IPAddresses) comes first
        directory.create_domain("ip.test", settings={"IPAddresses": ["127.0.0.1"]})
        directory.create_account("ip.test", "carol", password="other-pw")
        c = await h.connect()
        await c.ok("LOGIN carol other-pw")
    imap(go)
