"""SPF (RFC 7208) with pyspf, its DNS lookups going through our resolver.

pyspf looks names up through its module-level ``DNSLookup`` function.  It is
replaced once, here, by one that answers through the :class:`Resolver` of
the check running in the current thread (a thread-local), so each check
uses the configured server and the shared TTL cache, and lookups made by
pyspf outside our checks keep the library's own behaviour.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import spf

from dynamail.mailauth.dns import DnsTempError, Resolver

__all__ = ["check_spf"]

_current = threading.local()
_library_lookup = spf.DNSLookup


def _lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[tuple[tuple[str, str], Any]]:
    resolver: Resolver | None = getattr(_current, "resolver", None)
    if resolver is None:
        result: list[tuple[tuple[str, str], Any]] = _library_lookup(name, qtype, strict, timeout)
        return result
    try:
        rdatas: list[Any] = resolver.records(name, "TXT" if qtype == "SPF" else qtype)
    except DnsTempError as exc:
        raise spf.TempError(f"DNS {exc}") from exc
    out: list[tuple[tuple[str, str], Any]] = []
    for rdata in rdatas:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


spf.DNSLookup = _lookup


@contextmanager
def _using(resolver: Resolver) -> Iterator[None]:
    _current.resolver = resolver
    try:
        yield
    finally:
        _current.resolver = None


def check_spf(resolver: Resolver, ip: str, mail_from: str, helo: str) -> tuple[str, str]:
    """(result, explanation): pass, fail, softfail, neutral, none, permerror
    or temperror (RFC 7208 2.6).  An empty ``mail_from`` (the null sender)
    is checked as ``postmaster@helo`` (RFC 7208 2.4)."""
    sender = mail_from or f"postmaster@{helo}"
    with _using(resolver):
        q = spf.query(i=ip, s=sender, h=helo, timeout=resolver.timeout * 4)
        result, _code, explanation = q.check()
    return str(result), str(explanation)
