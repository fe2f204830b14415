"""The OpenAPI document describes exactly the routes the application serves."""

from __future__ import annotations

import re
from typing import Any

from http_support import client_for

from dynamail.http.app import build_app
from dynamail.http.openapi import openapi_path
from dynamail.server.context import ServerContext

# WebAdmin pages and static files are HTML for browsers, not API operations.
_PAGES = re.compile(r"^/(admin(/.*)?|static(/.*)?|favicon\.ico)?$")


def _served(ctx: ServerContext) -> set[tuple[str, str]]:
    app = build_app(ctx)
    out: set[tuple[str, str]] = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix", "")
        if route.method == "HEAD" or _PAGES.match(path):
            continue
        out.add((route.method.lower(), openapi_path(path)))
    return out


async def test_every_route_is_documented_and_every_documented_route_served(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        resp = await client.get("/api/openapi.json")
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
    assert doc["openapi"].startswith("3.1")
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    served = _served(ctx)
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
    assert len(documented) >= 75


async def test_operations_are_complete(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        doc = await (await client.get("/api/openapi.json")).json()
    ids = set()
    for path, ops in doc["paths"].items():
        params = set(re.findall(r"\{([a-z_]+)\}", path))
        for method, op in ops.items():
            assert op["operationId"] not in ids, op["operationId"]
            ids.add(op["operationId"])
            assert op["summary"] and op["responses"]
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == params, (method, path)
            if method in ("post", "put", "patch") and "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                assert "$ref" in schema or schema["type"] == "object"
    # the SPEC's fixed shapes
    create_domain = doc["paths"]["/api/v1/domains"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(create_domain["properties"]) == {"name", "shared", "settings"}
    create_account = doc["paths"]["/api/v1/domains/{domain}/accounts"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert set(create_account["properties"]) == {"name", "password", "settings"}


def test_the_manual_lists_every_route() -> None:
    from pathlib import Path

    from dynamail.http.api import api

    manual = (Path(__file__).resolve().parents[2] / "docs" / "webadmin.md").read_text()
    missing = [f"{r.method} {openapi_path(r.full_path)}" for r in api.routes
               if f"| `{r.method}` | `{openapi_path(r.full_path)}` |" not in manual]
    assert missing == []
