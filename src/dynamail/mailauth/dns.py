"""DNS for the sender checks: dnspython with a configurable server, answers
cached for their TTL, and temporary failures kept apart from "no record".

``[dns] resolver`` names the server (``host`` or ``host:port``, IPv6 as
``[addr]:port``); empty means the system's (``/etc/resolv.conf``).  Every
answer, positive or negative (NXDOMAIN, no data), is kept in a
:class:`dns.resolver.Cache`, which honours the record's TTL (for a negative
answer the SOA minimum, RFC 2308).

A lookup that cannot be answered now — timeout, SERVFAIL, no server
reachable — raises :class:`DnsTempError`; the SMTP adapter turns that into
``451`` so the sender tries again and no message is lost.  A name that does
not exist, or has no record of the type, is an empty answer.

Blocking (the checks run in worker threads); thread-safe (the cache locks).
"""

from __future__ import annotations

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

__all__ = ["DnsTempError", "Resolver", "parse_server"]

DEFAULT_TIMEOUT = 5.0
MAX_TXT = 64 * 1024  # a TXT answer longer than this is refused (bounded memory)


class DnsTempError(Exception):
    """The DNS could not answer now (timeout, SERVFAIL, unreachable)."""


def parse_server(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, 53


class Resolver:
    """Cached lookups against one configured server (or the system's)."""

    def __init__(self, server: str = "", timeout: float = DEFAULT_TIMEOUT) -> None:
        if server:
            host, port = parse_server(server)
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [host]
            self._resolver.port = port
        else:
            self._resolver = dns.resolver.Resolver()
        self._resolver.lifetime = timeout
        self._resolver.timeout = min(timeout, 2.0)
        self._resolver.cache = dns.resolver.Cache()
        self.timeout = timeout
        self.queries = 0  # lookups that were not answered from the cache (tests watch it)

    def _resolve(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        cache = self._resolver.cache
        key = (dns.name.from_text(name), dns.rdatatype.from_text(rdtype), 1)
        if cache is not None and cache.get(key) is None:
            self.queries += 1
        try:
            return self._resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as exc:
            raise DnsTempError(f"{name} {rdtype}: {exc}") from exc
        except dns.exception.DNSException as exc:
            # a malformed name or answer: treat as no record
            if isinstance(exc, dns.resolver.NoAnswer | dns.name.EmptyLabel | dns.name.LabelTooLong):
                return None
            raise DnsTempError(f"{name} {rdtype}: {exc}") from exc

    def txt(self, name: str) -> list[str]:
        """Every TXT record of ``name``, each with its strings joined."""
        answer = self._resolve(name, "TXT")
        if answer is None or answer.rrset is None:
            return []
        out: list[str] = []
        total = 0
        for rdata in answer.rrset:
            value = b"".join(rdata.strings)
            total += len(value)
            if total > MAX_TXT:
                break
            out.append(value.decode("utf-8", "replace"))
        return out

    def records(self, name: str, rdtype: str) -> list[object]:
        """The rdata of ``name``/``rdtype`` (A, AAAA, MX, PTR …)."""
        answer = self._resolve(name, rdtype)
        if answer is None or answer.rrset is None:
            return []
        return list(answer.rrset)
