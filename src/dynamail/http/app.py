"""The HTTP admin port: JSON API, WebAdmin pages, /metrics and /health.

``build_app(ctx)`` assembles one aiohttp application; ``start(ctx)`` serves
it on the configured HTTP port (8010 + offset) and, when the server has a
TLS context, on the HTTPS port (9010 + offset), both on the listen address.
Requests are bounded (``client_max_size``); every failure is a JSON error
with a stable code (the WebAdmin pages under ``/admin`` show an HTML error
page instead), including requests aiohttp itself refuses as malformed, and
no reply echoes the request or names the HTTP library; every response
carries headers that keep pages out of frames and scripts out of other
origins.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web, web_protocol

from dynamail import __version__
from dynamail.http import webadmin, webadmin_sieve
from dynamail.http.api import ANONYMOUS, api
from dynamail.http.errors import ApiError, error_body, error_response
from dynamail.http.identity import identify
from dynamail.http.keys import CTX, LIFECYCLE, SESSIONS, Lifecycle
from dynamail.http.limits import MAX_BODY
from dynamail.http.openapi import build_document
from dynamail.http.routes import Call, Route, check_path, check_query, read_json, run_handler
from dynamail.http.sessions import SessionStore, cluster_key
from dynamail.server.context import ServerContext

log = logging.getLogger(__name__)

HTTP_PORT = 8010
HTTPS_PORT = 9010

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on
    # form posts (Fetch standard), which the same-site check must refuse
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _is_page(request: web.Request) -> bool:
    """A WebAdmin page: its errors are HTML pages, everything else's JSON."""
    return request.path == "/admin" or request.path.startswith("/admin/")


_CODE_OF_STATUS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    503: "unavailable",
}
_MESSAGE_OF_STATUS = {
    400: "bad request", 404: "no such route", 405: "method not allowed",
    413: f"the request body is larger than {MAX_BODY} bytes",
    431: "request header fields too large", 500: "internal error", 504: "request timed out",
}


def status_error(status: int) -> web.Response:
    """A JSON error for an HTTP status, with a fixed message (never any part
    of the request)."""
    code = _CODE_OF_STATUS.get(status, "internal" if status >= 500 else "bad_request")
    message = _MESSAGE_OF_STATUS.get(status) or ("internal error" if status >= 500 else "bad request")
    response = web.Response(status=status, text=json.dumps(error_body(code, message)), content_type="application/json")
    response.headers["Server"] = "dynamail"
    return response


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ApiError as exc:
        headers = {"WWW-Authenticate": 'Basic realm="dynamail", charset="UTF-8"'} if exc.code == "unauthorized" else None
        if _is_api(request):
            response = error_response(exc.code, exc.message, headers)
        else:
            response = webadmin.error_page(request, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            exc.headers["Server"] = "dynamail"
            raise
        if _is_page(request):
            response = webadmin.error_page(request, exc.status, _MESSAGE_OF_STATUS.get(exc.status, "error"))
        else:
            response = status_error(exc.status)
            if exc.status == 405 and "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
    except Exception:
        log.exception("HTTP %s %s failed", request.method, request.path)
        if _is_page(request):
            response = webadmin.error_page(request, 500, "internal error")
        else:
            response = error_response("internal", "internal error")
    for key, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    response.headers["Server"] = "dynamail"
    if _is_api(request) or request.path.startswith("/admin"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _api_handler(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = request.app[CTX]
        actor = ANONYMOUS
        if route.auth:
            actor = (await identify(request, ctx, request.app[SESSIONS])).ref
        path = check_path(dict(request.match_info))
        query = check_query(route, request)
        body: dict[str, Any] = {}
        if route.body is not None:
            data = await read_json(request)
            if data is None:
                raise ApiError("bad_request", "a JSON body is required")
            body = route.body.check(data)
        call = Call(ctx=ctx, actor=actor, path=path, query=query, body=body, request=request)
        ctx.metrics.commands.labels(protocol="http", command=route.operation_id).inc()
        if request.method == "GET":
            return await run_handler(route, call)
        try:
            response = await run_handler(route, call)
        except ApiError as exc:
            log.info("http %s %s %s by %s from %s: %s", route.operation_id, request.method, request.path,
                     actor.address if actor.name else "-", request.remote, exc.code)
            raise
        log.info("http %s %s %s by %s from %s: %d", route.operation_id, request.method, request.path,
                 actor.address if actor.name else "-", request.remote, response.status)
        return response

    handle.__name__ = route.operation_id
    return handle


def member_ready(ctx: ServerContext) -> bool:
    cluster = ctx.cluster
    if cluster is None:
        return True
    ready = getattr(cluster, "ready", True)
    return bool(ready() if callable(ready) else ready)


async def health(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    stopping = request.app[LIFECYCLE].stopping or bool(ctx.extras.get("stopping"))
    ready = member_ready(ctx)
    status = "stopping" if stopping else ("ok" if ready else "nonready")
    body = {
        "status": status,
        "ready": ready,
        "member": str(getattr(ctx.cluster, "name", None) or ctx.hostname),
        "version": __version__,
    }
    return web.Response(
        status=200 if status == "ok" else 503, text=json.dumps(body), content_type="application/json"
    )


def refresh_gauges(ctx: ServerContext) -> None:
    """Set the gauges that describe state (open accounts, cluster role and
    ready state) from the services just before they are scraped."""
    m = ctx.metrics
    if ctx.accounts is not None:
        m.open_accounts.set(len(ctx.accounts.open_accounts()))
    m.cluster_ready.set(1 if member_ready(ctx) else 0)
    cluster = ctx.cluster
    roles = {"standalone": cluster is None, "backend": False, "frontend": False,
             "controller": False, "backup": False}
    if cluster is not None:
        role = str(getattr(cluster, "role", "") or "backend").lower()
        roles["frontend" if role == "frontend" else "backend"] = True
        is_controller = getattr(cluster, "is_controller", None)
        roles["controller"] = bool(is_controller()) if callable(is_controller) else False
        name = getattr(cluster, "name", None)
        roles["backup"] = bool(name) and getattr(cluster, "backup_name", None) == name
    for role_name, on in roles.items():
        m.cluster_role.labels(role=role_name).set(1 if on else 0)


async def metrics(request: web.Request) -> web.Response:
    refresh_gauges(request.app[CTX])
    data = request.app[CTX].metrics.render()
    return web.Response(body=data, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


_FAVICON = Path(__file__).parent / "static" / "favicon.ico"


async def favicon(request: web.Request) -> web.Response:
    return web.Response(body=_FAVICON.read_bytes(), content_type="image/x-icon",
                        headers={"Cache-Control": "max-age=86400"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(build_document(api), indent=1), content_type="application/json")


def session_key(ctx: ServerContext) -> bytes | None:
    """Cluster members share a session key derived from the cluster secret
    (a token from one member works on all); None: a random key."""
    settings = getattr(ctx.cluster, "s", None) if ctx.cluster is not None else None
    secret = getattr(settings, "secret", None)
    return cluster_key(secret) if isinstance(secret, bytes) and secret else None


def build_app(ctx: ServerContext) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[error_middleware])
    app[CTX] = ctx
    app[SESSIONS] = SessionStore(session_key(ctx))
    app[LIFECYCLE] = Lifecycle()
    app.router.add_get("/health", health, allow_head=True)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/api/openapi.json", openapi)
    for route in api.routes:
        app.router.add_route(route.method, route.full_path, _api_handler(route), name=route.operation_id)
    webadmin.setup(app)
    webadmin_sieve.setup(app)
    return app


def _port(ctx: ServerContext, name: str, standard: int) -> int:
    cfg: Any = ctx.config
    port_of = getattr(cfg, "port", None)
    if callable(port_of):
        return int(port_of(name))
    ports = getattr(cfg, "ports", None)
    if isinstance(ports, dict) and name in ports:
        return int(ports[name])
    return standard + int(getattr(cfg, "port_offset", 0) or 0)


def _listen(ctx: ServerContext) -> str:
    return str(getattr(ctx.config, "listen", None) or "127.0.0.1")


@dataclass
class HttpServer:
    """The running HTTP admin port(s); ``close()`` stops them."""

    app: web.Application
    runner: web.AppRunner
    addresses: list[tuple[str, str, int]] = field(default_factory=list)  # (scheme, host, port)

    def url(self, scheme: str = "http") -> str:
        for s, host, port in self.addresses:
            if s == scheme:
                return f"{s}://{host}:{port}"
        raise LookupError(scheme)

    async def close(self) -> None:
        self.app[LIFECYCLE].stopping = True
        await self.runner.cleanup()


class _RequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, but a request it cannot parse (or a
    failure outside the application) gets our JSON error: aiohttp's own
    reply quotes the malformed request and names its version.  Each
    connection counts as one session of the ``http`` or ``https`` listener
    (``metrics`` is set on the subclass :func:`_counting_server` makes)."""

    __slots__ = ("_counted",)
    metrics: Any = None

    def _listener(self, transport: Any) -> str:
        return "https" if transport.get_extra_info("sslcontext") is not None else "http"

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._counted: str | None = None
        if self.metrics is not None:
            name = self._listener(transport)
            self.metrics.sessions_total.labels(protocol=name).inc()
            self.metrics.sessions.labels(protocol=name).inc()
            self._counted = name

    def connection_lost(self, exc: BaseException | None) -> None:
        name = self._counted
        super().connection_lost(exc)
        if name is not None and self.metrics is not None:
            self.metrics.sessions.labels(protocol=name).dec()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if a reply was begun
        response = status_error(status)
        response.force_close()
        return response


class _Server(web.Server):
    handler_class: type[_RequestHandler] = _RequestHandler

    def __call__(self) -> web_protocol.RequestHandler:
        return self.handler_class(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        metrics = self.app[CTX].metrics
        handler = type("_CountingRequestHandler", (_RequestHandler,), {"__slots__": (), "metrics": metrics})
        server.__class__ = type("_CountingServer", (_Server,), {"handler_class": handler})
        return server


async def start(ctx: ServerContext) -> HttpServer:
    app = build_app(ctx)
    runner = _Runner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    server = HttpServer(app=app, runner=runner)
    host = _listen(ctx)
    try:
        plans: list[tuple[str, int, Any]] = [("http", _port(ctx, "http", HTTP_PORT), None)]
        if ctx.tls is not None:
            plans.append(("https", _port(ctx, "https", HTTPS_PORT), ctx.tls))
        for scheme, port, tls in plans:
            # the workers of one server share its ports (SO_REUSEPORT)
            worker = getattr(ctx.config, "worker", None) is not None
            site = web.TCPSite(runner, host, port, ssl_context=tls, reuse_address=True,
                               reuse_port=worker or None)
            await site.start()
            known = len(server.addresses)
            bound = int(runner.addresses[known][1]) if len(runner.addresses) > known else port
            server.addresses.append((scheme, host, bound))
    except BaseException:
        await runner.cleanup()
        raise
    return server
