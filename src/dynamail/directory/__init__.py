"""The object model on disk: domains, accounts, settings, rights, alerts.

See ``directory.py`` for the layout and its invariants, ``model.py`` for
the built-in defaults and value rules, ``passwords.py`` for hash formats.
"""

from dynamail.directory.directory import Directory
from dynamail.directory.files import CorruptFile
from dynamail.directory.layout import AlertScope, shard_of
from dynamail.directory.model import (
    BUILTIN_ACCOUNT_PREFS,
    BUILTIN_ACCOUNT_SETTINGS,
    BUILTIN_DOMAIN_SETTINGS,
    SERVER_RIGHTS,
    Alert,
    AlreadyExists,
    BadSetting,
    DirectoryError,
    DomainInfo,
    LimitReached,
    NoSuchAccount,
    NoSuchDomain,
    NotEmpty,
    Recipient,
)
from dynamail.names import BadName

__all__ = [
    "BUILTIN_ACCOUNT_PREFS",
    "BUILTIN_ACCOUNT_SETTINGS",
    "BUILTIN_DOMAIN_SETTINGS",
    "SERVER_RIGHTS",
    "Alert",
    "AlertScope",
    "AlreadyExists",
    "BadName",
    "BadSetting",
    "CorruptFile",
    "Directory",
    "DirectoryError",
    "DomainInfo",
    "LimitReached",
    "NoSuchAccount",
    "NoSuchDomain",
    "NotEmpty",
    "Recipient",
    "shard_of",
]
