"""Transcript tests of the sans-IO SMTP client core, and the sans-IO rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dynamail
from dynamail.smtp.client import ClientTransaction, ProtocolError, ReplyReader, ServerReply, Step


def replies(data: bytes) -> list[ServerReply]:
    r = ReplyReader()
    r.feed(data)
    out = []
    while (rep := r.next_reply()) is not None:
        out.append(rep)
    return out


def test_reply_reader_multiline_and_partial() -> None:
    r = ReplyReader()
    r.feed(b"250-mx hello\r\n250-SIZE 10\r\n250 STARTT")
    assert r.next_reply() is None
    r.feed(b"LS\r\n")
    assert r.next_reply() == ServerReply(250, ("mx hello", "SIZE 10", "STARTTLS"))
    with pytest.raises(ProtocolError):
        replies(b"garbage\r\n")


def test_transaction_with_one_refused_recipient() -> None:
    tx = ClientTransaction("me.example", "a@b.example", ["x@r.example", "y@r.example"], size=42)
    assert tx.on_reply(ServerReply(220, ("hi",))) == b"EHLO me.example\r\n"
    assert tx.on_reply(ServerReply(250, ("hi", "SIZE 1000", "8BITMIME"))) == b"MAIL FROM:<a@b.example> SIZE=42\r\n"
    assert tx.on_reply(ServerReply(250, ("ok",))) == b"RCPT TO:<x@r.example>\r\n"
    assert tx.on_reply(ServerReply(550, ("5.1.1 no",))) == b"RCPT TO:<y@r.example>\r\n"
    assert tx.on_reply(ServerReply(250, ("ok",))) == b"DATA\r\n"
    assert tx.on_reply(ServerReply(354, ("go",))) == b""
    assert tx.step is Step.CONTENT
    assert tx.on_reply(ServerReply(250, ("2.0.0 queued",))) == b"QUIT\r\n"
    assert {k: v.code for k, v in tx.outcomes.items()} == {"x@r.example": 550, "y@r.example": 250}


def test_starttls_then_helo_fallback_and_failures() -> None:
    tx = ClientTransaction("me", "", ["x@r"], size=1, tls_possible=True)
    tx.on_reply(ServerReply(220, ("hi",)))
    assert tx.on_reply(ServerReply(250, ("hi", "STARTTLS"))) == b"STARTTLS\r\n"
    assert tx.on_reply(ServerReply(220, ("go",))) == b""
    assert tx.tls_started() == b"EHLO me\r\n"
    assert tx.on_reply(ServerReply(502, ("no ehlo",))) == b"HELO me\r\n"
    assert tx.on_reply(ServerReply(250, ("ok",))) == b"MAIL FROM:<>\r\n"
    assert tx.on_reply(ServerReply(451, ("4.3.0 later",))) == b"QUIT\r\n"
    assert tx.outcomes["x@r"].code == 451
    utf = ClientTransaction("me", "ä@b", ["x@r"], size=1, utf8=True)
    utf.on_reply(ServerReply(220, ("hi",)))
    assert utf.on_reply(ServerReply(250, ("hi",))) == b"QUIT\r\n"
    assert utf.outcomes["x@r"].code == 553


def test_broken_connection_marks_unanswered_recipients() -> None:
    tx = ClientTransaction("me", "a@b", ["x@r", "y@r"], size=1)
    tx.on_reply(ServerReply(220, ("hi",)))
    tx.on_reply(ServerReply(250, ("hi",)))
    tx.on_reply(ServerReply(250, ("ok",)))
    tx.on_reply(ServerReply(550, ("no",)))
    tx.unfinished(451, "4.4.2 lost")
    assert {k: v.code for k, v in tx.outcomes.items()} == {"x@r": 550, "y@r": 451}


SANS_IO = [
    "smtp/core.py", "smtp/syntax.py", "smtp/dots.py", "smtp/replies.py", "smtp/limits.py", "smtp/client.py",
    "smtp/queue.py", "smtp/spool.py", "smtp/events.py", "smtp/submission.py",
    "pop3/core.py", "pop3/limits.py",
]


@pytest.mark.parametrize("path", SANS_IO)
def test_protocol_cores_do_no_io(path: str) -> None:
    tree = ast.parse((Path(dynamail.__file__).parent / path).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
            if node.module.startswith("dynamail."):
                imported.add(node.module)
    assert not imported & {"asyncio", "socket", "ssl", "selectors"}
    assert not any(m.endswith((".adapter", ".outbound")) for m in imported)


def test_dsn_parameters_only_to_a_dsn_server() -> None:
    def run(ehlo: tuple[str, ...]) -> list[bytes]:
        tx = ClientTransaction(
            "me", "a@b", ["x@r", "y@r"], size=5, dsn_params={"RET": "FULL", "ENVID": "e1", "BODY": "8BITMIME"},
            rcpt_params={"x@r": {"NOTIFY": "NEVER", "ORCPT": None}, "y@r": {"ORCPT": "rfc822;y@r", "NOTIFY": "bad value"}},
        )
        sent = [tx.on_reply(ServerReply(220, ("hi",))), tx.on_reply(ServerReply(250, ehlo))]
        sent += [tx.on_reply(ServerReply(250, ("ok",))) for _ in range(3)]
        tx.on_reply(ServerReply(354, ("go",)))
        tx.on_reply(ServerReply(250, ("2.0.0 ok",)))
        assert {o.dsn_passed for o in tx.outcomes.values()} == {"DSN" in [e.split()[0] for e in ehlo]}
        return sent

    assert run(("hi", "DSN")) == [
        b"EHLO me\r\n", b"MAIL FROM:<a@b> RET=FULL ENVID=e1\r\n",
        b"RCPT TO:<x@r> NOTIFY=NEVER\r\n", b"RCPT TO:<y@r> ORCPT=rfc822;y@r\r\n", b"DATA\r\n",
    ]
    assert run(("hi", "SIZE 100")) == [
        b"EHLO me\r\n", b"MAIL FROM:<a@b> SIZE=5\r\n", b"RCPT TO:<x@r>\r\n", b"RCPT TO:<y@r>\r\n", b"DATA\r\n",
    ]
