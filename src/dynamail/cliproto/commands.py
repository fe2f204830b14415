"""The admin CLI command registry.

Each command is one :class:`CommandSpec`: its name, its argument grammar
(:mod:`dynamail.cliproto.grammar`), the :class:`dynamail.admin.Admin`
operation it maps to, and whether it changes anything (changes are logged).
The core looks commands up here by name; nothing is dispatched by
reflection.  Rights are checked by the Admin operation (the acting account
is always its first argument), so the CLI protocol and the JSON API enforce
exactly the same rules.

Values travel between the textual data format and the Admin layer through
:func:`to_admin` (``#NULL#`` in a settings dictionary means ``default``:
remove the key) and :func:`to_answer` (alerts become ``{stamp=text;}``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dynamail.accounts import AccountRef
from dynamail.cliproto.datafmt import NULL, IPAddress
from dynamail.cliproto.grammar import Arg, Kind

if TYPE_CHECKING:
    from dynamail.cliproto.core import Execute
    from dynamail.server.context import ServerContext

Handler = Callable[[Any, AccountRef, dict[str, Any], "ServerContext"], Awaitable[Any]]

ACCOUNT_TYPES = ("MULTIMAILBOX", "TEXTMAILBOX", "MAILDIRMAILBOX", "SLICEDMAILBOX",
                 "AGRADE", "BGRADE", "CGRADE")


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str  # upper case
    args: tuple[Arg, ...]
    handler: Handler
    admin_method: str  # the Admin operation it maps to (documentation, tests)
    logged: bool = False  # changes something: logged with the acting account
    summary: str = ""


def to_admin(value: Any) -> Any:
    """A parsed data value as the Admin layer takes it."""
    if value is NULL:
        return "default"
    if isinstance(value, IPAddress):
        return f"[{value.host}]" + (f":{value.port}" if value.port else "")
    if isinstance(value, list):
        return [to_admin(v) for v in value]
    if isinstance(value, dict):
        return {k: to_admin(v) for k, v in value.items()}
    return value


def _alerts_answer(alerts: Any) -> dict[str, str]:
    return {a.stamp: a.text for a in alerts}


def _alerts_in(value: Any) -> list[Any]:
    """``{stamp=text;}`` as a list of directory Alerts."""
    from dynamail.admin import AdminError
    from dynamail.directory import Alert, BadSetting
    from dynamail.directory.model import parse_stamp

    out = []
    for stamp, text in value.items():
        if not isinstance(text, str):
            raise AdminError("bad_request", "alert texts must be strings")
        try:
            when = parse_stamp(stamp if not isinstance(stamp, bytes) else stamp.decode())
        except BadSetting as exc:
            raise AdminError("bad_request", str(exc)) from None
        out.append(Alert(when, text))
    return out


# -- handlers ----------------------------------------------------------------
# Each takes (admin, actor, args, ctx) and returns the answer data (None: OK).

_NAME = Arg("name")
_DOMAIN = Arg("domain")
_OPT_DOMAIN = Arg("domain", optional=True)
_ACCOUNT = Arg("account")
_DICT = Arg("settings", Kind.DICT)
_OPT_DICT = Arg("settings", Kind.DICT, optional=True)


async def _list_domains(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return [d.name for d in await a.list_domains(who)]


async def _main_domain(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return await a.main_domain_name(who)


async def _create_domain(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.create_domain(who, x["name"], shared=x.get("shared", False),
                          settings=to_admin(x.get("settings")) or None)


async def _delete_domain(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.delete_domain(who, x["name"], force=x.get("force", False))


Target = Callable[[dict[str, Any], AccountRef], Any]


def _in_domain(x: dict[str, Any], who: AccountRef) -> Any:
    """The optional domain argument, else the acting account's domain."""
    return x.get("domain") or who.domain


def _the_domain(x: dict[str, Any], who: AccountRef) -> Any:
    return x["domain"]


def _the_account(x: dict[str, Any], who: AccountRef) -> Any:
    return x["account"]


def _named(get: Callable[[Any, AccountRef, Any], Awaitable[Any]],
           update: Callable[[Any, AccountRef, Any, Any], Awaitable[Any]],
           set_: Callable[[Any, AccountRef, Any, Any], Awaitable[Any]],
           target: Target, get_target: Target | None = None) -> tuple[Handler, Handler, Handler]:
    """GET/UPDATE/SET handlers of the dictionary of one domain or account
    (``target``; ``get_target`` for GET when it differs)."""
    read_target = get_target or target

    async def do_get(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
        return await get(a, who, read_target(x, who))

    async def do_update(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
        await update(a, who, target(x, who), to_admin(x["settings"]))

    async def do_set(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
        await set_(a, who, target(x, who), to_admin(x["settings"]))

    return do_get, do_update, do_set


_get_domain_settings, _update_domain_settings, _set_domain_settings = _named(
    lambda a, w, d: a.get_domain_settings(w, d),
    lambda a, w, d, s: a.update_domain_settings(w, d, s),
    lambda a, w, d, s: a.set_domain_settings(w, d, s),
    _the_domain, get_target=_in_domain,
)


async def _get_domain_effective(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return await a.get_domain_effective_settings(who, x.get("domain") or who.domain)


_get_account_defaults, _update_account_defaults, _set_account_defaults = _named(
    lambda a, w, d: a.get_account_defaults(w, d),
    lambda a, w, d, s: a.update_account_defaults(w, d, s),
    lambda a, w, d, s: a.set_account_defaults(w, d, s),
    _in_domain,
)


def _scoped(get: str, update: str, set_: str) -> tuple[Handler, Handler, Handler]:
    """GET/UPDATE/SET handlers of a dictionary without a name argument
    (server-wide and cluster-wide defaults and prefs)."""

    async def do_get(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
        return await _ADMIN_CALLS[get](a, who)

    async def do_update(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
        await _ADMIN_CALLS[update](a, who, to_admin(x["settings"]))

    async def do_set(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
        await _ADMIN_CALLS[set_](a, who, to_admin(x["settings"]))

    return do_get, do_update, do_set


# The Admin operations behind the name-less dictionaries, spelled out (no
# getattr): each entry calls exactly one Admin method.
_ADMIN_CALLS: dict[str, Callable[..., Awaitable[Any]]] = {
    "get_server_account_defaults": lambda a, w: a.get_server_account_defaults(w),
    "update_server_account_defaults": lambda a, w, s: a.update_server_account_defaults(w, s),
    "set_server_account_defaults": lambda a, w, s: a.set_server_account_defaults(w, s),
    "get_cluster_account_defaults": lambda a, w: a.get_cluster_account_defaults(w),
    "update_cluster_account_defaults": lambda a, w, s: a.update_cluster_account_defaults(w, s),
    "set_cluster_account_defaults": lambda a, w, s: a.set_cluster_account_defaults(w, s),
    "get_cluster_domain_defaults": lambda a, w: a.get_cluster_domain_defaults(w),
    "update_cluster_domain_defaults": lambda a, w, s: a.update_cluster_domain_defaults(w, s),
    "set_cluster_domain_defaults": lambda a, w, s: a.set_cluster_domain_defaults(w, s),
    "get_server_domain_defaults": lambda a, w: a.get_server_domain_defaults(w),
    "update_server_domain_defaults": lambda a, w, s: a.update_server_domain_defaults(w, s),
    "set_server_domain_defaults": lambda a, w, s: a.set_server_domain_defaults(w, s),
    "get_server_account_prefs": lambda a, w: a.get_server_account_prefs(w),
    "update_server_account_prefs": lambda a, w, s: a.update_server_account_prefs(w, s),
    "set_server_account_prefs": lambda a, w, s: a.set_server_account_prefs(w, s),
    "get_cluster_account_prefs": lambda a, w: a.get_cluster_account_prefs(w),
    "update_cluster_account_prefs": lambda a, w, s: a.update_cluster_account_prefs(w, s),
    "set_cluster_account_prefs": lambda a, w, s: a.set_cluster_account_prefs(w, s),
}


async def _create_account(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    kind = x.get("type")
    if kind is not None and kind.upper() not in ACCOUNT_TYPES:
        from dynamail.admin import AdminError

        raise AdminError("bad_request", f"unknown account type {kind!r}")
    settings = dict(to_admin(x.get("settings") or {}))
    password = settings.pop("Password", None)
    if password is not None and not isinstance(password, str):
        from dynamail.admin import AdminError

        raise AdminError("bad_request", "Password must be a string")
    await a.create_account(who, x["account"], password=password, settings=settings or None)


async def _rename_account(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.rename_account(who, x["account"], x["new"])


async def _delete_account(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.delete_account(who, x["account"])


async def _list_accounts(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    names = await a.list_accounts(who, x.get("domain") or who.domain)
    return {n: "macnt" for n in names}


_get_account_settings, _update_account_settings, _set_account_settings = _named(
    lambda a, w, acc: a.get_account_settings(w, acc),
    lambda a, w, acc, s: a.update_account_settings(w, acc, s),
    lambda a, w, acc, s: a.set_account_settings(w, acc, s),
    _the_account,
)


async def _get_account_effective(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return await a.get_account_effective_settings(who, x["account"])


async def _set_password(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.set_account_password(who, x["account"], x["password"])


async def _verify_password(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    ok = await a.verify_account_password(who, x["account"], x["password"])
    if not ok:
        from dynamail.admin import AdminError

        raise AdminError("forbidden", "incorrect password")


async def _get_rights(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return sorted(await a.get_account_rights(who, x["account"]))


async def _set_rights(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.set_account_rights(who, x["account"], [str(r) for r in to_admin(x["rights"])])


def _alert_handlers(kind: str) -> dict[str, Handler]:
    """GET/SET/POST/REMOVE handlers for server, cluster, domain or account alerts."""

    def scope(x: dict[str, Any], who: AccountRef) -> Any:
        if kind == "domain":
            return ("domain", x.get("target") or who.domain)
        if kind == "account":
            return ("account", x["target"])
        return kind

    async def get(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
        return _alerts_answer(await a.get_alerts(who, scope(x, who)))

    async def set_(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
        await a.set_alerts(who, scope(x, who), _alerts_in(x["alerts"]))

    async def post(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
        await a.post_alert(who, scope(x, who), x["text"])

    async def remove(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
        await a.remove_alert(who, scope(x, who), x["stamp"])

    return {"get": get, "set": set_, "post": post, "remove": remove}


_get_prefs, _update_prefs, _set_prefs = _named(
    lambda a, w, acc: a.get_account_prefs(w, acc),
    lambda a, w, acc, s: a.update_account_prefs(w, acc, s),
    lambda a, w, acc, s: a.set_account_prefs(w, acc, s),
    _the_account,
)


async def _get_effective_prefs(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return await a.get_account_effective_prefs(who, x["account"])


async def _get_aliases(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return list(await a.get_account_aliases(who, x["account"]))


async def _set_aliases(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.set_account_aliases(who, x["account"], [str(v) for v in to_admin(x["aliases"])])


def _forwarder_domain(x: dict[str, Any], who: AccountRef) -> str:
    name = str(x["name"])
    return name.rpartition("@")[2] if "@" in name else who.domain


async def _list_forwarders(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return sorted(await a.list_forwarders(who, x.get("domain") or who.domain))


async def _get_forwarder(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    from dynamail.admin import AdminError

    domain = _forwarder_domain(x, who)
    local = str(x["name"]).rpartition("@")[0] or str(x["name"])
    table = await a.list_forwarders(who, domain)
    target = table.get(local.lower())
    if target is None:
        raise AdminError("not_found", f"unknown forwarder: {x['name']}")
    return target


async def _create_forwarder(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.set_forwarder(who, _qualified(x["name"], who), x["target"])


async def _delete_forwarder(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    from dynamail.admin import AdminError

    domain = _forwarder_domain(x, who)
    local = str(x["name"]).rpartition("@")[0] or str(x["name"])
    if local.lower() not in await a.list_forwarders(who, domain):
        raise AdminError("not_found", f"unknown forwarder: {x['name']}")
    await a.set_forwarder(who, _qualified(x["name"], who), None)


def _qualified(name: str, who: AccountRef) -> str:
    return name if "@" in name else f"{name}@{who.domain}"


async def _list_mailboxes(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    listing = await a.list_mailboxes(who, x["account"])
    out: dict[str, Any] = {}
    for m in listing:
        info: dict[str, Any] = {}
        if m.special_use:
            info["SpecialUse"] = m.special_use
        if m.subscribed:
            info["Subscribed"] = "YES"
        out[m.name] = info
    return out


async def _create_mailbox(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.create_mailbox(who, x["account"], x["mailbox"])


async def _delete_mailbox(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.delete_mailbox(who, x["account"], x["mailbox"])


async def _rename_mailbox(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.rename_mailbox(who, x["account"], x["mailbox"], x["new"])


async def _import_mail(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return await a.import_mail(who, x["account"], x["path"], x.get("format") or "auto")


async def _list_sieve(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return {s["name"]: "YES" if s["active"] else "NO" for s in await a.list_sieve_scripts(who, x["account"])}


async def _get_sieve(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return await a.get_sieve_script(who, x["account"], x["name"])


async def _put_sieve(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.put_sieve_script(who, x["account"], x["name"], x["script"], activate=bool(x.get("activate")))


async def _activate_sieve(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.activate_sieve_script(who, x["account"], x.get("name") or "")


async def _delete_sieve(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.delete_sieve_script(who, x["account"], x["name"])


def _dkim_answer(keys: list[dict[str, Any]]) -> dict[str, Any]:
    """``{selector={Algorithm=…;Active=YES;Created=…;Name=…;TXT=…;};…}``"""
    return {k["selector"]: {"Algorithm": k["algorithm"], "Active": "YES" if k["active"] else "NO",
                            "Created": k["created"], "Name": k["name"], "TXT": k["txt"]} for k in keys}


async def _get_dkim(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return _dkim_answer(await a.get_dkim_keys(who, x["domain"]))


async def _create_dkim(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    keys = await a.create_dkim_key(who, x["domain"], (x.get("algorithm") or "rsa").lower(), x.get("selector"))
    return _dkim_answer(keys)


async def _rotate_dkim(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return _dkim_answer(await a.rotate_dkim_keys(who, x["domain"]))


async def _get_version(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return await a.version(who)


async def _list_members(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    members = await a.cluster_members(who)
    return [{str(k): ("" if v is None else v) for k, v in m.items()} for m in members]


async def _member_ready(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.set_ready(who, x["member"], True)


async def _member_nonready(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    await a.set_ready(who, x["member"], False)


async def _get_controller(a: Any, who: AccountRef, x: dict[str, Any], ctx: ServerContext) -> Any:
    return await a.get_current_controller(who)


# -- the table -----------------------------------------------------------------


def _build() -> dict[str, CommandSpec]:
    specs: list[CommandSpec] = []

    def add(name: str, args: tuple[Arg, ...], handler: Handler, method: str,
            logged: bool = False, summary: str = "") -> None:
        specs.append(CommandSpec(name, args, handler, method, logged, summary))

    add("LISTDOMAINS", (), _list_domains, "list_domains", summary="names of the visible domains")
    add("MAINDOMAINNAME", (), _main_domain, "main_domain_name", summary="the Main Domain name")
    add("CREATEDOMAIN", (_NAME, Arg("shared", Kind.KEYWORD, optional=True, word="SHARED"), _OPT_DICT),
        _create_domain, "create_domain", True, "create a (shared) domain")
    add("DELETEDOMAIN", (_NAME, Arg("force", Kind.KEYWORD, optional=True, word="FORCE")),
        _delete_domain, "delete_domain", True, "delete a domain (FORCE: with its accounts)")
    add("GETDOMAINSETTINGS", (_OPT_DOMAIN,), _get_domain_settings, "get_domain_settings")
    add("UPDATEDOMAINSETTINGS", (_DOMAIN, _DICT), _update_domain_settings, "update_domain_settings", True)
    add("SETDOMAINSETTINGS", (_DOMAIN, _DICT), _set_domain_settings, "set_domain_settings", True)
    add("GETDOMAINEFFECTIVESETTINGS", (_OPT_DOMAIN,), _get_domain_effective,
        "get_domain_effective_settings")
    add("GETACCOUNTDEFAULTS", (_OPT_DOMAIN,), _get_account_defaults, "get_account_defaults")
    add("UPDATEACCOUNTDEFAULTS", (_OPT_DOMAIN, _DICT), _update_account_defaults,
        "update_account_defaults", True)
    add("SETACCOUNTDEFAULTS", (_OPT_DOMAIN, _DICT), _set_account_defaults, "set_account_defaults", True)
    for prefix, what in (
        ("SERVERACCOUNTDEFAULTS", "server_account_defaults"),
        ("CLUSTERACCOUNTDEFAULTS", "cluster_account_defaults"),
        ("CLUSTERDOMAINDEFAULTS", "cluster_domain_defaults"),
        ("DOMAINDEFAULTS", "server_domain_defaults"),
        ("SERVERACCOUNTPREFS", "server_account_prefs"),
        ("CLUSTERACCOUNTPREFS", "cluster_account_prefs"),
    ):
        g, u, s = _scoped(f"get_{what}", f"update_{what}", f"set_{what}")
        add("GET" + prefix, (), g, f"get_{what}")
        add("UPDATE" + prefix, (_DICT,), u, f"update_{what}", True)
        add("SET" + prefix, (_DICT,), s, f"set_{what}", True)
    add("CREATEACCOUNT", (_ACCOUNT, Arg("type", optional=True), _OPT_DICT), _create_account,
        "create_account", True, "create an account; the dictionary may carry Password")
    add("RENAMEACCOUNT", (_ACCOUNT, Arg("new", after=("INTO",))), _rename_account,
        "rename_account", True)
    add("DELETEACCOUNT", (_ACCOUNT,), _delete_account, "delete_account", True)
    add("LISTACCOUNTS", (_OPT_DOMAIN,), _list_accounts, "list_accounts")
    add("GETACCOUNTSETTINGS", (_ACCOUNT,), _get_account_settings, "get_account_settings")
    add("UPDATEACCOUNTSETTINGS", (_ACCOUNT, _DICT), _update_account_settings,
        "update_account_settings", True)
    add("SETACCOUNTSETTINGS", (_ACCOUNT, _DICT), _set_account_settings, "set_account_settings", True)
    add("GETACCOUNTEFFECTIVESETTINGS", (_ACCOUNT,), _get_account_effective,
        "get_account_effective_settings")
    add("SETACCOUNTPASSWORD", (_ACCOUNT, Arg("password", after=("PASSWORD", "TO"))), _set_password,
        "set_account_password", True)
    add("VERIFYACCOUNTPASSWORD", (_ACCOUNT, Arg("password", after=("PASSWORD",))), _verify_password,
        "verify_account_password")
    add("GETACCOUNTRIGHTS", (_ACCOUNT,), _get_rights, "get_account_rights")
    add("SETACCOUNTRIGHTS", (_ACCOUNT, Arg("rights", Kind.ARRAY)), _set_rights,
        "set_account_rights", True)
    for kind, word, target in (
        ("server", "SERVER", ()),
        ("cluster", "CLUSTER", ()),
        ("domain", "DOMAIN", (Arg("target", optional=True),)),
        ("account", "ACCOUNT", (Arg("target"),)),
    ):
        h = _alert_handlers(kind)
        required_target = (Arg("target"),) if kind in ("domain", "account") else ()
        add(f"GET{word}ALERTS", target, h["get"], "get_alerts")
        add(f"SET{word}ALERTS", (*target, Arg("alerts", Kind.DICT)), h["set"], "set_alerts", True)
        add(f"POST{word}ALERT", (*required_target, Arg("text")), h["post"], "post_alert", True)
        add(f"REMOVE{word}ALERT", (*required_target, Arg("stamp")), h["remove"], "remove_alert", True)
    add("GETACCOUNTPREFS", (_ACCOUNT,), _get_prefs, "get_account_prefs")
    add("GETACCOUNTEFFECTIVEPREFS", (_ACCOUNT,), _get_effective_prefs, "get_account_effective_prefs")
    add("GETACCOUNTALIASES", (_ACCOUNT,), _get_aliases, "get_account_aliases")
    add("SETACCOUNTALIASES", (_ACCOUNT, Arg("aliases", Kind.ARRAY)), _set_aliases,
        "set_account_aliases", True)
    add("LISTFORWARDERS", (_OPT_DOMAIN,), _list_forwarders, "list_forwarders")
    add("GETFORWARDER", (_NAME,), _get_forwarder, "list_forwarders")
    add("CREATEFORWARDER", (_NAME, Arg("target", after=("TO",))), _create_forwarder,
        "set_forwarder", True)
    add("DELETEFORWARDER", (_NAME,), _delete_forwarder, "set_forwarder", True)
    add("UPDATEACCOUNTPREFS", (_ACCOUNT, _DICT), _update_prefs, "update_account_prefs", True)
    add("SETACCOUNTPREFS", (_ACCOUNT, _DICT), _set_prefs, "set_account_prefs", True)
    add("LISTMAILBOXES", (_ACCOUNT,), _list_mailboxes, "list_mailboxes")
    add("CREATEMAILBOX", (_ACCOUNT, Arg("mailbox")), _create_mailbox, "create_mailbox", True)
    add("DELETEMAILBOX", (_ACCOUNT, Arg("mailbox")), _delete_mailbox, "delete_mailbox", True)
    add("RENAMEMAILBOX", (_ACCOUNT, Arg("mailbox"), Arg("new", after=("INTO",))), _rename_mailbox,
        "rename_mailbox", True)
    # dynamail extension: import Maildir/mbox mail from a path on the server (SPEC §5)
    add("IMPORTMAIL", (_ACCOUNT, Arg("path", after=("FROM",)), Arg("format", optional=True, after=("FORMAT",))),
        _import_mail, "import_mail", True, "import Maildir or mbox mail from a server path (Master)")
    # dynamail extensions: an account's Sieve scripts (docs/sieve.md)
    script_name = Arg("name", after=("NAME",))
    add("LISTSIEVESCRIPTS", (_ACCOUNT,), _list_sieve, "list_sieve_scripts",
        summary="the account's Sieve scripts: {name=YES (active) or NO}")
    add("GETSIEVESCRIPT", (_ACCOUNT, script_name), _get_sieve, "get_sieve_script", summary="one script's text")
    add("PUTSIEVESCRIPT", (_ACCOUNT, script_name, Arg("script", after=("SCRIPT",)),
                           Arg("activate", Kind.KEYWORD, optional=True, word="ACTIVATE")),
        _put_sieve, "put_sieve_script", True, "store a script (checked), ACTIVATE: make it active")
    add("ACTIVATESIEVESCRIPT", (_ACCOUNT, Arg("name", optional=True, after=("NAME",))), _activate_sieve,
        "activate_sieve_script", True, "make a script active (no NAME: none)")
    add("DELETESIEVESCRIPT", (_ACCOUNT, script_name), _delete_sieve, "delete_sieve_script", True,
        "delete a script that is not active")
    # dynamail extensions: a domain's DKIM keys (docs/deploying.md, "DNS records to publish")
    add("GETDOMAINDKIM", (_DOMAIN,), _get_dkim, "get_dkim_keys",
        summary="the domain's DKIM keys and the DNS TXT record of each")
    add("CREATEDOMAINDKIM", (_DOMAIN, Arg("algorithm", optional=True, after=("ALGORITHM",)),
                             Arg("selector", optional=True, after=("SELECTOR",))),
        _create_dkim, "create_dkim_key", True, "a new DKIM key (rsa or ed25519) that signs from now on")
    add("ROTATEDOMAINDKIM", (_DOMAIN,), _rotate_dkim, "rotate_dkim_keys", True,
        "new DKIM keys under new selectors; the old ones retire")
    add("GETVERSION", (), _get_version, "version", summary="server version")
    add("GETCURRENTCONTROLLER", (), _get_controller, "get_current_controller")
    # dynamail extensions: cluster members and their Ready state (SPEC §2)
    add("LISTCLUSTERMEMBERS", (), _list_members, "cluster_members",
        summary="every member: name, role, ready, load, open accounts, version")
    add("SETMEMBERREADY", (Arg("member"),), _member_ready, "set_ready", True,
        "make a member Ready (Can Control Cluster)")
    add("SETMEMBERNONREADY", (Arg("member"),), _member_nonready, "set_ready", True,
        "make a member Non-Ready (Can Control Cluster)")
    return {s.name: s for s in specs}


REGISTRY: dict[str, CommandSpec] = _build()


async def run_command(ctx: ServerContext, action: Execute) -> Any:
    """Run one parsed command through the Admin layer."""
    admin = ctx.admin
    if admin is None and action.command.admin_method:
        from dynamail.admin import AdminError

        raise AdminError("unavailable", "administration is not available")
    return await action.command.handler(admin, action.actor, action.args, ctx)
