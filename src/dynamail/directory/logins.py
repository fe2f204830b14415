"""Which account a login name means (SPEC §1, as CommuniGate Pro does it).

A login name with ``@`` names its domain.  ``user%domain`` is the same as
``user@domain`` (for clients that cannot send an ``@`` in a user name).  A
plain ``user`` is looked up in, first found:

1. the domain whose ``IPAddresses`` setting lists the local address the
   client connected to (a list of addresses, or a comma-separated string);
2. the default login domain: ``DefaultLoginDomain`` in the server-wide
   Default Domain Settings (``UPDATEDOMAINDEFAULTS``), else in the
   cluster-wide ones (``UPDATECLUSTERDOMAINDEFAULTS``), so that a shared
   domain served by every member can be it;
3. the Main Domain.

When the name is not an account (or alias) of the domain chosen by 1 or 2,
it is looked up in the Main Domain as well, so the server's own accounts
(``postmaster``) keep logging in by plain name whatever the default login
domain is.

Every login door (IMAP, POP3, SMTP AUTH, ManageSieve, the CLI and HTTP admin
doors, WebAdmin) resolves names through :meth:`LoginsMixin.login_address`
(called by ``dynamail.auth.Authenticator``, which each door gives the local
address the client connected to).  The address → domain map of step 1 is
built from the domain settings at most every :data:`IP_MAP_TTL` seconds.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import TYPE_CHECKING, Any

from dynamail import names
from dynamail.directory.model import NoSuchDomain
from dynamail.directory.parts import DirectoryParts

if TYPE_CHECKING:
    from dynamail.directory.model import DomainInfo

IP_MAP_TTL = 5.0  # seconds a change of a domain's IPAddresses may take to apply
DEFAULT_LOGIN_DOMAIN = "DefaultLoginDomain"
IP_ADDRESSES = "IPAddresses"


def _canon_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip().split("%", 1)[0]))
    except ValueError:
        return None


def ip_list(value: Any) -> list[str]:
    """The addresses of an ``IPAddresses`` value (invalid entries skipped)."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    out = []
    for item in items:
        ip = _canon_ip(str(item))
        if ip is not None:
            out.append(ip)
    return out


class LoginsMixin(DirectoryParts):
    if TYPE_CHECKING:
        def list_domains(self) -> list[DomainInfo]: ...
        def domain_settings(self, name: str) -> dict[str, Any]: ...
        def server_domain_defaults(self) -> dict[str, Any]: ...
        def cluster_domain_defaults(self) -> dict[str, Any]: ...

    _ip_map: dict[str, str] | None = None
    _ip_map_at = 0.0
    _ip_map_lock = threading.Lock()

    def login_address(self, login: str, local_ip: str = "") -> str:
        """``user@domain`` for a login name (see the module docstring)."""
        login = login.strip()
        if "@" in login:
            return login
        user, pct, domain = login.rpartition("%")
        if pct and user and domain:
            return f"{user}@{domain}"
        return f"{login}@{self.login_domain(local_ip)}"

    def login_addresses(self, login: str, local_ip: str = "") -> list[str]:
        """The addresses to try for a login name, in order."""
        first = self.login_address(login, local_ip)
        local = login.strip()
        if "@" in local or "%" in local or first == f"{local}@{self.main_domain}":
            return [first]
        return [first, f"{local}@{self.main_domain}"]

    def login_domain(self, local_ip: str = "") -> str:
        """The domain a plain user name is looked up in."""
        if local_ip:
            ip = _canon_ip(local_ip)
            if ip is not None:
                found = self._ip_domains().get(ip)
                if found is not None and self.domain_exists(found):
                    return found
        for defaults in (self.server_domain_defaults, self.cluster_domain_defaults):
            value = defaults().get(DEFAULT_LOGIN_DOMAIN)
            if isinstance(value, str) and value.strip():
                try:
                    return self._locate_domain(value.strip())[0]
                except (names.BadName, NoSuchDomain):  # unknown or bad: the next rule
                    continue
        return self.main_domain

    def _ip_domains(self) -> dict[str, str]:
        now = time.monotonic()
        with self._ip_map_lock:
            if self._ip_map is not None and now - self._ip_map_at < IP_MAP_TTL:
                return self._ip_map
        built: dict[str, str] = {}
        for info in self.list_domains():
            try:
                value = self.domain_settings(info.name).get(IP_ADDRESSES)
            except (NoSuchDomain, OSError, ValueError):  # deleted meanwhile, unreadable
                continue
            for ip in ip_list(value):
                built.setdefault(ip, info.name)
        with self._ip_map_lock:
            self._ip_map, self._ip_map_at = built, now
        return built

    def forget_login_domains(self) -> None:
        """Rebuild the address map at the next login (after a settings change)."""
        with self._ip_map_lock:
            self._ip_map = None
