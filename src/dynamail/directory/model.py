"""Values of the object model: built-in defaults, rights, alerts, errors.

Settings are dictionaries whose keys are CommuniGate-style names
(``RealName``, ``MaxAccountSize``, ``AccessModes``, ``MaxAccounts`` …) and
whose values are JSON-representable: strings, integers, booleans, lists and
dictionaries of those.  The string ``default`` as a value in an update
removes the key, so the inherited value applies again (SPEC §1).

Which keys exist, and the type and range of each, is in
:mod:`dynamail.directory.schema`: a write with an unknown key (outside the
``X-`` custom namespace) or a value of the wrong type is refused.

``AccessModes`` is either ``"All"``, ``"None"`` or a list of mode names
(a comma separated string is accepted too); any other stored value (a
number, ``false``, a dictionary) denies every mode.  Modes and the protocol that
needs them: ``Mail`` (receive mail), ``Relay`` (SMTP submission, protocol
``smtp``), ``POP`` (``pop3``), ``IMAP`` (``imap``), ``WebMail`` and
``WebAdmin`` (``http``), ``CLI`` (``cli``).  An account whose effective
AccessModes is ``None`` (or an empty list) is disabled.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dynamail.accounts import AccountRef
from dynamail.directory import schema

DEFAULT_MARKER = "default"

BUILTIN_ACCOUNT_SETTINGS: dict[str, Any] = {
    "RealName": "",
    "MaxAccountSize": "100M",
    "MaxMessageSize": "unlimited",
    "MaxMailboxes": "unlimited",
    "AccessModes": "All",
    "AllowAPOP": "YES",
    "Language": "English",
    "TimeZone": "UTC",
}

BUILTIN_DOMAIN_SETTINGS: dict[str, Any] = {
    "MaxAccounts": "unlimited",
    "MailToUnknown": "Rejected",
    "DomainAliases": [],
    "RealName": "",
    # what mail failing DMARC gets (dynamail.mailauth.policy): Reject, Junk or Mark
    "DMARCRejectAction": "Reject",
    "DMARCQuarantineAction": "Junk",
}

BUILTIN_ACCOUNT_PREFS: dict[str, Any] = {
    "Language": "English",
    "TimeZone": "UTC",
    "MessagesPerPage": 25,
    "SortOrder": "Date",
}

ACCESS_MODES = ("Mail", "Relay", "POP", "IMAP", "WebMail", "WebAdmin", "CLI")
PROTOCOL_MODES: dict[str, tuple[str, ...]] = {
    "imap": ("IMAP",),
    "pop3": ("POP",),
    "smtp": ("Relay",),
    "cli": ("CLI",),
    "http": ("WebAdmin", "WebMail"),
    "mail": ("Mail",),
}

# Server rights: only accounts of the Main Domain can hold them (SPEC §1).
MASTER = "Master"
SETTINGS = "Settings"
USERS = "Users"
MONITORS = "Monitors"
CAN_CONTROL_CLUSTER = "CanControlCluster"
SERVER_RIGHTS = frozenset({MASTER, SETTINGS, USERS, MONITORS, CAN_CONTROL_CLUSTER})
# Domain administrator: "DomainAdmin" over the account's own domain, or
# "Domain:<name>" (held by a Main Domain account) over the named domain.
DOMAIN_ADMIN = "DomainAdmin"
DOMAIN_PREFIX = "Domain:"

RIGHT_ALIASES = {
    "master": MASTER,
    "settings": SETTINGS,
    "users": USERS,
    "alldomains": USERS,
    "all domains": USERS,
    "monitors": MONITORS,
    "cancontrolcluster": CAN_CONTROL_CLUSTER,
    "can control cluster": CAN_CONTROL_CLUSTER,
    "domainadmin": DOMAIN_ADMIN,
    "domain administrator": DOMAIN_ADMIN,
}

MAX_SETTINGS_DEPTH = 8
MAX_SETTING_KEY = 200
MAX_ALERT_TEXT = 10_000
MAX_ALERTS = 1000


class DirectoryError(Exception):
    """Base class; ``str(exc)`` is a message fit for a client."""


class NoSuchDomain(DirectoryError):
    pass


class NoSuchAccount(DirectoryError):
    pass


class AlreadyExists(DirectoryError):
    pass


class NotEmpty(DirectoryError):
    pass


class BadSetting(DirectoryError, ValueError):
    pass


class LimitReached(DirectoryError):
    pass


class Superseded(DirectoryError):
    """This writer's epoch is no longer current: the change was not made
    (or, if it reached the disk, it is hidden by a newer writer's)."""


@dataclass(frozen=True, slots=True)
class DomainInfo:
    name: str
    shared: bool


@dataclass(frozen=True, slots=True)
class Recipient:
    """Where mail to an address goes: local accounts and forwarding addresses."""

    accounts: list[AccountRef] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, order=True)
class Alert:
    """A notice with its UTC time stamp (unique within its scope)."""

    timestamp: datetime.datetime
    text: str

    @property
    def stamp(self) -> str:
        """Compact text form, ``YYYYMMDDTHHMMSS.ffffffZ``; accepted by ``parse_stamp``."""
        return self.timestamp.strftime("%Y%m%dT%H%M%S.%fZ")


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def parse_stamp(value: str | datetime.datetime) -> datetime.datetime:
    """A time stamp from an Alert's ``stamp``, ISO 8601 text or a datetime."""
    if isinstance(value, datetime.datetime):
        dt = value
    else:
        text = value.strip()
        dt_parsed: datetime.datetime | None = None
        for fmt in ("%Y%m%dT%H%M%S.%fZ", "%Y%m%dT%H%M%SZ", "%Y%m%dT%H%M%S", "%d-%m-%Y_%H:%M:%S"):
            try:
                dt_parsed = datetime.datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        if dt_parsed is None:
            try:
                dt_parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError as exc:
                raise BadSetting(f"invalid time stamp: {value!r}") from exc
        dt = dt_parsed
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.astimezone(datetime.UTC)


def clean_value(value: Any, depth: int = 0) -> Any:
    """A JSON-storable copy of a setting value, or BadSetting."""
    if depth > MAX_SETTINGS_DEPTH:
        raise BadSetting("setting value is nested too deeply")
    if isinstance(value, bool | int | float | str):
        if isinstance(value, str) and "\x00" in value:
            raise BadSetting("setting value contains NUL")
        return value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime.datetime):
        return parse_stamp(value).isoformat()
    if isinstance(value, list | tuple):
        return [clean_value(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        return {clean_key(k): clean_value(v, depth + 1) for k, v in value.items()}
    raise BadSetting(f"unsupported setting value of type {type(value).__name__}")


def clean_key(key: Any) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_SETTING_KEY:
        raise BadSetting(f"invalid setting name: {key!r}")
    if any(ord(c) < 32 or c == "\x7f" for c in key):
        raise BadSetting("setting name contains a control character")
    return key


SIZE_SETTINGS = frozenset({"MaxAccountSize", "MaxMessageSize"})
COUNT_SETTINGS = frozenset({"MaxMailboxes", "MaxAccounts"})
_SIZE_RE = re.compile(r"(?i)^\s*(unlimited|\d+(\.\d+)?\s*[kmgt]?b?)\s*$")
_COUNT_RE = re.compile(r"(?i)^\s*(unlimited|\d+)\s*$")


def check_limit(key: str, value: Any) -> None:
    """Refuse a value of a size or count limit that the code enforcing the
    limit could not read (it would silently mean "unlimited")."""
    pattern = _SIZE_RE if key in SIZE_SETTINGS else _COUNT_RE if key in COUNT_SETTINGS else None
    if pattern is None:
        return
    if isinstance(value, int) and not isinstance(value, bool):
        ok = value >= 0
    else:
        ok = isinstance(value, str) and pattern.match(value) is not None
    if not ok:
        kind = "a size such as 100M, or unlimited" if key in SIZE_SETTINGS else "a number, or unlimited"
        raise BadSetting(f"invalid {key}: {value!r} (expected {kind})")


def apply_changes(current: dict[str, Any], changes: Mapping[str, Any], *, kind: str) -> dict[str, Any]:
    """``current`` updated by ``changes``; ``default`` (or None) removes a key.
    ``kind`` (``schema.ACCOUNT``, ``DOMAIN`` or ``PREFS``) says which keys
    exist; an unknown key or a badly typed value is :class:`BadSetting`."""
    result = dict(current)
    for key, value in changes.items():
        k = clean_key(key)
        if value is None or value == DEFAULT_MARKER:
            result.pop(k, None)
        else:
            cleaned = clean_value(value)
            try:
                result[k] = schema.check_setting(kind, k, cleaned)
            except schema.SettingError as exc:
                raise BadSetting(str(exc)) from None
    return result


def clean_settings(settings: Mapping[str, Any] | None, *, kind: str) -> dict[str, Any]:
    """A whole settings dictionary as stored: ``default`` values dropped."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise BadSetting("settings must be a dictionary")
    return apply_changes({}, settings, kind=kind)


def access_modes(value: Any) -> frozenset[str] | None:
    """The set of allowed modes; None means All.  A value of any other type
    (a number, a boolean, a dictionary: an older version or a hand edit
    stored it) allows nothing: a security setting fails closed."""
    if isinstance(value, str):
        v = value.strip()
        if v.lower() == "all":
            return None
        if v.lower() in ("none", ""):
            return frozenset()
        items: Iterable[Any] = v.split(",")
    elif isinstance(value, list | tuple):
        items = [i for i in value if isinstance(i, str)]
        if any(i.strip().lower() == "all" for i in items):
            return None
    else:
        return frozenset()
    by_lower = {m.lower(): m for m in ACCESS_MODES}
    out = set()
    for item in items:
        s = str(item).strip()
        if s:
            out.add(by_lower.get(s.lower(), s))
    return frozenset(out)


def protocol_allowed(modes_value: Any, protocol: str) -> bool:
    modes = access_modes(modes_value)
    if modes is None:
        return True
    needed = PROTOCOL_MODES.get(protocol.lower(), (protocol,))
    return any(m in modes for m in needed)


def is_yes(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    return str(value).strip().lower() in ("yes", "true", "1", "on")


def normalize_right(right: str) -> str:
    if not isinstance(right, str) or not right.strip():
        raise BadSetting(f"invalid right: {right!r}")
    r = right.strip()
    if r.lower().startswith(DOMAIN_PREFIX.lower()):
        from dynamail.names import domain_name

        return DOMAIN_PREFIX + domain_name(r[len(DOMAIN_PREFIX):])
    canon = RIGHT_ALIASES.get(r.lower())
    if canon is None:
        raise BadSetting(f"unknown right: {right!r}")
    return canon


def parse_size(value: Any) -> int | None:
    """Bytes from ``100M``/``2G``/``500K``/``1234``; None for ``unlimited``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("unlimited", ""):
        return None
    mult = 1
    if s[-1:] in ("k", "m", "g", "t"):
        mult = 1024 ** ("kmgt".index(s[-1]) + 1)
        s = s[:-1]
    try:
        return int(s) * mult
    except ValueError as exc:
        raise BadSetting(f"invalid size: {value!r}") from exc


def parse_count(value: Any) -> int | None:
    """An integer limit, or None for ``unlimited``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("unlimited", ""):
        return None
    try:
        return int(s)
    except ValueError as exc:
        raise BadSetting(f"invalid number: {value!r}") from exc
