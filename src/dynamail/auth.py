"""Password checks for every protocol: hashes, a verified-credentials cache,
keyed verifiers that survive a failover, failed-login throttling and APOP.

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
4. The in-memory verified-credentials cache: an HMAC, under a random
   per-process key, of (account, stored hash, presented password).  Only
   successes are cached, for ``cache_ttl`` seconds; ``invalidate(ref)``
   drops the account's entries.
5. The keyed verifier kept with the account (``Directory.credential_verifier``,
   format in ``dynamail.directory.passwords``): an HMAC under a key every
   cluster member holds (derived from the cluster secret; a standalone
   server's ``Settings/verifier.key``) of (account, stored hash, expiry,
   password), written by whichever member last verified the password and
   valid for ``verifier_ttl`` seconds of wall-clock time.  After a failover
   or a restart the surviving members check a returning user with one HMAC
   instead of an argon2 hash.  The security trade-off is in
   docs/deploying.md.
6. Verification (argon2 and the imported formats of
   ``dynamail.directory.passwords``) in ``HashPool``: a thread pool of its
   own, at most ``hash_concurrency`` (default: the usable cores) hashes at
   once behind a semaphore, so memory stays below that many times the
   argon2 memory cost, and a client that leaves while waiting costs nothing.

Both caches bind the stored hash: a password changed anywhere (another
cluster member too) gives a new stored hash, and every cached entry and
verifier of the old one stops matching at once, on every member.

After a successful login, a stored hash that is imported (``{SHA512-CRYPT}``
etc.) or made with other argon2 parameters is replaced by an argon2id hash
with the current parameters (``rehash``), but only while no other hash
waits for the pool: during a login storm the rehash is left to a later login.

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
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from dynamail.accounts import AccountRef
from dynamail.directory import Directory, DirectoryError, NoSuchAccount, passwords
from dynamail.directory import model as dmodel
from dynamail.metrics import Metrics

log = logging.getLogger("dynamail.auth")

PROTOCOLS = frozenset({"imap", "pop3", "smtp", "cli", "http"})
MAX_LOGIN = 400  # longer login names are refused before any lookup
MAX_TRACKED = 100_000  # bound on throttling records kept in memory
MAX_CACHED = 100_000  # bound on verified-credentials cache entries

T = TypeVar("T")


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class HashPool:
    """Password hashing off the event loop, at most ``size`` at a time.

    Each argon2 computation holds its memory cost for its duration, so the
    semaphore bounds memory (``size`` x m) as well as CPU.  Waiting happens
    on the semaphore, not in the executor's queue: a login whose client
    goes away while it waits is cancelled before any hash work is done.
    """

    def __init__(self, size: int = 0) -> None:
        self.size = size if size > 0 else usable_cores()
        self.waiting = 0
        self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="dynamail-hash")
        self._sem: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _semaphore(self, loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
        if self._sem is None or self._sem[0] is not loop:
            self._sem = (loop, asyncio.Semaphore(self.size))
        return self._sem[1]

    @property
    def busy(self) -> bool:
        """Whether logins are waiting for a hash slot."""
        return self.waiting > 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        sem = self._semaphore(loop)
        self.waiting += 1
        try:
            await sem.acquire()
        finally:
            self.waiting -= 1
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        finally:
            sem.release()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


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
        hash_concurrency: int = 0,
        rehash: bool = True,
        verifier_key: bytes | None = None,
        verifier_ttl: float = 0.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.metrics = metrics
        self.cache_ttl = cache_ttl
        self.clock = clock
        self.hashing = HashPool(hash_concurrency)
        self.rehash = rehash
        # keyed verifiers: off unless a key shared by every member is given
        self.verifier_key = verifier_key
        self.verifier_ttl = verifier_ttl
        self.wall_clock = wall_clock
        self.verifier_hits = 0  # logins accepted by a keyed verifier (tests watch it)
        # a cluster member routes rehashes of shared accounts to the Controller
        # (``dynamail.cluster.member.attach``): (operation, arguments) -> result
        self.shared_writer: Callable[[str, tuple[Any, ...]], Awaitable[Any]] | None = None
        self.throttle = Throttle(
            max_failures=max_failures, base_delay=base_delay, max_delay=max_delay, clock=clock
        )
        self.verifications = 0  # hash verifications actually run (tests watch it)
        self.decoy_verifications = 0  # verifications against the decoy hash (tests watch it)
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

    def _checked(self, how: str) -> None:
        if self.metrics is not None:
            self.metrics.auth_checks.labels(how=how).inc()

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

    @property
    def _verifiers_on(self) -> bool:
        return self.verifier_key is not None and self.verifier_ttl > 0

    def _lookup(
        self, login: str, protocol: str, local: str = "", password: str | None = None
    ) -> tuple[AccountRef | None, str | None, bool, str | None]:
        """(account, stored hash, protocol allowed, keyed verifier) — runs in a
        worker thread.  A plain user name is resolved by the directory's
        login rules (``dynamail.directory.logins``: the domain of the local
        address ``local``, the default login domain, the Main Domain).  The
        verifier is read only for a ``password`` the memory cache does not
        hold (a read-only look from this thread: a stale answer costs at
        most one file read or one hash verification)."""
        try:
            ref = None
            for address in self.directory.login_addresses(login, local):
                ref = self.directory.find_account(address)
                if ref is not None:
                    break
        except DirectoryError:
            log.exception("account lookup of %r failed", login)
            return None, None, False, None
        if ref is None:
            return None, None, False, None
        try:
            stored = self.directory.password_hash(ref)
            allowed = dmodel.protocol_allowed(
                self.directory.effective_account_settings(ref).get("AccessModes"), protocol
            )
            verifier = None
            if self._verifiers_on and password is not None and stored is not None:
                entry = self._cache.get(self._cache_key(ref, stored, password))
                if entry is None or entry[0] < self.clock():
                    verifier = self.directory.credential_verifier(ref)
        except NoSuchAccount:
            return None, None, False, None
        except (DirectoryError, OSError):
            # An unreadable settings file: refuse the login, never crash the session.
            log.exception("settings of %s are unreadable", ref)
            return ref, None, False, None
        return ref, stored, allowed, verifier

    def _verifier_matches(self, ref: AccountRef, stored: str, password: str, verifier: str | None) -> bool:
        if verifier is None or self.verifier_key is None or self.verifier_ttl <= 0:
            return False
        return passwords.check_verifier(
            self.verifier_key, verifier, ref.address, stored, password, self.wall_clock()
        )

    def verifier_for(self, ref: AccountRef, stored: str, password: str) -> str | None:
        """A fresh keyed verifier of ``password`` under ``stored``, or None
        when verifiers are off.  The directory asks for one whenever it sets
        a password (``Directory.verifier_for``), so even the first login of
        a new account, or the first after a password change, skips the hash."""
        if self.verifier_key is None or self.verifier_ttl <= 0:
            return None
        expires = int(self.wall_clock() + self.verifier_ttl)
        return passwords.make_verifier(self.verifier_key, ref.address, stored, password, expires)

    def _store_verifier(self, ref: AccountRef, stored: str, password: str) -> None:
        """Keep a fresh keyed verifier with the account (best effort: a
        failure only costs the next member one hash verification)."""
        text = self.verifier_for(ref, stored, password)
        if text is None:
            return
        try:
            self.directory.set_credential_verifier(ref, text)
        except Exception:
            log.warning("could not store the credentials verifier of %s", ref, exc_info=True)

    def _dummy_verify(self, password: str) -> None:
        if self._dummy_hash is None:
            self._dummy_hash = passwords.hash_password(secrets.token_urlsafe(16), self.directory.hasher)
        self.decoy_verifications += 1
        if isinstance(password, str):
            passwords.verify(self._dummy_hash, password[: passwords.MAX_PASSWORD], self.directory.hasher)

    async def _upgrade(self, ref: AccountRef, stored: str, password: str) -> str | None:
        """Re-hash an imported or differently-tuned password with the current
        argon2id parameters; the new stored hash, or None (best effort: a
        failure leaves the old hash, which still verifies).  The hash is
        computed here, in the pool; only the compare-and-set of the record
        goes to the account's single writer: the Controller for a shared
        account of a cluster (``shared_writer``), else this directory."""
        loop = asyncio.get_running_loop()
        try:
            new = await self.hashing.run(self.directory.password_record, ref, password)
            if ref.shared and self.shared_writer is not None:
                done = await self.shared_writer("replace_password_record", (ref, stored, new))
            else:
                done = await loop.run_in_executor(None, self.directory.replace_password_record, ref, stored, new)
        except Exception:
            log.warning("could not upgrade the password hash of %s", ref, exc_info=True)
            return None
        if not done:
            return None
        log.info("password hash of %s rehashed from %s to argon2id with the current parameters",
                 ref, passwords.split_scheme(stored)[0])
        return str(new["password"])

    def _verify(self, stored: str, password: str) -> bool:
        self.verifications += 1
        return passwords.verify(stored, password, self.directory.hasher)

    # ------------------------------------------------------------ logins
    async def authenticate(
        self, login: str, password: str, *, protocol: str, remote: str, local: str = ""
    ) -> AuthResult:
        """Check a login; ``local`` is the server address the client connected
        to (it selects the domain of a plain user name)."""
        protocol = protocol.lower()
        if not isinstance(login, str) or not login or len(login) > MAX_LOGIN:
            return self._refused(protocol, "bad-credentials", "invalid login name")
        if self._address_throttled(remote):
            return self._refused(protocol, "throttled", "too many failed logins; try again later")
        loop = asyncio.get_running_loop()
        pw = password if isinstance(password, str) and len(password) <= passwords.MAX_PASSWORD else None
        ref, stored, allowed, verifier = await loop.run_in_executor(
            None, self._lookup, login, protocol, local, pw
        )
        if self._account_throttled(login, ref):
            return self._refused(protocol, "throttled", "too many failed logins; try again later", ref)
        if ref is None:
            # Spend the same work as for a real account, so that response
            # times do not tell which accounts exist.
            await self.hashing.run(self._dummy_verify, password)
            self._failed(login, remote, None)
            return self._refused(protocol, "no-such-account", "invalid login or password")
        if stored is None or not isinstance(password, str) or len(password) > passwords.MAX_PASSWORD:
            # no password (or settings that cannot be read): the same work
            # again, so a fast answer does not tell which accounts have none
            await self.hashing.run(self._dummy_verify, password)
            self._failed(login, remote, ref)
            return self._refused(protocol, "bad-credentials", "invalid login or password", ref)
        if not await self._check(loop, ref, stored, password, verifier):
            self._failed(login, remote, ref)
            return self._refused(protocol, "bad-credentials", "invalid login or password", ref)
        if not allowed:
            return self._refused(protocol, "disabled", f"access by {protocol} is not enabled for this account", ref)
        self._succeeded(login, remote, ref)
        self._count(protocol, "ok")
        return AuthResult(True, ref, "ok", "authenticated")

    async def _check(
        self, loop: asyncio.AbstractEventLoop, ref: AccountRef, stored: str, password: str, verifier: str | None
    ) -> bool:
        """Whether ``password`` is the account's: memory cache, keyed
        verifier, then a hash verification in the pool."""
        key = self._cache_key(ref, stored, password)
        if self._cache_hit(key):
            self._checked("cache")
            return True
        fresh = False
        if self._verifier_matches(ref, stored, password, verifier):
            self.verifier_hits += 1
            self._checked("verifier")
        elif await self.hashing.run(self._verify, stored, password):
            fresh = True
            self._checked("hash")
        else:
            return False
        if self.rehash and not self.hashing.busy and passwords.needs_rehash(stored, self.directory.hasher):
            new = await self._upgrade(ref, stored, password)
            if new is not None:
                stored, fresh = new, True
                key = self._cache_key(ref, stored, password)
        if fresh and self._verifiers_on:
            loop.run_in_executor(None, self._store_verifier, ref, stored, password)
        self._cache_put(key, ref)
        return True

    async def verify_apop(
        self, login: str, token: str, digest: str, *, protocol: str, remote: str, local: str = ""
    ) -> AuthResult:
        """APOP: ``digest`` must be md5hex(``token`` + password) (RFC 1939 §7)."""
        protocol = protocol.lower()
        if not isinstance(login, str) or not login or len(login) > MAX_LOGIN:
            return self._refused(protocol, "bad-credentials", "invalid login name")
        if self._address_throttled(remote):
            return self._refused(protocol, "throttled", "too many failed logins; try again later")

        def lookup() -> tuple[AccountRef | None, str | None, bool]:
            ref, _, allowed, _ = self._lookup(login, protocol, local)
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
