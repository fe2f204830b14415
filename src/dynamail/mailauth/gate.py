"""The gate at the end of DATA on port 25: sender checks and their policy.

:class:`InboundGate` runs :func:`dynamail.mailauth.inbound.check` in a
worker thread, applies each recipient domain's DMARC settings
(:mod:`dynamail.mailauth.policy`) and returns an :class:`Outcome` that the
SMTP adapter turns into its reply: ``defer`` (451, a DNS lookup failed
now), ``reject`` (550 5.7.1), or accept with the ``Authentication-Results``
field to add (after removing forged ones, :meth:`InboundGate.rewrite`) and
the recipients whose copy is filed into Junk.

Enabled by ``[smtp] check_senders``; the resolver is ``[smtp]
dns_resolver`` / ``dns_timeout``, the authserv-id ``[smtp] authserv_id``
(default: the host name).  One gate (and so one DNS cache) per server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamail.accounts import AccountRef
from dynamail.mailauth import inbound, policy
from dynamail.mailauth.dns import Resolver
from dynamail.mailauth.signing import read_message

__all__ = ["InboundGate", "Outcome"]

log = logging.getLogger("dynamail.mailauth")


@dataclass(frozen=True)
class Outcome:
    defer: str | None = None  # answer 451: why
    reject: str | None = None  # answer 550 5.7.1: why
    junk: frozenset[Hashable] = field(default_factory=frozenset)
    fields: bytes = b""  # header fields to put in front (Authentication-Results …)
    verdict: inbound.Verdict | None = None


class InboundGate:
    def __init__(self, directory: Any, resolver: Resolver, authserv_id: str) -> None:
        self.directory = directory
        self.resolver = resolver
        self.authserv_id = authserv_id

    @classmethod
    def for_context(cls, ctx: Any) -> InboundGate | None:
        """The server's gate (kept in ctx.extras), or None when checks are off."""
        smtp = ctx.config.smtp
        if not getattr(smtp, "check_senders", False):
            return None
        gate: InboundGate | None = ctx.extras.get("inbound_gate")
        if gate is None:
            resolver = Resolver(getattr(smtp, "dns_resolver", ""), float(getattr(smtp, "dns_timeout", 5.0)))
            gate = cls(ctx.directory, resolver, getattr(smtp, "authserv_id", "") or ctx.hostname)
            ctx.extras["inbound_gate"] = gate
        return gate

    def _actions(self, verdict: inbound.Verdict, local: Sequence[AccountRef]) -> dict[Hashable, str]:
        out: dict[Hashable, str] = {}
        for ref in dict.fromkeys(local):
            try:
                settings = self.directory.effective_domain_settings(ref.domain)
            except Exception:
                settings = {}
            out[ref] = policy.action_for(verdict.dmarc, settings)
        return out

    def _examine(self, content: Path | bytes, ip: str, helo: str, mail_from: str,
                 local: Sequence[AccountRef], others: bool) -> Outcome:
        verdict = inbound.check(self.resolver, read_message(content), ip=ip, helo=helo, mail_from=mail_from)
        if verdict.temporary is not None:
            return Outcome(defer=verdict.temporary, verdict=verdict)
        fields = verdict.header(self.authserv_id)
        d = verdict.dmarc
        decision = policy.decide(
            self._actions(verdict, local), others=others,
            reason=f"DMARC policy of {d.from_domain} ({d.published}) rejects this message",
        )
        return Outcome(reject=decision.reject, junk=decision.junk, fields=fields, verdict=verdict)

    async def examine(self, content: Path | bytes, *, ip: str, helo: str, mail_from: str,
                      local: Sequence[AccountRef], others: bool) -> Outcome:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._examine, content, ip, helo, mail_from, local, others)

    def strip(self, header: bytes) -> bytes:
        """The header section without forged fields claiming our authserv-id."""
        kept, removed = inbound.strip_forged(header, self.authserv_id)
        if removed:
            log.info("removed %d Authentication-Results field(s) claiming %s", removed, self.authserv_id)
        return kept
