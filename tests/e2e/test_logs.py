"""What happened, from the logs: with ``log_format = "json"`` every line of
a real server's log is a JSON object; a message has one ``message`` line
whose id is the one in the SMTP 250 reply and in the ``Received:`` field
of the stored copy, with where each copy went; each session has one
``session`` line with its id, listener, client address, account and
outcome."""

from __future__ import annotations

import imaplib
import json
import re
import smtplib
import time
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.conftest import DOMAIN, Server, free_host

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]


def records(server: Server) -> list[dict[str, Any]]:
    lines = [line for line in server.log.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is JSON


def wait_for(server: Server, pred: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        found = [r for r in records(server) if pred(r)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_json_session_and_message_lines_with_the_ids_clients_see(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "Settings").mkdir(parents=True)
    (base / "Settings" / "server.toml").write_text(f'main_domain = "{DOMAIN}"\nlog_format = "json"\n')
    server = Server(base, free_host())
    server.start()
    try:
        assert server.cli("postmaster", "pm-secret-1", [f'CREATEACCOUNT alice@{DOMAIN} {{Password="pw-a";}}',
                                                        f'CREATEACCOUNT bob@{DOMAIN} {{Password="pw-b";}}']) \
            == ["200 OK", "200 OK"]
        with smtplib.SMTP(server.host, server.port("smtp"), timeout=30) as s:
            code, reply = s.ehlo()
            s.mail("carol@remote.test")
            s.rcpt(f"alice@{DOMAIN}")
            s.rcpt(f"bob@{DOMAIN}")
            code, reply = s.data(b"Subject: traced\r\nMessage-ID: <t1@remote.test>\r\n\r\nhello\r\n")
        assert code == 250
        msg_id = re.search(rb"accepted as (\S+)", reply).group(1).decode()  # type: ignore[union-attr]
        imap = imaplib.IMAP4(server.host, server.port("imap"), timeout=30)
        imap.login("alice", "pw-a")
        imap.select("INBOX")
        _typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (RECEIVED)])")
        imap.logout()
        received = data[0][1].decode()  # type: ignore[index]
        assert f" id {msg_id}" in received.replace("\r\n\t", " "), received

        message = wait_for(server, lambda r: r.get("event") == "message")
        assert len(message) == 1
        m = message[0]
        assert m["id"] == msg_id and m["from"] == "carol@remote.test"
        assert m["to"] == [f"alice@{DOMAIN}", f"bob@{DOMAIN}"]
        assert m["copies"] == {f"alice@{DOMAIN}": f"stored on {DOMAIN} uid 1", f"bob@{DOMAIN}": f"stored on {DOMAIN} uid 1"}
        assert m["member"] == DOMAIN
        smtp_session = wait_for(server, lambda r: r.get("event") == "session" and r.get("id") == m["session"])
        assert len(smtp_session) == 1 and smtp_session[0]["listener"] == "smtp"
        assert smtp_session[0]["messages"] == 1 and smtp_session[0]["client"].startswith("127.0.0.1:")
        assert msg_id.startswith(m["session"] + ".")
        # (the start-up probe opened one IMAP session without a login)
        imap_session = wait_for(server, lambda r: r.get("event") == "session" and r.get("listener") == "imap"
                                and "account" in r)
        assert [s["account"] for s in imap_session] == [f"alice@{DOMAIN}"], imap_session
        assert imap_session[0]["outcome"] == "closed" and imap_session[0]["seconds"] >= 0
        cli_sessions = wait_for(server, lambda r: r.get("event") == "session" and r.get("listener") == "cli"
                                and "account" in r)
        assert cli_sessions and cli_sessions[0]["account"] == f"postmaster@{DOMAIN}"
        assert all({"time", "level", "logger"} <= set(r) for r in records(server))
    finally:
        server.stop()
