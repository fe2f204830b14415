"""SPF, DKIM, DMARC (RFC 7489 Appendix B alignment) and ARC checks against
a real DNS server (dnslib on loopback); the Authentication-Results field;
forged fields removed; DNS timeouts and the TTL cache."""

from __future__ import annotations

import dkim
import pytest

from dynamail.directory.dkim import dns_value, generate_private_key, signing_form
from dynamail.mailauth import dmarc
from dynamail.mailauth.dns import DnsTempError, Resolver
from dynamail.mailauth.inbound import check, strip_forged
from dynamail.mailauth.policy import Decision, action_for, decide

from .dnsserver import DnsServer

IP = "127.0.0.1"


class Key:
    def __init__(self, algorithm: str = "ed25519") -> None:
        self.algorithm = algorithm
        self.pem = generate_private_key(algorithm)

    def publish(self, dns: DnsServer, selector: str, domain: str) -> None:
        dns.add(f"{selector}._domainkey.{domain}", "TXT", dns_value(self.algorithm, self.pem))

    def sign(self, message: bytes, selector: str, domain: str) -> bytes:
        alg = b"ed25519-sha256" if self.algorithm == "ed25519" else b"rsa-sha256"
        return dkim.sign(message, selector.encode(), domain.encode(), signing_form(self.algorithm, self.pem),
                         canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=alg) + message


KEY = Key()


def msg(from_addr: str, subject: str = "hi") -> bytes:
    return (f"From: {from_addr}\r\nTo: rcpt@local.example\r\nSubject: {subject}\r\n"
            "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\nBody text.\r\n").encode()


@pytest.fixture(scope="module")
def dns(dns_server: DnsServer) -> DnsServer:
    d = dns_server
    # example.com: SPF for loopback, DMARC reject, relaxed alignment
    d.add("example.com", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    d.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    d.add("news.example.com", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    d.add("example.net", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    KEY.publish(d, "s1", "example.com")
    KEY.publish(d, "s1", "news.example.com")
    KEY.publish(d, "s1", "example.net")
    # strict.example: adkim=s aspf=s
    d.add("_dmarc.strict.example", "TXT", "v=DMARC1; p=reject; adkim=s; aspf=s")
    d.add("news.strict.example", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    KEY.publish(d, "s1", "strict.example")
    # quarantine.example: SPF fails for us
    d.add("quarantine.example", "TXT", "v=spf1 -all")
    d.add("_dmarc.quarantine.example", "TXT", "v=DMARC1; p=quarantine")
    # a UK organisational domain (Public Suffix List)
    d.add("_dmarc.example.co.uk", "TXT", "v=DMARC1; p=reject")
    KEY.publish(d, "s1", "example.co.uk")
    # slow.example never answers
    d.zone.slow.add("slow.example")
    d.zone.slow.add("_dmarc.slow.example")
    return d


@pytest.fixture
def resolver(dns: DnsServer) -> Resolver:
    return Resolver(dns.address, timeout=1.0)


def test_spf_dkim_dmarc_pass_and_header(resolver: Resolver) -> None:
    m = KEY.sign(msg("Alice <alice@example.com>"), "s1", "example.com")
    v = check(resolver, m, ip=IP, helo="mx.example.com", mail_from="alice@example.com")
    assert v.temporary is None
    assert v.spf == "pass"
    assert [(d.result, d.domain, d.selector) for d in v.dkim] == [("pass", "example.com", "s1")]
    assert v.dmarc.result == "pass"
    assert v.arc == "none"
    header = v.header("mx.local.example").decode()
    assert header.startswith("Authentication-Results: mx.local.example;")
    for part in ("spf=pass smtp.mailfrom=alice@example.com", "dkim=pass header.d=example.com",
                 "header.s=s1", "dmarc=pass header.from=example.com", "arc=none"):
        assert part in header.replace("\r\n\t", " "), part
    assert all(len(line) < 200 for line in header.split("\r\n"))


def test_forged_signature_fails(resolver: Resolver) -> None:
    m = KEY.sign(msg("alice@example.com"), "s1", "example.com").replace(b"Body text.", b"Changed.")
    v = check(resolver, m, ip="192.0.2.1", helo="evil.example", mail_from="alice@example.com")
    assert v.spf == "fail"
    assert v.dkim[0].result == "fail"
    assert (v.dmarc.result, v.dmarc.policy) == ("fail", "reject")
    other_key = Key().sign(msg("alice@example.com"), "s1", "example.com")  # signed with a key not published
    assert check(resolver, other_key, ip="192.0.2.1", helo="x", mail_from="").dkim[0].result == "fail"
    no_key = KEY.sign(msg("alice@example.com"), "missing", "example.com")
    assert check(resolver, no_key, ip="192.0.2.1", helo="x", mail_from="").dkim[0].result == "permerror"


@pytest.mark.parametrize(
    ("from_domain", "mail_from", "dkim_d", "ip", "result"),
    [
        # B.2.1 DKIM: same domain, and a subdomain under relaxed alignment
        ("example.com", "x@other.invalid", "example.com", "192.0.2.1", "pass"),
        ("example.com", "x@other.invalid", "news.example.com", "192.0.2.1", "pass"),
        # ... but not under strict alignment (adkim=s)
        ("strict.example", "x@other.invalid", "news.strict.example", "192.0.2.1", "fail"),
        # B.2.2 SPF: MAIL FROM in the same organisational domain (relaxed) ...
        ("example.com", "bounce@news.example.com", None, IP, "pass"),
        # ... not aligned when aspf=s
        ("strict.example", "bounce@news.strict.example", None, IP, "fail"),
        # B.2.3 neither identifier aligned: SPF and DKIM pass for example.net only
        ("example.com", "x@example.net", "example.net", IP, "fail"),
        # the Organizational Domain comes from the Public Suffix List
        ("mail.example.co.uk", "x@other.invalid", "example.co.uk", "192.0.2.1", "pass"),
    ],
)
def test_alignment_rfc7489_appendix_b(resolver: Resolver, from_domain: str, mail_from: str, dkim_d: str | None,
                                      ip: str, result: str) -> None:
    m = msg(f"someone@{from_domain}")
    if dkim_d is not None:
        m = KEY.sign(m, "s1", dkim_d)
    v = check(resolver, m, ip=ip, helo="h.example", mail_from=mail_from)
    assert v.dmarc.result == result, v


def test_subdomain_policy_and_none(resolver: Resolver) -> None:
    v = check(resolver, msg("a@sub.example.com"), ip="192.0.2.1", helo="h", mail_from="a@sub.example.com")
    assert (v.dmarc.result, v.dmarc.policy) == ("fail", "quarantine")  # sp= of example.com
    v = check(resolver, msg("a@nodmarc.example"), ip="192.0.2.1", helo="h", mail_from="a@nodmarc.example")
    assert v.dmarc.result == "none" and v.spf == "none"
    two_from = b"From: a@example.com\r\n" + msg("b@example.com")
    assert check(resolver, two_from, ip=IP, helo="h", mail_from="").dmarc.result == "permerror"


def test_pct_samples_to_a_milder_policy() -> None:
    rec = dmarc.parse_record("v=DMARC1; p=reject; pct=20")
    assert rec is not None and rec.pct == 20
    assert dmarc._sampled("reject", 20, lambda: 0.5) == "quarantine"
    assert dmarc._sampled("reject", 20, lambda: 0.1) == "reject"
    assert dmarc.parse_record("v=spf1 -all") is None
    assert dmarc.parse_record("v=DMARC1; p=bogus") is None


def test_dns_timeout_is_temporary(resolver: Resolver) -> None:
    with pytest.raises(DnsTempError):
        resolver.txt("slow.example")
    v = check(resolver, msg("a@slow.example"), ip=IP, helo="h", mail_from="a@slow.example")
    assert v.temporary is not None


def test_answers_are_cached_for_their_ttl(dns: DnsServer, resolver: Resolver) -> None:
    before = dns.count("_dmarc.example.com", "TXT")
    for _ in range(3):
        assert resolver.txt("_dmarc.example.com") == ["v=DMARC1; p=reject; sp=quarantine"]
    assert dns.count("_dmarc.example.com", "TXT") == before + 1
    nx = dns.count("nothing-here.example", "TXT")
    assert resolver.txt("nothing-here.example") == [] and resolver.txt("nothing-here.example") == []
    assert dns.count("nothing-here.example", "TXT") == nx + 1  # negative answers cached too


def test_arc_chain(resolver: Resolver, dns: DnsServer) -> None:
    sealer = Key("rsa")
    sealer.publish(dns, "arc", "forwarder.example")
    original = KEY.sign(msg("alice@example.com"), "s1", "example.com")
    ar = b"forwarder.example; spf=pass smtp.mailfrom=alice@example.com; dkim=pass header.d=example.com"
    received = b"Authentication-Results: " + ar + b"\r\n" + original
    fields = dkim.arc_sign(received, b"arc", b"forwarder.example", sealer.pem, b"forwarder.example",
                           include_headers=[b"from", b"to", b"subject"])
    assert len(fields) == 3
    sealed = b"".join(fields) + received
    v = check(resolver, sealed, ip=IP, helo="forwarder.example", mail_from="")
    assert v.arc == "pass"
    broken = sealed.replace(b"Subject: hi", b"Subject: changed")
    assert check(resolver, broken, ip=IP, helo="forwarder.example", mail_from="").arc == "fail"


def test_strip_forged() -> None:
    header = (b"Received: from x\r\n"
              b"Authentication-Results: mx.local.example; spf=pass\r\n"
              b"Authentication-Results: (comment) MX.LOCAL.EXAMPLE 1;\r\n\tdkim=pass header.d=bank.example\r\n"
              b"Authentication-Results: other.example; dmarc=pass\r\n"
              b"Subject: x\r\n")
    kept, removed = strip_forged(header, "mx.local.example")
    assert removed == 2
    assert kept == b"Received: from x\r\nAuthentication-Results: other.example; dmarc=pass\r\nSubject: x\r\n"


def test_policy_actions() -> None:
    fail_reject = dmarc.DmarcResult("fail", "example.com", "reject", "reject")
    fail_quar = dmarc.DmarcResult("fail", "example.com", "quarantine", "quarantine")
    assert action_for(fail_reject, {}) == "Reject"
    assert action_for(fail_quar, {}) == "Junk"
    assert action_for(fail_reject, {"DMARCRejectAction": "mark"}) == "Mark"
    assert action_for(dmarc.DmarcResult("pass", "example.com"), {}) == "Mark"
    assert decide({"a": "Reject", "b": "Reject"}, others=False, reason="r") == Decision(reject="r")
    assert decide({"a": "Reject", "b": "Mark"}, others=False, reason="r") == Decision(junk=frozenset({"a"}))
    assert decide({"a": "Reject"}, others=True, reason="r") == Decision(junk=frozenset({"a"}))


def test_malformed_input_gives_error_results_not_a_retry(resolver: Resolver) -> None:
    garbage = b"DKIM-Signature: v=1; a=rsa-sha256; this is not a signature\r\n" + msg("a@example.com")
    v = check(resolver, garbage, ip=IP, helo="h", mail_from="a@example.com")
    assert v.temporary is None
    assert [d.result for d in v.dkim] == ["permerror"]
    broken_header = b"From a@example.com without a colon\r\n\r\nbody\r\n"
    v = check(resolver, broken_header, ip=IP, helo="h", mail_from="a@example.com")
    assert v.temporary is None and v.dmarc.result == "permerror"
    v = check(resolver, msg("a@example.com"), ip=IP, helo="h", mail_from="jörg@example.com")
    assert v.temporary is None and v.spf in ("pass", "permerror", "none")
    assert b"Authentication-Results: mx;" in v.header("mx")
