"""Checks of incoming mail (port 25): SPF, DKIM, DMARC and ARC, reported in
an ``Authentication-Results`` field (RFC 8601) with our authserv-id.

:func:`check` runs every check on a received message and returns a
:class:`Verdict`; ``verdict.temporary`` is set when a DNS lookup could not
be answered now (the adapter answers ``451 4.4.3`` and the sender retries:
a DNS outage never loses a message).  :func:`strip_forged` removes the
``Authentication-Results`` fields of the incoming header that claim our
authserv-id (RFC 8601 5: only we may write those); other servers' fields
stay.

* SPF (RFC 7208): pyspf, on the client address, HELO name and MAIL FROM.
* DKIM (RFC 6376, RFC 8463): dkimpy, every signature (at most
  ``MAX_SIGNATURES``) with its own result.
* DMARC (RFC 7489): ``dmarc.evaluate`` on the ``From:`` domain.
* ARC (RFC 8617): dkimpy's chain validation, reported as ``arc=``; local
  policy does not (yet) let a passing chain override a DMARC failure.

Blocking: the adapter runs :func:`check` in a worker thread.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import authres
import authres.arc
import authres.dmarc
import dkim

from dynamail.mailauth import dmarc
from dynamail.mailauth.dns import DnsTempError, Resolver
from dynamail.mailauth.signing import from_domain, header_section
from dynamail.mailauth.spf import check_spf

__all__ = ["DkimOutcome", "Verdict", "check", "strip_forged"]

log = logging.getLogger("dynamail.mailauth")
T = TypeVar("T")

MAX_SIGNATURES = 8  # DKIM-Signature fields verified per message (bounded work)
_TAG = re.compile(rb"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)")


@dataclass(frozen=True, slots=True)
class DkimOutcome:
    result: str  # pass | fail | permerror | temperror
    domain: str = ""
    selector: str = ""
    algorithm: str = ""


@dataclass
class Verdict:
    spf: str = "none"
    spf_domain: str = ""
    mail_from: str = ""
    helo: str = ""
    dkim: list[DkimOutcome] = field(default_factory=list)
    dmarc: dmarc.DmarcResult = field(default_factory=lambda: dmarc.DmarcResult("none"))
    arc: str = "none"
    temporary: str | None = None  # why a DNS lookup failed now

    def header(self, authserv_id: str) -> bytes:
        """The ``Authentication-Results:`` field, CRLF-terminated."""
        results: list[authres.AuthenticationResult] = [
            authres.SPFAuthenticationResult(
                result=self.spf, smtp_mailfrom=self.mail_from or None, smtp_helo=None if self.mail_from else self.helo
            )
        ]
        if self.dkim:
            results += [
                authres.DKIMAuthenticationResult(
                    result=d.result, header_d=d.domain or None, header_s=d.selector or None, header_a=d.algorithm or None
                )
                for d in self.dkim
            ]
        else:
            results.append(authres.DKIMAuthenticationResult(result="none"))
        results.append(authres.dmarc.DMARCAuthenticationResult(
            result=self.dmarc.result, header_from=self.dmarc.from_domain or None,
            policy=self.dmarc.published or None,
        ))
        results.append(authres.arc.ARCAuthenticationResult(result=self.arc))
        text = str(authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results))
        return _fold(text).encode("utf-8", "replace") + b"\r\n"

    @property
    def dkim_domains(self) -> list[str]:
        return [d.domain for d in self.dkim if d.result == "pass"]


def _fold(text: str) -> str:
    """Fold after each ``;`` so no line grows past the limits (RFC 5322 2.1.1)."""
    return ";\r\n\t".join(part.strip() for part in text.split(";"))


def _tags(value: bytes) -> dict[bytes, bytes]:
    compact = re.sub(rb"\s+", b"", value)
    return {k.lower(): v for k, v in _TAG.findall(compact)}


def _dkim(resolver: Resolver, message: bytes) -> list[DkimOutcome]:
    missing: list[bytes] = []  # key records that do not exist (permerror, not fail)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        records = resolver.txt(name.decode("ascii", "replace").rstrip("."))
        if not records:
            missing.append(name)
        return records[0].encode("utf-8") if records else None

    d = dkim.DKIM(message, timeout=int(resolver.timeout))
    signatures = [v for k, v in d.headers if k.lower() == b"dkim-signature"][:MAX_SIGNATURES]
    out: list[DkimOutcome] = []
    for idx, value in enumerate(signatures):
        tags = _tags(value)
        info = {
            "domain": tags.get(b"d", b"").decode("ascii", "replace").lower(),
            "selector": tags.get(b"s", b"").decode("ascii", "replace"),
            "algorithm": tags.get(b"a", b"").decode("ascii", "replace"),
        }
        missing.clear()
        try:
            ok = dkim.DKIM(message, timeout=int(resolver.timeout)).verify(idx=idx, dnsfunc=dnsfunc)
        except DnsTempError:
            out.append(DkimOutcome("temperror", **info))
            continue
        except dkim.ValidationError:
            out.append(DkimOutcome("fail", **info))  # e.g. the body hash does not match
            continue
        except dkim.DKIMException:
            out.append(DkimOutcome("permerror", **info))  # no key, a malformed signature or key
            continue
        out.append(DkimOutcome("pass" if ok else ("permerror" if missing else "fail"), **info))
    return out


def _arc(resolver: Resolver, message: bytes) -> str:
    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        records = resolver.txt(name.decode("ascii", "replace").rstrip("."))
        return records[0].encode("utf-8") if records else None

    if b"arc-seal:" not in header_section(message).lower():
        return "none"
    cv, _results, _reason = dkim.arc_verify(message, dnsfunc=dnsfunc)
    return {dkim.CV_Pass: "pass", dkim.CV_Fail: "fail", dkim.CV_None: "none"}.get(cv, "fail")


def check(resolver: Resolver, message: bytes, *, ip: str, helo: str, mail_from: str) -> Verdict:
    """Every check on ``message`` as received from ``ip`` (blocking)."""
    v = Verdict(mail_from=mail_from, helo=helo)
    try:
        v.spf = _guarded("SPF", "permerror", lambda: check_spf(resolver, ip, mail_from, helo)[0])
        v.spf_domain = mail_from.rpartition("@")[2].lower() if mail_from else helo.lower()
        if v.spf == "temperror":
            v.temporary = "SPF: DNS lookup failed"
        v.dkim = _guarded("DKIM", [DkimOutcome("permerror")], lambda: _dkim(resolver, message))
        if any(d.result == "temperror" for d in v.dkim):
            v.temporary = "DKIM: DNS lookup failed"
        v.arc = _guarded("ARC", "fail", lambda: _arc(resolver, message))
        v.dmarc = _guarded("DMARC", dmarc.DmarcResult("permerror"), lambda: dmarc.evaluate(
            resolver, from_domain(message), spf_result=v.spf, spf_domain=v.spf_domain, dkim_domains=v.dkim_domains
        ))
    except DnsTempError as exc:
        v.temporary = str(exc)
    return v


def _guarded(what: str, fallback: T, run: Callable[[], T]) -> T:
    """``run()``; a message that makes a library fail (anything but a DNS
    failure) gets ``fallback`` (a permanent error result) instead of a 451
    that would repeat on every retry."""
    try:
        return run()
    except DnsTempError:
        raise
    except Exception:
        log.warning("%s check failed on a message; reported as an error", what, exc_info=True)
        return fallback


def _authserv_id(value: bytes) -> str:
    """The authserv-id of an ``Authentication-Results`` value (comments skipped)."""
    text = re.sub(rb"\([^)]*\)", b" ", value).split(b";", 1)[0].strip()
    return text.split()[0].decode("utf-8", "replace").lower() if text.split() else ""


def strip_forged(header: bytes, authserv_id: str) -> tuple[bytes, int]:
    """``header`` without the ``Authentication-Results`` fields that claim
    ``authserv_id``; and how many were removed."""
    ours = authserv_id.lower()
    lines = header.split(b"\n")
    fields: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept: list[bytes] = []
    removed = 0
    for f in fields:
        name, colon, value = f[0].partition(b":")
        if colon and name.strip().lower() == b"authentication-results":
            if _authserv_id(b" ".join([value, *f[1:]])) == ours:
                removed += 1
                continue
        kept.extend(f)
    return b"\n".join(kept), removed
