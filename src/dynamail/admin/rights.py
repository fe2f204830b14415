"""Who may do what (SPEC §1 administrators).

Server rights belong to accounts of the Main Domain:

* ``Master`` — everything.
* ``Settings`` — server-wide and cluster-wide settings and defaults, domain
  creation and deletion, domain settings, server and cluster alerts.
* ``Users`` (All Domains) — accounts of every domain (but not accounts that
  hold server rights, which only Master may touch), per-domain account
  defaults and domain alerts.
* ``Monitors`` — read-only: domains, settings, accounts lists, cluster state.
* ``CanControlCluster`` — make members Ready / Non-Ready.

A domain administrator (``DomainAdmin`` over its own domain, or
``Domain:<name>``) manages the accounts, account defaults and alerts of
that domain only, and may grant or withdraw ``DomainAdmin`` there.  Every
account may read its own settings, prefs and alerts, change its own
password and prefs, and list its own mailboxes.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynamail.accounts import AccountRef
from dynamail.directory import Directory, model


@dataclass(frozen=True, slots=True)
class Actor:
    ref: AccountRef
    rights: frozenset[str]
    domains: frozenset[str]  # administered through domain-level rights

    def has(self, *rights: str) -> bool:
        return model.MASTER in self.rights or any(r in self.rights for r in rights)

    @property
    def master(self) -> bool:
        return model.MASTER in self.rights

    def sees_all_domains(self) -> bool:
        return self.has(model.SETTINGS, model.USERS, model.MONITORS)

    def manages_accounts_of(self, domain: str) -> bool:
        return self.has(model.USERS) or domain in self.domains

    def reads_domain(self, domain: str) -> bool:
        return self.sees_all_domains() or domain in self.domains


def actor_of(directory: Directory, ref: AccountRef) -> Actor:
    try:
        rights = directory.account_rights(ref)
        domains = directory.administered_domains(ref)
    except model.NoSuchAccount:
        rights, domains = frozenset(), frozenset()
    return Actor(ref, rights, domains)
