"""Port 25 of a real ``dynamail serve`` with sender checks on, against a real
DNS server (dnslib on loopback): Authentication-Results with our
authserv-id, forged ones removed, DMARC p=reject refused with 550 5.7.1 or
filed per the recipient domain's setting, p=quarantine into Junk, and a DNS
timeout answered 451 (the message is kept by the client, then accepted)."""

from __future__ import annotations

import imaplib
import smtplib
from collections.abc import Iterator

import pytest
from tests.smtp.live import LiveServer, next_host, prepare, wait_port

from .dnsserver import DnsServer
from .test_inbound import KEY, msg

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mailauth-inbound")]

RCPT, MARKED, PW = "rcpt@local.example", "m@marking.example", "pw-1234"
AUTHSERV = "mx.local.example"


@pytest.fixture(scope="module")
def zone(dns_server: DnsServer) -> DnsServer:
    d = dns_server
    d.add("example.com", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    d.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
    KEY.publish(d, "s1", "example.com")
    d.add("bad.example", "TXT", "v=spf1 -all")
    d.add("_dmarc.bad.example", "TXT", "v=DMARC1; p=reject")
    d.add("quar.example", "TXT", "v=spf1 -all")
    d.add("_dmarc.quar.example", "TXT", "v=DMARC1; p=quarantine")
    d.zone.slow.add("slow.example")
    return d


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, zone: DnsServer) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("inbound") / "base"
    toml = (f'[smtp]\ncheck_senders = true\nauthserv_id = "{AUTHSERV}"\n'
            f'dns_resolver = "{zone.address}"\ndns_timeout = 1.0\n')
    prepare(base, {RCPT: PW, MARKED: PW}, toml)
    from dynamail.directory import Directory
    Directory(base, main_domain="test.example").update_domain_settings("marking.example", {"DMARCRejectAction": "Mark"})
    srv = LiveServer(base, next_host())
    srv.start()
    wait_port(srv.host, srv.port("imap"))
    yield srv
    srv.stop()


def send(server: LiveServer, mail_from: str, rcpts: list[str], data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=30) as s:
        s.ehlo("client.example.com")
        s.mail(mail_from)
        for r in rcpts:
            assert s.rcpt(r)[0] == 250
        code, text = s.data(data)
        return code, text


def mailbox(server: LiveServer, user: str, name: str) -> list[bytes]:
    c = imaplib.IMAP4(server.host, server.port("imap"), timeout=20)
    try:
        c.login(user, PW)
        typ, _ = c.select(name, readonly=True)
        if typ != "OK":
            return []
        _, data = c.uid("SEARCH", "ALL")
        out = []
        for uid in data[0].split():
            _, parts = c.uid("FETCH", uid, "(BODY.PEEK[])")
            out.append(bytes(parts[0][1]))
        return out
    finally:
        c.logout()


def test_pass_gets_our_header_and_forged_ones_go(server: LiveServer) -> None:
    body = (b"Authentication-Results: " + AUTHSERV.encode() + b"; dmarc=pass header.from=bank.example\r\n"
            b"Authentication-Results: upstream.example; spf=pass smtp.mailfrom=x@example.com\r\n"
            + msg("Alice <alice@example.com>", "good one"))
    code, _ = send(server, "alice@example.com", [RCPT], KEY.sign(body, "s1", "example.com"))
    assert code == 250
    [got] = [m for m in mailbox(server, RCPT, "INBOX") if b"Subject: good one" in m]
    head = got.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ")
    assert head.startswith(b"Authentication-Results: " + AUTHSERV.encode() + b"; spf=pass")
    assert head.count(b"Authentication-Results: " + AUTHSERV.encode()) == 1  # the forged one is gone
    assert b"dmarc=pass header.from=example.com" in head and b"dkim=pass header.d=example.com" in head
    assert b"Authentication-Results: upstream.example;" in head  # other servers' fields stay


def test_dmarc_reject_refused_at_data(server: LiveServer) -> None:
    code, text = send(server, "ceo@bad.example", [RCPT], msg("CEO <ceo@bad.example>", "wire money"))
    assert code == 550 and text.startswith(b"5.7.1")
    assert not [m for m in mailbox(server, RCPT, "INBOX") if b"wire money" in m]


def test_dmarc_reject_marked_per_domain_setting(server: LiveServer) -> None:
    code, _ = send(server, "ceo@bad.example", [MARKED], msg("ceo@bad.example", "marked only"))
    assert code == 250
    [got] = [m for m in mailbox(server, MARKED, "INBOX") if b"marked only" in m]
    assert b"dmarc=fail" in got and b"policy.dmarc=reject" in got


def test_mixed_recipients_file_into_junk(server: LiveServer) -> None:
    # one domain says Reject, the other Mark: one reply, so the Reject one gets Junk
    code, _ = send(server, "ceo@bad.example", [RCPT, MARKED], msg("ceo@bad.example", "mixed"))
    assert code == 250
    assert [m for m in mailbox(server, RCPT, "Junk") if b"Subject: mixed" in m]
    assert [m for m in mailbox(server, MARKED, "INBOX") if b"Subject: mixed" in m]


def test_dmarc_quarantine_into_junk(server: LiveServer) -> None:
    code, _ = send(server, "news@quar.example", [RCPT], msg("news@quar.example", "quarantined"))
    assert code == 250
    assert [m for m in mailbox(server, RCPT, "Junk") if b"quarantined" in m]
    assert not [m for m in mailbox(server, RCPT, "INBOX") if b"quarantined" in m]


def test_dns_timeout_answers_451_then_accepts(server: LiveServer, zone: DnsServer) -> None:
    code, text = send(server, "x@slow.example", [RCPT], msg("x@slow.example", "slow dns"))
    assert code == 451 and text.startswith(b"4.4.3")
    zone.zone.slow.discard("slow.example")
    zone.add("slow.example", "TXT", "v=spf1 ip4:127.0.0.0/8 ~all")
    code, _ = send(server, "x@slow.example", [RCPT], msg("x@slow.example", "slow dns"))
    assert code == 250
    assert [m for m in mailbox(server, RCPT, "INBOX") if b"slow dns" in m]
