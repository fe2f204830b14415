"""Session tokens and CSRF tokens of the HTTP admin port.

A session is created by a successful login (``POST /api/v1/session`` or the
WebAdmin login form) and names the account that logged in.  Its token is a
random 256-bit string, sent back either as ``Authorization: Bearer <token>``
(scripts) or in an HttpOnly, SameSite=Strict cookie (browsers).  Each
session also carries its own random CSRF token, which every WebAdmin form
and every cookie-authenticated API write must echo back.

Sessions live in this process only (a member's restart logs its browsers
out); the store is bounded (``MAX_SESSIONS``, oldest dropped first) and
tokens expire ``SESSION_TTL`` seconds after their last use.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from dynamail.accounts import AccountRef
from dynamail.http.limits import MAX_SESSIONS, SESSION_TTL, TOKEN_BYTES

COOKIE = "dynamail_session"
LOGIN_COOKIE = "dynamail_login"  # CSRF token of the login form (before any session exists)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens; missing never matches."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class Session:
    token: str
    ref: AccountRef
    csrf: str
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) shown once by WebAdmin


class SessionStore:
    def __init__(self, ttl: float = SESSION_TTL, capacity: int = MAX_SESSIONS) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, ref: AccountRef) -> Session:
        self._expire()
        while len(self._sessions) >= self._capacity:
            self._sessions.popitem(last=False)
        session = Session(token=new_token(), ref=ref, csrf=new_token())
        self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_used > self._ttl:
            del self._sessions[token]
            return None
        session.last_used = now
        self._sessions.move_to_end(token)
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def drop_account(self, ref: AccountRef) -> None:
        """Forget every session of an account (deleted or renamed)."""
        for token in [t for t, s in self._sessions.items() if s.ref == ref]:
            del self._sessions[token]

    def drop_account_address(self, address: str) -> None:
        for token in [t for t, s in self._sessions.items() if s.ref.address == address]:
            del self._sessions[token]

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._sessions:
            token, oldest = next(iter(self._sessions.items()))
            if now - oldest.last_used <= self._ttl:
                break
            del self._sessions[token]
