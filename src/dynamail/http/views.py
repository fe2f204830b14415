"""JSON shapes of what the API and WebAdmin show, composed of Admin reads.

Every value here comes from a ``dynamail.admin.Admin`` call made as the
acting account, so rights are checked exactly as for the CLI protocol; this
module only combines reads (a domain = its settings + its shared flag + its
account count) and turns model objects into JSON-ready dictionaries.
"""

from __future__ import annotations

from typing import Any

from dynamail import __version__
from dynamail.accounts import AccountRef
from dynamail.admin import AdminError
from dynamail.http.limits import MAX_COUNTED_DOMAINS
from dynamail.server.context import ServerContext


def alert_json(alert: Any) -> dict[str, Any]:
    return {"stamp": alert.stamp, "time": alert.timestamp.isoformat(), "text": alert.text}


def alert_from_json(item: dict[str, str]) -> Any:
    """An Alert from ``{"text", "time"?}`` (time: ISO 8601 or a stamp; default now)."""
    from dynamail.directory import model

    when = item.get("time") or item.get("stamp")
    try:
        timestamp = model.parse_stamp(when) if when else model.utcnow()
    except model.BadSetting as exc:
        raise AdminError("bad_request", str(exc)) from None
    return model.Alert(timestamp, item["text"])


def alerts_json(alerts: list[Any]) -> list[dict[str, Any]]:
    return [alert_json(a) for a in alerts]


def mailbox_json(m: Any) -> dict[str, Any]:
    return {
        "name": m.name,
        "special_use": m.special_use,
        "subscribed": m.subscribed,
        "has_children": m.has_children,
    }


async def _count(ctx: ServerContext, actor: AccountRef, domain: str) -> int | None:
    """The domain's account count, or None when the actor may not list them."""
    try:
        return int(await ctx.admin.count_accounts(actor, domain))
    except AdminError as exc:
        if exc.code == "forbidden":
            return None
        raise


async def domains(ctx: ServerContext, actor: AccountRef) -> list[dict[str, Any]]:
    infos = await ctx.admin.list_domains(actor)
    counted = len(infos) <= MAX_COUNTED_DOMAINS  # beyond that, counts cost more than they tell
    return [
        {"name": d.name, "shared": d.shared, "accounts": await _count(ctx, actor, d.name) if counted else None}
        for d in infos
    ]


async def domain(ctx: ServerContext, actor: AccountRef, name: str) -> dict[str, Any]:
    settings = await ctx.admin.get_domain_settings(actor, name)  # rights check and existence
    infos = await ctx.admin.list_domains(actor)
    found = next((d for d in infos if d.name == name), None)
    if found is None:
        raise AdminError("not_found", f"unknown domain: {name}")
    return {
        "name": found.name,
        "shared": found.shared,
        "main": found.name == await ctx.admin.main_domain_name(actor),
        "accounts": await _count(ctx, actor, found.name),
        "settings": settings,
    }


async def account(ctx: ServerContext, actor: AccountRef, address: str) -> dict[str, Any]:
    settings = await ctx.admin.get_account_settings(actor, address)
    name, _, dom = address.partition("@")
    return {"address": f"{name}@{dom}", "name": name, "domain": dom, "settings": settings}


async def accounts_page(
    ctx: ServerContext, actor: AccountRef, domain: str, *, prefix: str, offset: int, limit: int
) -> tuple[list[str], int]:
    """One page of account names and the number of names matching ``prefix``.

    Without a prefix the total is the domain's (cached) count; with one, the
    matching names are counted from the sorted listing."""
    page = await ctx.admin.list_accounts(actor, domain, prefix=prefix, offset=offset, limit=limit)
    if not prefix:
        total = await ctx.admin.count_accounts(actor, domain)
    else:
        matching = await ctx.admin.list_accounts(actor, domain, prefix=prefix)
        total = len(matching)
        del matching
    return page, int(total)


# every client listener, in the order the Counters page shows them
LISTENERS = ("smtp", "submission", "smtps", "lmtp", "imap", "imaps", "pop3", "pop3s", "cli", "managesieve", "http", "https")


def _sample(metric: Any) -> list[tuple[dict[str, str], float]]:
    out: list[tuple[dict[str, str], float]] = []
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out.append((dict(s.labels), float(s.value)))
    return out


async def monitors(ctx: ServerContext, actor: AccountRef) -> dict[str, Any]:
    """Live counters of this server (the Monitors right)."""
    await ctx.admin.check_monitors(actor)
    m = ctx.metrics
    sessions: dict[str, dict[str, int]] = {
        p: {"open": 0, "total": 0} for p in LISTENERS
    }
    for labels, value in _sample(m.sessions):
        sessions.setdefault(labels.get("protocol", "?"), {"open": 0, "total": 0})["open"] = int(value)
    for labels, value in _sample(m.sessions_total):
        sessions.setdefault(labels.get("protocol", "?"), {"open": 0, "total": 0})["total"] = int(value)
    delivered = failed = 0
    for labels, value in _sample(m.deliveries):
        if labels.get("result") in ("ok", "delivered", "success"):
            delivered += int(value)
        else:
            failed += int(value)
    queue = sum(int(v) for _, v in _sample(m.queue_size))
    open_accounts = len(ctx.accounts.open_accounts()) if ctx.accounts is not None else 0
    return {
        "sessions": sessions,
        "deliveries": delivered,
        "deliveries_failed": failed,
        "queue_size": queue,
        "open_accounts": open_accounts,
        "version": __version__,
    }


async def cluster_status(ctx: ServerContext, actor: AccountRef) -> dict[str, Any]:
    """The shape of ``dynamail cluster status --json`` (SPEC §6)."""
    members = [dict(m) for m in await ctx.admin.cluster_members(actor)]
    try:
        controller = await ctx.admin.get_current_controller(actor)
    except AdminError as exc:
        if exc.code != "not_cluster":
            raise
        controller = ""
    backup = str(getattr(ctx.cluster, "backup_name", "") or "") if ctx.cluster is not None else ""
    for m in members:
        role = str(m.get("role", ""))
        if not controller and (m.get("controller") is True or role.lower() == "controller"):
            controller = str(m.get("name", ""))
        if m.get("backup") is True or role.lower() == "backup":
            backup = str(m.get("name", ""))
        m.setdefault("version", __version__)
        m.setdefault("load", None)
        m.setdefault("open_accounts", None)
        m.setdefault("ready", True)
    members.sort(key=lambda m: (m.get("name") != controller, str(m.get("name"))))
    return {"controller": controller, "backup": backup, "members": members, "clustered": ctx.cluster is not None}

