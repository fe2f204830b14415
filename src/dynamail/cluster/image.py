"""Single Service Image: shared-data operations routed through the cluster.

Administrative mutations of shared data (shared domains, their accounts,
cluster-wide defaults, prefs and alerts) are executed by the Controller,
one at a time per operation, on the shared storage; the Controller then
pushes a ``Changed`` event to every member, which drops its directory caches
(``Directory.invalidate``), so the change is in effect everywhere within one
network round trip (well under the 1 s target).  Mailbox operations of an
account open elsewhere are executed by the account's owner.

Arguments and results cross the wire as msgpack; the few domain objects
they contain (account references, alerts, time stamps, mailbox listings)
are tagged maps.  Only operations in :data:`DIRECTORY_OPS` and
:data:`MAILBOX_OPS` are executed: a peer cannot call anything else.
"""

from __future__ import annotations

import datetime
from typing import Any

from dynamail.accounts import AccountRef

DIRECTORY_OPS = frozenset({
    "create_domain", "delete_domain", "update_domain_settings", "set_domain_settings",
    "update_account_defaults", "set_account_defaults",
    "update_cluster_account_defaults", "set_cluster_account_defaults",
    "update_cluster_domain_defaults", "set_cluster_domain_defaults",
    "update_cluster_account_prefs", "set_cluster_account_prefs",
    "create_account", "rename_account", "delete_account", "update_account_settings",
    "set_account_settings", "update_account_prefs", "set_account_prefs", "set_password",
    "set_password_hash", "replace_password_record", "set_account_rights", "set_account_aliases", "set_forwarder",
    "post_alert", "remove_alert", "set_alerts", "mark_alerts_seen",
    "create_dkim_key", "rotate_dkim_keys", "remove_dkim_key",
})
MAILBOX_OPS = frozenset({"list_mailboxes", "create_mailbox", "delete_mailbox", "rename_mailbox",
                         "subscribe", "status", "quota_usage",
                         "get_meta", "put_meta"})  # the account's small blobs (Sieve scripts)

_TAG = "\x00t"


def pack_value(value: Any) -> Any:
    """A msgpack-able form of ``value`` (see :func:`unpack_value`)."""
    if isinstance(value, AccountRef):
        return {_TAG: "ref", "v": [value.domain, value.name, value.shared]}
    if isinstance(value, datetime.datetime):
        return {_TAG: "dt", "v": value.isoformat()}
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [pack_value(v) for v in value]}
    if isinstance(value, list):
        return [pack_value(v) for v in value]
    if isinstance(value, set | frozenset):
        return {_TAG: "set", "v": [pack_value(v) for v in sorted(value, key=repr)]}
    if isinstance(value, dict):
        return {str(k): pack_value(v) for k, v in value.items()}
    cls = type(value).__name__
    if cls == "Alert":
        return {_TAG: "alert", "v": [value.timestamp.isoformat(), value.text]}
    if cls == "MailboxListing":
        return {_TAG: "listing", "v": [value.name, value.special_use, value.subscribed,
                                        value.has_children]}
    if cls == "MailboxStatus":
        import dataclasses

        return {_TAG: "status", "v": dataclasses.asdict(value)}
    return value


def unpack_value(value: Any) -> Any:
    if isinstance(value, list | tuple):  # the wire decoder gives arrays as tuples
        return [unpack_value(v) for v in value]
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if tag is None:
            return {k: unpack_value(v) for k, v in value.items()}
        v: Any = value["v"]
        if tag == "ref":
            return AccountRef(str(v[0]), str(v[1]), bool(v[2]))
        if tag == "dt":
            return datetime.datetime.fromisoformat(v)
        if tag == "tuple":
            return tuple(unpack_value(x) for x in v)
        if tag == "set":
            return {unpack_value(x) for x in v}
        if tag == "alert":
            from dynamail.directory.model import Alert

            return Alert(datetime.datetime.fromisoformat(v[0]), v[1])
        if tag == "listing":
            from dynamail.storage.api import MailboxListing

            return MailboxListing(v[0], v[1], bool(v[2]), bool(v[3]))
        if tag == "status":
            from dynamail.storage.api import MailboxStatus

            return MailboxStatus(**v)
        raise ValueError(f"unknown tag {tag!r}")
    return value


def error_code(exc: BaseException) -> str:
    return type(exc).__name__


def rebuild_error(code: str, text: str) -> Exception:
    """The exception the executing member raised, rebuilt on the caller so
    the admin layer translates it as if it had happened locally."""
    import dynamail.directory.model as model
    from dynamail import names

    cls = getattr(model, code, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls(text)
    if code == "BadName":
        return names.BadName(text)
    from dynamail.cluster.locator import AccountUnavailable

    if code == "AccountUnavailable":
        return AccountUnavailable(text)
    try:
        from dynamail.admin.errors import AdminError

        if code.startswith("AdminError:"):
            return AdminError(code.split(":", 1)[1], text)
    except ImportError:
        pass
    try:
        import dynamail.storage.api as storage_api

        scls = getattr(storage_api, code, None)
        if isinstance(scls, type) and issubclass(scls, Exception):
            return scls(text)
    except ImportError:
        pass
    return AccountUnavailable(f"{code}: {text}")
