"""The settings the server knows: their kind, type and range, checked at write time.

Every write of a settings dictionary (CLI, JSON API, WebAdmin, import) goes
through :func:`check_setting` via ``model.apply_changes``.  A key is refused
unless it is

* a setting of this kind (``account`` settings and every level of Default
  Account Settings; ``domain`` settings and Default Domain Settings;
  ``prefs``, account preferences), whose value must then have the type and
  range listed here (the value is stored normalised, e.g. ``AllowAPOP`` as
  ``YES``/``NO``); or
* in the custom namespace: a name starting with ``X-`` (``X-Billing-Plan``).
  The server stores such a setting (any JSON value) and never reads it.

So a misspelt or misleading key (``Rights``, ``PasswordHash``, ``Domain``,
``MaxAcountSize``) cannot sit in the settings looking as if it had an
effect.  Security settings (:data:`SECURITY_SETTINGS`) are also read
defensively: a stored value the reader cannot parse (written by an older
version, or by hand) denies — see ``model.access_modes``.

To add a setting, add a :class:`Setting` to :data:`SETTINGS` (and say in
docs/deploying.md or SPEC what it does).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dynamail import names

#: Keys starting with this are the documented custom namespace.
CUSTOM_PREFIX = "X-"
#: The longest text value of a known text setting.
MAX_TEXT = 1024
#: The most items in a list-valued known setting.
MAX_ITEMS = 1000

ACCOUNT = "account"
DOMAIN = "domain"
PREFS = "prefs"
KINDS = (ACCOUNT, DOMAIN, PREFS)


class SettingError(ValueError):
    """A key or value that cannot be stored; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    kinds: tuple[str, ...]
    check: Callable[[str, Any], Any]  # (name, value) -> the value to store, or SettingError
    expects: str  # for error messages and docs
    security: bool = False


def _text(max_len: int = MAX_TEXT) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if not isinstance(value, str):
            raise SettingError(f"{name} must be text, not {_type(value)}")
        if len(value) > max_len:
            raise SettingError(f"{name} is longer than {max_len} characters")
        if any(ord(c) < 32 or c == "\x7f" for c in value):
            raise SettingError(f"{name} contains a control character")
        return value

    return check


_SIZE_RE = re.compile(r"(?i)^\s*(unlimited|\d{1,15}(\.\d{1,6})?\s*[kmgt]?b?)\s*$")
_COUNT_RE = re.compile(r"(?i)^\s*(unlimited|\d{1,15})\s*$")
_MAX_NUMBER = 2**53


def _limit(pattern: re.Pattern[str], kind: str) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= _MAX_NUMBER:
                raise SettingError(f"{name} must be between 0 and {_MAX_NUMBER}")
            return value
        if isinstance(value, str) and pattern.match(value):
            return value
        raise SettingError(f"invalid {name}: {value!r} (expected {kind})")

    return check


_size = _limit(_SIZE_RE, "a size such as 100M, or unlimited")
_count = _limit(_COUNT_RE, "a number, or unlimited")


def _number(low: int, high: int) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 15:
            value = int(value.strip())
        if not isinstance(value, int) or isinstance(value, bool):
            raise SettingError(f"{name} must be a number, not {_type(value)}")
        if not low <= value <= high:
            raise SettingError(f"{name} must be between {low} and {high}")
        return value

    return check


def _yes_no(name: str, value: Any) -> Any:
    if isinstance(value, bool):
        return "YES" if value else "NO"
    if isinstance(value, str) and value.strip().lower() in ("yes", "true", "on", "1"):
        return "YES"
    if isinstance(value, str) and value.strip().lower() in ("no", "false", "off", "0"):
        return "NO"
    raise SettingError(f"{name} must be YES or NO, not {value!r}")


def _choice(*choices: str) -> Callable[[str, Any], Any]:
    by_lower = {c.lower(): c for c in choices}

    def check(name: str, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in by_lower:
            return by_lower[value.strip().lower()]
        raise SettingError(f"{name} must be one of {', '.join(choices)}, not {value!r}")

    return check


def _items(name: str, value: Any) -> list[Any]:
    if isinstance(value, str):
        items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise SettingError(f"{name} must be a list, not {_type(value)}")
    if len(items) > MAX_ITEMS:
        raise SettingError(f"{name} has more than {MAX_ITEMS} items")
    if not all(isinstance(i, str) for i in items):
        raise SettingError(f"every item of {name} must be text")
    return items


#: AccessModes: ``All``, ``None`` or a list of these (model.PROTOCOL_MODES).
ACCESS_MODES = ("Mail", "Relay", "POP", "IMAP", "WebMail", "WebAdmin", "CLI")


def _access_modes(name: str, value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("all", "none"):
        return value.strip().capitalize()
    items = _items(name, value)
    by_lower = {m.lower(): m for m in ACCESS_MODES}
    out: list[str] = []
    for item in items:
        mode = by_lower.get(item.strip().lower())
        if item.strip().lower() == "all":
            return "All"
        if mode is None:
            raise SettingError(f"{name}: unknown mode {item!r} (modes: All, None, {', '.join(ACCESS_MODES)})")
        if mode not in out:
            out.append(mode)
    return out if out else "None"


def _domain_names(name: str, value: Any) -> Any:
    out: list[str] = []
    for item in _items(name, value):
        canon = names.domain_name(item)  # names.BadName (answered as a bad name) when it is not one
        if canon not in out:
            out.append(canon)
    return out


def _domain_name(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise SettingError(f"{name} must be a domain name, not {_type(value)}")
    return names.domain_name(value)


def _ip_addresses(name: str, value: Any) -> Any:
    out: list[str] = []
    for item in _items(name, value):
        try:
            ip = str(ipaddress.ip_address(item.strip()))
        except ValueError:
            raise SettingError(f"{name}: {item!r} is not an IP address") from None
        if ip not in out:
            out.append(ip)
    return out


def _selectors(name: str, value: Any) -> Any:
    out: list[str] = []
    for item in _items(name, value):
        s = item.strip().lower()
        labels = s.split(".")
        if not s or len(s) > 63 or not all(
            label and len(label) <= 63 and label.isascii() and all(c.isalnum() or c == "-" for c in label)
            and not label.startswith("-") and not label.endswith("-") for label in labels
        ):
            raise SettingError(f"{name}: {item!r} is not a DKIM selector")
        if s not in out:
            out.append(s)
    return out


def _type(value: Any) -> str:
    return {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list",
            dict: "a dictionary"}.get(type(value), type(value).__name__)


_A, _D, _P = (ACCOUNT,), (DOMAIN,), (PREFS,)

SETTINGS: dict[str, Setting] = {s.name: s for s in (
    # account settings (and Default Account Settings)
    Setting("RealName", (ACCOUNT, DOMAIN), _text(255), "text"),
    Setting("MaxAccountSize", _A, _size, "a size (100M) or unlimited"),
    Setting("MaxMessageSize", _A, _size, "a size (10M) or unlimited"),
    Setting("MaxMailboxes", _A, _count, "a number or unlimited"),
    Setting("AccessModes", _A, _access_modes, "All, None or a list of modes", security=True),
    Setting("AllowAPOP", _A, _yes_no, "YES or NO", security=True),
    Setting("Language", (ACCOUNT, PREFS), _text(64), "text"),
    Setting("TimeZone", (ACCOUNT, PREFS), _text(64), "text"),
    # domain settings (and Default Domain Settings)
    Setting("MaxAccounts", _D, _count, "a number or unlimited"),
    Setting("MailToUnknown", _D, _choice("Rejected", "Discarded"), "Rejected or Discarded"),
    Setting("DomainAliases", _D, _domain_names, "a list of domain names", security=True),
    Setting("IPAddresses", _D, _ip_addresses, "a list of IP addresses", security=True),
    Setting("DefaultLoginDomain", _D, _domain_name, "a domain name", security=True),
    Setting("DKIMSelectors", _D, _selectors, "a list of DKIM selectors"),
    Setting("DMARCRejectAction", _D, _choice("Reject", "Junk", "Mark"), "Reject, Junk or Mark", security=True),
    Setting("DMARCQuarantineAction", _D, _choice("Reject", "Junk", "Mark"), "Reject, Junk or Mark", security=True),
    # account preferences
    Setting("MessagesPerPage", _P, _number(1, 1000), "a number from 1 to 1000"),
    Setting("SortOrder", _P, _text(64), "text"),
)}

#: Settings whose unparsable value must deny, never allow.
SECURITY_SETTINGS = frozenset(s.name for s in SETTINGS.values() if s.security)


def known(kind: str) -> list[str]:
    """The names of the settings of ``kind``, sorted."""
    return sorted(s.name for s in SETTINGS.values() if kind in s.kinds)


def check_setting(kind: str, key: str, value: Any) -> Any:
    """The value to store for ``key`` in a settings dictionary of ``kind``,
    or :class:`SettingError` naming what is wrong."""
    if key.startswith(CUSTOM_PREFIX) and len(key) > len(CUSTOM_PREFIX):
        return value
    setting = SETTINGS.get(key)
    if setting is None or kind not in setting.kinds:
        lower = {name.lower(): name for name in known(kind)}
        hint = f" (did you mean {lower[key.lower()]}?)" if key.lower() in lower else ""
        raise SettingError(
            f"unknown {kind} setting {key!r}{hint}; custom settings must start with {CUSTOM_PREFIX!r}"
        )
    return setting.check(key, value)
