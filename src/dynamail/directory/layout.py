"""Names and helpers of the on-disk layout (see ``directory.py`` for the map).

Directory entries that start with ``.`` are never domains or accounts:
``.new-*`` are being built, ``.deleted-*`` are being removed, ``.cluster``
holds cluster-wide data.  Domains and accounts appear and disappear by one
``rename`` each, so a crash leaves either the whole object or none of it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dynamail.directory.model import AlreadyExists, BadSetting

AlertScope = str | tuple[str, Any]

CLUSTER_DIR = ".cluster"
SETTINGS_FILE = "Settings.json"
ACCOUNT_DEFAULTS_FILE = "AccountDefaults.json"
DOMAIN_DEFAULTS_FILE = "DomainDefaults.json"
PREFS_FILE = "AccountPrefs.json"
ALERTS_FILE = "Alerts.json"
ALIASES_FILE = "Aliases.json"
FORWARDERS_FILE = "Forwarders.json"
ACCOUNT_FILE = "Account.json"
ACCOUNT_PREFS_FILE = "Prefs.json"
VERIFIER_FILE = "Verifier"  # keyed verifier of the last verified password (a cache)
MAIL_DIR = "Mail"
DOMAIN_ALIASES_FILE = "DomainAliases.json"
ACCOUNTS_DIR = "Accounts"


STALE_AGE = 3600.0  # seconds before an abandoned temporary directory is removed


def remove_stale(entries: list[os.DirEntry[str]]) -> None:
    """Remove half-built (``.new-*``) and half-deleted (``.deleted-*``)
    directories a crash left behind; young ones may belong to a running
    operation of another process, so only those older than STALE_AGE go."""
    now = time.time()
    for e in entries:
        if e.name.startswith((".new-", ".deleted-")):
            try:
                if now - e.stat(follow_symlinks=False).st_mtime > STALE_AGE:
                    shutil.rmtree(e.path, ignore_errors=True)
            except FileNotFoundError:
                continue


def rename_new(src: Path, dst: Path, exists_message: str) -> None:
    """Rename a complete directory into place; a directory of the same name
    made meanwhile by another process is never replaced (it is not empty)."""
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise AlreadyExists(exists_message) from exc
        raise


def split_password(
    settings: Mapping[str, Any] | None,
) -> tuple[Mapping[str, Any] | None, str | None]:
    """``settings`` without its ``Password`` key (any case), and that password."""
    if not isinstance(settings, Mapping):
        return settings, None
    keys = [k for k in settings if isinstance(k, str) and k.lower() == "password"]
    if not keys:
        return settings, None
    rest = {k: v for k, v in settings.items() if k not in keys}
    value = settings[keys[0]]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise BadSetting("the password must be text")
    return rest, value




def shard_of(name: str) -> str:
    """The shard directory of an account: two hex digits of SHA-256 of its name."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:2]
