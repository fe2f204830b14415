"""Every administrative operation, with its rights check.

The CLI protocol (port 106) and the JSON API call these methods and nothing
else, so an operation and its rights check exist exactly once.  Each method
is a coroutine whose first argument is the acting (logged-in) account; it
raises :class:`AdminError` (never a directory or storage exception).

Directory I/O runs in worker threads (``asyncio.to_thread``) so a slow
(shared) file system never stalls the event loop.

The cluster seam: every mutation of *shared* data — a shared domain, its
accounts, the cluster-wide defaults, prefs and alerts — goes through
:meth:`Admin._mutate`, one call per operation, naming the ``Directory``
method and its arguments.  When ``cluster`` is set and offers
``forward_directory_op(op, args, kwargs)``, the mutation is handed to it
(the cluster layer runs it on the Controller, which tells the other members
to ``Directory.invalidate``); otherwise it runs on the local directory.
Mailbox operations go through the account locator (``accounts.use``); a
``Relay`` placement is handed to ``cluster.forward_mailbox_op`` when the
cluster offers it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from dynamail import __version__ as _version
from dynamail.accounts import AccountRef
from dynamail.admin.errors import AdminError, translated
from dynamail.admin.rights import Actor, actor_of
from dynamail.admin.scripts import SieveScriptOps
from dynamail.auth import Authenticator
from dynamail.cluster.locator import AccountLocator, AccountUnavailable, Local
from dynamail.directory import Alert, Directory, DomainInfo, model
from dynamail.directory.layout import AlertScope
from dynamail.names import BadName, mailbox_name
from dynamail.storage.api import MailboxListing

T = TypeVar("T")

MAX_LIST_LIMIT = 100_000


def _forbidden(what: str = "you do not have the rights for this operation") -> AdminError:
    return AdminError("forbidden", what)


class Admin(SieveScriptOps):
    def __init__(
        self,
        directory: Directory,
        auth: Authenticator,
        *,
        accounts: AccountLocator | None = None,
        cluster: object | None = None,
    ) -> None:
        self.directory = directory
        self.auth = auth
        self.accounts = accounts
        self.cluster = cluster
        self.forward_all = False  # every mutation through the cluster (the workers of one server)

    # ------------------------------------------------------------ plumbing
    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            with translated():
                return fn(*args, **kwargs)

        return await asyncio.to_thread(call)

    async def _mutate(self, on_shared: bool, op: str, /, *args: Any, **kwargs: Any) -> Any:
        """Apply ``Directory.<op>(*args, **kwargs)``; shared data via the cluster."""
        forward = getattr(self.cluster, "forward_directory_op", None) if self.cluster is not None else None
        if (on_shared or self.forward_all) and forward is not None:
            with translated():
                return await forward(op, args, kwargs)
        method = getattr(self.directory, op)
        return await self._run(method, *args, **kwargs)

    async def _actor(self, ref: AccountRef) -> Actor:
        return await asyncio.to_thread(actor_of, self.directory, ref)

    async def _account(self, address: str | AccountRef, *, actor: AccountRef | None = None) -> AccountRef:
        """The account named ``address``.  With ``actor``, a missing account
        is reported as ``not_found`` only to an actor who may see that
        domain's accounts; anyone else gets the same ``forbidden`` as for an
        existing account, so rights refusals do not reveal which accounts
        exist."""
        if isinstance(address, AccountRef):
            found = await asyncio.to_thread(self.directory.find_account, address.address)
            shown = address.address
            domain = address.domain
        else:
            if not isinstance(address, str):
                raise AdminError("bad_request", "account name must be text")
            with translated():
                _, domain = self.directory.parse_address(address)
            found = await asyncio.to_thread(self.directory.find_account, address)
            shown = address
        if found is None:
            if actor is not None and not await self._may_see_accounts_of(actor, domain):
                raise _forbidden()
            raise AdminError("not_found", f"unknown account: {shown}")
        return found

    async def _may_see_accounts_of(self, actor: AccountRef, domain: str) -> bool:
        who = await self._actor(actor)
        if who.has(model.MONITORS) or who.manages_accounts_of(domain):
            return True
        try:
            canon, _ = await self._run(self.directory.locate_domain, domain)
        except AdminError:
            return False
        return canon != domain and who.manages_accounts_of(canon)

    async def _domain(self, name: str) -> tuple[str, bool]:
        if not isinstance(name, str):
            raise AdminError("bad_request", "domain name must be text")
        return await self._run(self.directory.locate_domain, name)

    async def _holds_server_rights(self, ref: AccountRef) -> bool:
        rights = await self._run(self.directory.account_rights, ref)
        return bool(rights & model.SERVER_RIGHTS)

    async def _manage_account(self, actor: AccountRef, ref: AccountRef, *, self_ok: bool = False) -> Actor:
        """Rights to change ``ref``: an administrator of its domain; accounts
        holding server rights only by Master (or themselves when ``self_ok``)."""
        who = await self._actor(actor)
        if self_ok and actor == ref:
            return who
        if not who.manages_accounts_of(ref.domain):
            raise _forbidden()
        if not who.master and await self._holds_server_rights(ref):
            raise _forbidden("only a Master administrator can change this account")
        return who

    async def _read_account(self, actor: AccountRef, ref: AccountRef) -> Actor:
        who = await self._actor(actor)
        if actor == ref or who.has(model.MONITORS) or who.manages_accounts_of(ref.domain):
            return who
        raise _forbidden()

    async def _need(self, actor: AccountRef, *rights: str) -> Actor:
        who = await self._actor(actor)
        if not who.has(*rights):
            raise _forbidden()
        return who

    # ------------------------------------------------------------ server
    async def main_domain_name(self, actor: AccountRef) -> str:
        return self.directory.main_domain

    async def version(self, actor: AccountRef) -> str:
        return f"dynamail {_version}"

    async def check_monitors(self, actor: AccountRef) -> None:
        """Rights to read this server's live counters (Monitors page, API)."""
        await self._need(actor, model.MONITORS, model.SETTINGS)

    async def reload(self, actor: AccountRef) -> None:
        await self._need(actor, model.SETTINGS)
        await self._run(self.directory.reload)

    # ------------------------------------------------------------ domains
    async def list_domains(self, actor: AccountRef) -> list[DomainInfo]:
        who = await self._actor(actor)
        domains = await self._run(self.directory.list_domains)
        if who.sees_all_domains():
            return domains
        visible = [d for d in domains if d.name in who.domains]
        if not visible:
            raise _forbidden()
        return visible

    async def create_domain(
        self, actor: AccountRef, name: str, *, shared: bool = False, settings: Mapping[str, Any] | None = None
    ) -> None:
        await self._need(actor, model.SETTINGS)
        await self._mutate(shared, "create_domain", name, shared=shared, settings=settings)

    async def delete_domain(self, actor: AccountRef, name: str, *, force: bool = False) -> None:
        await self._need(actor, model.SETTINGS)
        canon, shared = await self._domain(name)
        await self._mutate(shared, "delete_domain", canon, force=force)

    async def get_domain_settings(self, actor: AccountRef, domain: str) -> dict[str, Any]:
        canon, _ = await self._domain(domain)
        if not (await self._actor(actor)).reads_domain(canon):
            raise _forbidden()
        return await self._run(self.directory.domain_settings, canon)

    async def get_domain_effective_settings(self, actor: AccountRef, domain: str) -> dict[str, Any]:
        canon, _ = await self._domain(domain)
        if not (await self._actor(actor)).reads_domain(canon):
            raise _forbidden()
        return await self._run(self.directory.effective_domain_settings, canon)

    async def update_domain_settings(self, actor: AccountRef, domain: str, changes: Mapping[str, Any]) -> None:
        await self._need(actor, model.SETTINGS)
        canon, shared = await self._domain(domain)
        await self._mutate(shared, "update_domain_settings", canon, dict(changes))

    async def set_domain_settings(self, actor: AccountRef, domain: str, settings: Mapping[str, Any]) -> None:
        await self._need(actor, model.SETTINGS)
        canon, shared = await self._domain(domain)
        await self._mutate(shared, "set_domain_settings", canon, dict(settings))

    # -- a domain's DKIM keys (dynamail.directory.dkim)
    async def get_dkim_keys(self, actor: AccountRef, domain: str) -> list[dict[str, Any]]:
        canon, _ = await self._domain(domain)
        if not (await self._actor(actor)).reads_domain(canon):
            raise _forbidden()
        return await self._run(self.directory.dkim_keys, canon)

    async def create_dkim_key(
        self, actor: AccountRef, domain: str, algorithm: str = "rsa", selector: str | None = None
    ) -> list[dict[str, Any]]:
        await self._need(actor, model.SETTINGS)
        canon, shared = await self._domain(domain)
        result: list[dict[str, Any]] = await self._mutate(shared, "create_dkim_key", canon, algorithm, selector)
        return result

    async def rotate_dkim_keys(self, actor: AccountRef, domain: str) -> list[dict[str, Any]]:
        await self._need(actor, model.SETTINGS)
        canon, shared = await self._domain(domain)
        result: list[dict[str, Any]] = await self._mutate(shared, "rotate_dkim_keys", canon)
        return result

    async def remove_dkim_key(self, actor: AccountRef, domain: str, selector: str) -> list[dict[str, Any]]:
        await self._need(actor, model.SETTINGS)
        canon, shared = await self._domain(domain)
        result: list[dict[str, Any]] = await self._mutate(shared, "remove_dkim_key", canon, selector)
        return result

    # -- a domain's Default Account Settings
    async def get_account_defaults(self, actor: AccountRef, domain: str) -> dict[str, Any]:
        canon, _ = await self._domain(domain)
        if not (await self._actor(actor)).reads_domain(canon):
            raise _forbidden()
        return await self._run(self.directory.account_defaults, canon)

    async def _write_domain_defaults(self, actor: AccountRef, domain: str, op: str, value: Mapping[str, Any]) -> None:
        canon, shared = await self._domain(domain)
        who = await self._actor(actor)
        if not (who.has(model.SETTINGS) or who.manages_accounts_of(canon)):
            raise _forbidden()
        if not isinstance(value, Mapping):
            raise AdminError("bad_request", "settings must be a dictionary")
        await self._mutate(shared, op, canon, dict(value))

    async def update_account_defaults(self, actor: AccountRef, domain: str, changes: Mapping[str, Any]) -> None:
        await self._write_domain_defaults(actor, domain, "update_account_defaults", changes)

    async def set_account_defaults(self, actor: AccountRef, domain: str, settings: Mapping[str, Any]) -> None:
        await self._write_domain_defaults(actor, domain, "set_account_defaults", settings)

    # -- server-wide and cluster-wide defaults and prefs
    async def _read_global(self, actor: AccountRef, getter: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        await self._need(actor, model.SETTINGS, model.USERS, model.MONITORS)
        return await self._run(getter)

    async def _write_global(self, actor: AccountRef, shared: bool, op: str, value: Mapping[str, Any]) -> None:
        await self._need(actor, model.SETTINGS)
        if not isinstance(value, Mapping):
            raise AdminError("bad_request", "settings must be a dictionary")
        await self._mutate(shared, op, dict(value))

    async def get_server_account_defaults(self, actor: AccountRef) -> dict[str, Any]:
        return await self._read_global(actor, self.directory.server_account_defaults)

    async def update_server_account_defaults(self, actor: AccountRef, changes: Mapping[str, Any]) -> None:
        await self._write_global(actor, False, "update_server_account_defaults", changes)

    async def set_server_account_defaults(self, actor: AccountRef, settings: Mapping[str, Any]) -> None:
        await self._write_global(actor, False, "set_server_account_defaults", settings)

    async def get_server_domain_defaults(self, actor: AccountRef) -> dict[str, Any]:
        return await self._read_global(actor, self.directory.server_domain_defaults)

    async def update_server_domain_defaults(self, actor: AccountRef, changes: Mapping[str, Any]) -> None:
        await self._write_global(actor, False, "update_server_domain_defaults", changes)

    async def set_server_domain_defaults(self, actor: AccountRef, settings: Mapping[str, Any]) -> None:
        await self._write_global(actor, False, "set_server_domain_defaults", settings)

    async def get_server_account_prefs(self, actor: AccountRef) -> dict[str, Any]:
        return await self._read_global(actor, self.directory.server_account_prefs)

    async def update_server_account_prefs(self, actor: AccountRef, changes: Mapping[str, Any]) -> None:
        await self._write_global(actor, False, "update_server_account_prefs", changes)

    async def set_server_account_prefs(self, actor: AccountRef, settings: Mapping[str, Any]) -> None:
        await self._write_global(actor, False, "set_server_account_prefs", settings)

    async def get_cluster_account_defaults(self, actor: AccountRef) -> dict[str, Any]:
        return await self._read_global(actor, self.directory.cluster_account_defaults)

    async def update_cluster_account_defaults(self, actor: AccountRef, changes: Mapping[str, Any]) -> None:
        await self._write_global(actor, True, "update_cluster_account_defaults", changes)

    async def set_cluster_account_defaults(self, actor: AccountRef, settings: Mapping[str, Any]) -> None:
        await self._write_global(actor, True, "set_cluster_account_defaults", settings)

    async def get_cluster_domain_defaults(self, actor: AccountRef) -> dict[str, Any]:
        return await self._read_global(actor, self.directory.cluster_domain_defaults)

    async def update_cluster_domain_defaults(self, actor: AccountRef, changes: Mapping[str, Any]) -> None:
        await self._write_global(actor, True, "update_cluster_domain_defaults", changes)

    async def set_cluster_domain_defaults(self, actor: AccountRef, settings: Mapping[str, Any]) -> None:
        await self._write_global(actor, True, "set_cluster_domain_defaults", settings)

    async def get_cluster_account_prefs(self, actor: AccountRef) -> dict[str, Any]:
        return await self._read_global(actor, self.directory.cluster_account_prefs)

    async def update_cluster_account_prefs(self, actor: AccountRef, changes: Mapping[str, Any]) -> None:
        await self._write_global(actor, True, "update_cluster_account_prefs", changes)

    async def set_cluster_account_prefs(self, actor: AccountRef, settings: Mapping[str, Any]) -> None:
        await self._write_global(actor, True, "set_cluster_account_prefs", settings)

    # ------------------------------------------------------------ accounts
    async def list_accounts(
        self,
        actor: AccountRef,
        domain: str | None = None,
        *,
        prefix: str = "",
        offset: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        canon, _ = await self._domain(domain if domain is not None else self.directory.main_domain)
        who = await self._actor(actor)
        if not (who.has(model.MONITORS) or who.manages_accounts_of(canon)):
            raise _forbidden()
        if not isinstance(prefix, str) or not isinstance(offset, int) or offset < 0:
            raise AdminError("bad_request", "invalid prefix or offset")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise AdminError("bad_request", "invalid limit")
        limit = MAX_LIST_LIMIT if limit is None else min(limit, MAX_LIST_LIMIT)
        return await self._run(self.directory.list_accounts, canon, prefix=prefix, offset=offset, limit=limit)

    async def count_accounts(self, actor: AccountRef, domain: str | None = None, *, prefix: str = "") -> int:
        canon, _ = await self._domain(domain if domain is not None else self.directory.main_domain)
        who = await self._actor(actor)
        if not (who.has(model.MONITORS) or who.manages_accounts_of(canon)):
            raise _forbidden()
        if not isinstance(prefix, str):
            raise AdminError("bad_request", "invalid prefix")
        return await self._run(self.directory.count_accounts, canon, prefix=prefix)

    async def create_account(
        self,
        actor: AccountRef,
        address: str,
        *,
        settings: Mapping[str, Any] | None = None,
        password: str | None = None,
    ) -> AccountRef:
        with translated():
            name, domain = self.directory.parse_address(address)
        canon, shared = await self._domain(domain)
        who = await self._actor(actor)
        if not who.manages_accounts_of(canon):
            raise _forbidden()
        if settings is not None and not isinstance(settings, Mapping):
            raise AdminError("bad_request", "settings must be a dictionary")
        if password is not None and not isinstance(password, str):
            raise AdminError("bad_request", "password must be text")
        ref: AccountRef = await self._mutate(
            shared, "create_account", canon, name, settings=dict(settings or {}), password=password
        )
        return ref

    async def rename_account(self, actor: AccountRef, address: str, new_address: str) -> AccountRef:
        ref = await self._account(address, actor=actor)
        who = await self._manage_account(actor, ref)
        with translated():
            _, new_domain = self.directory.parse_address(new_address)
        canon, shared = await self._domain(new_domain)
        if not who.manages_accounts_of(canon):
            raise _forbidden()
        if ref == actor:
            raise AdminError("bad_request", "you cannot rename the account you are logged in as")
        if self.cluster is not None and ref.shared != shared:
            raise AdminError(
                "bad_request", "in a cluster an account cannot move between a shared and a local domain"
            )
        new: AccountRef = await self._mutate(ref.shared or shared, "rename_account", ref, new_address)
        self.auth.invalidate(ref)
        return new

    async def delete_account(self, actor: AccountRef, address: str) -> None:
        ref = await self._account(address, actor=actor)
        await self._manage_account(actor, ref)
        if ref == actor:
            raise AdminError("bad_request", "you cannot delete the account you are logged in as")
        await self._mutate(ref.shared, "delete_account", ref)
        self.auth.invalidate(ref)

    async def get_account_settings(self, actor: AccountRef, address: str) -> dict[str, Any]:
        ref = await self._account(address, actor=actor)
        await self._read_account(actor, ref)
        return await self._run(self.directory.account_settings, ref)

    async def get_account_effective_settings(self, actor: AccountRef, address: str) -> dict[str, Any]:
        ref = await self._account(address, actor=actor)
        await self._read_account(actor, ref)
        return await self._run(self.directory.effective_account_settings, ref)

    async def update_account_settings(self, actor: AccountRef, address: str, changes: Mapping[str, Any]) -> None:
        ref = await self._account(address, actor=actor)
        await self._manage_account(actor, ref)
        if not isinstance(changes, Mapping):
            raise AdminError("bad_request", "settings must be a dictionary")
        await self._mutate(ref.shared, "update_account_settings", ref, dict(changes))

    async def set_account_settings(self, actor: AccountRef, address: str, settings: Mapping[str, Any]) -> None:
        ref = await self._account(address, actor=actor)
        await self._manage_account(actor, ref)
        if not isinstance(settings, Mapping):
            raise AdminError("bad_request", "settings must be a dictionary")
        await self._mutate(ref.shared, "set_account_settings", ref, dict(settings))

    async def get_account_prefs(self, actor: AccountRef, address: str) -> dict[str, Any]:
        ref = await self._account(address, actor=actor)
        await self._read_account(actor, ref)
        return await self._run(self.directory.account_prefs, ref)

    async def get_account_effective_prefs(self, actor: AccountRef, address: str) -> dict[str, Any]:
        ref = await self._account(address, actor=actor)
        await self._read_account(actor, ref)
        return await self._run(self.directory.effective_account_prefs, ref)

    async def update_account_prefs(self, actor: AccountRef, address: str, changes: Mapping[str, Any]) -> None:
        ref = await self._account(address, actor=actor)
        await self._manage_account(actor, ref, self_ok=True)
        if not isinstance(changes, Mapping):
            raise AdminError("bad_request", "prefs must be a dictionary")
        await self._mutate(ref.shared, "update_account_prefs", ref, dict(changes))

    async def set_account_prefs(self, actor: AccountRef, address: str, prefs: Mapping[str, Any]) -> None:
        ref = await self._account(address, actor=actor)
        await self._manage_account(actor, ref, self_ok=True)
        if not isinstance(prefs, Mapping):
            raise AdminError("bad_request", "prefs must be a dictionary")
        await self._mutate(ref.shared, "set_account_prefs", ref, dict(prefs))

    async def set_account_password(self, actor: AccountRef, address: str, password: str) -> None:
        ref = await self._account(address, actor=actor)
        await self._manage_account(actor, ref, self_ok=True)
        if not isinstance(password, str) or not password:
            raise AdminError("bad_request", "password must be non-empty text")
        await self._mutate(ref.shared, "set_password", ref, password)
        self.auth.invalidate(ref)

    async def verify_account_password(self, actor: AccountRef, address: str, password: str) -> bool:
        ref = await self._account(address, actor=actor)
        await self._manage_account(actor, ref, self_ok=True)
        if not isinstance(password, str):
            raise AdminError("bad_request", "password must be text")
        stored = await self._run(self.directory.password_hash, ref)
        if stored is None:
            return False
        from dynamail.directory import passwords

        hashing = getattr(self.auth, "hashing", None)
        if hashing is None:
            return await asyncio.to_thread(passwords.verify, stored, password, self.directory.hasher)
        # through the authenticator's bounded pool, like every login
        ok: bool = await hashing.run(passwords.verify, stored, password, self.directory.hasher)
        return ok

    async def get_account_rights(self, actor: AccountRef, address: str) -> list[str]:
        ref = await self._account(address, actor=actor)
        await self._read_account(actor, ref)
        return sorted(await self._run(self.directory.account_rights, ref))

    async def set_account_rights(self, actor: AccountRef, address: str, rights: Any) -> None:
        ref = await self._account(address, actor=actor)
        who = await self._actor(actor)
        if isinstance(rights, str):
            rights = [rights] if rights else []
        if not isinstance(rights, list | tuple | set | frozenset):
            raise AdminError("bad_request", "rights must be a list")
        with translated():
            wanted = {model.normalize_right(r) for r in rights}
        if not who.master:
            # Non-Master administrators may only grant or withdraw DomainAdmin
            # in a domain they manage, on accounts without server rights.
            if wanted - {model.DOMAIN_ADMIN} or not who.manages_accounts_of(ref.domain):
                raise _forbidden("only a Master administrator can grant these rights")
            current = await self._run(self.directory.account_rights, ref)
            if current - {model.DOMAIN_ADMIN}:
                raise _forbidden("only a Master administrator can change this account")
        await self._mutate(ref.shared, "set_account_rights", ref, sorted(wanted))

    # -- aliases and forwarders
    async def get_account_aliases(self, actor: AccountRef, address: str) -> list[str]:
        ref = await self._account(address, actor=actor)
        await self._read_account(actor, ref)
        return await self._run(self.directory.account_aliases, ref)

    async def set_account_aliases(self, actor: AccountRef, address: str, aliases: list[str]) -> None:
        ref = await self._account(address, actor=actor)
        await self._manage_account(actor, ref)
        if not isinstance(aliases, list | tuple) or not all(isinstance(a, str) for a in aliases):
            raise AdminError("bad_request", "aliases must be a list of names")
        await self._mutate(ref.shared, "set_account_aliases", ref, list(aliases))

    async def list_forwarders(self, actor: AccountRef, domain: str) -> dict[str, str]:
        canon, _ = await self._domain(domain)
        who = await self._actor(actor)
        if not (who.has(model.MONITORS) or who.manages_accounts_of(canon)):
            raise _forbidden()
        return await self._run(self.directory.forwarders, canon)

    async def set_forwarder(self, actor: AccountRef, address: str, target: str | None) -> None:
        with translated():
            name, domain = self.directory.parse_address(address)
        canon, shared = await self._domain(domain)
        if not (await self._actor(actor)).manages_accounts_of(canon):
            raise _forbidden()
        await self._mutate(shared, "set_forwarder", canon, name, target)

    # ------------------------------------------------------------ alerts
    async def _alert_scope(self, actor: AccountRef, scope: Any, write: bool) -> tuple[AlertScope, bool]:
        """The directory scope for ``scope`` ("server", "cluster",
        ("domain", name), ("account", address)) after the rights check;
        also whether it is shared data."""
        who = await self._actor(actor)
        if scope in ("server", "cluster"):
            if not (who.has(model.SETTINGS) if write else who.has(model.SETTINGS, model.MONITORS)):
                raise _forbidden()
            return scope, scope == "cluster"
        if isinstance(scope, tuple | list) and len(scope) == 2 and isinstance(scope[1], str | AccountRef):
            kind, what = scope
            if kind == "domain" and isinstance(what, str):
                canon, shared = await self._domain(what)
                ok = who.has(model.SETTINGS) or who.manages_accounts_of(canon)
                if not write:
                    ok = ok or who.reads_domain(canon)
                if not ok:
                    raise _forbidden()
                return ("domain", canon), shared
            if kind == "account":
                ref = await self._account(what, actor=actor)
                if write:
                    await self._manage_account(actor, ref)
                else:
                    await self._read_account(actor, ref)
                return ("account", ref), ref.shared
        raise AdminError("bad_request", f"unknown alert scope: {scope!r}")

    async def get_alerts(self, actor: AccountRef, scope: Any) -> list[Alert]:
        where, _ = await self._alert_scope(actor, scope, write=False)
        return await self._run(self.directory.alerts, where)

    async def post_alert(self, actor: AccountRef, scope: Any, text: str) -> Alert:
        where, shared = await self._alert_scope(actor, scope, write=True)
        alert: Alert = await self._mutate(shared, "post_alert", where, text)
        return alert

    async def remove_alert(self, actor: AccountRef, scope: Any, timestamp: Any) -> bool:
        where, shared = await self._alert_scope(actor, scope, write=True)
        with translated():
            when = model.parse_stamp(timestamp)
        removed: bool = await self._mutate(shared, "remove_alert", where, when)
        if not removed:
            raise AdminError("not_found", "no alert with that time stamp")
        return removed

    async def set_alerts(self, actor: AccountRef, scope: Any, alerts: list[Alert]) -> None:
        where, shared = await self._alert_scope(actor, scope, write=True)
        if not isinstance(alerts, list | tuple) or not all(isinstance(a, Alert) for a in alerts):
            raise AdminError("bad_request", "alerts must be a list of alerts")
        await self._mutate(shared, "set_alerts", where, list(alerts))

    async def unseen_alerts(self, actor: AccountRef) -> list[Alert]:
        """The logged-in account's alerts not yet seen."""
        return await self._run(self.directory.unseen_alerts, actor)

    async def mark_alerts_seen(self, actor: AccountRef, upto: Any) -> None:
        await self._mutate(actor.shared, "mark_alerts_seen", actor, upto)

    # ------------------------------------------------------------ mailboxes
    async def _with_store(self, actor: AccountRef, address: str, write: bool, op: str, *args: Any) -> Any:
        ref = await self._account(address, actor=actor)
        if write:
            await self._manage_account(actor, ref, self_ok=True)
        else:
            await self._read_account(actor, ref)
        if self.accounts is None:
            raise AdminError("unavailable", "mail storage is not available")
        with translated():
            try:
                async with self.accounts.use(ref) as placement:
                    if isinstance(placement, Local):
                        return await getattr(placement.store, op)(*args)
                    forward = getattr(self.cluster, "forward_mailbox_op", None)
                    if forward is None:
                        raise AdminError("unavailable", "the account is open on another member")
                    return await forward(placement, op, args)
            except AccountUnavailable as exc:
                raise AdminError("unavailable", str(exc) or "the account is unavailable") from exc

    async def list_mailboxes(self, actor: AccountRef, address: str) -> list[MailboxListing]:
        result: list[MailboxListing] = await self._with_store(actor, address, False, "list_mailboxes")
        return result

    async def create_mailbox(self, actor: AccountRef, address: str, mailbox: str) -> None:
        await self._with_store(actor, address, True, "create_mailbox", self._mailbox(mailbox))

    async def delete_mailbox(self, actor: AccountRef, address: str, mailbox: str) -> None:
        await self._with_store(actor, address, True, "delete_mailbox", self._mailbox(mailbox))

    async def rename_mailbox(self, actor: AccountRef, address: str, old: str, new: str) -> None:
        await self._with_store(actor, address, True, "rename_mailbox", self._mailbox(old), self._mailbox(new))

    @staticmethod
    def _mailbox(name: str) -> str:
        try:
            return mailbox_name(name)
        except BadName as exc:
            raise AdminError("bad_request", str(exc)) from exc

    # ------------------------------------------------------------ import
    async def import_mail(self, actor: AccountRef, address: str, path: str, format: str = "auto") -> dict[str, Any]:
        """Import a Maildir, an mbox file or a directory of mbox files from a
        path on this server into an account (Master only: it reads server
        files).  Runs where the account is open; returns the import report
        (``dynamail.migrate.ImportReport.as_json``)."""
        from dynamail.migrate import FORMATS, ImportFailed, import_into

        ref = await self._account(address, actor=actor)
        await self._need(actor, model.MASTER)
        if format not in FORMATS:
            raise AdminError("bad_request", f"format must be one of {', '.join(FORMATS)}")
        source = self._import_path(path)
        if self.accounts is None:
            raise AdminError("unavailable", "mail storage is not available")
        ledger = self.directory.account_mail_path(ref) / "import.ledger"
        with translated():
            try:
                # The files are on this member: open the account here (in a
                # cluster, refused while another member has it open).
                async with self.accounts.use(ref, relay_ok=False) as placement:
                    if not isinstance(placement, Local):
                        raise AdminError("unavailable", f"the account is open on member {placement.member}: "
                                                        "run the import there, or once the account is closed")
                    report = await import_into(placement.store, source, format, ledger_path=ledger)
            except ImportFailed as exc:
                raise AdminError("bad_request", str(exc)) from exc
            except AccountUnavailable as exc:
                raise AdminError("unavailable", str(exc) or "the account is unavailable") from exc
        return report.as_json()

    def _import_path(self, path: Any) -> str:
        """An absolute, normalised path outside the server's own storage."""
        import os

        if not isinstance(path, str) or not path or len(path) > 4096 or "\0" in path:
            raise AdminError("bad_request", "path must be an absolute file or directory path")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
            raise AdminError("bad_request", "path contains control characters")
        if not path.startswith("/"):
            raise AdminError("bad_request", "path must be absolute")
        if {".", ".."} & set(path.split("/")):
            raise AdminError("bad_request", "path must not contain . or .. components")
        clean = os.path.normpath(path)
        if clean == "/":
            raise AdminError("bad_request", "refusing to import the root directory")
        real = os.path.realpath(clean)
        for base in {self.directory.base, self.directory.shared_base}:
            b = os.path.realpath(base)
            if real == b or real.startswith(b.rstrip("/") + "/"):
                raise AdminError("bad_request", "refusing to import from the server's own storage")
        return clean

    # ------------------------------------------------------------ cluster
    async def get_current_controller(self, actor: AccountRef) -> str:
        await self._need(actor, model.SETTINGS, model.MONITORS, model.CAN_CONTROL_CLUSTER, model.USERS)
        fn = getattr(self.cluster, "current_controller", None) if self.cluster is not None else None
        if fn is None:
            raise AdminError("not_cluster", "this server is not a cluster member")
        result = fn()
        if asyncio.iscoroutine(result):
            result = await result
        return str(result) if result is not None else ""

    async def cluster_members(self, actor: AccountRef) -> list[dict[str, Any]]:
        await self._need(actor, model.SETTINGS, model.MONITORS, model.CAN_CONTROL_CLUSTER)
        fn = getattr(self.cluster, "members_status", None) if self.cluster is not None else None
        if fn is None:
            return [{
                "name": self.directory.main_domain,
                "role": "standalone",
                "ready": True,
                "load": 0,
                "open_accounts": len(self.accounts.open_accounts()) if self.accounts is not None else 0,
                "version": _version,
            }]
        result = fn()
        if asyncio.iscoroutine(result):
            result = await result
        return list(result)

    async def set_ready(self, actor: AccountRef, member: str, ready: bool,
                        drain: float | None = None) -> None:
        """``drain`` (seconds of grace, with Non-Ready): also move the
        member's open accounts away actively."""
        await self._need(actor, model.CAN_CONTROL_CLUSTER)
        fn = getattr(self.cluster, "set_ready", None) if self.cluster is not None else None
        if fn is None:
            raise AdminError("not_cluster", "this server is not a cluster member")
        result = fn(member, ready) if drain is None else fn(member, ready, drain=drain)
        if asyncio.iscoroutine(result):
            await result
