"""WebAdmin: server-rendered pages for administrators.

Pages are Jinja2 templates with autoescaping on; every change is an HTML
form POST that carries the session's CSRF token and is answered with a
redirect (post/redirect/get), its outcome shown once as a flash message.
Every operation is the same ``dynamail.admin.Admin`` call the JSON API
makes, so WebAdmin cannot do anything the acting account may not do.

The session cookie is HttpOnly, SameSite=Strict and Secure on TLS; the
login form has its own CSRF token in a short-lived cookie (double submit),
and failed logins are throttled by the authenticator.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from dynamail import __version__, names
from dynamail.directory import model
from dynamail.http import views
from dynamail.http.errors import ApiError, from_admin_error
from dynamail.http.identity import binding_of, check_password, live_session, same_origin
from dynamail.http.keys import CTX, SESSIONS
from dynamail.http.limits import WEB_PAGE
from dynamail.http.routes import admin_error_type, parse_json
from dynamail.http.sessions import COOKIE, LOGIN_COOKIE, Session, new_token, same

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
SERVER_RIGHTS = (model.MASTER, model.SETTINGS, model.USERS, model.MONITORS, model.CAN_CONTROL_CLUSTER)
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(HERE / "templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

PageHandler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
NEW_SETTING_ROWS = 3
UNSEEN = web.RequestKey("dynamail_unseen_alerts", list)  # the account's unseen alerts  # empty key/value rows offered under a settings table


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


TEMPLATES.filters["value_text"] = _value_text


def render(request: web.Request, template: str, session: Session | None, status: int = 200, **data: Any) -> web.Response:
    ctx = request.app[CTX]
    flash = list(session.flash) if session else []
    if session:
        session.flash.clear()
    page = TEMPLATES.get_template(template).render(
        user=session.ref if session else None,
        csrf=session.csrf if session else "",
        clustered=ctx.cluster is not None,
        member=str(getattr(ctx.cluster, "name", "") or "") if ctx.cluster is not None else "",
        hostname=ctx.hostname,
        version=__version__,
        flash=flash,
        unseen=request.get(UNSEEN, []),
        path=request.path,
        path_qs=request.path_qs,
        **data,
    )
    return web.Response(text=page, content_type="text/html", status=status)


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    session = request.app[SESSIONS].get(request.cookies.get(COOKIE))
    return render(request, "error.html", session, status=status, status_code=status, message=message)


def _cookie(response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="Strict", secure=request.secure
    )


def _redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/admin/") and "//" not in target and "\\" not in target:
        return target
    return "/admin/domains"


# ---- decorators ---------------------------------------------------------------------


def page(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A page for a logged-in administrator (GET), or a form target (POST:
    the CSRF token is checked first)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = await live_session(request.app[CTX], request.app[SESSIONS], request.cookies.get(COOKIE))
        if session is None:
            if request.method == "GET":
                raise _redirect("/admin/login?" + urlencode({"next": request.path_qs}))
            raise _redirect("/admin/login")
        if request.method == "POST":
            form = await request.post()
            if not same(_field(form, "csrf"), session.csrf) or not same_origin(request):
                raise ApiError("csrf", "The form has expired or did not come from this server. Reload the page and try again.")
            flashed = len(session.flash)
            try:
                return await handler(request, session)
            finally:
                outcome = "; ".join(text for _, text in session.flash[flashed:]) or "-"
                log.info("webadmin POST %s by %s from %s: %s", request.path, session.ref, request.remote, outcome)
        try:  # the account's own alerts not yet seen, shown above the page
            request[UNSEEN] = views.alerts_json(await request.app[CTX].admin.unseen_alerts(session.ref))
        except admin_error_type():
            request[UNSEEN] = []
        return await handler(request, session)

    wrapped.__name__ = handler.__name__
    return wrapped


def _field(form: MultiDictProxy[Any], name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


async def _form(request: web.Request) -> MultiDictProxy[Any]:
    return await request.post()


async def attempt(session: Session, operation: Awaitable[Any], done: str) -> bool:
    """Run one Admin operation for a form; flash its outcome."""
    admin_error = admin_error_type()
    try:
        await operation
    except (admin_error, names.BadName, ApiError) as exc:
        err = exc if isinstance(exc, ApiError) else from_admin_error(exc)
        session.flash.append(("error", err.message))
        return False
    if done:
        session.flash.append(("ok", done))
    return True


def _domain(request: web.Request) -> str:
    try:
        return names.domain_name(request.match_info["domain"])
    except names.BadName as exc:
        raise ApiError("bad_name", str(exc)) from None


def _account(request: web.Request) -> str:
    try:
        return names.account_name(request.match_info["account"])
    except names.BadName as exc:
        raise ApiError("bad_name", str(exc)) from None


async def _load(call: Awaitable[Any]) -> Any:
    """An Admin read for a page; errors become an error page."""
    admin_error = admin_error_type()
    try:
        return await call
    except admin_error as exc:
        raise from_admin_error(exc) from None


def parse_settings_form(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """Rows ``key.N``/``value.N`` → an update dictionary.  An emptied value
    means ``default`` (remove the key); values that look like JSON lists or
    objects are decoded."""
    update: dict[str, Any] = {}
    for key_field in form:
        if not key_field.startswith("key."):
            continue
        row = key_field[4:]
        key = _field(form, key_field).strip()
        if not key:
            continue
        raw = _field(form, f"value.{row}").strip()
        original = _field(form, f"orig.{row}")
        if raw == original and f"orig.{row}" in form:
            continue  # unchanged
        value: Any = raw
        if not raw:
            value = "default"
        elif raw[0] in "[{":
            try:
                value = parse_json(raw)
            except ApiError:
                value = raw
        update[key] = value
    return update


def settings_rows(own: dict[str, Any], effective: dict[str, Any] | None) -> list[dict[str, Any]]:
    keys = sorted(set(own) | set(effective or {}), key=str.lower)
    return [
        {
            "key": k,
            "own": k in own,
            "value": _value_text(own[k]) if k in own else "",
            "inherited": _value_text((effective or {}).get(k, "")) if k not in own else "",
        }
        for k in keys
    ]


# ---- login ----------------------------------------------------------------------------


async def root(request: web.Request) -> web.StreamResponse:
    raise _redirect("/admin/domains")


async def login_page(request: web.Request) -> web.StreamResponse:
    token = new_token()
    response = render(
        request, "login.html", None, login_csrf=token, next=_safe_next(request.query.get("next")), error=""
    )
    _cookie(response, request, LOGIN_COOKIE, token, 600)
    return response


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    if not same(_field(form, "csrf"), request.cookies.get(LOGIN_COOKIE)) or not same_origin(request):
        raise ApiError("csrf", "The login form has expired. Reload the page and try again.")
    target = _safe_next(_field(form, "next"))
    try:
        ref = await check_password(request.app[CTX], _field(form, "user").strip(), _field(form, "password"), request)
    except ApiError as exc:
        token = new_token()
        response = render(request, "login.html", None, status=401, login_csrf=token, next=target,
                          error=exc.message, username=_field(form, "user")[:320])
        _cookie(response, request, LOGIN_COOKIE, token, 600)
        return response
    session = request.app[SESSIONS].create(ref, await binding_of(request.app[CTX], ref))
    response = web.HTTPSeeOther(target)
    _cookie(response, request, COOKIE, session.token, None)
    response.del_cookie(LOGIN_COOKIE, path="/")
    raise response


@page
async def logout(request: web.Request, session: Session) -> web.StreamResponse:
    request.app[SESSIONS].drop(session.token)
    response = web.HTTPSeeOther("/admin/login")
    response.del_cookie(COOKIE, path="/")
    raise response


# ---- domains --------------------------------------------------------------------------


@page
async def domains_page(request: web.Request, session: Session) -> web.StreamResponse:
    admin = request.app[CTX].admin
    admin_error = admin_error_type()
    try:
        domains = await views.domains(request.app[CTX], session.ref)
    except admin_error as exc:
        if getattr(exc, "code", "") == "forbidden":  # a domain administrator: straight to the domain
            raise _redirect(f"/admin/domains/{quote(session.ref.domain)}/accounts") from None
        raise from_admin_error(exc) from None
    main = await _load(admin.main_domain_name(session.ref))
    return render(request, "domains.html", session, domains=domains, main_domain=main)


@page
async def domains_create(request: web.Request, session: Session) -> web.StreamResponse:
    form = await _form(request)
    try:
        name = names.domain_name(_field(form, "name").strip())
    except names.BadName as exc:
        session.flash.append(("error", str(exc)))
        raise _redirect("/admin/domains") from None
    shared = _field(form, "shared") == "yes"
    ok = await attempt(
        session,
        request.app[CTX].admin.create_domain(session.ref, name, shared=shared, settings={}),
        f"{'Shared domain' if shared else 'Domain'} {name} created.",
    )
    if ok:
        raise _redirect(f"/admin/domains/{quote(name)}")
    raise _redirect("/admin/domains")


@page
async def domain_page(request: web.Request, session: Session) -> web.StreamResponse:
    admin = request.app[CTX].admin
    domain = _domain(request)
    info = await _load(views.domain(request.app[CTX], session.ref, domain))
    own = await _load(admin.get_domain_settings(session.ref, domain))
    effective = await _load(admin.get_domain_effective_settings(session.ref, domain))
    defaults = await _load(admin.get_account_defaults(session.ref, domain))
    alerts = views.alerts_json(await _load(admin.get_alerts(session.ref, ("domain", domain))))
    dkim = await _load(admin.get_dkim_keys(session.ref, domain))
    return render(
        request, "domain.html", session, domain=domain, info=info,
        settings=settings_rows(own, effective), defaults=settings_rows(defaults, None),
        alerts=alerts, new_rows=range(NEW_SETTING_ROWS), dkim=dkim,
    )


@page
async def domain_dkim_submit(request: web.Request, session: Session) -> web.StreamResponse:
    """Create a DKIM key (algorithm, optional selector) or rotate the active ones."""
    domain = _domain(request)
    form = await _form(request)
    admin = request.app[CTX].admin
    if _field(form, "action") == "rotate":
        await attempt(session, admin.rotate_dkim_keys(session.ref, domain),
                      "New DKIM keys made; publish their records below.")
    else:
        algorithm = _field(form, "algorithm") or "rsa"
        selector = _field(form, "selector") or None
        await attempt(session, admin.create_dkim_key(session.ref, domain, algorithm, selector),
                      "DKIM key made; publish its record below.")
    raise _redirect(f"/admin/domains/{quote(domain)}")


@page
async def domain_settings_submit(request: web.Request, session: Session) -> web.StreamResponse:
    domain = _domain(request)
    form = await _form(request)
    update = parse_settings_form(form)
    admin = request.app[CTX].admin
    if _field(form, "kind") == "account-defaults":
        await attempt(session, admin.update_account_defaults(session.ref, domain, update), "Default account settings saved.")
    else:
        await attempt(session, admin.update_domain_settings(session.ref, domain, update), "Domain settings saved.")
    raise _redirect(f"/admin/domains/{quote(domain)}")


@page
async def domain_delete(request: web.Request, session: Session) -> web.StreamResponse:
    domain = _domain(request)
    form = await _form(request)
    force = _field(form, "force") == "yes"
    if await attempt(session, request.app[CTX].admin.delete_domain(session.ref, domain, force=force), f"Domain {domain} deleted."):
        raise _redirect("/admin/domains")
    raise _redirect(f"/admin/domains/{quote(domain)}")


# ---- accounts -------------------------------------------------------------------------


@page
async def accounts_page(request: web.Request, session: Session) -> web.StreamResponse:
    domain = _domain(request)
    search = request.query.get("q", "").strip().lower()[:64]
    raw_page = request.query.get("page", "1")
    number = int(raw_page) if raw_page.isascii() and raw_page.isdigit() and len(raw_page) < 9 else 1
    number = max(number, 1)
    accounts, total = await _load(views.accounts_page(
        request.app[CTX], session.ref, domain, prefix=search, offset=(number - 1) * WEB_PAGE, limit=WEB_PAGE
    ))
    pages = max(1, math.ceil(total / WEB_PAGE))
    info = await _load(views.domain(request.app[CTX], session.ref, domain))
    return render(
        request, "accounts.html", session, domain=domain, info=info, accounts=accounts, total=total,
        page=number, pages=pages, search=search, per_page=WEB_PAGE,
    )


@page
async def accounts_create(request: web.Request, session: Session) -> web.StreamResponse:
    domain = _domain(request)
    form = await _form(request)
    try:
        name = names.account_name(_field(form, "name").strip())
    except names.BadName as exc:
        session.flash.append(("error", str(exc)))
        raise _redirect(f"/admin/domains/{quote(domain)}/accounts") from None
    password = _field(form, "password") or None
    settings: dict[str, Any] = {}
    real_name = _field(form, "real_name").strip()
    if real_name:
        settings["RealName"] = real_name
    address = f"{name}@{domain}"
    if await attempt(session, request.app[CTX].admin.create_account(session.ref, address, settings=settings, password=password),
                     f"Account {address} created."):
        raise _redirect(f"/admin/domains/{quote(domain)}/accounts/{quote(name)}")
    raise _redirect(f"/admin/domains/{quote(domain)}/accounts")


@page
async def account_page(request: web.Request, session: Session) -> web.StreamResponse:
    admin = request.app[CTX].admin
    domain, name = _domain(request), _account(request)
    address = f"{name}@{domain}"
    own = await _load(admin.get_account_settings(session.ref, address))
    effective = await _load(admin.get_account_effective_settings(session.ref, address))
    alerts = views.alerts_json(await _load(admin.get_alerts(session.ref, ("account", address))))
    rights = await _load(admin.get_account_rights(session.ref, address))
    main = await _load(admin.main_domain_name(session.ref))
    mailboxes: list[dict[str, Any]] | None = None
    mailbox_note = ""
    try:
        mailboxes = [views.mailbox_json(m) for m in await admin.list_mailboxes(session.ref, address)]
    except admin_error_type() as exc:
        mailbox_note = from_admin_error(exc).message
    offered = list(SERVER_RIGHTS) if domain == main else []
    offered.append(model.DOMAIN_ADMIN)
    scripts, scripts_note = await scripts_of(admin, session.ref, address)
    return render(
        request, "account.html", session, domain=domain, name=name, address=address,
        settings=settings_rows(own, effective), alerts=alerts, rights=rights, offered_rights=offered,
        mailboxes=mailboxes, mailbox_note=mailbox_note, new_rows=range(NEW_SETTING_ROWS),
        scripts=scripts, scripts_note=scripts_note,
    )


async def scripts_of(admin: Any, actor: Any, address: str) -> tuple[list[dict[str, Any]] | None, str]:
    """The Sieve scripts with their text for the account page, or (None, why not)."""
    try:
        listing: list[dict[str, Any]] = await admin.list_sieve_scripts(actor, address)
        for script in listing:
            script["text"] = await admin.get_sieve_script(actor, address, script["name"])
    except admin_error_type() as exc:
        return None, from_admin_error(exc).message
    return listing, ""


ACCOUNT_PATH = "/admin/domains/{domain}/accounts/{account}"


def _account_url(domain: str, name: str) -> str:
    return f"/admin/domains/{quote(domain)}/accounts/{quote(name)}"


@page
async def account_settings_submit(request: web.Request, session: Session) -> web.StreamResponse:
    domain, name = _domain(request), _account(request)
    update = parse_settings_form(await _form(request))
    await attempt(session, request.app[CTX].admin.update_account_settings(session.ref, f"{name}@{domain}", update),
                  "Account settings saved.")
    raise _redirect(_account_url(domain, name))


@page
async def account_rights_submit(request: web.Request, session: Session) -> web.StreamResponse:
    domain, name = _domain(request), _account(request)
    wanted = [r for r in (await _form(request)).getall("right", []) if isinstance(r, str)]
    await attempt(session, request.app[CTX].admin.set_account_rights(session.ref, f"{name}@{domain}", wanted),
                  "Rights saved.")
    raise _redirect(_account_url(domain, name))


@page
async def mailbox_create_submit(request: web.Request, session: Session) -> web.StreamResponse:
    domain, name = _domain(request), _account(request)
    mailbox = _field(await _form(request), "name").strip()
    await attempt(session, request.app[CTX].admin.create_mailbox(session.ref, f"{name}@{domain}", mailbox),
                  f"Mailbox {mailbox} created.")
    raise _redirect(_account_url(domain, name))


@page
async def mailbox_delete_submit(request: web.Request, session: Session) -> web.StreamResponse:
    domain, name = _domain(request), _account(request)
    mailbox = _field(await _form(request), "name")
    await attempt(session, request.app[CTX].admin.delete_mailbox(session.ref, f"{name}@{domain}", mailbox),
                  f"Mailbox {mailbox} deleted.")
    raise _redirect(_account_url(domain, name))


@page
async def account_password_submit(request: web.Request, session: Session) -> web.StreamResponse:
    domain, name = _domain(request), _account(request)
    form = await _form(request)
    password, again = _field(form, "password"), _field(form, "again")
    if not password or password != again:
        session.flash.append(("error", "The two passwords are empty or differ."))
    else:
        await attempt(session, request.app[CTX].admin.set_account_password(session.ref, f"{name}@{domain}", password),
                      "Password changed.")
    raise _redirect(_account_url(domain, name))


@page
async def account_rename_submit(request: web.Request, session: Session) -> web.StreamResponse:
    domain, name = _domain(request), _account(request)
    new = _field(await _form(request), "new_name").strip()
    new_address = new if "@" in new else f"{new}@{domain}"
    if await attempt(session, request.app[CTX].admin.rename_account(session.ref, f"{name}@{domain}", new_address),
                     f"Account renamed to {new_address}."):
        request.app[SESSIONS].drop_account_address(f"{name}@{domain}")
        new_name, _, new_domain = new_address.partition("@")
        raise _redirect(_account_url(names.domain_name(new_domain), names.account_name(new_name)))
    raise _redirect(_account_url(domain, name))


@page
async def account_delete_submit(request: web.Request, session: Session) -> web.StreamResponse:
    domain, name = _domain(request), _account(request)
    address = f"{name}@{domain}"
    if await attempt(session, request.app[CTX].admin.delete_account(session.ref, address), f"Account {address} deleted."):
        request.app[SESSIONS].drop_account_address(address)
        raise _redirect(f"/admin/domains/{quote(domain)}/accounts")
    raise _redirect(_account_url(domain, name))


# ---- alerts (every scope) -------------------------------------------------------------


def _alert_target(request: web.Request) -> tuple[Any, str]:
    """(Admin alert scope, page to return to) for an alert form."""
    if "account" in request.match_info:
        domain, name = _domain(request), _account(request)
        return ("account", f"{name}@{domain}"), _account_url(domain, name)
    if "domain" in request.match_info:
        domain = _domain(request)
        return ("domain", domain), f"/admin/domains/{quote(domain)}"
    scope = request.match_info.get("scope", "server")
    if scope not in ("server", "cluster"):
        raise ApiError("not_found", "no such alert scope")
    return scope, f"/admin/alerts?scope={scope}"


@page
async def alert_post(request: web.Request, session: Session) -> web.StreamResponse:
    where, back = _alert_target(request)
    text = _field(await _form(request), "text").strip()
    if not text:
        session.flash.append(("error", "The alert text is empty."))
    else:
        await attempt(session, request.app[CTX].admin.post_alert(session.ref, where, text), "Alert posted.")
    raise _redirect(back)


@page
async def alert_remove(request: web.Request, session: Session) -> web.StreamResponse:
    where, back = _alert_target(request)
    stamp = _field(await _form(request), "stamp")
    await attempt(session, request.app[CTX].admin.remove_alert(session.ref, where, stamp), "Alert removed.")
    raise _redirect(back)


@page
async def alerts_seen_submit(request: web.Request, session: Session) -> web.StreamResponse:
    form = await _form(request)
    await attempt(session, request.app[CTX].admin.mark_alerts_seen(session.ref, _field(form, "upto")), "")
    raise _redirect(_safe_next(_field(form, "next")))


@page
async def alerts_page(request: web.Request, session: Session) -> web.StreamResponse:
    scope = request.query.get("scope", "server")
    if scope not in ("server", "cluster"):
        scope = "server"
    alerts = views.alerts_json(await _load(request.app[CTX].admin.get_alerts(session.ref, scope)))
    return render(request, "alerts.html", session, scope=scope, alerts=alerts)


# ---- server-wide / cluster-wide settings ---------------------------------------------

_SETTINGS_KINDS = {
    # kind → (title, Admin stem for server scope, Admin stem for cluster scope, built-in values)
    "account": ("Default Account Settings", "server_account_defaults", "cluster_account_defaults",
                model.BUILTIN_ACCOUNT_SETTINGS),
    "domain": ("Default Domain Settings", "server_domain_defaults", "cluster_domain_defaults",
               model.BUILTIN_DOMAIN_SETTINGS),
    "prefs": ("Default WebUser Preferences", "server_account_prefs", "cluster_account_prefs",
              model.BUILTIN_ACCOUNT_PREFS),
}


@page
async def settings_page(request: web.Request, session: Session) -> web.StreamResponse:
    scope = request.query.get("scope", "server")
    if scope not in ("server", "cluster"):
        scope = "server"
    admin = request.app[CTX].admin
    sections = []
    for kind, (title, server_stem, cluster_stem, builtin) in _SETTINGS_KINDS.items():
        stem = server_stem if scope == "server" else cluster_stem
        method = getattr(admin, f"get_{stem}", None)
        if method is None:
            continue
        values = await _load(method(session.ref))
        sections.append({"kind": kind, "title": title, "rows": settings_rows(values, builtin)})
    return render(request, "settings.html", session, scope=scope, sections=sections, new_rows=range(NEW_SETTING_ROWS))


@page
async def settings_submit(request: web.Request, session: Session) -> web.StreamResponse:
    form = await _form(request)
    scope = _field(form, "scope")
    kind = _field(form, "kind")
    if scope not in ("server", "cluster") or kind not in _SETTINGS_KINDS:
        raise ApiError("bad_request", "unknown settings")
    _, server_stem, cluster_stem, _ = _SETTINGS_KINDS[kind]
    stem = server_stem if scope == "server" else cluster_stem
    update = parse_settings_form(form)
    await attempt(session, getattr(request.app[CTX].admin, f"update_{stem}")(session.ref, update), "Settings saved.")
    raise _redirect(f"/admin/settings?scope={scope}")


# ---- monitors -------------------------------------------------------------------------


@page
async def monitors_page(request: web.Request, session: Session) -> web.StreamResponse:
    counters = await _load(views.monitors(request.app[CTX], session.ref))
    return render(request, "monitors.html", session, counters=counters)


@page
async def cluster_page(request: web.Request, session: Session) -> web.StreamResponse:
    status = await _load(views.cluster_status(request.app[CTX], session.ref))
    return render(request, "cluster.html", session, cluster=status)


@page
async def cluster_ready_submit(request: web.Request, session: Session) -> web.StreamResponse:
    member = request.match_info["member"]
    ready = request.match_info["state"] == "ready"
    await attempt(session, request.app[CTX].admin.set_ready(session.ref, member, ready),
                  f"{member} is now {'Ready' if ready else 'Non-Ready'}.")
    raise _redirect("/admin/monitors/cluster")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/", root)
    r.add_get("/admin", root)
    r.add_get("/admin/", root)
    r.add_get("/admin/login", login_page)
    r.add_post("/admin/login", login_submit)
    r.add_post("/admin/logout", logout)
    r.add_get("/admin/domains", domains_page)
    r.add_post("/admin/domains", domains_create)
    d = "/admin/domains/{domain}"
    r.add_get(d, domain_page)
    r.add_post(d + "/settings", domain_settings_submit)
    r.add_post(d + "/delete", domain_delete)
    r.add_post(d + "/dkim", domain_dkim_submit)
    r.add_post(d + "/alerts", alert_post)
    r.add_post(d + "/alerts/remove", alert_remove)
    r.add_get(d + "/accounts", accounts_page)
    r.add_post(d + "/accounts", accounts_create)
    a = d + "/accounts/{account}"
    r.add_get(a, account_page)
    r.add_post(a + "/settings", account_settings_submit)
    r.add_post(a + "/password", account_password_submit)
    r.add_post(a + "/rights", account_rights_submit)
    r.add_post(a + "/mailboxes", mailbox_create_submit)
    r.add_post(a + "/mailboxes/delete", mailbox_delete_submit)
    r.add_post(a + "/rename", account_rename_submit)
    r.add_post(a + "/delete", account_delete_submit)
    r.add_post(a + "/alerts", alert_post)
    r.add_post(a + "/alerts/remove", alert_remove)
    r.add_get("/admin/settings", settings_page)
    r.add_post("/admin/settings", settings_submit)
    r.add_get("/admin/alerts", alerts_page)
    r.add_post("/admin/alerts/seen", alerts_seen_submit)
    r.add_post("/admin/alerts/{scope}", alert_post)
    r.add_post("/admin/alerts/{scope}/remove", alert_remove)
    r.add_get("/admin/monitors", monitors_page)
    r.add_get("/admin/monitors/cluster", cluster_page)
    r.add_post("/admin/monitors/cluster/{member}/{state:ready|nonready}", cluster_ready_submit)
    r.add_static("/static/", HERE / "static", append_version=False)

