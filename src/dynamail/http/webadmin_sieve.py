"""WebAdmin: an account's Sieve scripts on its page — view each script,
upload (checked by the delivery compiler), activate, deactivate, delete.

The handlers only translate forms into the Admin operations of
:mod:`dynamail.admin.scripts`; rights and the cluster routing are theirs.
"""

from __future__ import annotations

from aiohttp import web

from dynamail.http.keys import CTX
from dynamail.http.sessions import Session
from dynamail.http.webadmin import (
    ACCOUNT_PATH,
    _account,
    _account_url,
    _domain,
    _field,
    _form,
    _redirect,
    attempt,
    page,
)


@page
async def sieve_put_submit(request: web.Request, session: Session) -> web.StreamResponse:
    domain, name = _domain(request), _account(request)
    form = await _form(request)
    script, text = _field(form, "name").strip(), _field(form, "script").replace("\r\n", "\n")
    activate = _field(form, "activate") == "1"
    await attempt(session, request.app[CTX].admin.put_sieve_script(
        session.ref, f"{name}@{domain}", script, text, activate=activate), f"Script {script} saved.")
    raise _redirect(_account_url(domain, name))


@page
async def sieve_activate_submit(request: web.Request, session: Session) -> web.StreamResponse:
    domain, name = _domain(request), _account(request)
    script = _field(await _form(request), "name")
    done = f"Script {script} is active." if script else "No script is active."
    await attempt(session, request.app[CTX].admin.activate_sieve_script(session.ref, f"{name}@{domain}", script),
                  done)
    raise _redirect(_account_url(domain, name))


@page
async def sieve_delete_submit(request: web.Request, session: Session) -> web.StreamResponse:
    domain, name = _domain(request), _account(request)
    script = _field(await _form(request), "name")
    await attempt(session, request.app[CTX].admin.delete_sieve_script(session.ref, f"{name}@{domain}", script),
                  f"Script {script} deleted.")
    raise _redirect(_account_url(domain, name))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post(ACCOUNT_PATH + "/sieve", sieve_put_submit)
    r.add_post(ACCOUNT_PATH + "/sieve/activate", sieve_activate_submit)
    r.add_post(ACCOUNT_PATH + "/sieve/delete", sieve_delete_submit)
