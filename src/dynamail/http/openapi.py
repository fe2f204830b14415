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
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    statuses = {400, 401, 403, 404, 503} | ({409, 413} if route.body is not None else set())
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
    503: "temporarily unavailable",
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
                          "description": "an account's address (or name in the Main Domain) and password"},
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
