"""The JSON API's route table: one entry per operation, used three ways.

Each :class:`Route` names its method, path, summary, the path parameters it
validates, its query parameters and its body schema.  The same table builds
the aiohttp routes (with authentication, validation and error translation
wrapped around the handler) and the OpenAPI document, so the two cannot
drift apart; a test checks that the application serves exactly what the
document describes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dynamail import names
from dynamail.accounts import AccountRef
from dynamail.http.errors import ApiError, from_admin_error
from dynamail.http.limits import MAX_BODY
from dynamail.http.schema import Body
from dynamail.server.context import ServerContext

API_PREFIX = "/api/v1"


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    kind: str  # "string" | "integer" | "boolean"
    description: str = ""
    default: Any = None
    minimum: int = 0
    maximum: int | None = None


@dataclass
class Call:
    """What a handler is given: the server, the acting account, validated
    path parameters, query parameters and body."""

    ctx: ServerContext
    actor: AccountRef
    path: dict[str, str]
    query: dict[str, Any]
    body: dict[str, Any]
    request: web.Request

    @property
    def admin(self) -> Any:
        return self.ctx.admin

    @property
    def domain(self) -> str:
        return self.path["domain"]

    @property
    def account(self) -> str:
        """The account named by the path, as ``name@domain``."""
        return f"{self.path['account']}@{self.path['domain']}"


Handler = Callable[[Call], Awaitable[Any]]


@dataclass
class Route:
    method: str
    path: str  # relative to API_PREFIX, aiohttp syntax ({name} or {name:regex})
    handler: Handler
    summary: str
    tag: str
    body: Body | None = None
    query: tuple[Query, ...] = ()
    status: int = 200  # 201 for creations, 204 when nothing is returned
    auth: bool = True
    result: str = "object"  # a components/schemas name or a JSON type, for the document

    @property
    def full_path(self) -> str:
        return API_PREFIX + self.path

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


@dataclass
class Registry:
    routes: list[Route] = field(default_factory=list)

    def add(self, method: str, path: str, summary: str, tag: str, **kw: Any) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            self.routes.append(Route(method, path, handler, summary, tag, **kw))
            return handler

        return decorate


# ---- path parameters ---------------------------------------------------------

PATH_CHECKS: dict[str, Callable[[str], str]] = {
    "domain": names.domain_name,
    "account": names.account_name,
    "mailbox": names.mailbox_name,
}

_MAX_PLAIN_PARAM = 200


def check_path(params: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        check = PATH_CHECKS.get(key)
        try:
            if check is not None:
                out[key] = check(value)
                continue
        except names.BadName as exc:
            raise ApiError("bad_name", str(exc)) from None
        if not value or len(value) > _MAX_PLAIN_PARAM or any(ord(c) < 32 or c in "/\\" for c in value):
            raise ApiError("bad_name", f"invalid {key}")
        out[key] = value
    return out


def check_query(route: Route, request: web.Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    known = {q.name for q in route.query}
    for key in request.query:
        if key not in known:
            raise ApiError("bad_request", f"unknown query parameter {key!r}")
    for q in route.query:
        raw = request.query.get(q.name)
        if raw is None:
            out[q.name] = q.default
            continue
        if q.kind == "integer":
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
                raise ApiError("bad_request", f"{q.name} must be a non-negative integer")
            value = int(raw)
            if value < q.minimum or (q.maximum is not None and value > q.maximum):
                raise ApiError("bad_request", f"{q.name} is out of range")
            out[q.name] = value
        elif q.kind == "boolean":
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ApiError("bad_request", f"{q.name} must be true or false")
            out[q.name] = raw.lower() in ("true", "1", "yes")
        else:
            if len(raw) > 256 or any(ord(c) < 32 for c in raw):
                raise ApiError("bad_request", f"invalid {q.name}")
            out[q.name] = raw
    return out


async def read_json(request: web.Request) -> Any:
    """The request's JSON body, bounded by MAX_BODY; None when empty."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise ApiError("too_large", f"the request body is larger than {MAX_BODY} bytes")
    if not request.can_read_body:
        return None
    ctype = request.content_type
    if ctype not in ("application/json", "application/octet-stream", ""):
        raise ApiError("unsupported_media_type", "send the body as application/json")
    try:
        raw = await request.read()  # bounded by the application's client_max_size (MAX_BODY)
    except web.HTTPRequestEntityTooLarge:
        raise ApiError("too_large", f"the request body is larger than {MAX_BODY} bytes") from None
    if len(raw) > MAX_BODY:
        raise ApiError("too_large", f"the request body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        return None
    return parse_json(raw)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_strings(value: Any) -> None:
    """Every string (keys too) is valid Unicode: no lone surrogate, which
    ``json`` accepts as ``\\ud800`` but nothing downstream can encode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # UnicodeEncodeError on a lone surrogate
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def parse_json(raw: bytes | str) -> Any:
    """Strict JSON (RFC 8259): :class:`ApiError` ``bad_json`` (400) for a
    syntax error, a duplicate object key (RFC 8259 4: names SHOULD be unique;
    "last one wins" would let two readers see different values), a lone
    surrogate (RFC 8259 8.2) or NaN/Infinity."""
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_bad_constant)
        _check_strings(value)
    except _DuplicateKey as exc:
        raise ApiError("bad_json", f"duplicate key {str(exc)[:64]!r} in the request body") from None
    except UnicodeError:
        raise ApiError("bad_json", "the request body holds a string that is not valid Unicode") from None
    except (ValueError, RecursionError):
        raise ApiError("bad_json", "the request body is not valid JSON") from None
    return value


def json_response(data: Any, status: int = 200) -> web.Response:
    if status == 204:
        return web.Response(status=204)
    return web.Response(
        status=status, text=json.dumps(data, default=_jsonable), content_type="application/json"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, AccountRef):
        return value.address
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return str(value)


def admin_error_type() -> type[Exception]:
    try:
        from dynamail.admin import AdminError
    except ImportError:  # pragma: no cover - the admin package is always there
        return ApiError
    return AdminError


async def run_handler(route: Route, call: Call) -> web.StreamResponse:
    admin_error = admin_error_type()
    try:
        result = await route.handler(call)
    except ApiError:
        raise
    except names.BadName as exc:
        raise ApiError("bad_name", str(exc)) from None
    except admin_error as exc:
        raise from_admin_error(exc) from None
    if isinstance(result, web.StreamResponse):  # a handler that streams (account archives)
        return result
    return json_response(result, route.status)
