"""Transcripts of every command and response code, on the in-memory transport
against the real session, storage engine, directory and authenticator."""

from __future__ import annotations

import base64
import re

from tests.imap.conftest import PASSWORD, Harness
from tests.imap.memory import Client

MSG1 = (
    b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: Hello world\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n\r\nFirst body line\r\n"
)
MSG2 = (
    b"From: Carol <carol@example.test>\r\nTo: alice@example.test\r\nSubject: Re: Lunch\r\n"
    b"Date: Tue, 2 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    b"--XX\r\nContent-Type: text/plain\r\n\r\nlunch at noon\r\n"
    b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(b"\x00\x01binary\xff") + b"\r\n--XX--\r\n"
)


def lit(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


async def append(c: Client, data: bytes, flags: str = "", box: str = "INBOX") -> list[str]:
    return await c.ok(f"APPEND {box} ({flags}) ".encode() + lit(data))


def tagged(lines: list[str]) -> str:
    return lines[-1].split(" ", 1)[1]


async def claim_recent(h: Harness, box: str = "INBOX") -> None:
    """Let another session SELECT ``box`` first, so the messages are no
    longer \\Recent to the session under test (RFC 3501 2.3.2)."""
    other = await h.login()
    await other.ok(f"SELECT {box}")
    await other.ok("LOGOUT")


def test_greeting_capability_noop_logout(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.connect()
        lines = await c.ok("CAPABILITY")
        caps = lines[0].split()
        assert caps[:4] == ["*", "CAPABILITY", "IMAP4rev1", "IMAP4rev2"]
        assert "AUTH=PLAIN" in caps and "STARTTLS" in caps and "SASL-IR" in caps
        assert "UIDPLUS" not in caps  # only after login
        assert tagged(await c.cmd("NOOP")) == "OK NOOP completed"
        assert await c.cmd("LOGOUT") == ["* BYE Logging out", "t3 OK LOGOUT completed"]
    imap(go)


def test_login_failures_and_success(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.connect()
        assert tagged(await c.cmd("LOGIN alice wrong")) == "NO [AUTHENTICATIONFAILED] Authentication failed"
        assert tagged(await c.cmd("SELECT INBOX")).startswith("BAD SELECT not allowed")
        lines = await c.cmd(f'LOGIN "alice@example.test" "{PASSWORD}"')
        assert lines[-1].startswith("t3 OK [CAPABILITY IMAP4rev1 IMAP4rev2") and "UIDPLUS" in lines[-1]
        assert tagged(await c.cmd("LOGIN alice x")).startswith("BAD LOGIN not allowed")
        # three failures end the session
        d = await h.connect()
        for _ in range(2):
            assert tagged(await d.cmd("LOGIN nobody x")).startswith("NO [AUTHENTICATIONFAILED]")
        assert tagged(await d.cmd("LOGIN nobody x")).startswith("NO [AUTHENTICATIONFAILED]")
        assert await d.line() == "* BYE Too many failed logins"
    imap(go)


def test_authenticate_plain_login_and_sasl_ir(imap) -> None:
    async def go(h: Harness) -> None:
        ir = base64.b64encode(b"\x00alice\x00" + PASSWORD.encode()).decode()
        c = await h.connect()
        assert tagged(await c.cmd(f"AUTHENTICATE PLAIN {ir}")).startswith("OK [CAPABILITY")
        c = await h.connect()
        await c.raw(b"a1 AUTHENTICATE PLAIN\r\n")
        assert await c.line() == "+ "
        await c.raw(ir.encode() + b"\r\n")
        assert (await c.until_tagged("a1"))[-1].startswith("a1 OK")
        c = await h.connect()
        await c.raw(b"a2 AUTHENTICATE LOGIN\r\n")
        assert await c.line() == "+ " + base64.b64encode(b"Username:").decode()
        await c.raw(base64.b64encode(b"bob") + b"\r\n")
        assert await c.line() == "+ " + base64.b64encode(b"Password:").decode()
        await c.raw(base64.b64encode(PASSWORD.encode()) + b"\r\n")
        assert (await c.until_tagged("a2"))[-1].startswith("a2 OK")
        c = await h.connect()
        await c.raw(b"a3 AUTHENTICATE PLAIN\r\n")
        await c.line()
        await c.raw(b"*\r\n")
        assert (await c.until_tagged("a3"))[-1] == "a3 BAD Authentication cancelled"
        assert tagged(await c.cmd("AUTHENTICATE CRAM-MD5")) == "NO [CANNOT] Unsupported authentication mechanism"
        assert tagged(await c.cmd("AUTHENTICATE PLAIN !!!")) == "BAD Invalid base64 in SASL response"
    imap(go)


def test_starttls_and_logindisabled(imap) -> None:
    async def go(h: Harness) -> None:
        from dynamail.imap.session import ImapSettings

        c = await h.connect()
        assert tagged(await c.cmd("STARTTLS")) == "OK Begin TLS negotiation now"
        assert c.conn.is_tls
        caps = (await c.ok("CAPABILITY"))[0]
        assert "STARTTLS" not in caps
        assert tagged(await c.cmd("STARTTLS")).startswith("BAD")
        h.ctx.extras["imap.settings"] = ImapSettings(login_disabled_without_tls=True)
        d = await h.connect()
        caps = (await d.ok("CAPABILITY"))[0]
        assert "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps
        assert tagged(await d.cmd(f"LOGIN alice {PASSWORD}")) == "NO [PRIVACYREQUIRED] Use STARTTLS first"
        await d.ok("STARTTLS")
        await d.ok(f"LOGIN alice {PASSWORD}")
        del h.ctx.extras["imap.settings"]
    imap(go)


def test_id_enable_namespace(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.connect()
        assert (await c.ok('ID ("name" "test")'))[0] == '* ID ("name" "dynamail" "version" "0.1.0")'
        assert tagged(await c.cmd("ENABLE CONDSTORE")).startswith("BAD")
        await c.ok(f"LOGIN alice {PASSWORD}")
        assert (await c.ok("ENABLE QRESYNC UTF8=ACCEPT FOO"))[0] == "* ENABLED QRESYNC UTF8=ACCEPT"
        assert (await c.ok("ENABLE CONDSTORE"))[0] == "* ENABLED"
        assert (await c.ok("NAMESPACE"))[0] == '* NAMESPACE (("" "/")) NIL NIL'
        assert tagged(await c.cmd("ID (\"a\")")).startswith("BAD")
    imap(go)


def test_mailbox_management_and_list(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        await c.ok("CREATE Projects/2024")
        await c.ok("CREATE Sent (USE (\\Sent))")
        await c.ok('CREATE "Entw&APw-rfe"')
        assert tagged(await c.cmd("CREATE Sent")) == "NO [ALREADYEXISTS] Mailbox already exists"
        assert tagged(await c.cmd("CREATE INBOX")).startswith("NO [ALREADYEXISTS]")
        assert tagged(await c.cmd("CREATE X (USE (\\All))")).startswith("NO [USEATTR]")
        lines = await c.ok('LIST "" *')
        assert '* LIST (\\HasNoChildren) "/" INBOX' in lines
        assert '* LIST (\\HasNoChildren \\Sent) "/" Sent' in lines
        assert '* LIST (\\HasNoChildren) "/" Entw&APw-rfe' in lines
        assert any(re.match(r'\* LIST \(.*\\HasChildren.*\) "/" Projects$', x) for x in lines)
        lines = await c.ok('LIST "" %')
        assert not any("Projects/2024" in x for x in lines)
        assert (await c.ok('LIST "" ""'))[0] == '* LIST (\\Noselect) "/" ""'
        lines = await c.ok('LIST (SPECIAL-USE) "" *')
        assert lines[:-1] == ['* LIST (\\Sent) "/" Sent']  # RFC 5258: children only on request
        await c.ok("SUBSCRIBE Sent")
        assert (await c.ok('LSUB "" S*'))[:-1] == ['* LSUB () "/" Sent']
        lines = await c.ok('LIST (SUBSCRIBED) "" S*')
        assert lines[:-1] == ['* LIST (\\Sent \\Subscribed) "/" Sent']
        lines = await c.ok('LIST "" (INBOX Sent) RETURN (SUBSCRIBED CHILDREN STATUS (MESSAGES UIDNEXT))')
        assert "* STATUS INBOX (MESSAGES 0 UIDNEXT 1)" in lines
        assert "* STATUS Sent (MESSAGES 0 UIDNEXT 1)" in lines
        await c.ok("UNSUBSCRIBE Sent")
        assert len(await c.ok('LSUB "" S*')) == 1
        await c.ok("RENAME Projects Archive")
        lines = await c.ok('LIST "" Archive/*')
        assert lines[0] == '* LIST (\\HasNoChildren) "/" Archive/2024'
        assert tagged(await c.cmd("RENAME Nope Other")).startswith("NO [NONEXISTENT]")
        await c.ok("DELETE Archive/2024")
        assert tagged(await c.cmd("DELETE Archive/2024")).startswith("NO [NONEXISTENT]")
        assert tagged(await c.cmd("DELETE INBOX")).startswith("NO [CANNOT]")
        await c.ok("ENABLE UTF8=ACCEPT")
        lines = await c.ok('LIST "" Entw*')
        assert lines[0] == '* LIST (\\HasNoChildren) "/" "Entwürfe"'
    imap(go)


def test_select_examine_status_append(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        lines = await append(c, MSG1, "\\Flagged $Label")
        assert re.match(r"t\d+ OK \[APPENDUID \d+ 1\] APPEND completed", lines[-1])
        lines = await c.ok(b"APPEND INBOX " + lit(MSG2) + b" (\\Seen) \"02-Jan-2024 10:00:00 +0000\" " + lit(MSG1))
        assert re.search(r"\[APPENDUID \d+ 2:3\]", lines[-1])
        assert tagged(await c.cmd(b"APPEND Nope " + lit(MSG1))) == "NO [TRYCREATE] No such mailbox"
        lines = await c.ok("STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY SIZE DELETED HIGHESTMODSEQ RECENT)")
        assert re.match(r"\* STATUS INBOX \(MESSAGES 3 UNSEEN 2 UIDNEXT 4 UIDVALIDITY \d+ SIZE \d+ DELETED 0 HIGHESTMODSEQ \d+ RECENT 3\)", lines[0])
        lines = await c.ok("SELECT INBOX")
        assert lines[0] == "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label)"
        assert "* 3 EXISTS" in lines and "* 3 RECENT" in lines
        assert "* OK [UNSEEN 1] First unseen" in lines
        assert "* OK [UIDNEXT 4] Predicted next UID" in lines
        assert any(x.startswith("* OK [PERMANENTFLAGS (") and "\\*" in x for x in lines)
        assert any(x.startswith("* OK [HIGHESTMODSEQ ") for x in lines)
        assert lines[-1].endswith("OK [READ-WRITE] SELECT completed")
        lines = await c.ok("EXAMINE INBOX")
        assert lines[-1].endswith("OK [READ-ONLY] EXAMINE completed")
        assert "* OK [PERMANENTFLAGS ()] Read-only mailbox" in lines
        assert tagged(await c.cmd("STORE 1 +FLAGS \\Seen")) == "NO [READ-ONLY] Mailbox is read-only"
        assert tagged(await c.cmd("SELECT Nope")) == "NO [NONEXISTENT] No such mailbox"
        assert tagged(await c.cmd("FETCH 1 FLAGS")).startswith("BAD FETCH not allowed")  # deselected
        assert tagged(await c.cmd(b"APPEND INBOX (\\Recent) " + lit(MSG1))).startswith("BAD")
        assert tagged(await c.cmd("STATUS INBOX (BOGUS)")).startswith("BAD")
    imap(go)


def test_fetch_items(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        await append(c, MSG1)
        await append(c, MSG2, "\\Seen")
        await claim_recent(h)
        await c.ok("SELECT INBOX")
        lines = await c.ok("FETCH 1 (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
        assert lines[0].startswith(f"* 1 FETCH (UID 1 FLAGS () RFC822.SIZE {len(MSG1)} INTERNALDATE \"")
        assert 'ENVELOPE ("Mon, 1 Jan 2024 10:00:00 +0000" "Hello world" (("Alice" NIL "alice" "example.test"))' in lines[0]
        lines = await c.ok("FETCH 2 BODYSTRUCTURE")
        assert lines[0].startswith('* 2 FETCH (BODYSTRUCTURE (("text" "plain"')
        assert '"mixed" ("BOUNDARY" "XX")' in lines[0]
        lines = await c.ok("FETCH 2 (BODY)")
        assert lines[0].startswith('* 2 FETCH (BODY (("text" "plain"')
        lines = await c.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
        assert lines[:4] == [
            "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT FROM)] {58}",
            "From: Alice <alice@example.test>", "Subject: Hello world", "",
        ]
        lines = await c.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)])")
        assert lines[:2] == ["* 1 FETCH (BODY[HEADER.FIELDS (Subject)] {24}", "Subject: Hello world"]
        lines = await c.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT FROM TO DATE)])")
        assert lines[1] == "Message-ID: <m1@example.test>"
        lines = await c.ok("FETCH 1 BODY.PEEK[TEXT]")
        assert lines[:2] == ["* 1 FETCH (BODY[TEXT] {17}", "First body line"]
        lines = await c.ok("FETCH 1 BODY.PEEK[]<6.5>")
        assert lines[0] == '* 1 FETCH (BODY[]<6> {5}' and lines[1] == "Alice)"
        lines = await c.ok("FETCH 2 (BODY.PEEK[1] BODY.PEEK[2.MIME] BINARY.PEEK[2] BINARY.SIZE[2])")
        text = "\r\n".join(lines)
        assert "BODY[1] {13}\r\nlunch at noon " in text
        assert "BODY[2.MIME] {" in text and "Content-Transfer-Encoding: base64" in text
        assert "BINARY[2] ~{9}\r\n\x00\x01binary" in text
        assert "BINARY.SIZE[2] 9" in text
        lines = await c.ok("FETCH 1 RFC822.HEADER")
        assert lines[0].startswith("* 1 FETCH (RFC822.HEADER {")
        # non-PEEK sets \Seen and reports FLAGS
        lines = await c.ok("FETCH 1 BODY[TEXT]")
        assert "FLAGS (\\Seen)" in "\r\n".join(lines)
        lines = await c.ok("UID FETCH 1:* FLAGS")
        assert lines[:2] == ["* 1 FETCH (UID 1 FLAGS (\\Seen))", "* 2 FETCH (UID 2 FLAGS (\\Seen))"]
        lines = await c.ok("FETCH 1:* FAST")
        assert lines[0].startswith("* 1 FETCH (FLAGS (\\Seen) INTERNALDATE")
        lines = await c.ok("FETCH 2 RFC822")
        assert lines[0] == f"* 2 FETCH (RFC822 {{{len(MSG2)}}}"
        assert tagged(await c.cmd("FETCH 1 (FLAGS")).startswith("BAD")
        assert tagged(await c.cmd("FETCH x FLAGS")).startswith("BAD")
        # RFC 9051 section 9 (seq-number): beyond the last message is BAD
        assert tagged(await c.cmd("FETCH 9 FLAGS")) == "BAD Invalid message sequence number"
        assert len(await c.ok("UID FETCH 9 FLAGS")) == 1
    imap(go)


def test_store_search_sort_expunge(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        for i in range(5):
            await append(c, MSG1.replace(b"Hello world", b"Topic %d" % (5 - i)), "\\Seen" if i % 2 else "")
        await claim_recent(h)
        await c.ok("SELECT INBOX")
        lines = await c.ok("STORE 1:2 +FLAGS (\\Flagged)")
        assert lines[:2] == ["* 1 FETCH (FLAGS (\\Flagged))", "* 2 FETCH (FLAGS (\\Flagged \\Seen))"]
        assert len(await c.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")) == 1
        lines = await c.ok("UID STORE 4 FLAGS (kw1)")
        assert lines[0] == "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft kw1)"  # RFC 3501 7.2.6
        assert lines[2] == "* 4 FETCH (UID 4 FLAGS (kw1))"
        lines = await c.ok("STORE 4 -FLAGS kw1")
        assert lines[0] == "* 4 FETCH (FLAGS ())"
        assert (await c.ok("SEARCH FLAGGED"))[0] == "* SEARCH 1 2"
        assert (await c.ok("SEARCH UNSEEN NOT DELETED"))[0] == "* SEARCH 1 4 5"
        assert (await c.ok("SEARCH OR DELETED SEEN"))[0] == "* SEARCH 2 3"
        assert (await c.ok('SEARCH SUBJECT "topic 3"'))[0] == "* SEARCH 3"
        assert (await c.ok("SEARCH 2:4 UNSEEN"))[0] == "* SEARCH 3 4"
        assert (await c.ok("UID SEARCH UID 2:*"))[0] == "* SEARCH 2 3 4 5"
        assert (await c.ok("SEARCH SENTSINCE 1-Jan-2024 LARGER 10"))[0] == "* SEARCH 1 2 3 4 5"
        assert (await c.ok("SEARCH BEFORE 1-Jan-2000"))[0] == "* SEARCH"
        lines = await c.cmd("SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN", tag="E1")
        assert lines[0] == '* ESEARCH (TAG "E1") MIN 1 MAX 5 ALL 1,3:5 COUNT 4'
        lines = await c.cmd("UID SEARCH RETURN () ALL", tag="E2")
        assert lines[0] == '* ESEARCH (TAG "E2") UID ALL 1:5'
        assert tagged(await c.ok("SEARCH RETURN (SAVE) FLAGGED")) == "OK SEARCH completed, result saved"
        assert (await c.ok("FETCH $ UID"))[:2] == ["* 1 FETCH (UID 1)", "* 2 FETCH (UID 2)"]
        assert (await c.ok("SORT (SUBJECT) UTF-8 ALL"))[0] == "* SORT 5 4 3 2 1"
        assert (await c.ok("UID SORT (SUBJECT) US-ASCII OR SEEN DELETED"))[0] == "* SORT 3 2"
        assert (await c.ok("SORT (SIZE DATE) UTF-8 ALL"))[0].startswith("* SORT ")
        assert tagged(await c.cmd("SORT (BOGUS) UTF-8 ALL")).startswith("BAD")
        assert tagged(await c.cmd("SEARCH CHARSET KOI8-R ALL")).startswith("NO [BADCHARSET")
        lines = await c.ok("EXPUNGE")
        assert lines[:-1] == ["* 3 EXPUNGE"]
        await c.ok("STORE 1,3 +FLAGS (\\Deleted)")
        lines = await c.ok("UID EXPUNGE 4")
        assert lines[:-1] == ["* 3 EXPUNGE"]
        assert (await c.ok("UID SEARCH ALL"))[0] == "* SEARCH 1 2 5"
        await c.ok("CLOSE")
        await c.ok("SELECT INBOX")
        assert (await c.ok("UID SEARCH ALL"))[0] == "* SEARCH 2 5"
        await c.ok("UNSELECT")
        assert tagged(await c.cmd("EXPUNGE")).startswith("BAD")
    imap(go)


def test_copy_move_uidplus(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        for _ in range(3):
            await append(c, MSG1)
        await c.ok("CREATE Archive")
        await c.ok("SELECT INBOX")
        lines = await c.ok("COPY 1:2 Archive")
        assert re.match(r"t\d+ OK \[COPYUID \d+ 1:2 1:2\] COPY completed", lines[-1])
        assert tagged(await c.cmd("COPY 1 Nope")) == "NO [TRYCREATE] No such mailbox"
        lines = await c.ok("MOVE 2 Archive")
        assert re.match(r"\* OK \[COPYUID \d+ 2 3\] Moved", lines[0])
        assert lines[1] == "* 2 EXPUNGE"
        lines = await c.ok("UID MOVE 3 Archive")
        assert lines[1] == "* 2 EXPUNGE"
        assert (await c.ok("UID SEARCH ALL"))[0] == "* SEARCH 1"
        assert (await c.ok("STATUS Archive (MESSAGES)"))[0] == "* STATUS Archive (MESSAGES 4)"
        # RFC 6851 section 3.3: a MOVE within the mailbox is allowed (new UID)
        lines = await c.ok("MOVE 1 INBOX")
        assert re.match(r"\* OK \[COPYUID \d+ 1 4\] Moved", lines[0])
        assert lines[1:3] == ["* 1 EXPUNGE", "* 1 EXISTS"]
    imap(go)


def test_condstore_qresync(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        for _ in range(3):
            await append(c, MSG1)
        await claim_recent(h)
        lines = await c.ok("SELECT INBOX (CONDSTORE)")
        ms = int(next(re.search(r"HIGHESTMODSEQ (\d+)", x).group(1) for x in lines if "HIGHESTMODSEQ" in x))  # type: ignore[union-attr]
        validity = next(re.search(r"UIDVALIDITY (\d+)", x).group(1) for x in lines if "UIDVALIDITY" in x)  # type: ignore[union-attr]
        lines = await c.ok("STORE 1 +FLAGS (\\Seen)")
        m = re.match(r"\* 1 FETCH \(UID 1 FLAGS \(\\Seen\) MODSEQ \((\d+)\)\)", lines[0])
        assert m and int(m.group(1)) > ms
        new = int(m.group(1))
        lines = await c.ok(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {ms})")
        assert lines[0] == f"* 1 FETCH (MODSEQ ({new}) FLAGS (\\Seen))"
        lines = await c.cmd(f"STORE 1,2 (UNCHANGEDSINCE {ms}) +FLAGS (\\Answered)")
        assert lines[-1].endswith("OK [MODIFIED 1] Conditional STORE failed")
        assert (await c.ok(f"SEARCH MODSEQ {new}"))[0].startswith("* SEARCH 1")
        await c.ok("STORE 3 +FLAGS (\\Deleted)")
        await c.ok("EXPUNGE")
        d = await h.login()
        await d.ok("ENABLE QRESYNC")
        lines = await d.ok(f"SELECT INBOX (QRESYNC ({validity} {ms} 1:3))")
        assert "* VANISHED (EARLIER) 3" in lines
        assert any(x.startswith("* 1 FETCH (UID 1 FLAGS (\\Seen)") for x in lines)
        lines = await d.ok(f"UID FETCH 1:* FLAGS (CHANGEDSINCE {ms} VANISHED)")
        assert lines[0] == "* VANISHED (EARLIER) 3"
        await d.ok("STORE 2 +FLAGS (\\Deleted)")
        lines = await d.ok("EXPUNGE")
        assert lines[0] == "* VANISHED 2"
        assert tagged(await c.cmd("SELECT INBOX (QRESYNC (1 1))")).startswith("BAD")
    imap(go)


def test_quota_and_idle_and_check(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        await append(c, MSG1)
        lines = await c.ok("GETQUOTAROOT INBOX")
        assert lines[0] == '* QUOTAROOT INBOX ""'
        assert re.match(r'\* QUOTA "" \(STORAGE 1 \d+\)', lines[1]), lines
        assert re.match(r'\* QUOTA "" ', (await c.ok('GETQUOTA ""'))[0])
        assert tagged(await c.cmd('SETQUOTA "" (STORAGE 1)')).startswith("NO [NOPERM]")
        await c.ok("SELECT INBOX")
        await c.ok("CHECK")
        await c.raw(b"i1 IDLE\r\n")
        assert await c.line() == "+ idling"
        await c.raw(b"DONE\r\n")
        assert (await c.until_tagged("i1")) == ["i1 OK IDLE terminated"]
    imap(go)


def test_alerts_on_login(imap) -> None:
    async def go(h: Harness) -> None:
        d = h.ctx.directory
        d.post_alert(("account", d.ref("example.test", "alice")), "Maintenance tonight")
        c = await h.connect()
        lines = await c.ok(f"LOGIN alice {PASSWORD}")
        assert "* OK [ALERT] Maintenance tonight" in lines
        c = await h.connect()
        lines = await c.ok(f"LOGIN alice {PASSWORD}")
        assert not any("ALERT" in x for x in lines)
    imap(go)


def test_unknown_and_wrong_state_commands(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.connect()
        assert tagged(await c.cmd("FROBNICATE")) == "BAD Unknown command"
        assert tagged(await c.cmd("XDYNAMAIL-RELAY abc")) == "BAD Unknown command"
        assert tagged(await c.cmd("XDYNAMAIL-CHALLENGE")) == "BAD Unknown command"
        assert tagged(await c.cmd("UID FETCH 1 FLAGS")).startswith("BAD UID FETCH not allowed")
        assert tagged(await c.cmd("NOOP extra")).startswith("BAD")
    imap(go)


def test_large_messages_literals_and_utf8_append(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        body = b"".join(b"line %06d of a large message\r\n" % i for i in range(40000))  # ~1.2 MB
        big = b"Subject: big\r\n\r\n" + body
        await c.raw(b"a1 APPEND INBOX {%d}\r\n" % len(big))
        assert (await c.line()).startswith("+ ")
        for i in range(0, len(big), 100000):
            await c.raw(big[i : i + 100000])
        await c.raw(b"\r\n")
        assert (await c.until_tagged("a1"))[-1].startswith("a1 OK [APPENDUID")
        await c.ok("ENABLE UTF8=ACCEPT")
        utf = "Subject: Grüße\r\n\r\nHallo\r\n".encode()
        await c.ok(b"APPEND INBOX UTF8 (~{%d+}\r\n" % len(utf) + utf + b")")
        await c.ok("SELECT INBOX")
        await c.raw(b"f1 FETCH 1 BODY.PEEK[]\r\n")
        head = await c.line()
        assert head == f"* 1 FETCH (BODY[] {{{len(big)}}}"
        got = await c.until_tagged("f1")
        text = "\r\n".join(got).encode()
        assert text.startswith(body[:1000]) or body[:1000] in text
        assert got[-1] == "f1 OK FETCH completed"
        lines = await c.ok("FETCH 2 BODY.PEEK[HEADER]")
        assert "Subject: Grüße" in "\r\n".join(lines)
    imap(go)


def test_logindisabled_by_default_for_remote_clients(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.connect(peer="192.0.2.10")
        caps = (await c.ok("CAPABILITY"))[0]
        assert "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps
        assert tagged(await c.cmd(f"LOGIN alice {PASSWORD}")) == "NO [PRIVACYREQUIRED] Use STARTTLS first"
        ir = base64.b64encode(b"\x00alice\x00" + PASSWORD.encode()).decode()
        assert tagged(await c.cmd(f"AUTHENTICATE PLAIN {ir}")).startswith("NO [PRIVACYREQUIRED]")
        await c.ok("STARTTLS")
        assert "AUTH=PLAIN" in (await c.ok("CAPABILITY"))[0]
        await c.ok(f"LOGIN alice {PASSWORD}")
        d = await h.connect(peer="::1")
        assert "LOGINDISABLED" not in (await d.ok("CAPABILITY"))[0]
    imap(go)


def test_imap4rev2_mode(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        await append(c, MSG1)
        assert (await c.ok("ENABLE IMAP4rev2"))[0] == "* ENABLED IMAP4rev2"
        lines = await c.ok("SELECT INBOX")
        assert '* LIST () "/" INBOX' in lines
        assert not any("RECENT" in x or "UNSEEN" in x for x in lines)
        lines = await c.cmd("SEARCH ALL", tag="s1")
        assert lines[0] == '* ESEARCH (TAG "s1") ALL 1'
        lines = await c.cmd("SELECT INBOX", tag="s2")
        assert lines[0] == "* OK [CLOSED] Previous mailbox closed"
        await c.ok('CREATE "Ünïcode"')
        lines = await c.ok('LIST "" "Ü*"')
        assert lines[0] == '* LIST (\\HasNoChildren) "/" "Ünïcode"'
    imap(go)


def test_mailbox_edge_cases(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        await append(c, MSG1)
        # EXAMINE never sets \Seen, even for non-PEEK fetches
        await c.ok("EXAMINE INBOX")
        lines = await c.ok("FETCH 1 (BODY[TEXT] FLAGS)")
        assert "\\Seen" not in "\r\n".join(lines)
        # a COPY into the selected mailbox shows up as EXISTS
        await c.ok("SELECT INBOX")
        lines = await c.ok("UID COPY 1 INBOX")
        assert "* 2 EXISTS" in lines
        # the selected mailbox cannot be deleted; others can
        assert tagged(await c.cmd("DELETE INBOX")).startswith("NO")
        await c.ok("CREATE Temp")
        await c.ok("DELETE Temp")
        assert tagged(await c.cmd("SELECT Temp")) == "NO [NONEXISTENT] No such mailbox"
        # RENAME INBOX moves its messages and leaves INBOX empty (RFC 9051 6.3.6)
        await c.ok("RENAME INBOX Old")
        assert (await c.ok("STATUS Old (MESSAGES)"))[0] == "* STATUS Old (MESSAGES 2)"
        assert (await c.ok("STATUS INBOX (MESSAGES)"))[0] == "* STATUS INBOX (MESSAGES 0)"
        # LIST with a reference name
        await c.ok("CREATE Old/Child")
        lines = await c.ok('LIST "Old/" %')
        assert lines[0] == '* LIST (\\HasNoChildren) "/" Old/Child'
        assert tagged(await c.cmd("SUBSCRIBE ../x")).startswith(("NO", "BAD"))
    imap(go)


def test_login_allowed_when_no_tls_is_configured(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.connect(peer="192.0.2.11", can_tls=False)
        caps = (await c.ok("CAPABILITY"))[0]
        assert "LOGINDISABLED" not in caps and "STARTTLS" not in caps
        await c.ok(f"LOGIN alice {PASSWORD}")
    imap(go)


def test_multiappend_messages_without_flags_or_with_date_only(imap) -> None:
    """RFC 3502: each message is [SP flag-list] [SP date-time] SP literal; a
    literal following a literal is the next message, not a date-time."""
    async def go(h: Harness) -> None:
        c = await h.login()
        a, b, d = b"Subject: a\r\n", b"Subject: b\r\n", b"Subject: d\r\n"
        lines = await c.ok(b"APPEND INBOX " + lit(a) + b" " + lit(b))
        assert "[APPENDUID" in lines[-1] and " 1:2]" in lines[-1]
        lines = await c.ok(b'APPEND INBOX (\\Seen) ' + lit(a) + b' "12-Jan-2020 00:00:00 +0000" ' + lit(d))
        assert " 3:4]" in lines[-1]
        await claim_recent(h)
        await c.ok("EXAMINE INBOX")
        got = "\r\n".join(await c.ok("FETCH 1:4 (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
        assert '* 4 FETCH (FLAGS () INTERNALDATE "12-Jan-2020 00:00:00 +0000"' in got
        assert "* 3 FETCH (FLAGS (\\Seen)" in got
        assert got.count("Subject: b") == 1 and got.count("Subject: d") == 1
        # a quoted string is still a date-time, so a bad one is BAD
        assert tagged(await c.cmd(b'APPEND INBOX "not a date" ' + lit(a))).startswith("BAD")
    imap(go)
