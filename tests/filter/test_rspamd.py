"""The Rspamd hook: what each verdict does (sans-IO), a filter that is down
or silent failing open or closed, and a real Rspamd started on loopback in
front of a real ``dynamail serve`` (GTUBE refused, spam into Junk with
X-Spam headers, ham delivered, then Rspamd stopped: 451, nothing lost)."""

from __future__ import annotations

import asyncio
import imaplib
import shutil
import smtplib
import socket
from collections.abc import Iterator

import pytest
from tests.smtp.live import LiveServer, next_host, prepare, wait_port

from dynamail.filter.rspamd import RspamdFilter, interpret, remove_fields

from .rspamd_server import GTUBE, Rspamd

RCPT, PW = "rcpt@local.example", "pw-1234"


def test_interpret_each_action() -> None:
    reject = interpret({"action": "reject", "score": 50.0, "messages": {"smtp_message": "Gtube pattern"}})
    assert reject is not None and (reject.action, reject.text) == ("reject", "Gtube pattern")
    assert interpret({"action": "reject"}).text == "Spam message rejected"  # type: ignore[union-attr]
    for action in ("soft reject", "greylist"):
        assert interpret({"action": action}).action == "defer"  # type: ignore[union-attr]
    junk = interpret({"action": "add header", "score": 30.4, "required_score": 50.0})
    assert junk is not None and junk.action == "junk"
    assert junk.fields == b"X-Spam: Yes\r\nX-Spam-Status: Yes, score=30.40 required=50.00 action=add_header\r\n"
    assert interpret({"action": "rewrite subject"}).action == "junk"  # type: ignore[union-attr]
    ham = interpret({"action": "no action", "score": 1, "required_score": 15})
    assert ham is not None and ham.fields == b"X-Spam-Status: No, score=1.00 required=15.00 action=no_action\r\n"
    for bad in (None, [], {}, {"action": 3}, {"action": "explode"}):
        assert interpret(bad) is None


def test_remove_fields() -> None:
    header = b"X-Spam: Yes\r\nSubject: a\r\nX-SPAM-Status: No,\r\n\tscore=1\r\nTo: b\r\n"
    assert remove_fields(header) == b"Subject: a\r\nTo: b\r\n"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_filter_down_fails_open_or_closed() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"

    async def go(fail_open: bool) -> str:
        flt = RspamdFilter(url, timeout=2.0, fail_open=fail_open)
        try:
            v = await flt.scan(b"Subject: x\r\n\r\nhi\r\n", ip="127.0.0.1", helo="h", mail_from="", rcpts=["a@b"],
                               queue_id="q")
        finally:
            await flt.close()
        return v.action + "|" + v.fields.decode()

    assert asyncio.run(go(True)) == "accept|X-Spam-Status: Unknown (content filter unavailable)\r\n"
    assert asyncio.run(go(False)) == "defer|"


def test_silent_filter_times_out() -> None:
    async def go() -> str:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
        port = server.sockets[0].getsockname()[1]
        flt = RspamdFilter(f"http://127.0.0.1:{port}", timeout=0.5, fail_open=False)
        try:
            v = await flt.scan(b"Subject: x\r\n\r\nhi\r\n", ip="127.0.0.1", helo="h", mail_from="", rcpts=[],
                               queue_id="q")
        finally:
            await flt.close()
            server.close()
        return v.action

    assert asyncio.run(go()) == "defer"


# -- a real Rspamd ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rspamd]:
    if shutil.which("rspamd") is None:
        pytest.skip("rspamd (Debian rspamd) is not installed")
    r = Rspamd(tmp_path_factory.mktemp("rspamd"))
    try:
        r.start()
    except RuntimeError as exc:
        pytest.skip(f"rspamd could not be started here: {exc}")
    yield r
    r.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, rspamd: Rspamd) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("filtered") / "base"
    toml = f'[smtp]\nrspamd_url = "{rspamd.url}"\nfilter_timeout = 10.0\nfilter_fail_open = false\n'
    prepare(base, {RCPT: PW}, toml)
    srv = LiveServer(base, next_host())
    srv.start()
    wait_port(srv.host, srv.port("imap"))
    yield srv
    srv.stop()


def message(subject: str, body: str, extra: str = "") -> bytes:
    return (f"From: Sender <sender@outside.example>\r\nTo: {RCPT}\r\nSubject: {subject}\r\n"
            f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{abs(hash(subject))}@outside.example>\r\n"
            f"{extra}MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{body}\r\n").encode()


def send(server: LiveServer, data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=30) as s:
        s.ehlo("client.outside.example")
        s.mail("sender@outside.example")
        assert s.rcpt(RCPT)[0] == 250
        code, text = s.data(data)
        return code, text


def folder(server: LiveServer, name: str) -> list[bytes]:
    c = imaplib.IMAP4(server.host, server.port("imap"), timeout=20)
    try:
        c.login(RCPT, PW)
        if c.select(name, readonly=True)[0] != "OK":
            return []
        _, data = c.uid("SEARCH", "ALL")
        return [bytes(c.uid("FETCH", u, "(BODY.PEEK[])")[1][0][1]) for u in data[0].split()]  # type: ignore[index]
    finally:
        c.logout()


@pytest.mark.slow
@pytest.mark.xdist_group("rspamd")
def test_gtube_rejected_spam_junked_ham_delivered(server: LiveServer, rspamd: Rspamd) -> None:
    code, text = send(server, message("gtube", GTUBE))
    assert code == 550 and text.startswith(b"5.7.1"), text
    code, _ = send(server, message("spammy offer", "Cheap things.", "X-Spam: No\r\n"))
    assert code == 250
    [junked] = [m for m in folder(server, "Junk") if b"spammy offer" in m]
    head = junked.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"X-Spam: Yes\r\nX-Spam-Status: Yes, score=")
    assert b"X-Spam: No" not in head  # the sender's own marking is removed
    code, _ = send(server, message("lunch", "Lunch at noon?"))
    assert code == 250
    [ham] = [m for m in folder(server, "INBOX") if b"Subject: lunch" in m]
    assert ham.startswith(b"X-Spam-Status: No, score=")
    assert not [m for m in folder(server, "INBOX") if b"gtube" in m or b"spammy" in m]


@pytest.mark.slow
@pytest.mark.xdist_group("rspamd")
def test_rspamd_down_fails_closed(server: LiveServer, rspamd: Rspamd) -> None:
    rspamd.stop()
    code, text = send(server, message("while down", "Hello."))
    assert code == 451 and text.startswith(b"4.7.1")
    assert not [m for m in folder(server, "INBOX") if b"while down" in m]

