"""The object model on disk: domains, accounts, settings, rights, alerts.

Layout under the base directory (every file JSON, see ``files.py``)::

    Settings/            AccountDefaults.json DomainDefaults.json
                         AccountPrefs.json Alerts.json apop.key
    Domains/<domain>/    local domains
    SharedDomains/       shared domains (a directory, a symlink, or the
                         ``shared_base`` path); ``.cluster/`` holds the
                         cluster-wide defaults, prefs, alerts and apop.key
    <domain>/            Settings.json AccountDefaults.json Alerts.json
                         Aliases.json Forwarders.json DKIM.json (0600,
                         the domain's DKIM keys: ``dkim.py``)
                         Accounts/<shard>/<account>/
    <account>/           Account.json (settings, password, rights)
                         Prefs.json Alerts.json Mail/ (the storage engine's)

``<shard>`` is the first two hex digits of SHA-256 of the account name:
256 directories of a few hundred entries each hold 100,000 accounts, so
every lookup is a single ``stat`` and no directory grows huge.  The sorted
account list of a domain is cached in memory and rebuilt shard by shard
when a shard directory's identity (inode, mtime, link count) changes.

Invariants:

* Every name is validated by ``dynamail.names`` before it becomes a path;
  entries whose names start with ``.`` are never domains or accounts (they
  are temporaries, or ``.cluster``).
* Domains and accounts appear atomically: they are built in a temporary
  directory and renamed into place.  Deletion renames them away first.
* Every file write is ``atomic_write``; no OS lock is ever taken.  Within
  this process one mutex serialises read-modify-write sequences; across
  cluster members the cluster layer routes shared-domain mutations through
  the Controller and account data through the account's single owner.
* Reads of any file notice replacements by other processes (stat-validated
  cache); ``invalidate()`` drops the caches outright.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from dynamail import names
from dynamail.accounts import AccountRef
from dynamail.directory import model, passwords, schema
from dynamail.directory.alerts import AlertsMixin
from dynamail.directory.aliases import AliasesMixin
from dynamail.directory.dkim import DkimMixin
from dynamail.directory.files import JsonFiles
from dynamail.directory.layout import (
    ACCOUNT_DEFAULTS_FILE,
    ACCOUNT_FILE,
    ACCOUNT_PREFS_FILE,
    ACCOUNTS_DIR,
    CLUSTER_DIR,
    DOMAIN_DEFAULTS_FILE,
    MAIL_DIR,
    PREFS_FILE,
    SETTINGS_FILE,
    VERIFIER_FILE,
    AlertScope,
    remove_stale,
    rename_new,
    shard_of,
    split_password,
)
from dynamail.directory.logins import LoginsMixin
from dynamail.directory.model import (
    AlreadyExists,
    BadSetting,
    DomainInfo,
    LimitReached,
    NoSuchAccount,
    NoSuchDomain,
    NotEmpty,
    Superseded,
)
from dynamail.durable import fsync_dir
from dynamail.filemodes import create_private, private_dirs, private_mkdir

__all__ = ["AlertScope", "Directory", "shard_of"]


@dataclass
class _Shard:
    ident: tuple[int, int, int]
    names: list[str]


@dataclass
class _Listing:
    shards: dict[str, _Shard] = field(default_factory=dict)
    merged: list[str] = field(default_factory=list)


log = logging.getLogger(__name__)


def _write_verifier(path: Path, text: str) -> None:
    """Replace the verifier file at ``path`` (atomic rename, no fsync: a
    lost write only costs one hash verification)."""
    tmp = path.with_name(f".{VERIFIER_FILE}.{secrets.token_hex(6)}.tmp")
    fd = create_private(tmp)
    try:
        os.write(fd, text.encode("ascii") + b"\n")
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Directory(AliasesMixin, AlertsMixin, DkimMixin, LoginsMixin):
    """Domains and accounts of one server (and the shared ones of its cluster)."""

    def __init__(
        self,
        base: Path,
        *,
        main_domain: str,
        shared_base: Path | None = None,
        password_hasher: PasswordHasher | None = None,
        all_shared: bool = False,
    ) -> None:
        self.base = Path(base)
        self.main_domain = names.domain_name(main_domain)
        # the worker processes of one server (``serve --workers``) share its
        # whole base: every domain, the Main Domain too, is a shared domain
        # under ``Domains/`` whose ownership the cluster layer arbitrates,
        # and the server-wide settings are the cluster-wide ones
        self.all_shared = all_shared
        self.domains_dir = self.base / "Domains"
        self.settings_dir = self.base / "Settings"
        if all_shared:
            self.shared_base = self.domains_dir
            self.cluster_dir = self.settings_dir
        else:
            self.shared_base = Path(shared_base) if shared_base is not None else self.base / "SharedDomains"
            self.cluster_dir = self.shared_base / CLUSTER_DIR
        self.hasher = password_hasher
        self.files = JsonFiles()
        self.scans = 0  # shard directories listed from disk (tests watch it)
        self._lock = threading.RLock()
        self._listings: dict[str, _Listing] = {}
        self._apop_local = passwords.ApopKeys(self.settings_dir / "apop.key")
        self._apop_cluster = passwords.ApopKeys(self.cluster_dir / "apop.key")
        # (account, stored hash, password) -> the keyed verifier to keep with
        # an account whose password is being set, or None (verifiers off):
        # the authenticator's ``verifier_for``, wired by the server
        self.verifier_for: Callable[[AccountRef, str, str], str | None] | None = None
        for d in (self.settings_dir, self.domains_dir, self.shared_base, self.cluster_dir):
            private_dirs(d)
        if not all_shared and not self.domain_exists(self.main_domain):
            self.create_domain(self.main_domain)

    # ------------------------------------------------------------ paths
    def _domain_dir(self, name: str, shared: bool) -> Path:
        return (self.shared_base if shared else self.domains_dir) / name

    def locate_domain(self, name: str) -> tuple[str, bool]:
        """Canonical name and shared flag of an existing domain, or NoSuchDomain."""
        return self._locate_domain(name)

    def _locate_domain(self, name: str) -> tuple[str, bool]:
        canon = names.domain_name(name)
        found = self._real_domain(canon)
        if found is not None:
            return found
        target = self._alias_target(canon)
        if target is not None:
            found = self._real_domain(target)
            if found is not None:
                return found
        raise NoSuchDomain(f"unknown domain: {canon}")

    def _real_domain(self, canon: str) -> tuple[str, bool] | None:
        if self.all_shared:
            return (canon, True) if (self.shared_base / canon).is_dir() else None
        if (self.domains_dir / canon).is_dir():
            return canon, False
        if canon != self.main_domain and (self.shared_base / canon).is_dir():
            return canon, True
        return None

    def _dpath(self, name: str) -> Path:
        canon, shared = self._locate_domain(name)
        return self._domain_dir(canon, shared)

    def account_dir(self, ref: AccountRef) -> Path:
        """The directory of an account (it need not exist)."""
        domain_dir = self._domain_dir(ref.domain, ref.shared)
        return domain_dir / ACCOUNTS_DIR / shard_of(ref.name) / ref.name

    def account_mail_path(self, ref: AccountRef) -> Path:
        """The directory the storage engine keeps the account's mail in."""
        return self.account_dir(ref) / MAIL_DIR

    def _existing(self, ref: AccountRef) -> Path:
        path = self.account_dir(ref)
        if not path.is_dir():
            raise NoSuchAccount(f"unknown account: {ref.address}")
        return path

    # ------------------------------------------------------------ domains
    def list_domains(self) -> list[DomainInfo]:
        out: list[DomainInfo] = []
        seen: set[str] = set()
        roots = ((self.shared_base, True),) if self.all_shared else (
            (self.domains_dir, False), (self.shared_base, True))
        for root, shared in roots:
            try:
                entries = list(os.scandir(root))
            except FileNotFoundError:
                continue
            remove_stale(entries)
            for e in entries:
                if e.name.startswith(".") or not e.is_dir() or e.name in seen:
                    continue
                if shared and not self.all_shared and e.name == self.main_domain:
                    continue
                seen.add(e.name)
                out.append(DomainInfo(e.name, shared))
        out.sort(key=lambda d: d.name)
        return out

    def domain_exists(self, name: str) -> bool:
        try:
            self._locate_domain(name)
        except (NoSuchDomain, names.BadName):
            return False
        return True

    def is_shared(self, name: str) -> bool:
        return self._locate_domain(name)[1]

    def create_domain(
        self, name: str, *, shared: bool = False, settings: Mapping[str, Any] | None = None
    ) -> None:
        canon = names.domain_name(name)
        shared = shared or self.all_shared
        if shared and not self.all_shared and canon == self.main_domain:
            raise BadSetting("the Main Domain is always local")
        own = model.clean_settings(settings, kind=schema.DOMAIN)
        with self._lock:
            if self.domain_exists(canon):
                raise AlreadyExists(f"domain already exists: {canon}")
            wanted = self._check_domain_aliases(canon, own)
            if wanted is not None:
                own["DomainAliases"] = wanted
            root = self.shared_base if shared else self.domains_dir
            tmp = root / f".new-{canon}-{secrets.token_hex(4)}"
            private_mkdir(tmp)
            try:
                self.files.write(tmp / SETTINGS_FILE, own)
                private_mkdir(tmp / ACCOUNTS_DIR)
                fsync_dir(tmp)
                if (root / canon).exists():
                    raise AlreadyExists(f"domain already exists: {canon}")
                rename_new(tmp, root / canon, f"domain already exists: {canon}")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(root)
            if wanted:
                self._write_domain_aliases(canon, shared, wanted)
        self.forget_login_domains()

    def delete_domain(self, name: str, *, force: bool = False) -> None:
        canon, shared = self._locate_domain(name)
        if canon == self.main_domain:
            raise BadSetting("the Main Domain cannot be deleted")
        if names.domain_name(name) != canon:
            raise BadSetting(f"{name} is an alias of {canon}; delete {canon} or change its DomainAliases")
        with self._lock:
            if not force and (self.count_accounts(canon) or self.forwarders(canon)):
                raise NotEmpty(f"domain {canon} is not empty")
            path = self._domain_dir(canon, shared)
            grave = path.parent / f".deleted-{canon}-{secrets.token_hex(4)}"
            self.files.move(path, grave, f"{grave} exists")
            self._write_domain_aliases(canon, shared, [])
            shutil.rmtree(grave, ignore_errors=True)
            self._listings.pop(canon, None)
            self.files.forget(path)
        self.forget_login_domains()

    def domain_settings(self, name: str) -> dict[str, Any]:
        return dict(self.files.read(self._dpath(name) / SETTINGS_FILE, {}))

    def update_domain_settings(self, name: str, changes: Mapping[str, Any]) -> None:
        """Update (``default`` removes a key).  ``DomainAliases`` (a list of
        domain names) makes those names resolve to this domain."""
        if not isinstance(changes, Mapping):
            raise BadSetting("settings must be a dictionary")
        canon, shared = self._locate_domain(name)
        with self._lock:
            current = self.files.read(self._domain_dir(canon, shared) / SETTINGS_FILE, {})
            self._write_domain_settings(canon, shared, model.apply_changes(current, changes, kind=schema.DOMAIN))
        self.forget_login_domains()

    def set_domain_settings(self, name: str, settings: Mapping[str, Any]) -> None:
        canon, shared = self._locate_domain(name)
        cleaned = model.clean_settings(settings, kind=schema.DOMAIN)
        with self._lock:
            self._write_domain_settings(canon, shared, cleaned)
        self.forget_login_domains()

    def effective_domain_settings(self, name: str) -> dict[str, Any]:
        canon, shared = self._locate_domain(name)
        out = dict(model.BUILTIN_DOMAIN_SETTINGS)
        out.update(self.cluster_domain_defaults() if shared else self.server_domain_defaults())
        out.update(self.domain_settings(canon))
        return out

    # -- per-domain Default Account Settings
    def account_defaults(self, domain: str) -> dict[str, Any]:
        return dict(self.files.read(self._dpath(domain) / ACCOUNT_DEFAULTS_FILE, {}))

    def update_account_defaults(self, domain: str, changes: Mapping[str, Any]) -> None:
        self._update(self._dpath(domain) / ACCOUNT_DEFAULTS_FILE, changes, schema.ACCOUNT)

    def set_account_defaults(self, domain: str, settings: Mapping[str, Any]) -> None:
        self._set(self._dpath(domain) / ACCOUNT_DEFAULTS_FILE, settings, schema.ACCOUNT)

    # -- server-wide and cluster-wide defaults
    def _get(self, path: Path) -> dict[str, Any]:
        return dict(self.files.read(path, {}))

    def _update(self, path: Path, changes: Mapping[str, Any], kind: str) -> None:
        if not isinstance(changes, Mapping):
            raise BadSetting("settings must be a dictionary")
        with self._lock:
            current = self.files.read(path, {})
            self.files.write(path, model.apply_changes(current, changes, kind=kind))

    def _set(self, path: Path, settings: Mapping[str, Any], kind: str) -> None:
        cleaned = model.clean_settings(settings, kind=kind)
        with self._lock:
            self.files.write(path, cleaned)

    def server_account_defaults(self) -> dict[str, Any]:
        return self._get(self.settings_dir / ACCOUNT_DEFAULTS_FILE)

    def update_server_account_defaults(self, changes: Mapping[str, Any]) -> None:
        self._update(self.settings_dir / ACCOUNT_DEFAULTS_FILE, changes, schema.ACCOUNT)

    def set_server_account_defaults(self, settings: Mapping[str, Any]) -> None:
        self._set(self.settings_dir / ACCOUNT_DEFAULTS_FILE, settings, schema.ACCOUNT)

    def server_domain_defaults(self) -> dict[str, Any]:
        return self._get(self.settings_dir / DOMAIN_DEFAULTS_FILE)

    def update_server_domain_defaults(self, changes: Mapping[str, Any]) -> None:
        self._update(self.settings_dir / DOMAIN_DEFAULTS_FILE, changes, schema.DOMAIN)

    def set_server_domain_defaults(self, settings: Mapping[str, Any]) -> None:
        self._set(self.settings_dir / DOMAIN_DEFAULTS_FILE, settings, schema.DOMAIN)

    def server_account_prefs(self) -> dict[str, Any]:
        return self._get(self.settings_dir / PREFS_FILE)

    def update_server_account_prefs(self, changes: Mapping[str, Any]) -> None:
        self._update(self.settings_dir / PREFS_FILE, changes, schema.PREFS)

    def set_server_account_prefs(self, settings: Mapping[str, Any]) -> None:
        self._set(self.settings_dir / PREFS_FILE, settings, schema.PREFS)

    def cluster_account_defaults(self) -> dict[str, Any]:
        return self._get(self.cluster_dir / ACCOUNT_DEFAULTS_FILE)

    def update_cluster_account_defaults(self, changes: Mapping[str, Any]) -> None:
        self._update(self.cluster_dir / ACCOUNT_DEFAULTS_FILE, changes, schema.ACCOUNT)

    def set_cluster_account_defaults(self, settings: Mapping[str, Any]) -> None:
        self._set(self.cluster_dir / ACCOUNT_DEFAULTS_FILE, settings, schema.ACCOUNT)

    def cluster_domain_defaults(self) -> dict[str, Any]:
        return self._get(self.cluster_dir / DOMAIN_DEFAULTS_FILE)

    def update_cluster_domain_defaults(self, changes: Mapping[str, Any]) -> None:
        self._update(self.cluster_dir / DOMAIN_DEFAULTS_FILE, changes, schema.DOMAIN)

    def set_cluster_domain_defaults(self, settings: Mapping[str, Any]) -> None:
        self._set(self.cluster_dir / DOMAIN_DEFAULTS_FILE, settings, schema.DOMAIN)

    def cluster_account_prefs(self) -> dict[str, Any]:
        return self._get(self.cluster_dir / PREFS_FILE)

    def update_cluster_account_prefs(self, changes: Mapping[str, Any]) -> None:
        self._update(self.cluster_dir / PREFS_FILE, changes, schema.PREFS)

    def set_cluster_account_prefs(self, settings: Mapping[str, Any]) -> None:
        self._set(self.cluster_dir / PREFS_FILE, settings, schema.PREFS)

    # ------------------------------------------------------------ accounts
    def parse_address(self, address: str) -> tuple[str, str]:
        """``(account, domain)`` canonical names of ``user`` or ``user@domain``."""
        if not isinstance(address, str):
            raise names.BadName("address is not text")
        local, sep, domain = address.strip().rpartition("@")
        if not sep:
            local, domain = domain, self.main_domain
        return names.account_name(local), names.domain_name(domain)

    def ref(self, domain: str, name: str) -> AccountRef:
        """An AccountRef for an existing domain (the account need not exist)."""
        canon, shared = self._locate_domain(domain)
        return AccountRef(canon, names.account_name(name), shared)

    def find_account(self, address: str) -> AccountRef | None:
        """The account named by ``address`` (``user`` means the Main Domain);
        account aliases resolve to their account.  None when unknown."""
        try:
            local, domain = self.parse_address(address)
            canon, shared = self._locate_domain(domain)
        except (names.BadName, NoSuchDomain):
            return None
        ref = AccountRef(canon, local, shared)
        if self.account_dir(ref).is_dir():
            return ref
        target = self._aliases(canon, shared).get(local)
        if target:
            ref = AccountRef(canon, target, shared)
            if self.account_dir(ref).is_dir():
                return ref
        return None

    def _scan_shard(self, path: Path) -> list[str]:
        self.scans += 1
        try:
            entries = list(os.scandir(path))
        except FileNotFoundError:
            return []
        remove_stale(entries)
        return sorted(e.name for e in entries if not e.name.startswith("."))

    def _listing(self, domain: str) -> list[str]:
        canon, shared = self._locate_domain(domain)
        root = self._domain_dir(canon, shared) / ACCOUNTS_DIR
        with self._lock:
            listing = self._listings.setdefault(canon, _Listing())
            changed = False
            present: set[str] = set()
            try:
                entries = list(os.scandir(root))
            except FileNotFoundError:
                entries = []
            for e in entries:
                if e.name.startswith("."):
                    continue
                present.add(e.name)
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                ident = (st.st_ino, st.st_mtime_ns, st.st_nlink)
                shard = listing.shards.get(e.name)
                if shard is None or shard.ident != ident:
                    listing.shards[e.name] = _Shard(ident, self._scan_shard(Path(e.path)))
                    changed = True
            for gone in [s for s in listing.shards if s not in present]:
                del listing.shards[gone]
                changed = True
            if changed:
                merged: list[str] = []
                for shard in listing.shards.values():
                    merged.extend(shard.names)
                merged.sort()
                listing.merged = merged
            return listing.merged

    def list_accounts(
        self, domain: str, *, prefix: str = "", offset: int = 0, limit: int | None = None
    ) -> list[str]:
        """Account names of ``domain``, sorted; those starting with ``prefix``."""
        merged = self._listing(domain)
        prefix = prefix.lower()
        start = bisect.bisect_left(merged, prefix) + max(0, offset)
        if prefix:
            end = bisect.bisect_left(merged, prefix + "\U0010ffff")
        else:
            end = len(merged)
        if limit is not None:
            end = min(end, start + max(0, limit))
        return merged[start:end] if start < end else []

    def count_accounts(self, domain: str, *, prefix: str = "") -> int:
        merged = self._listing(domain)
        if not prefix:
            return len(merged)
        prefix = prefix.lower()
        return bisect.bisect_left(merged, prefix + "\U0010ffff") - bisect.bisect_left(merged, prefix)

    def create_account(
        self,
        domain: str,
        name: str,
        *,
        settings: Mapping[str, Any] | None = None,
        password: str | None = None,
    ) -> AccountRef:
        """Create an account.  A ``Password`` key in ``settings`` (the CLI
        protocol's CREATEACCOUNT dictionary) is the password; it is never
        stored as a setting."""
        ref = self.ref(domain, name)
        settings, given = split_password(settings)
        password = password if password is not None else given
        own = model.clean_settings(settings, kind=schema.ACCOUNT)
        with self._lock:
            if self.find_account(ref.address) is not None or ref.name in self.forwarders(ref.domain):
                raise AlreadyExists(f"account already exists: {ref.address}")
            self._check_room(ref.domain)
            final = self.account_dir(ref)
            private_dirs(final.parent)
            tmp = final.parent / f".new-{ref.name}-{secrets.token_hex(4)}"
            private_mkdir(tmp)
            try:
                record: dict[str, Any] = {"settings": own, "rights": []}
                if password is not None:
                    record.update(self._password_record(ref, password, own))
                self.files.write(tmp / ACCOUNT_FILE, record, mode=0o600)
                if password is not None:
                    text = self._fresh_verifier(ref, record, password)
                    if text is not None:
                        _write_verifier(tmp / VERIFIER_FILE, text)
                fsync_dir(tmp)
                rename_new(tmp, final, f"account already exists: {ref.address}")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(final.parent)
        return ref

    def _check_room(self, domain: str) -> None:
        limit = model.parse_count(self.effective_domain_settings(domain).get("MaxAccounts"))
        if limit is not None and self.count_accounts(domain) >= limit:
            raise LimitReached(f"domain {domain} already has its maximum number of accounts")

    def rename_account(self, ref: AccountRef, new_address: str) -> AccountRef:
        """Rename (possibly into another domain); the mail moves with it."""
        with self._lock:
            old_dir = self._existing(ref)
            local, domain = self.parse_address(new_address)
            new = self.ref(domain, local)
            if new == ref:
                return ref
            holder = self.find_account(new.address)  # an account, or the account of an alias
            if (holder is not None and holder != ref) or new.name in self.forwarders(new.domain):
                raise AlreadyExists(f"account already exists: {new.address}")
            if new.domain != ref.domain:
                self._check_room(new.domain)
            new_dir = self.account_dir(new)
            private_dirs(new_dir.parent)
            exists = f"account already exists: {new.address}"
            try:
                self.files.move(old_dir, new_dir, exists)
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # local and shared storage differ
                    raise
                tmp = new_dir.parent / f".new-{new.name}-{secrets.token_hex(4)}"
                shutil.copytree(old_dir, tmp, symlinks=True)
                try:
                    self.files.move(tmp, new_dir, exists)
                except Superseded:
                    raise  # moved back to tmp; kept, not removed (see JsonFiles.move)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
                shutil.rmtree(old_dir)
                fsync_dir(old_dir.parent)
            aliases = self.account_aliases(ref)
            self._drop_aliases(ref)
            if new.domain == ref.domain:
                self._add_aliases(new, [a for a in aliases if a != new.name])
            return new

    def delete_account(self, ref: AccountRef) -> None:
        with self._lock:
            path = self._existing(ref)
            self._drop_aliases(ref)
            grave = path.parent / f".deleted-{ref.name}-{secrets.token_hex(4)}"
            self.files.move(path, grave, f"{grave} exists")
            shutil.rmtree(grave, ignore_errors=True)
            self.files.forget(path)

    def _record(self, ref: AccountRef) -> dict[str, Any]:
        path = self._existing(ref) / ACCOUNT_FILE
        rec: dict[str, Any] = self.files.read(path, {})
        rec.setdefault("settings", {})
        return rec

    def _write_record(self, ref: AccountRef, rec: Mapping[str, Any]) -> None:
        self.files.write(self._existing(ref) / ACCOUNT_FILE, dict(rec), mode=0o600)

    def account_settings(self, ref: AccountRef) -> dict[str, Any]:
        return dict(self._record(ref)["settings"])

    def update_account_settings(self, ref: AccountRef, changes: Mapping[str, Any]) -> None:
        """Update settings (``default`` removes a key); a ``Password`` key sets
        the password instead of being stored."""
        if not isinstance(changes, Mapping):
            raise BadSetting("settings must be a dictionary")
        rest, password = split_password(changes)
        with self._lock:
            rec = self._record(ref)
            rec["settings"] = model.apply_changes(rec["settings"], rest or {}, kind=schema.ACCOUNT)
            if password is not None:
                rec.update(self._password_record(ref, password, rec["settings"]))
            self._write_record(ref, rec)
            if password is not None:
                self._replace_verifier(ref, rec, password)

    def set_account_settings(self, ref: AccountRef, settings: Mapping[str, Any]) -> None:
        rest, password = split_password(settings)
        cleaned = model.clean_settings(rest, kind=schema.ACCOUNT)
        with self._lock:
            rec = self._record(ref)
            rec["settings"] = cleaned
            if password is not None:
                rec.update(self._password_record(ref, password, cleaned))
            self._write_record(ref, rec)
            if password is not None:
                self._replace_verifier(ref, rec, password)

    def effective_account_settings(self, ref: AccountRef) -> dict[str, Any]:
        own = self.account_settings(ref)
        out = dict(model.BUILTIN_ACCOUNT_SETTINGS)
        out.update(self.cluster_account_defaults() if ref.shared else self.server_account_defaults())
        out.update(self.account_defaults(ref.domain))
        out.update(own)
        return out

    def account_prefs(self, ref: AccountRef) -> dict[str, Any]:
        return dict(self.files.read(self._existing(ref) / ACCOUNT_PREFS_FILE, {}))

    def update_account_prefs(self, ref: AccountRef, changes: Mapping[str, Any]) -> None:
        self._update(self._existing(ref) / ACCOUNT_PREFS_FILE, changes, schema.PREFS)

    def set_account_prefs(self, ref: AccountRef, prefs: Mapping[str, Any]) -> None:
        self._set(self._existing(ref) / ACCOUNT_PREFS_FILE, prefs, schema.PREFS)

    def effective_account_prefs(self, ref: AccountRef) -> dict[str, Any]:
        own = self.account_prefs(ref)
        out = dict(model.BUILTIN_ACCOUNT_PREFS)
        out.update(self.cluster_account_prefs() if ref.shared else self.server_account_prefs())
        out.update(own)
        return out

    # ------------------------------------------------------------ passwords
    def _apop_keys(self, ref: AccountRef) -> passwords.ApopKeys:
        return self._apop_cluster if ref.shared else self._apop_local

    def _password_record(
        self, ref: AccountRef, password: str, own: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        if not isinstance(password, str) or "\x00" in password:
            raise BadSetting("invalid password")
        if len(password) > passwords.MAX_PASSWORD:
            raise BadSetting("password is too long")
        rec: dict[str, Any] = {"password": passwords.hash_password(password, self.hasher), "apop": None}
        if own is None:
            allow = self.effective_account_settings(ref).get("AllowAPOP")
        else:
            eff = dict(model.BUILTIN_ACCOUNT_SETTINGS)
            eff.update(self.cluster_account_defaults() if ref.shared else self.server_account_defaults())
            eff.update(self.account_defaults(ref.domain))
            eff.update(own)
            allow = eff.get("AllowAPOP")
        if model.is_yes(allow):
            rec["apop"] = self._apop_keys(ref).seal(password)
        return rec

    def set_password(self, ref: AccountRef, password: str) -> None:
        with self._lock:
            self._existing(ref)
            new = self._password_record(ref, password)
            rec = self._record(ref)
            rec.update(new)
            self._write_record(ref, rec)
            self._replace_verifier(ref, rec, password)

    def upgrade_password_hash(self, ref: AccountRef, old_stored: str, password: str) -> bool:
        """Replace an imported hash with argon2id after ``password`` was
        verified against it.  Only when the stored hash is still
        ``old_stored`` (a password changed meanwhile is left alone); returns
        whether it was replaced."""
        return self.replace_password_record(ref, old_stored, self.password_record(ref, password))

    def password_record(self, ref: AccountRef, password: str) -> dict[str, Any]:
        """The stored form of ``password`` (hash with the current parameters,
        and the sealed APOP secret when ``AllowAPOP``), computed without
        writing anything: the costly hash runs outside any lock."""
        return self._password_record(ref, password)

    def replace_password_record(self, ref: AccountRef, old_stored: str, new: Mapping[str, Any]) -> bool:
        """Compare-and-set of a rehash: store ``new`` (from
        ``password_record``) only while the stored hash is still
        ``old_stored``.  In a cluster the Controller runs it for shared
        accounts, one mutation at a time with every other change of the
        account record; returns whether it was replaced."""
        if not isinstance(new, Mapping):
            raise BadSetting("invalid password record")
        stored, apop = new.get("password"), new.get("apop")
        if not isinstance(stored, str) or passwords.split_scheme(stored)[0] not in ("ARGON2", "ARGON2ID"):
            raise BadSetting("invalid password record")
        if apop is not None and not isinstance(apop, str):
            raise BadSetting("invalid password record")
        with self._lock:
            rec = self._record(ref)
            if rec.get("password") != old_stored:
                return False
            rec["password"], rec["apop"] = stored, apop
            self._write_record(ref, rec)
            self.set_credential_verifier(ref, None)
            return True

    def set_password_hash(self, ref: AccountRef, stored: str) -> None:
        """Store an imported hash as it is (``{SHA512-CRYPT}$6$…`` etc.)."""
        if not isinstance(stored, str) or not stored or "\x00" in stored or "\n" in stored:
            raise BadSetting("invalid password hash")
        if passwords.split_scheme(stored)[0] not in passwords.SUPPORTED_SCHEMES:
            raise BadSetting("unsupported password hash format")
        with self._lock:
            rec = self._record(ref)
            rec["password"] = stored
            rec["apop"] = None
            self._write_record(ref, rec)
            self.set_credential_verifier(ref, None)

    def password_hash(self, ref: AccountRef) -> str | None:
        value = self._record(ref).get("password")
        return value if isinstance(value, str) else None

    # A keyed verifier of the last verified password (``passwords``,
    # ``dynamail.auth``).  It is a cache: any member that verified the
    # password may replace it (atomic rename, no fsync: a lost or torn
    # write only costs one argon2 verification), and what it holds is
    # checked against the current stored hash before any use.
    def credential_verifier(self, ref: AccountRef) -> str | None:
        try:
            with open(self._existing(ref) / VERIFIER_FILE, "rb") as fh:
                raw = fh.read(passwords.VERIFIER_MAX + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return raw.decode("ascii", "replace").strip()

    def set_credential_verifier(self, ref: AccountRef, text: str | None) -> None:
        path = self._existing(ref) / VERIFIER_FILE
        if text is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        _write_verifier(path, text)

    def _fresh_verifier(self, ref: AccountRef, record: Mapping[str, Any], password: str) -> str | None:
        """The keyed verifier of a password just set (``verifier_for``), or
        None.  Best effort: without one the first login costs a hash."""
        stored = record.get("password")
        if self.verifier_for is None or not isinstance(stored, str):
            return None
        try:
            return self.verifier_for(ref, stored, password)
        except Exception:
            log.warning("could not make the credentials verifier of %s", ref, exc_info=True)
            return None

    def _replace_verifier(self, ref: AccountRef, record: Mapping[str, Any], password: str) -> None:
        """After a password change: the old verifier goes in every case (it
        no longer matches the stored hash anyway), a fresh one of the new
        password takes its place when verifiers are on."""
        text = self._fresh_verifier(ref, record, password)
        try:
            self.set_credential_verifier(ref, text)
        except OSError:
            if text is None:
                raise
            log.warning("could not store the credentials verifier of %s", ref, exc_info=True)
            self.set_credential_verifier(ref, None)

    def apop_secret(self, ref: AccountRef) -> str | None:
        """The clear password for APOP, when kept (see ``passwords``)."""
        rec = self._record(ref)
        stored = rec.get("password")
        if isinstance(stored, str):
            clear = passwords.clear_from_hash(stored)
            if clear is not None:
                return clear
        sealed = rec.get("apop")
        if not isinstance(sealed, str):
            return None
        if not model.is_yes(self.effective_account_settings(ref).get("AllowAPOP")):
            return None
        return self._apop_keys(ref).open(sealed)

    # ------------------------------------------------------------ rights
    def account_rights(self, ref: AccountRef) -> frozenset[str]:
        rights = self._record(ref).get("rights") or []
        out = set()
        for r in rights:
            try:
                out.add(model.normalize_right(r))
            except (BadSetting, names.BadName):
                continue
        if ref.domain != self.main_domain:
            out = {r for r in out if r == model.DOMAIN_ADMIN}
        return frozenset(out)

    def set_account_rights(self, ref: AccountRef, rights: Any) -> None:
        if isinstance(rights, str):
            rights = [rights] if rights else []
        if not isinstance(rights, list | tuple | set | frozenset):
            raise BadSetting("rights must be a list")
        canon = sorted({model.normalize_right(r) for r in rights})
        if ref.domain != self.main_domain:
            bad = [r for r in canon if r != model.DOMAIN_ADMIN]
            if bad:
                raise BadSetting(
                    f"only accounts of the Main Domain can hold {', '.join(bad)}"
                )
        with self._lock:
            rec = self._record(ref)
            rec["rights"] = canon
            self._write_record(ref, rec)

    def administered_domains(self, ref: AccountRef) -> frozenset[str]:
        """Domains ``ref`` administers through domain-level rights."""
        rights = self.account_rights(ref)
        out = {r[len(model.DOMAIN_PREFIX):] for r in rights if r.startswith(model.DOMAIN_PREFIX)}
        if model.DOMAIN_ADMIN in rights:
            out.add(ref.domain)
        return frozenset(out)

    # ------------------------------------------------------------ bootstrap, caches
    def ensure_postmaster(self, password: str | None = None) -> str | None:
        """Create ``postmaster`` of the Main Domain with the Master right when
        it does not exist.  Returns the password set (generated when None),
        or None when the account already existed."""
        ref = self.ref(self.main_domain, "postmaster")
        if self.account_dir(ref).is_dir():
            if model.MASTER not in self.account_rights(ref):
                self.set_account_rights(ref, sorted(self.account_rights(ref) | {model.MASTER}))
            return None
        if password is None:
            password = secrets.token_urlsafe(12)
        self.create_account(self.main_domain, "postmaster", password=password)
        self.set_account_rights(ref, [model.MASTER])
        return password

    def reload(self) -> None:
        """Forget every cached file (SIGHUP)."""
        self.invalidate()

    def invalidate(self, domain: str | None = None) -> None:
        """Forget cached data (of one domain, or everything)."""
        with self._lock:
            if domain is None:
                self.files.forget()
                self._listings.clear()
                return
            canon = names.domain_name(domain)
            self._listings.pop(canon, None)
            self.files.forget(self.domains_dir / canon)
            self.files.forget(self.shared_base / canon)
