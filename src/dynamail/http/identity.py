"""Who is calling: HTTP Basic, a Bearer session token, or a session cookie.

Credentials go through ``ctx.auth.authenticate(..., protocol="http")`` —
the same checks, credentials cache and failed-login throttling as every
other protocol.  A cookie-authenticated request that changes anything must
carry the session's CSRF token (header ``X-CSRF-Token``), so a foreign page
cannot use a browser's cookie to call the API.  As a second line of
defence, such a request (and every WebAdmin form) is refused when its
``Origin`` (or, without one, its ``Referer``) names another site than the one
it was sent to: a token that leaked cannot be replayed from a foreign page.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from dynamail.accounts import AccountRef
from dynamail.http.errors import ApiError
from dynamail.http.limits import MAX_PASSWORD
from dynamail.http.sessions import COOKIE, Session, SessionStore, same
from dynamail.server.context import ServerContext

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True, slots=True)
class Caller:
    ref: AccountRef
    session: Session | None  # None for HTTP Basic


def local_address(request: web.Request) -> str:
    """The server address the client connected to ("" when unknown)."""
    transport = request.transport
    sock = transport.get_extra_info("sockname") if transport is not None else None
    return str(sock[0]) if isinstance(sock, tuple) and sock else ""


async def check_password(ctx: ServerContext, login: str, password: str, request: web.Request) -> AccountRef:
    """Authenticate ``login``/``password`` or raise ApiError(unauthorized).
    A plain user name resolves as on every other door (``directory.logins``:
    the domain of the address the client connected to, the default login
    domain, the Main Domain; ``user%domain``)."""
    if not login or len(login) > 320 or len(password) > MAX_PASSWORD:
        raise ApiError("unauthorized", "wrong user name or password")
    result = await ctx.auth.authenticate(login, password, protocol="http", remote=request.remote or "",
                                         local=local_address(request))
    if not getattr(result, "ok", False) or getattr(result, "ref", None) is None:
        reason = str(getattr(result, "reason", "") or "")
        if reason in ("throttled", "disabled", "access_denied"):
            raise ApiError("unauthorized", f"login refused ({reason})")
        raise ApiError("unauthorized", "wrong user name or password")
    ref = result.ref
    assert isinstance(ref, AccountRef)
    return ref


async def binding_of(ctx: ServerContext, ref: AccountRef) -> str:
    """A fingerprint of the account's stored password: a session made with it
    ends when the password changes or the account no longer exists."""
    try:
        stored = await asyncio.to_thread(ctx.directory.password_hash, ref)
    except Exception:  # the account is gone (deleted or renamed)
        return "gone"
    if stored is None:
        return "none"
    return hashlib.sha256(b"dynamail session binding\0" + stored.encode()).hexdigest()[:24]


async def live_session(ctx: ServerContext, sessions: SessionStore, token: str | None) -> Session | None:
    """The session of ``token`` if it is valid and its account unchanged."""
    session = sessions.get(token)
    if session is None:
        return None
    if not same(session.binding, await binding_of(ctx, session.ref)):
        sessions.drop(session.token)
        return None
    return session


def same_origin(request: web.Request) -> bool:
    """Whether a state-changing browser request comes from this site: the
    host (and port) of ``Origin`` — or of ``Referer`` when there is no
    ``Origin`` — must be the ``Host`` the request was sent to.  A request
    with neither (a non-browser client, a privacy proxy) passes: the CSRF
    token is the primary check.  ``Origin: null`` (a sandboxed or
    cross-origin redirected page) never passes."""
    origin = request.headers.get("Origin")
    if origin is None:
        origin = request.headers.get("Referer")
        if origin is None:
            return True
    origin = origin.strip()
    if origin.lower() == "null":
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc.lower() == (request.host or "").lower()


async def identify(request: web.Request, ctx: ServerContext, sessions: SessionStore) -> Caller:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError("unauthorized", "malformed Basic credentials") from None
        login, sep, password = decoded.partition(":")
        if not sep:
            raise ApiError("unauthorized", "malformed Basic credentials")
        return Caller(await check_password(ctx, login, password, request), None)
    if scheme == "bearer":
        session = await live_session(ctx, sessions, value.strip())
        if session is None:
            raise ApiError("unauthorized", "the session token is unknown or expired")
        return Caller(session.ref, session)
    if header:
        raise ApiError("unauthorized", "use HTTP Basic or a Bearer session token")
    session = await live_session(ctx, sessions, request.cookies.get(COOKIE))
    if session is not None:
        if request.method not in SAFE_METHODS:
            if not same(request.headers.get(CSRF_HEADER), session.csrf):
                raise ApiError("csrf", "missing or wrong CSRF token")
            if not same_origin(request):
                raise ApiError("csrf", "the request comes from another site (Origin/Referer)")
        return Caller(session.ref, session)
    raise ApiError("unauthorized", "authentication required")
