"""Session tokens and CSRF tokens of the HTTP admin port.

A session is created by a successful login (``POST /api/v1/session`` or the
WebAdmin login form) and names the account that logged in.  It is sent back
either as ``Authorization: Bearer <token>`` (scripts) or in an HttpOnly,
SameSite=Strict cookie (browsers).  Each session also carries its own random
CSRF token, which every WebAdmin form and every cookie-authenticated API
write must echo back.

A token is signed, not looked up: ``v1.<payload>.<mac>``, the payload
naming the account, the issue time and the CSRF token, the MAC an
HMAC-SHA256 under the store's key.  Members of one cluster derive the same
key from the cluster secret, so a token issued by one member is accepted by
every member (Single Service Image behind a load balancer); a standalone
server uses a random key, so its restart logs browsers out.  Tokens expire
``SESSION_TTL`` seconds after they were issued, and end when the account's
password changes or the account is deleted or renamed (the payload carries
a fingerprint of the stored password, checked on every use).  Logging out revokes the
token on the member that received the logout (and the browser drops its
cookie).  Each member keeps a bounded cache of the sessions it has seen
(``MAX_SESSIONS``, least recently used dropped first) for flash messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from dynamail.accounts import AccountRef
from dynamail.http.limits import MAX_SESSIONS, SESSION_TTL, TOKEN_BYTES

COOKIE = "dynamail_session"
LOGIN_COOKIE = "dynamail_login"  # CSRF token of the login form (before any session exists)
TOKEN_VERSION = "v1"
MAX_TOKEN = 2048  # characters; longer tokens are refused unread


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens; missing never matches."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


def cluster_key(secret: bytes) -> bytes:
    """The session key every member of a cluster derives from its secret."""
    return hmac.new(secret, b"dynamail http session key v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Session:
    token: str
    ref: AccountRef
    csrf: str
    issued: float = field(default_factory=time.time)
    binding: str = ""  # fingerprint of the account's password when the session began
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) shown once by WebAdmin


class SessionStore:
    def __init__(self, key: bytes | None = None, ttl: float = SESSION_TTL, capacity: int = MAX_SESSIONS) -> None:
        self._key = key or secrets.token_bytes(32)
        self._ttl = ttl
        self._capacity = capacity
        self._seen: OrderedDict[str, Session] = OrderedDict()
        self._revoked: OrderedDict[str, float] = OrderedDict()  # token → its expiry

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def create(self, ref: AccountRef, binding: str = "") -> Session:
        """A new session of ``ref``; ``binding`` (see ``identity.binding_of``)
        ends it when the account's password changes or the account goes."""
        issued = time.time()
        csrf = new_token()
        body = {"d": ref.domain, "n": ref.name, "s": ref.shared, "i": issued, "c": csrf, "b": binding,
                "r": new_token()[:16]}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        token = f"{TOKEN_VERSION}.{payload}.{self._mac(payload)}"
        session = Session(token=token, ref=ref, csrf=csrf, issued=issued, binding=binding)
        self._remember(session)
        return session

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > MAX_TOKEN or token in self._revoked:
            return None
        session = self._seen.get(token)
        if session is None:
            session = self._verify(token)
            if session is None:
                return None
            self._remember(session)
        if time.time() - session.issued > self._ttl:
            self._seen.pop(token, None)
            return None
        self._seen.move_to_end(token)
        return session

    def _verify(self, token: str) -> Session | None:
        version, _, rest = token.partition(".")
        payload, _, mac = rest.partition(".")
        if version != TOKEN_VERSION or not payload or not same(mac, self._mac(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            ref = AccountRef(str(body["d"]), str(body["n"]), bool(body["s"]))
            return Session(token=token, ref=ref, csrf=str(body["c"]), issued=float(body["i"]),
                           binding=str(body.get("b", "")))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None

    def _remember(self, session: Session) -> None:
        self._seen[session.token] = session
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def drop(self, token: str | None) -> None:
        """Log out: this member refuses the token from now on."""
        if not token:
            return
        session = self._seen.pop(token, None) or self._verify(token)
        if session is None:
            return
        self._revoked[token] = session.issued + self._ttl
        now = time.time()
        while self._revoked and (len(self._revoked) > self._capacity or next(iter(self._revoked.values())) < now):
            self._revoked.popitem(last=False)

    def drop_account_address(self, address: str) -> None:
        """Forget the cached sessions of an account (deleted or renamed); its
        tokens name an account that no longer holds any rights."""
        for token in [t for t, s in self._seen.items() if s.ref.address == address]:
            self.drop(token)

    def __len__(self) -> int:
        return len(self._seen)
