"""Errors of the JSON API: a stable code, an HTTP status and a message.

Every failure leaves the server as ``{"error": {"code": ..., "message": ...}}``
with the status below.  Codes are part of the API (scripts test them); the
messages are for people and may change.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# code → HTTP status.  Administrative failures keep the codes of
# dynamail.admin.AdminError so the CLI protocol and the API agree.
STATUS: dict[str, int] = {
    "bad_request": 400,
    "bad_name": 400,
    "bad_json": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "csrf": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "exists": 409,
    "not_cluster": 409,
    "conflict": 409,
    "owner_elsewhere": 409,  # the account is open on another member: ask it (``owner``, ``url``)
    "too_large": 413,
    "unsupported_media_type": 415,
    "unavailable": 503,
    "internal": 500,
}


class ApiError(Exception):
    """A failure to report to the client with a stable ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code if code in STATUS else "internal"
        self.message = message

    @property
    def status(self) -> int:
        return STATUS[self.code]


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    status = STATUS.get(code, 500)
    return web.Response(
        status=status,
        text=json.dumps(error_body(code, message)),
        content_type="application/json",
        headers=headers,
    )


def from_admin_error(exc: Exception) -> ApiError:
    """Translate ``dynamail.admin.AdminError`` (``.code``, message)."""
    code = str(getattr(exc, "code", "internal"))
    message = str(getattr(exc, "message", "") or exc) or code
    if code not in STATUS:
        code = "bad_request" if code.startswith("bad") else "internal"
    return ApiError(code, message)
