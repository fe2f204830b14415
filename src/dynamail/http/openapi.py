"""The OpenAPI 3.1 document, built from the API's route table.

Served at ``/api/openapi.json``.  Because it is generated from the same
:class:`~dynamail.http.routes.Registry` that builds the application's routes,
every route is documented; a test checks the application against it.
"""

from __future__ import annotations

import re
from typing import Any

from dynamail import __version__
from dynamail.http.errors import STATUS
from dynamail.http.routes import Registry, Route

_PARAM = re.compile(r"\{([a-z_]+)(?::[^}]*)?\}")

PARAM_DOCS = {
    "domain": "domain name",
    "account": "account name (without the domain)",
    "mailbox": "mailbox name, / separated",
    "member": "cluster member name",
    "alert": "the alert's time stamp, as listed",
    "name": "forwarder name (without the domain)",
    "script": "Sieve script name",
}

# Routes outside /api/v1 (no authentication).
PLAIN_ROUTES: dict[str, dict[str, Any]] = {
    "/health": {
        "get": {
            "operationId": "health",
            "summary": "Health for load balancers: 200 when serving, 503 when Non-Ready or stopping",
            "tags": ["monitoring"],
            "security": [],
            "responses": {
                "200": {"description": "serving", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
                "503": {"description": "Non-Ready or shutting down", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "tags": ["monitoring"],
            "security": [],
            "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
        }
    },
    "/api/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["monitoring"],
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1 document", "content": {"application/json": {}}}},
        }
    },
}


def openapi_path(path: str) -> str:
    """aiohttp ``/a/{name:regex}`` → OpenAPI ``/a/{name}``."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


_RESULTS: dict[str, str] = {
    "list_domains": "DomainList",
    "create_domain": "Domain", "get_domain": "Domain", "patch_domain": "Domain", "put_domain": "Domain",
    "list_accounts": "AccountPage",
    "create_account": "Account", "get_account": "Account", "patch_account": "Account", "put_account": "Account",
    "rename_account": "Account",
    "get_cluster_status": "ClusterStatus",
    "create_session": "Token", "get_session": "Session",
    "list_mailboxes": "MailboxList",
    "get_monitors": "Monitors",
    "mark_alerts_seen": "AlertList",
}


def _result_schema(route: Route) -> dict[str, Any]:
    op = route.operation_id
    name = _RESULTS.get(op)
    if name is None:
        if op.endswith("_alerts") or (op.endswith("_alert") and op.startswith("post_")):
            name = "AlertList"
        elif any(w in op for w in ("settings", "defaults", "prefs")):
            name = "Settings"
    return {"$ref": f"#/components/schemas/{name}"} if name else {"type": "object"}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
    }
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "description": PARAM_DOCS.get(name, name),
         "schema": {"type": "string"}}
        for name in _PARAM.findall(route.path)
    ]
    for q in route.query:
        schema: dict[str, Any] = {"type": q.kind}
        if q.default is not None:
            schema["default"] = q.default
        if q.kind == "integer":
            schema["minimum"] = q.minimum
            if q.maximum is not None:
                schema["maximum"] = q.maximum
        params.append({"name": q.name, "in": "query", "required": False, "description": q.description,
                       "schema": schema})
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": route.body.json_schema()}},
        }
    responses: dict[str, Any] = {}
    if route.status == 204:
        responses["204"] = {"description": "done"}
    else:
        responses[str(route.status)] = {
            "description": "success",
            "content": {"application/json": {"schema": _result_schema(route)}},
        }
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    statuses = {400, 401, 403, 404, 409, 503} | ({413, 415} if route.body is not None else set())
    if not route.auth:
        op["security"] = []
        statuses -= {403, 404}
    for status in sorted(statuses):
        responses[str(status)] = {"description": _STATUS_TEXT[status], **err}
    op["responses"] = responses
    return op


_STATUS_TEXT = {
    400: "bad request, bad name or wrong types",
    401: "not authenticated",
    403: "the account lacks the right (or CSRF token missing)",
    404: "no such object",
    409: "already exists, or not in a cluster",
    413: "request body too large",
    415: "the body is not application/json",
    503: "temporarily unavailable",
}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_ALERT = _obj(["stamp", "time", "text"], stamp=_STR, time={"type": "string", "format": "date-time"}, text=_STR)
_DOMAIN = _obj(["name", "shared"], name=_STR, shared=_BOOL, main=_BOOL,
               accounts={"type": ["integer", "null"], "description": "null when the caller may not count them"},
               settings={"$ref": "#/components/schemas/Settings"})
_MEMBER = _obj(["name", "role", "ready", "load", "open_accounts", "version"], name=_STR,
               role={"type": "string", "description": "backend, frontend or standalone"}, ready=_BOOL,
               load={"type": ["integer", "null"]}, open_accounts={"type": ["integer", "null"]}, version=_STR,
               alive=_BOOL, sessions=_INT, host=_STR)
_SHAPES: dict[str, Any] = {
    "Domain": _DOMAIN,
    "DomainList": _obj(["domains"], domains={"type": "array", "items": _DOMAIN}),
    "Account": _obj(["address", "name", "domain", "settings"], address=_STR, name=_STR, domain=_STR,
                    settings={"$ref": "#/components/schemas/Settings"}),
    "AccountPage": _obj(["accounts", "total", "offset", "limit"], accounts={"type": "array", "items": _STR},
                        total=_INT, offset=_INT, limit=_INT),
    "Alert": _ALERT,
    "AlertList": _obj(["alerts"], alerts={"type": "array", "items": _ALERT}, posted=_ALERT),
    "ClusterStatus": _obj(["controller", "backup", "members"], controller=_STR, backup=_STR, clustered=_BOOL,
                          members={"type": "array", "items": _MEMBER}),
    "Token": _obj(["token", "account"], token=_STR, account=_STR, csrf=_STR),
    "Session": _obj(["account", "rights"], account=_STR, domain=_STR, rights={"type": "array", "items": _STR}),
    "MailboxList": _obj(["mailboxes"], mailboxes={"type": "array", "items": _obj(
        ["name"], name=_STR, special_use={"type": ["string", "null"]}, subscribed=_BOOL, has_children=_BOOL)}),
    "Monitors": _obj(["sessions", "deliveries", "queue_size"], sessions={
        "type": "object", "additionalProperties": _obj(["open", "total"], open=_INT, total=_INT)},
        deliveries=_INT, deliveries_failed=_INT, queue_size=_INT, open_accounts=_INT, version=_STR),
}


def build_document(registry: Registry) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in registry.routes:
        paths.setdefault(openapi_path(route.full_path), {})[route.method.lower()] = _operation(route)
    paths.update(PLAIN_ROUTES)
    tags = sorted({r.tag for r in registry.routes} | {"monitoring"})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dynamail admin API",
            "version": __version__,
            "description": (
                "Administration of a dynamail server or cluster: domains, accounts, settings, "
                "rights, alerts, mailboxes and cluster members. Every call checks the "
                "authenticated account's rights exactly as the admin CLI protocol does. "
                "Errors are {\"error\": {\"code\", \"message\"}} with stable codes: "
                + ", ".join(sorted(STATUS)) + "."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in tags],
        "security": [{"basic": []}, {"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic",
                          "description": "an account's address (or a plain login name) and password"},
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "a token from POST /api/v1/session"},
            },
            "schemas": {
                "Settings": {
                    "type": "object",
                    "description": "setting name → value; the value \"default\" removes the key",
                    "additionalProperties": True,
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "enum": sorted(STATUS)},
                            "message": {"type": "string"},
                        },
                    }},
                },
                **_SHAPES,
                "Health": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "nonready", "stopping"]},
                        "ready": {"type": "boolean"},
                        "member": {"type": "string"},
                        "version": {"type": "string"},
                    },
                },
            },
        },
    }
