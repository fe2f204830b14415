"""The JSON API under ``/api/v1/``: every operation of the admin CLI.

Each handler is one call into ``dynamail.admin.Admin`` — the single
implementation of every administrative operation and its rights check —
with the acting account first.  Nothing here decides who may do what; the
handlers only translate HTTP (path, query, JSON body) into those calls and
their results back into JSON.
"""

from __future__ import annotations

from typing import Any

from dynamail import names
from dynamail.accounts import AccountRef
from dynamail.http import archives, views
from dynamail.http.errors import ApiError
from dynamail.http.identity import binding_of, check_password
from dynamail.http.keys import SESSIONS
from dynamail.http.limits import DEFAULT_PAGE, MAX_ALERT, MAX_OFFSET, MAX_PAGE, MAX_PASSWORD
from dynamail.http.routes import Call, Query, Registry
from dynamail.http.schema import AlertList, Body, Bool, Settings, SettingsBody, Str, StrList
from dynamail.sieve import limits as sieve_limits

api = Registry()
route = api.add

D = "/domains/{domain}"
A = D + "/accounts/{account}"

SETTINGS = SettingsBody(description="a settings dictionary")
ALERT = Body({"text": Str("the alert's text", required=True, max_length=MAX_ALERT)})
ALERT_LIST = Body({"alerts": AlertList("alerts: {\"text\", \"time\"?} each; time defaults to now", required=True)})
PASSWORD = Body({"password": Str("the password", required=True, max_length=MAX_PASSWORD)})
FORCE = (Query("force", "boolean", "delete even when not empty", False),)


def _ok(**extra: Any) -> dict[str, Any]:
    return {"ok": True, **extra}


def _settings_routes(stem: str, path: str, scope: str, tag: str, get: str, update: str, set_: str) -> None:
    """GET/PATCH/PUT of one settings dictionary of the domain or account in the
    path: ``get_<stem>``, ``update_<stem>``, ``set_<stem>`` of ``Admin``; PATCH
    and PUT answer with the dictionary as it now is."""

    def target(call: Call) -> str:
        return call.domain if scope == "domain" else call.account

    async def get_(call: Call) -> Any:
        return await getattr(call.admin, f"get_{stem}")(call.actor, target(call))

    async def update_(call: Call) -> Any:
        await getattr(call.admin, f"update_{stem}")(call.actor, target(call), call.body)
        return await getattr(call.admin, f"get_{stem}")(call.actor, target(call))

    async def set_settings(call: Call) -> Any:
        await getattr(call.admin, f"set_{stem}")(call.actor, target(call), call.body)
        return await getattr(call.admin, f"get_{stem}")(call.actor, target(call))

    get_.__name__ = f"get_{stem}"
    update_.__name__ = f"update_{stem}"
    set_settings.__name__ = f"set_{stem}"
    route("GET", path, get, tag)(get_)
    route("PATCH", path, update, tag, body=SETTINGS)(update_)
    route("PUT", path, set_, tag, body=SETTINGS)(set_settings)


# ---- session and server ---

ANONYMOUS = AccountRef("", "")  # the actor of the two routes that need no authentication


@route(
    "POST", "/session", "Log in: returns a session token for Authorization: Bearer", "session",
    auth=False, status=201,
    body=Body({
        "user": Str("account address, or a plain login name (docs/directory.md, login names)", required=True, max_length=320),
        "password": Str("password", required=True, max_length=MAX_PASSWORD),
    }),
)
async def create_session(call: Call) -> Any:
    ref = await check_password(call.ctx, call.body["user"], call.body["password"], call.request)
    session = call.request.app[SESSIONS].create(ref, await binding_of(call.ctx, ref))
    return {"token": session.token, "account": ref.address, "csrf": session.csrf}


@route("DELETE", "/session", "Log out: forget the session token", "session", auth=False, status=204)
async def delete_session(call: Call) -> Any:
    header = call.request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError("unauthorized", "send the session token as Authorization: Bearer")
    call.request.app[SESSIONS].drop(token.strip())


@route("GET", "/session", "The account this request is authenticated as, and its rights", "session")
async def get_session(call: Call) -> Any:
    rights = await call.admin.get_account_rights(call.actor, call.actor.address)
    return {"account": call.actor.address, "domain": call.actor.domain, "rights": rights}


@route("GET", "/session/alerts", "The logged-in account's alerts not yet seen (every scope)", "session")
async def get_unseen_alerts(call: Call) -> Any:
    return {"alerts": views.alerts_json(await call.admin.unseen_alerts(call.actor))}


@route(
    "POST", "/session/alerts/seen", "Mark the logged-in account's alerts seen up to a time stamp", "session",
    body=Body({"upto": Str("time stamp of the newest alert seen", required=True, max_length=64)}),
)
async def mark_alerts_seen(call: Call) -> Any:
    await call.admin.mark_alerts_seen(call.actor, call.body["upto"])
    return {"alerts": views.alerts_json(await call.admin.unseen_alerts(call.actor))}


@route("POST", "/server/reload", "Re-read settings files from disk (Settings right)", "server")
async def reload_settings(call: Call) -> Any:
    await call.admin.reload(call.actor)
    return _ok()


@route("GET", "/version", "Server version", "server")
async def get_version(call: Call) -> Any:
    return {"version": await call.admin.version(call.actor)}


@route("GET", "/maindomain", "The Main Domain's name", "server")
async def get_main_domain(call: Call) -> Any:
    return {"name": await call.admin.main_domain_name(call.actor)}


@route("GET", "/monitors", "Live counters: sessions per protocol, deliveries, queue size", "server")
async def get_monitors(call: Call) -> Any:
    return await views.monitors(call.ctx, call.actor)


# ---- domains ----------------------------------------------------------------------


@route("GET", "/domains", "List domains (shared ones marked)", "domains")
async def list_domains(call: Call) -> Any:
    return {"domains": await views.domains(call.ctx, call.actor)}


@route(
    "POST", "/domains", "Create a domain (shared: a cluster-wide domain)", "domains", status=201,
    body=Body({
        "name": Str("domain name", required=True, max_length=253),
        "shared": Bool("create a shared (cluster) domain"),
        "settings": Settings(),
    }),
)
async def create_domain(call: Call) -> Any:
    b = call.body
    name = names.domain_name(b["name"])
    await call.admin.create_domain(call.actor, name, shared=b.get("shared", False), settings=b.get("settings") or {})
    return await views.domain(call.ctx, call.actor, name)


@route("GET", D, "A domain: name, shared, settings, account count", "domains")
async def get_domain(call: Call) -> Any:
    return await views.domain(call.ctx, call.actor, call.domain)


@route("DELETE", D, "Delete a domain (force: with its accounts)", "domains", query=FORCE, status=204)
async def delete_domain(call: Call) -> Any:
    await call.admin.delete_domain(call.actor, call.domain, force=call.query["force"])


@route("PATCH", D, "Update a domain's settings (same as PATCH .../settings)", "domains", body=SETTINGS)
async def patch_domain(call: Call) -> Any:
    await call.admin.update_domain_settings(call.actor, call.domain, call.body)
    return await views.domain(call.ctx, call.actor, call.domain)


@route("PUT", D, "Replace a domain's settings (same as PUT .../settings)", "domains", body=SETTINGS)
async def put_domain(call: Call) -> Any:
    await call.admin.set_domain_settings(call.actor, call.domain, call.body)
    return await views.domain(call.ctx, call.actor, call.domain)


_settings_routes("domain_settings", D + "/settings", "domain", "domains", "A domain's own settings",
                 "Update some of a domain's settings", "Replace a domain's settings")


@route("GET", D + "/settings/effective", "A domain's effective settings (with inherited values)", "domains")
async def get_domain_effective_settings(call: Call) -> Any:
    return await call.admin.get_domain_effective_settings(call.actor, call.domain)


_settings_routes("account_defaults", D + "/account-defaults", "domain", "domains",
                 "The domain's Default Account Settings", "Update the domain's Default Account Settings",
                 "Replace the domain's Default Account Settings")


# ---- accounts ---------------------------------------------------------------------


@route(
    "GET", D + "/accounts", "List a domain's accounts (by name, paged)", "accounts",
    query=(
        Query("prefix", "string", "only names starting with this", ""),
        Query("offset", "integer", "skip this many names", 0, 0, MAX_OFFSET),
        Query("limit", "integer", "at most this many names", DEFAULT_PAGE, 1, MAX_PAGE),
    ),
)
async def list_accounts(call: Call) -> Any:
    q = call.query
    names, total = await views.accounts_page(
        call.ctx, call.actor, call.domain, prefix=q["prefix"].lower(), offset=q["offset"], limit=q["limit"]
    )
    return {"accounts": names, "total": total, "offset": q["offset"], "limit": q["limit"]}


@route(
    "POST", D + "/accounts", "Create an account", "accounts", status=201,
    body=Body({
        "name": Str("account name", required=True, max_length=64),
        "password": Str("initial password", max_length=MAX_PASSWORD),
        "settings": Settings(),
    }),
)
async def create_account(call: Call) -> Any:
    b = call.body
    address = f"{names.account_name(b['name'])}@{call.domain}"
    await call.admin.create_account(
        call.actor, address, settings=b.get("settings") or {}, password=b.get("password")
    )
    return await views.account(call.ctx, call.actor, address)


@route("GET", A, "An account: address, settings", "accounts")
async def get_account(call: Call) -> Any:
    return await views.account(call.ctx, call.actor, call.account)


@route("PATCH", A, "Update some of an account's settings", "accounts", body=SETTINGS)
async def patch_account(call: Call) -> Any:
    await call.admin.update_account_settings(call.actor, call.account, call.body)
    return await views.account(call.ctx, call.actor, call.account)


@route("PUT", A, "Replace an account's settings", "accounts", body=SETTINGS)
async def put_account(call: Call) -> Any:
    await call.admin.set_account_settings(call.actor, call.account, call.body)
    return await views.account(call.ctx, call.actor, call.account)


@route("DELETE", A, "Delete an account and its mail", "accounts", status=204)
async def delete_account(call: Call) -> Any:
    await call.admin.delete_account(call.actor, call.account)
    call.request.app[SESSIONS].drop_account_address(call.account)


@route(
    "POST", A + "/rename", "Rename an account (new name, or name@domain)", "accounts",
    body=Body({"new_name": Str("new name or address", required=True, max_length=320)}),
)
async def rename_account(call: Call) -> Any:
    new = call.body["new_name"]
    if "@" not in new:
        new = f"{new}@{call.domain}"
    local, _, dom = new.partition("@")
    new = f"{names.account_name(local)}@{names.domain_name(dom)}"
    await call.admin.rename_account(call.actor, call.account, new)
    call.request.app[SESSIONS].drop_account_address(call.account)
    return await views.account(call.ctx, call.actor, new)


@route("PUT", A + "/password", "Set an account's password", "accounts", body=PASSWORD)
async def set_account_password(call: Call) -> Any:
    await call.admin.set_account_password(call.actor, call.account, call.body["password"])
    return _ok()


@route("POST", A + "/password/verify", "Check a password against an account's", "accounts", body=PASSWORD)
async def verify_account_password(call: Call) -> Any:
    ok = await call.admin.verify_account_password(call.actor, call.account, call.body["password"])
    return {"valid": bool(ok)}


_settings_routes("account_settings", A + "/settings", "account", "accounts", "An account's own settings",
                 "Update some of an account's settings", "Replace an account's settings")


@route("GET", A + "/settings/effective", "An account's effective settings", "accounts")
async def get_account_effective_settings(call: Call) -> Any:
    return await call.admin.get_account_effective_settings(call.actor, call.account)


@route("GET", A + "/prefs", "An account's WebUser preferences", "accounts")
async def get_account_prefs(call: Call) -> Any:
    return await call.admin.get_account_prefs(call.actor, call.account)


@route("GET", A + "/prefs/effective", "An account's effective WebUser preferences", "accounts")
async def get_account_effective_prefs(call: Call) -> Any:
    return await call.admin.get_account_effective_prefs(call.actor, call.account)


@route("PATCH", A + "/prefs", "Update some WebUser preferences", "accounts", body=SETTINGS)
async def update_account_prefs(call: Call) -> Any:
    await call.admin.update_account_prefs(call.actor, call.account, call.body)
    return await call.admin.get_account_prefs(call.actor, call.account)


@route("PUT", A + "/prefs", "Replace the WebUser preferences", "accounts", body=SETTINGS)
async def set_account_prefs(call: Call) -> Any:
    await call.admin.set_account_prefs(call.actor, call.account, call.body)
    return await call.admin.get_account_prefs(call.actor, call.account)


@route("GET", A + "/rights", "An account's administrator rights", "accounts")
async def get_account_rights(call: Call) -> Any:
    return {"rights": await call.admin.get_account_rights(call.actor, call.account)}


@route(
    "PUT", A + "/rights", "Set an account's administrator rights", "accounts",
    body=Body({"rights": StrList("rights, e.g. Master, Settings, CanControlCluster", required=True)}),
)
async def set_account_rights(call: Call) -> Any:
    await call.admin.set_account_rights(call.actor, call.account, call.body["rights"])
    return {"rights": await call.admin.get_account_rights(call.actor, call.account)}


@route("GET", A + "/aliases", "An account's aliases (other names in its domain)", "accounts")
async def get_account_aliases(call: Call) -> Any:
    return {"aliases": await call.admin.get_account_aliases(call.actor, call.account)}


@route(
    "PUT", A + "/aliases", "Replace an account's aliases", "accounts",
    body=Body({"aliases": StrList("alias names", required=True, max_length=64)}),
)
async def set_account_aliases(call: Call) -> Any:
    await call.admin.set_account_aliases(call.actor, call.account, call.body["aliases"])
    return {"aliases": await call.admin.get_account_aliases(call.actor, call.account)}


@route("GET", D + "/forwarders", "A domain's forwarders (name → target address)", "domains")
async def list_forwarders(call: Call) -> Any:
    return {"forwarders": await call.admin.list_forwarders(call.actor, call.domain)}


@route(
    "PUT", D + "/forwarders/{name}", "Create or change a forwarder name@domain", "domains",
    body=Body({"target": Str("address mail is forwarded to", required=True, max_length=320)}),
)
async def set_forwarder(call: Call) -> Any:
    address = f"{names.account_name(call.path['name'])}@{call.domain}"
    await call.admin.set_forwarder(call.actor, address, call.body["target"])
    return {"forwarders": await call.admin.list_forwarders(call.actor, call.domain)}


@route("DELETE", D + "/forwarders/{name}", "Remove a forwarder", "domains", status=204)
async def remove_forwarder(call: Call) -> Any:
    address = f"{names.account_name(call.path['name'])}@{call.domain}"
    if names.account_name(call.path["name"]) not in await call.admin.list_forwarders(call.actor, call.domain):
        raise ApiError("not_found", f"no forwarder {address}")
    await call.admin.set_forwarder(call.actor, address, None)


# ---- DKIM keys of a domain ----------------------------------------------------------


@route("GET", D + "/dkim", "A domain's DKIM keys with the DNS TXT record of each (no private keys)", "domains")
async def get_dkim(call: Call) -> Any:
    return {"keys": await call.admin.get_dkim_keys(call.actor, call.domain)}


@route(
    "POST", D + "/dkim", "Create a DKIM key (rsa: RSA-2048, or ed25519) and sign with it", "domains", status=201,
    body=Body({
        "algorithm": Str("rsa or ed25519 (default rsa)", max_length=16),
        "selector": Str("the selector (default: algorithm and date)", max_length=63),
    }),
)
async def create_dkim(call: Call) -> Any:
    b = call.body
    keys = await call.admin.create_dkim_key(call.actor, call.domain, b.get("algorithm") or "rsa", b.get("selector"))
    return {"keys": keys}


@route("POST", D + "/dkim/rotate", "Replace every active DKIM key by a new one under a new selector", "domains")
async def rotate_dkim(call: Call) -> Any:
    return {"keys": await call.admin.rotate_dkim_keys(call.actor, call.domain)}


@route("DELETE", D + "/dkim/{selector}", "Remove a retired DKIM key", "domains")
async def remove_dkim(call: Call) -> Any:
    return {"keys": await call.admin.remove_dkim_key(call.actor, call.domain, call.path["selector"])}


# ---- mailboxes --------------------------------------------------------------------


@route("GET", A + "/mailboxes", "List an account's mailboxes", "mailboxes")
async def list_mailboxes(call: Call) -> Any:
    return {"mailboxes": [views.mailbox_json(m) for m in await call.admin.list_mailboxes(call.actor, call.account)]}


@route(
    "POST", A + "/mailboxes", "Create a mailbox", "mailboxes", status=201,
    body=Body({"name": Str("mailbox name, / separated", required=True, max_length=1000)}),
)
async def create_mailbox(call: Call) -> Any:
    name = names.mailbox_name(call.body["name"])
    await call.admin.create_mailbox(call.actor, call.account, name)
    return {"name": name}


@route(
    "PATCH", A + "/mailboxes/{mailbox:.+}", "Rename a mailbox", "mailboxes",
    body=Body({"name": Str("the new mailbox name", required=True, max_length=1000)}),
)
async def rename_mailbox(call: Call) -> Any:
    new = names.mailbox_name(call.body["name"])
    await call.admin.rename_mailbox(call.actor, call.account, call.path["mailbox"], new)
    return {"name": new}


@route("DELETE", A + "/mailboxes/{mailbox:.+}", "Delete a mailbox", "mailboxes", status=204)
async def delete_mailbox(call: Call) -> Any:
    await call.admin.delete_mailbox(call.actor, call.account, call.path["mailbox"])


# ---- Sieve scripts (docs/sieve.md) --------------------------------------------------


@route("GET", A + "/sieve", "List the account's Sieve scripts and which one is active", "sieve")
async def list_sieve_scripts(call: Call) -> Any:
    return {"scripts": await call.admin.list_sieve_scripts(call.actor, call.account)}


@route("GET", A + "/sieve/{script}", "One Sieve script's text", "sieve")
async def get_sieve_script(call: Call) -> Any:
    name = call.path["script"]
    return {"name": name, "script": await call.admin.get_sieve_script(call.actor, call.account, name)}


@route(
    "PUT", A + "/sieve/{script}", "Store a Sieve script (refused with the compiler's message when wrong)",
    "sieve",
    body=Body({
        "script": Str("the script text (RFC 5228)", required=True, max_length=sieve_limits.MAX_SCRIPT_SIZE),
        "active": Bool("make it the active script"),
    }),
)
async def put_sieve_script(call: Call) -> Any:
    name = call.path["script"]
    await call.admin.put_sieve_script(call.actor, call.account, name, call.body["script"],
                                      activate=bool(call.body.get("active")))
    return {"name": name}


@route("POST", A + "/sieve/{script}/activate", "Make a Sieve script the active one", "sieve")
async def activate_sieve_script(call: Call) -> Any:
    await call.admin.activate_sieve_script(call.actor, call.account, call.path["script"])
    return {"active": call.path["script"]}


@route("POST", A + "/sieve-deactivate", "Deactivate the account's Sieve scripts", "sieve")
async def deactivate_sieve_scripts(call: Call) -> Any:
    await call.admin.activate_sieve_script(call.actor, call.account, "")
    return {"active": None}


@route("DELETE", A + "/sieve/{script}", "Delete a Sieve script that is not active", "sieve", status=204)
async def delete_sieve_script(call: Call) -> Any:
    await call.admin.delete_sieve_script(call.actor, call.account, call.path["script"])


@route(
    "POST", A + "/import",
    "Import Maildir or mbox mail from a path on this server into the account (Master only); "
    "returns counts: imported, duplicates (imported by an earlier run), skipped", "mailboxes",
    body=Body({
        "path": Str("absolute path of a Maildir, an mbox file or a directory of mbox files", required=True,
                    max_length=4096),
        "format": Str("maildir, mbox or auto (the default)", max_length=16),
    }),
)
async def import_mail(call: Call) -> Any:
    return await call.admin.import_mail(call.actor, call.account, call.body["path"],
                                        call.body.get("format") or "auto")


@route(
    "GET", A + "/export",
    "Export the account as a portable archive (application/gzip: a tar of Maildir++ with dovecot-uidlist "
    "and dovecot-keywords, the account's settings and Sieve scripts), consistent while the account is in "
    "use (Master only). Run by the member that has the account open; another member answers 409 "
    "owner_elsewhere with the owner's URL", "mailboxes",
)
async def export_account(call: Call) -> Any:
    return await archives.export_response(call)


@route(
    "POST", A + "/restore",
    "Restore an account archive (the request body, application/gzip, as GET .../export makes it) into "
    "the account: mailboxes, messages with flags and internal dates, subscriptions, settings, Sieve "
    "scripts; running it again adds nothing (Master only). 409 owner_elsewhere as for export", "mailboxes",
)
async def restore_account(call: Call) -> Any:
    return await archives.restore_response(call)


# ---- alerts -----------------------------------------------------------------------


def _alert_routes(scope: str, prefix: str, tag: str) -> None:
    """GET/POST/DELETE alerts for one scope (server, cluster, domain, account)."""

    def where(call: Call) -> Any:
        if scope == "domain":
            return ("domain", call.domain)
        if scope == "account":
            return ("account", call.account)
        return scope

    async def get_alerts(call: Call) -> Any:
        return {"alerts": views.alerts_json(await call.admin.get_alerts(call.actor, where(call)))}

    async def post_alert(call: Call) -> Any:
        posted = await call.admin.post_alert(call.actor, where(call), call.body["text"])
        alerts = views.alerts_json(await call.admin.get_alerts(call.actor, where(call)))
        return {"posted": views.alert_json(posted), "alerts": alerts}

    async def remove_alert(call: Call) -> Any:
        await call.admin.remove_alert(call.actor, where(call), call.path["alert"])

    async def set_alerts(call: Call) -> Any:
        alerts = [views.alert_from_json(a) for a in call.body["alerts"]]
        await call.admin.set_alerts(call.actor, where(call), alerts)
        return {"alerts": views.alerts_json(await call.admin.get_alerts(call.actor, where(call)))}

    set_alerts.__name__ = f"set_{scope}_alerts"
    get_alerts.__name__ = f"get_{scope}_alerts"
    post_alert.__name__ = f"post_{scope}_alert"
    remove_alert.__name__ = f"remove_{scope}_alert"
    route("GET", prefix + "/alerts", f"List {scope} alerts", tag)(get_alerts)
    route("POST", prefix + "/alerts", f"Post a {scope} alert", tag, body=ALERT, status=201)(post_alert)
    route("PUT", prefix + "/alerts", f"Replace the list of {scope} alerts", tag, body=ALERT_LIST)(set_alerts)
    route("DELETE", prefix + "/alerts/{alert}", f"Remove a {scope} alert (by its time stamp)", tag,
          status=204)(remove_alert)


_alert_routes("server", "/server", "server")
_alert_routes("cluster", "/cluster", "cluster")
_alert_routes("domain", D, "domains")
_alert_routes("account", A, "accounts")


# ---- server-wide and cluster-wide defaults -----------------------------------------


def _defaults_routes(method_stem: str, path: str, what: str, tag: str) -> None:
    """GET/PATCH/PUT of one defaults dictionary (GET/UPDATE/SET... in the CLI)."""

    async def get_(call: Call) -> Any:
        return await getattr(call.admin, f"get_{method_stem}")(call.actor)

    async def update_(call: Call) -> Any:
        await getattr(call.admin, f"update_{method_stem}")(call.actor, call.body)
        return await getattr(call.admin, f"get_{method_stem}")(call.actor)

    async def set_(call: Call) -> Any:
        await getattr(call.admin, f"set_{method_stem}")(call.actor, call.body)
        return await getattr(call.admin, f"get_{method_stem}")(call.actor)

    get_.__name__ = f"get_{method_stem}"
    update_.__name__ = f"update_{method_stem}"
    set_.__name__ = f"set_{method_stem}"
    route("GET", path, f"The {what}", tag)(get_)
    route("PATCH", path, f"Update the {what}", tag, body=SETTINGS)(update_)
    route("PUT", path, f"Replace the {what}", tag, body=SETTINGS)(set_)


_defaults_routes("server_account_defaults", "/server/account-defaults", "server-wide Default Account Settings", "server")
_defaults_routes("server_domain_defaults", "/server/domain-defaults", "server-wide Default Domain Settings", "server")
_defaults_routes("server_account_prefs", "/server/account-prefs", "server-wide Default WebUser Preferences", "server")
_defaults_routes("cluster_account_defaults", "/cluster/account-defaults", "cluster-wide Default Account Settings", "cluster")
_defaults_routes("cluster_domain_defaults", "/cluster/domain-defaults", "cluster-wide Default Domain Settings", "cluster")
_defaults_routes("cluster_account_prefs", "/cluster/account-prefs", "cluster-wide Default WebUser Preferences", "cluster")


# ---- cluster ----------------------------------------------------------------------


@route("GET", "/cluster", "Cluster status: Controller, Backup, every member with role, ready state, load", "cluster")
async def get_cluster_status(call: Call) -> Any:
    return await views.cluster_status(call.ctx, call.actor)


@route("GET", "/cluster/controller", "The current Cluster Controller", "cluster")
async def get_current_controller(call: Call) -> Any:
    return {"controller": await call.admin.get_current_controller(call.actor)}


@route("POST", "/cluster/members/{member}/ready", "Make a member Ready (Can Control Cluster)", "cluster")
async def make_ready(call: Call) -> Any:
    await call.admin.set_ready(call.actor, call.path["member"], True)
    return _ok(member=call.path["member"], ready=True)


DRAIN = (Query("drain", "integer", "also move its open accounts away: idle ones at once, busy ones as "
               "their sessions end or after this many seconds (0: no drain)", 0, 0, 86400),)


@route("POST", "/cluster/members/{member}/nonready", "Make a member Non-Ready (Can Control Cluster)", "cluster",
       query=DRAIN)
async def make_nonready(call: Call) -> Any:
    drain = call.query.get("drain") or 0
    if drain:
        await call.admin.set_ready(call.actor, call.path["member"], False, drain=float(drain))
    else:
        await call.admin.set_ready(call.actor, call.path["member"], False)
    return _ok(member=call.path["member"], ready=False, **({"drain": drain} if drain else {}))
