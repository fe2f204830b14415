"""DMARC (RFC 7489): the policy record, the Organizational Domain and
identifier alignment.

:func:`evaluate` takes what SPF and DKIM found and the domain of the
``From:`` address and returns a :class:`DmarcResult`: ``pass`` when SPF or
DKIM passed for an aligned domain, ``fail`` with the policy to apply
(``p=``, or ``sp=`` for a subdomain without its own record, sampled by
``pct=`` as section 6.6.4 says), ``none`` when the domain publishes no
record, ``temperror`` when DNS could not answer now (the caller answers
451), ``permerror`` when the ``From:`` field names no single domain.

The Organizational Domain comes from the Public Suffix List shipped with
``publicsuffixlist`` (section 3.2).  Blocking DNS through
:class:`dynamail.mailauth.dns.Resolver`.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from dynamail.mailauth.dns import Resolver

__all__ = ["DmarcRecord", "DmarcResult", "aligned", "evaluate", "find_record", "org_domain", "parse_record"]

POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    policy: str  # p=
    subdomain_policy: str  # sp= (defaults to p=)
    adkim: str = "r"  # "r" relaxed | "s" strict
    aspf: str = "r"
    pct: int = 100


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    from_domain: str = ""
    policy: str = "none"  # the policy to apply on fail (after pct sampling)
    published: str = ""  # the record's p= as published (for the header)


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def org_domain(domain: str) -> str:
    """The Organizational Domain (RFC 7489 3.2)."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def aligned(a: str, b: str, mode: str) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if mode == "s":
        return a == b
    return org_domain(a) == org_domain(b)


def parse_record(text: str) -> DmarcRecord | None:
    """A DMARC record, or None when ``text`` is not a valid one (section 6.3)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            tags.setdefault(key.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or not text.lstrip().startswith("v"):
        return None
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        # 6.6.3: a record without a valid p= is treated as p=none when rua= exists
        if "rua" not in tags:
            return None
        policy = "none"
    sp = tags.get("sp", policy).lower()
    try:
        pct = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    return DmarcRecord(
        policy=policy,
        subdomain_policy=sp if sp in POLICIES else policy,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        pct=pct,
    )


def _record_at(resolver: Resolver, domain: str) -> DmarcRecord | None:
    found = [r for r in (parse_record(t) for t in resolver.txt(f"_dmarc.{domain}")) if r is not None]
    return found[0] if len(found) == 1 else None  # 6.6.3: more than one record: none


def find_record(resolver: Resolver, from_domain: str) -> tuple[DmarcRecord, bool] | None:
    """(record, is_subdomain_record): the From domain's own record, else its
    Organizational Domain's (section 6.6.3).  DnsTempError propagates."""
    own = _record_at(resolver, from_domain)
    if own is not None:
        return own, False
    org = org_domain(from_domain)
    if org != from_domain:
        parent = _record_at(resolver, org)
        if parent is not None:
            return parent, True
    return None


def _sampled(policy: str, pct: int, draw: Callable[[], float]) -> str:
    """6.6.4: a message outside the pct sample gets the next milder policy."""
    if pct >= 100 or draw() * 100 < pct:
        return policy
    return {"reject": "quarantine", "quarantine": "none"}.get(policy, policy)


def evaluate(
    resolver: Resolver,
    from_domain: str | None,
    *,
    spf_result: str,
    spf_domain: str,
    dkim_domains: Iterable[str],
    draw: Callable[[], float] = random.random,
) -> DmarcResult:
    """The DMARC result for a message; ``dkim_domains`` are the d= of the
    signatures that verified.  DnsTempError propagates."""
    if not from_domain:
        return DmarcResult("permerror")
    found = find_record(resolver, from_domain)
    if found is None:
        return DmarcResult("none", from_domain)
    record, inherited = found
    published = record.subdomain_policy if inherited else record.policy
    spf_ok = spf_result == "pass" and bool(spf_domain) and aligned(spf_domain, from_domain, record.aspf)
    dkim_ok = any(aligned(d, from_domain, record.adkim) for d in dkim_domains)
    if spf_ok or dkim_ok:
        return DmarcResult("pass", from_domain, "none", published)
    return DmarcResult("fail", from_domain, _sampled(published, record.pct, draw), published)
