"""Password checks for every protocol: hashes, a verified-credentials cache,
failed-login throttling and APOP.

``Authenticator.authenticate`` is what every login calls.  Order of checks:

1. Throttling.  Failed logins are counted per remote address and per
   account; after ``max_failures`` failures within ``failure_window``
   seconds, further attempts from that address (or on that account) are
   refused with reason ``throttled`` — without looking at the password — for
   a delay that doubles with each further failure (capped at ``max_delay``).
   A successful login clears the account's and the address's counters.
2. The account (``user`` is an account of the Main Domain; aliases resolve).
3. ``AccessModes`` (effective account setting) must allow the protocol
   (see ``dynamail.directory.model``); ``None`` means the account is disabled.
4. The verified-credentials cache: an HMAC, under a random per-process key,
   of (account, stored hash, presented password).  A hit skips the costly
   argon2 verification; including the stored hash means a password changed
   anywhere (another cluster member too) misses the cache at once, and
   ``invalidate(ref)`` drops the account's entries.  Only successes are
   cached, for ``cache_ttl`` seconds; the key never leaves the process, so
   the cache reveals nothing about passwords.
5. Verification (argon2 and the imported formats of
   ``dynamail.directory.passwords``) runs in a thread pool, off the event loop.

APOP (RFC 1939 section 7; the CLI protocol's ``APOP`` login too) compares
``md5hex(token + password)`` with the presented digest; it needs the clear
password, kept encrypted only while ``AllowAPOP`` is yes (the trade-off is
described in ``dynamail.directory.passwords``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from dynamail.accounts import AccountRef
from dynamail.directory import Directory, DirectoryError, NoSuchAccount, passwords
from dynamail.directory import model as dmodel
from dynamail.metrics import Metrics

log = logging.getLogger("dynamail.auth")

PROTOCOLS = frozenset({"imap", "pop3", "smtp", "cli", "http"})
MAX_LOGIN = 400  # longer login names are refused before any lookup
MAX_TRACKED = 100_000  # bound on throttling records kept in memory
MAX_CACHED = 100_000  # bound on verified-credentials cache entries


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    ref: AccountRef | None
    reason: str  # "ok", "bad-credentials", "throttled", "disabled", "no-such-account"
    message: str

    def __bool__(self) -> bool:
        return self.ok


@dataclass(slots=True)
class _Failures:
    count: int
    first: float
    last: float


class Throttle:
    """Failure counters per key, with a growing refusal delay."""

    def __init__(
        self,
        *,
        max_failures: int = 5,
        base_delay: float = 2.0,
        max_delay: float = 300.0,
        failure_window: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.failure_window = failure_window
        self.clock = clock
        self._records: OrderedDict[str, _Failures] = OrderedDict()

    def _get(self, key: str) -> _Failures | None:
        rec = self._records.get(key)
        if rec is not None and self.clock() - rec.last > max(self.failure_window, self.delay_for(rec)):
            del self._records[key]
            return None
        return rec

    def delay_for(self, rec: _Failures) -> float:
        extra = rec.count - self.max_failures
        if extra < 0:
            return 0.0
        return float(min(self.max_delay, self.base_delay * 2.0 ** min(extra, 30)))

    def blocked_for(self, key: str) -> float:
        """Seconds ``key`` remains refused (0 when it may try)."""
        rec = self._get(key)
        if rec is None or rec.count < self.max_failures:
            return 0.0
        return max(0.0, rec.last + self.delay_for(rec) - self.clock())

    def failure(self, key: str) -> None:
        now = self.clock()
        rec = self._get(key)
        if rec is None:
            self._records[key] = _Failures(1, now, now)
            if len(self._records) > MAX_TRACKED:
                self._records.popitem(last=False)
        else:
            rec.count += 1
            rec.last = now
            self._records.move_to_end(key)

    def success(self, key: str) -> None:
        self._records.pop(key, None)


class Authenticator:
    def __init__(
        self,
        directory: Directory,
        *,
        metrics: Metrics | None = None,
        cache_ttl: float = 300.0,
        max_failures: int = 5,
        base_delay: float = 2.0,
        max_delay: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.metrics = metrics
        self.cache_ttl = cache_ttl
        self.clock = clock
        self.throttle = Throttle(
            max_failures=max_failures, base_delay=base_delay, max_delay=max_delay, clock=clock
        )
        self.verifications = 0  # hash verifications actually run (tests watch it)
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, tuple[float, AccountRef]] = OrderedDict()
        self._by_account: dict[AccountRef, set[bytes]] = {}
        self._dummy_hash: str | None = None

    # ------------------------------------------------------------ cache
    def _cache_key(self, ref: AccountRef, stored: str, password: str) -> bytes:
        msg = b"\x00".join(
            (ref.address.encode(), stored.encode("utf-8", "replace"), password.encode("utf-8", "surrogatepass"))
        )
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def _cache_hit(self, key: bytes) -> bool:
        hit = self._cache.get(key)
        if hit is None:
            return False
        if hit[0] < self.clock():
            self._forget_key(key)
            return False
        return True

    def _cache_put(self, key: bytes, ref: AccountRef) -> None:
        if self.cache_ttl <= 0:
            return
        self._cache[key] = (self.clock() + self.cache_ttl, ref)
        self._by_account.setdefault(ref, set()).add(key)
        while len(self._cache) > MAX_CACHED:
            old, _ = next(iter(self._cache.items()))
            self._forget_key(old)

    def _forget_key(self, key: bytes) -> None:
        entry = self._cache.pop(key, None)
        if entry is not None:
            keys = self._by_account.get(entry[1])
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_account[entry[1]]

    def reload(self) -> None:
        """Forget every cached verification (SIGHUP)."""
        self._cache.clear()
        self._by_account.clear()

    def invalidate(self, ref: AccountRef) -> None:
        """Forget cached verifications of ``ref`` (its password changed)."""
        for key in list(self._by_account.get(ref, ())):
            self._forget_key(key)

    # ------------------------------------------------------------ helpers
    def _count(self, protocol: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.logins.labels(protocol=protocol, result=result).inc()

    def _refused(self, protocol: str, reason: str, message: str, ref: AccountRef | None = None) -> AuthResult:
        self._count(protocol, reason)
        return AuthResult(False, ref, reason, message)

    @staticmethod
    def _login_key(login: str, ref: AccountRef | None) -> str:
        # Per account (whatever name or alias was used), else per login text.
        return "login:" + (ref.address if ref is not None else login.strip().lower())

    def _address_throttled(self, remote: str) -> bool:
        return self.throttle.blocked_for("addr:" + remote) > 0

    def _account_throttled(self, login: str, ref: AccountRef | None) -> bool:
        return self.throttle.blocked_for(self._login_key(login, ref)) > 0

    def _failed(self, login: str, remote: str, ref: AccountRef | None) -> None:
        self.throttle.failure("addr:" + remote)
        self.throttle.failure(self._login_key(login, ref))

    def _succeeded(self, login: str, remote: str, ref: AccountRef) -> None:
        self.throttle.success("addr:" + remote)
        self.throttle.success(self._login_key(login, ref))

    def _lookup(self, login: str, protocol: str) -> tuple[AccountRef | None, str | None, bool]:
        """(account, stored hash, protocol allowed) — runs in a worker thread."""
        try:
            ref = self.directory.find_account(login)
        except DirectoryError:
            log.exception("account lookup of %r failed", login)
            return None, None, False
        if ref is None:
            return None, None, False
        try:
            stored = self.directory.password_hash(ref)
            allowed = dmodel.protocol_allowed(
                self.directory.effective_account_settings(ref).get("AccessModes"), protocol
            )
        except NoSuchAccount:
            return None, None, False
        except DirectoryError:
            # An unreadable settings file: refuse the login, never crash the session.
            log.exception("settings of %s are unreadable", ref)
            return ref, None, False
        return ref, stored, allowed

    def _dummy_verify(self, password: str) -> None:
        if self._dummy_hash is None:
            self._dummy_hash = passwords.hash_password(secrets.token_urlsafe(16), self.directory.hasher)
        if isinstance(password, str):
            passwords.verify(self._dummy_hash, password[: passwords.MAX_PASSWORD], self.directory.hasher)

    def _upgrade(self, ref: AccountRef, stored: str, password: str) -> None:
        """Re-hash an imported password with argon2id (best effort: a
        failure leaves the imported hash, which still verifies)."""
        try:
            if self.directory.upgrade_password_hash(ref, stored, password):
                log.info("password hash of %s upgraded from %s to argon2id",
                         ref, passwords.split_scheme(stored)[0])
        except DirectoryError:
            log.exception("could not upgrade the password hash of %s", ref)

    def _verify(self, stored: str, password: str) -> bool:
        self.verifications += 1
        return passwords.verify(stored, password, self.directory.hasher)

    # ------------------------------------------------------------ logins
    async def authenticate(self, login: str, password: str, *, protocol: str, remote: str) -> AuthResult:
        protocol = protocol.lower()
        if not isinstance(login, str) or not login or len(login) > MAX_LOGIN:
            return self._refused(protocol, "bad-credentials", "invalid login name")
        if self._address_throttled(remote):
            return self._refused(protocol, "throttled", "too many failed logins; try again later")
        loop = asyncio.get_running_loop()
        ref, stored, allowed = await loop.run_in_executor(None, self._lookup, login, protocol)
        if self._account_throttled(login, ref):
            return self._refused(protocol, "throttled", "too many failed logins; try again later", ref)
        if ref is None:
            # Spend the same work as for a real account, so that response
            # times do not tell which accounts exist.
            await loop.run_in_executor(None, self._dummy_verify, password)
            self._failed(login, remote, None)
            return self._refused(protocol, "no-such-account", "invalid login or password")
        if stored is None or not isinstance(password, str) or len(password) > passwords.MAX_PASSWORD:
            self._failed(login, remote, ref)
            return self._refused(protocol, "bad-credentials", "invalid login or password", ref)
        key = self._cache_key(ref, stored, password)
        ok = self._cache_hit(key)
        if not ok:
            ok = await loop.run_in_executor(None, self._verify, stored, password)
            if ok:
                if passwords.needs_upgrade(stored):
                    await loop.run_in_executor(None, self._upgrade, ref, stored, password)
                    stored = self.directory.password_hash(ref) or stored
                    key = self._cache_key(ref, stored, password)
                self._cache_put(key, ref)
        if not ok:
            self._failed(login, remote, ref)
            return self._refused(protocol, "bad-credentials", "invalid login or password", ref)
        if not allowed:
            return self._refused(protocol, "disabled", f"access by {protocol} is not enabled for this account", ref)
        self._succeeded(login, remote, ref)
        self._count(protocol, "ok")
        return AuthResult(True, ref, "ok", "authenticated")

    async def verify_apop(self, login: str, token: str, digest: str, *, protocol: str, remote: str) -> AuthResult:
        """APOP: ``digest`` must be md5hex(``token`` + password) (RFC 1939 §7)."""
        protocol = protocol.lower()
        if not isinstance(login, str) or not login or len(login) > MAX_LOGIN:
            return self._refused(protocol, "bad-credentials", "invalid login name")
        if self._address_throttled(remote):
            return self._refused(protocol, "throttled", "too many failed logins; try again later")

        def lookup() -> tuple[AccountRef | None, str | None, bool]:
            ref, _, allowed = self._lookup(login, protocol)
            if ref is None:
                return None, None, False
            try:
                return ref, self.directory.apop_secret(ref), allowed
            except NoSuchAccount:
                return None, None, False
            except DirectoryError:
                log.exception("settings of %s are unreadable", ref)
                return ref, None, False

        loop = asyncio.get_running_loop()
        ref, secret, allowed = await loop.run_in_executor(None, lookup)
        if self._account_throttled(login, ref):
            return self._refused(protocol, "throttled", "too many failed logins; try again later", ref)
        if ref is None:
            self._failed(login, remote, None)
            return self._refused(protocol, "no-such-account", "invalid login or password")
        if secret is None:
            self._failed(login, remote, ref)
            return self._refused(protocol, "bad-credentials", "APOP is not available for this account", ref)
        expected = hashlib.md5((token + secret).encode("utf-8"), usedforsecurity=False).hexdigest()
        if not hmac.compare_digest(expected.encode(), digest.strip().lower().encode("utf-8", "replace")):
            self._failed(login, remote, ref)
            return self._refused(protocol, "bad-credentials", "invalid login or password", ref)
        if not allowed:
            return self._refused(protocol, "disabled", f"access by {protocol} is not enabled for this account", ref)
        self._succeeded(login, remote, ref)
        self._count(protocol, "ok")
        return AuthResult(True, ref, "ok", "authenticated")
