"""Typed keys of the values the HTTP application keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from dynamail.http.sessions import SessionStore

if TYPE_CHECKING:
    from dynamail.server.context import ServerContext


@dataclass
class Lifecycle:
    stopping: bool = False  # set when the server begins to shut down: /health answers 503


SESSIONS = web.AppKey("dynamail_sessions", SessionStore)
CTX: web.AppKey[ServerContext] = web.AppKey("dynamail_ctx")
LIFECYCLE = web.AppKey("dynamail_lifecycle", Lifecycle)
