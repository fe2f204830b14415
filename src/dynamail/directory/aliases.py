"""Account aliases, forwarders and domain aliases: the names that lead to
an account (or to an address elsewhere) without being accounts themselves.

Account aliases and forwarders of a domain live in its ``Aliases.json``
(alias -> account name) and ``Forwarders.json`` (name -> address); a name is
an account, an alias or a forwarder, never two of them.  Domain aliases come
from a domain's ``DomainAliases`` setting and are indexed in
``DomainAliases.json`` (``Settings/`` for local domains, ``.cluster/`` for
shared ones) so resolving one costs one cached read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dynamail import names
from dynamail.accounts import AccountRef
from dynamail.directory.layout import (
    ALIASES_FILE,
    DOMAIN_ALIASES_FILE,
    FORWARDERS_FILE,
    SETTINGS_FILE,
)
from dynamail.directory.model import (
    AlreadyExists,
    BadSetting,
    NoSuchDomain,
    Recipient,
)
from dynamail.directory.parts import DirectoryParts


class AliasesMixin(DirectoryParts):
    """Part of :class:`dynamail.directory.Directory`."""

    # -- domain aliases: the DomainAliases setting of a domain, indexed in
    # Settings/DomainAliases.json (local) and .cluster/DomainAliases.json
    # (shared) so that resolving an alias costs one cached read.
    def _alias_index(self, shared: bool) -> Path:
        return (self.cluster_dir if shared else self.settings_dir) / DOMAIN_ALIASES_FILE

    def _alias_target(self, canon: str) -> str | None:
        for shared in (False, True):
            target = self.files.read(self._alias_index(shared), {}).get(canon)
            if isinstance(target, str):
                return target
        return None

    def domain_aliases(self, name: str) -> list[str]:
        canon, shared = self._locate_domain(name)
        index = self.files.read(self._alias_index(shared), {})
        return sorted(a for a, t in index.items() if t == canon)

    def _check_domain_aliases(self, canon: str, settings: Mapping[str, Any]) -> list[str] | None:
        """Canonical aliases wanted by ``settings`` (None when it has none),
        refusing names that are domains or aliases of another domain."""
        value = settings.get("DomainAliases")
        if value is None:
            return None
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            raise BadSetting("DomainAliases must be a list of domain names")
        wanted = sorted({names.domain_name(str(v).strip()) for v in items if str(v).strip()})
        for alias in wanted:
            if alias == canon or self._real_domain(alias) is not None:
                raise AlreadyExists(f"{alias} is a domain")
            owner = self._alias_target(alias)
            if owner is not None and owner != canon:
                raise AlreadyExists(f"{alias} is an alias of {owner}")
        return wanted

    def _write_domain_aliases(self, canon: str, shared: bool, wanted: list[str]) -> None:
        path = self._alias_index(shared)
        index = self.files.read(path, {})
        new = {a: t for a, t in index.items() if t != canon}
        new.update({a: canon for a in wanted})
        if new != index:
            self.files.write(path, new)

    def _write_domain_settings(self, canon: str, shared: bool, settings: dict[str, Any]) -> None:
        wanted = self._check_domain_aliases(canon, settings)
        if wanted is not None:
            settings["DomainAliases"] = wanted
        self.files.write(self._domain_dir(canon, shared) / SETTINGS_FILE, settings)
        self._write_domain_aliases(canon, shared, wanted or [])

    def _aliases(self, domain: str, shared: bool) -> dict[str, str]:
        data = self.files.read(self._domain_dir(domain, shared) / ALIASES_FILE, {})
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def account_aliases(self, ref: AccountRef) -> list[str]:
        return sorted(a for a, t in self._aliases(ref.domain, ref.shared).items() if t == ref.name)

    def set_account_aliases(self, ref: AccountRef, aliases: list[str]) -> None:
        canon = sorted({names.account_name(a) for a in aliases} - {ref.name})
        with self._lock:
            self._existing(ref)
            for a in canon:
                other = self.find_account(f"{a}@{ref.domain}")
                if (other is not None and other != ref) or a in self.forwarders(ref.domain):
                    raise AlreadyExists(f"name already in use: {a}@{ref.domain}")
            self._drop_aliases(ref)
            self._add_aliases(ref, canon)

    def _drop_aliases(self, ref: AccountRef) -> None:
        path = self._domain_dir(ref.domain, ref.shared) / ALIASES_FILE
        data = self.files.read(path, {})
        kept = {k: v for k, v in data.items() if v != ref.name}
        if kept != data:
            self.files.write(path, kept)

    def _add_aliases(self, ref: AccountRef, aliases: list[str]) -> None:
        if not aliases:
            return
        path = self._domain_dir(ref.domain, ref.shared) / ALIASES_FILE
        data = self.files.read(path, {})
        for a in aliases:
            data[a] = ref.name
        self.files.write(path, data)

    def forwarders(self, domain: str) -> dict[str, str]:
        data = self.files.read(self._dpath(domain) / FORWARDERS_FILE, {})
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def set_forwarder(self, domain: str, name: str, target: str | None) -> None:
        """Create, change (``target``) or remove (None) a forwarder ``name@domain``."""
        canon = names.account_name(name)
        path = self._dpath(domain) / FORWARDERS_FILE
        with self._lock:
            data = self.files.read(path, {})
            if target is None:
                data.pop(canon, None)
            else:
                if not isinstance(target, str) or "@" not in target or any(
                    ord(c) < 33 for c in target
                ) or len(target) > 320:
                    raise BadSetting(f"invalid forwarding address: {target!r}")
                if self.find_account(f"{canon}@{domain}") is not None:
                    raise AlreadyExists(f"name already in use: {canon}@{domain}")
                data[canon] = target
            self.files.write(path, data)

    def resolve_recipient(self, address: str) -> Recipient | None:
        """Where mail for ``address`` goes, or None for an unknown address."""
        ref = self.find_account(address)
        if ref is not None:
            return Recipient(accounts=[ref], forward=[])
        try:
            local, domain = self.parse_address(address)
            if not self.domain_exists(domain):
                return None
            target = self.forwarders(domain).get(local)
        except (names.BadName, NoSuchDomain):
            return None
        if target is None:
            return None
        return Recipient(accounts=[], forward=[target])
