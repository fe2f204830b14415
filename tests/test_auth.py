from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from argon2 import PasswordHasher

from dynamail.auth import Authenticator, AuthResult
from dynamail.directory import BadSetting, Directory, passwords
from dynamail.metrics import Metrics

T = TypeVar("T")
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
# Published SHA-crypt vector: "Hello world!" under $6$saltstring.
SHA512 = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def directory(tmp_path: Path) -> Directory:
    d = Directory(tmp_path / "base", main_domain="main.example", password_hasher=FAST)
    d.create_domain("d.example")
    d.create_account("d.example", "alice", password="wonderland")
    d.create_account("main.example", "bob", password="builder")
    return d


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(directory: Directory, clock: Clock) -> Authenticator:
    return Authenticator(directory, metrics=Metrics(), clock=clock)


def login(auth: Authenticator, user: str, pw: str, remote: str = "192.0.2.1", protocol: str = "imap") -> AuthResult:
    return run(auth.authenticate(user, pw, protocol=protocol, remote=remote))


def test_success_and_failures(auth: Authenticator) -> None:
    r = login(auth, "alice@d.example", "wonderland")
    assert r.ok and r.reason == "ok" and r.ref is not None and r.ref.address == "alice@d.example"
    assert login(auth, "BOB", "builder").ok  # Main Domain account without domain
    r = login(auth, "alice@d.example", "Wonderland")
    assert (r.ok, r.reason) == (False, "bad-credentials")
    r = login(auth, "nobody@d.example", "x")
    assert (r.ok, r.reason, r.ref) == (False, "no-such-account", None)
    assert login(auth, "../../etc@d.example", "x").reason == "no-such-account"
    assert login(auth, "", "x").reason == "bad-credentials"
    assert login(auth, "a" * 1000, "x").reason == "bad-credentials"
    assert login(auth, "alice@d.example", "x" * 5000).reason == "bad-credentials"
    assert auth.metrics is not None
    text = auth.metrics.render().decode()
    assert 'dynamail_logins_total{protocol="imap",result="ok"} 2.0' in text
    assert 'result="bad-credentials"' in text


def test_access_modes(auth: Authenticator, directory: Directory) -> None:
    ref = directory.find_account("alice@d.example")
    assert ref is not None
    directory.update_account_settings(ref, {"AccessModes": ["IMAP", "Relay"]})
    assert login(auth, "alice@d.example", "wonderland").ok
    assert login(auth, "alice@d.example", "wonderland", protocol="smtp").ok
    r = login(auth, "alice@d.example", "wonderland", protocol="pop3")
    assert (r.ok, r.reason) == (False, "disabled")
    directory.update_account_defaults("d.example", {"AccessModes": "None"})
    directory.update_account_settings(ref, {"AccessModes": "default"})
    assert login(auth, "alice@d.example", "wonderland").reason == "disabled"
    # a wrong password on a disabled account is still just bad credentials
    assert login(auth, "alice@d.example", "nope").reason == "bad-credentials"
    directory.update_account_settings(ref, {"AccessModes": "pop, imap"})
    assert login(auth, "alice@d.example", "wonderland", protocol="pop3").ok


def test_cache_skips_verification(auth: Authenticator, directory: Directory, clock: Clock) -> None:
    assert login(auth, "alice@d.example", "wonderland").ok
    assert auth.verifications == 1
    for _ in range(5):
        assert login(auth, "alice@d.example", "wonderland").ok
    assert auth.verifications == 1
    # wrong passwords are never cached
    assert not login(auth, "alice@d.example", "bad").ok
    assert not login(auth, "alice@d.example", "bad").ok
    assert auth.verifications == 3
    # TTL
    clock.now += auth.cache_ttl + 1
    assert login(auth, "alice@d.example", "wonderland").ok
    assert auth.verifications == 4
    # invalidate
    ref = directory.find_account("alice@d.example")
    assert ref is not None
    auth.invalidate(ref)
    assert login(auth, "alice@d.example", "wonderland").ok
    assert auth.verifications == 5


def test_password_change_misses_cache_even_without_invalidate(auth: Authenticator, directory: Directory) -> None:
    ref = directory.find_account("alice@d.example")
    assert ref is not None
    assert login(auth, "alice@d.example", "wonderland").ok
    directory.set_password(ref, "looking-glass")  # e.g. by another cluster member
    assert not login(auth, "alice@d.example", "wonderland").ok
    assert login(auth, "alice@d.example", "looking-glass").ok


def test_imported_hash(auth: Authenticator, directory: Directory) -> None:
    ref = directory.find_account("bob")
    assert ref is not None
    directory.set_password_hash(ref, "{SHA512-CRYPT}" + SHA512)
    assert login(auth, "bob", "Hello world!").ok
    assert not login(auth, "bob", "builder").ok


def test_throttling_per_address(auth: Authenticator, clock: Clock) -> None:
    for _ in range(5):
        assert login(auth, "alice@d.example", "bad", remote="198.51.100.7").reason == "bad-credentials"
    verifications = auth.verifications
    r = login(auth, "bob", "builder", remote="198.51.100.7")
    assert (r.ok, r.reason) == (False, "throttled")
    assert auth.verifications == verifications  # refused before any hash work
    assert login(auth, "bob", "builder", remote="198.51.100.8").ok  # other address
    clock.now += auth.throttle.base_delay + 0.1
    assert login(auth, "bob", "builder", remote="198.51.100.7").ok
    assert login(auth, "bob", "builder", remote="198.51.100.7").ok


def test_throttling_per_account_and_growing_delay(auth: Authenticator, clock: Clock) -> None:
    for i in range(5):
        login(auth, "alice@d.example", "bad", remote=f"203.0.113.{i}")
    r = login(auth, "alice@d.example", "wonderland", remote="203.0.113.99")
    assert r.reason == "throttled"
    clock.now += 2.1
    assert login(auth, "alice@d.example", "bad", remote="203.0.113.50").reason == "bad-credentials"
    clock.now += 2.1  # the delay has doubled to 4 s
    assert login(auth, "alice@d.example", "wonderland", remote="203.0.113.51").reason == "throttled"
    clock.now += 2.0
    assert login(auth, "alice@d.example", "wonderland", remote="203.0.113.51").ok
    # success cleared the account's counter
    assert login(auth, "alice@d.example", "bad", remote="203.0.113.52").reason == "bad-credentials"
    assert login(auth, "alice@d.example", "wonderland", remote="203.0.113.53").ok


def test_apop(auth: Authenticator, directory: Directory) -> None:
    token = "<1896.697170952@dbc.mtview.ca.us>"

    def apop(user: str, secret: str, remote: str = "192.0.2.9") -> AuthResult:
        digest = hashlib.md5((token + secret).encode()).hexdigest()
        return run(auth.verify_apop(user, token, digest, protocol="pop3", remote=remote))

    assert apop("alice@d.example", "wonderland").ok
    assert apop("alice@d.example", "wrong").reason == "bad-credentials"
    assert apop("ghost@d.example", "x").reason == "no-such-account"
    ref = directory.find_account("alice@d.example")
    assert ref is not None
    directory.update_account_settings(ref, {"AllowAPOP": "NO"})
    assert apop("alice@d.example", "wonderland").reason == "bad-credentials"
    directory.update_account_settings(ref, {"AllowAPOP": "YES"})
    assert apop("alice@d.example", "wonderland").ok
    directory.update_account_settings(ref, {"AccessModes": ["IMAP"]})
    assert apop("alice@d.example", "wonderland").reason == "disabled"
    # RFC 1939 example digest for the password "tanstaaf"
    bob = directory.find_account("bob")
    assert bob is not None
    directory.set_password(bob, "tanstaaf")
    r = run(auth.verify_apop("bob", token, "c4c9334bac560ecc979e58001b3e22fb", protocol="pop3", remote="x"))
    assert r.ok


def test_throttling_follows_the_account_through_aliases(auth: Authenticator, directory: Directory) -> None:
    ref = directory.find_account("alice@d.example")
    assert ref is not None
    directory.set_account_aliases(ref, ["ally"])
    for i in range(5):
        login(auth, "ally@d.example" if i % 2 else "alice@d.example", "bad", remote=f"192.0.2.{i}")
    assert login(auth, "ally@d.example", "wonderland", remote="192.0.2.77").reason == "throttled"
    assert login(auth, "alice@d.example", "wonderland", remote="192.0.2.78").reason == "throttled"
    assert login(auth, "bob", "builder", remote="192.0.2.79").ok


def test_unknown_accounts_cost_a_verification_too(auth: Authenticator) -> None:
    assert login(auth, "ghost@d.example", "x").reason == "no-such-account"
    assert auth._dummy_hash is not None and auth._dummy_hash.startswith("$argon2")


def test_corrupt_account_file_refuses_without_crashing(auth: Authenticator, directory: Directory) -> None:
    ref = directory.find_account("alice@d.example")
    assert ref is not None
    (directory.account_dir(ref) / "Account.json").write_text("{ torn")
    r = login(auth, "alice@d.example", "wonderland")
    assert (r.ok, r.reason) == (False, "bad-credentials")
    assert login(auth, "bob", "builder").ok


@pytest.mark.parametrize("stored", ["{SHA512-CRYPT}" + SHA512, "{PLAIN}Hello world!"])
def test_imported_hash_is_upgraded_to_argon2_on_login(
    auth: Authenticator, directory: Directory, stored: str
) -> None:
    ref = directory.find_account("bob")
    assert ref is not None
    directory.set_password_hash(ref, stored)
    assert login(auth, "bob", "Hello world!").ok
    upgraded = directory.password_hash(ref)
    assert upgraded is not None and upgraded.startswith("$argon2")
    auth.invalidate(ref)
    assert login(auth, "bob", "Hello world!").ok
    assert not login(auth, "bob", "builder").ok


def test_failed_login_leaves_imported_hash(auth: Authenticator, directory: Directory) -> None:
    ref = directory.find_account("bob")
    assert ref is not None
    directory.set_password_hash(ref, "{SHA512-CRYPT}" + SHA512)
    assert not login(auth, "bob", "wrong").ok
    assert directory.password_hash(ref) == "{SHA512-CRYPT}" + SHA512


# ------------------------------------------------------------ hashing pool, rehash


class CountingAuthenticator(Authenticator):
    """Records how many hash verifications run at the same time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.hold = 0.2  # seconds each verification holds its slot, as a real argon2 hash does
        self.gate = threading.Event()  # set: verifications may finish
        self.gate.set()
        self.meet: threading.Barrier | None = None  # verifications wait for each other in groups

    def _verify(self, stored: str, password: str) -> bool:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            threading.Event().wait(self.hold)
            self.gate.wait(60)
            if self.meet is not None:
                with contextlib.suppress(threading.BrokenBarrierError):
                    self.meet.wait(30)
            return super()._verify(stored, password)
        finally:
            with self._lock:
                self.running -= 1


def test_hash_concurrency_is_bounded(directory: Directory) -> None:
    auth = CountingAuthenticator(directory, hash_concurrency=2, max_failures=1000)
    auth.hold = 0.0
    auth.meet = threading.Barrier(2)  # each verification waits until another runs beside it

    async def storm() -> list[AuthResult]:
        return await asyncio.gather(*(
            auth.authenticate("alice@d.example", f"wrong{i}", protocol="imap", remote=f"192.0.2.{i}")
            for i in range(12)
        ))

    results = run(storm())
    assert all(r.reason == "bad-credentials" for r in results)
    assert auth.verifications == 12 and auth.most == 2


def test_a_cancelled_waiting_login_costs_no_hash(directory: Directory) -> None:
    auth = CountingAuthenticator(directory, hash_concurrency=1)
    auth.hold = 0.0
    auth.gate.clear()  # bob's hash holds the only slot until the gate opens

    async def go() -> None:
        first = asyncio.create_task(auth.authenticate("bob", "builder", protocol="imap", remote="a"))
        while auth.running == 0:
            await asyncio.sleep(0.001)
        waiting = asyncio.create_task(auth.authenticate("alice@d.example", "x", protocol="imap", remote="b"))
        while auth.hashing.waiting == 0:
            await asyncio.sleep(0.001)
        waiting.cancel()
        auth.gate.set()
        assert (await first).ok
        with pytest.raises(asyncio.CancelledError):
            await waiting

    run(go())
    assert auth.verifications == 1


def test_hashes_with_other_parameters_verify_and_are_rehashed(directory: Directory) -> None:
    ref = directory.find_account("bob")
    assert ref is not None
    old = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    directory.set_password_hash(ref, old.hash("builder"))
    assert passwords.needs_rehash(directory.password_hash(ref) or "", FAST)
    keep = Authenticator(directory, rehash=False)
    assert login(keep, "bob", "builder").ok
    assert (directory.password_hash(ref) or "").startswith("$argon2id$v=19$m=16,t=2")
    auth = Authenticator(directory)
    assert login(auth, "bob", "builder").ok
    new = directory.password_hash(ref) or ""
    assert new.startswith("$argon2id$v=19$m=8,t=1,p=1") and not passwords.needs_rehash(new, FAST)
    auth.invalidate(ref)
    assert login(auth, "bob", "builder").ok and not login(auth, "bob", "build").ok


def test_imported_hash_is_kept_without_rehash(directory: Directory) -> None:
    ref = directory.find_account("bob")
    assert ref is not None
    directory.set_password_hash(ref, "{SHA512-CRYPT}" + SHA512)
    auth = Authenticator(directory, rehash=False)
    assert login(auth, "bob", "Hello world!").ok
    assert directory.password_hash(ref) == "{SHA512-CRYPT}" + SHA512


# ------------------------------------------------------------ keyed verifiers

KEY = bytes(range(32))


class WallClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def member(base: Path, wall: WallClock, key: bytes = KEY) -> tuple[Authenticator, Directory]:
    """One cluster member's view: its own Directory and Authenticator on the shared base."""
    d = Directory(base, main_domain="main.example", password_hasher=FAST)
    return Authenticator(d, verifier_key=key, verifier_ttl=3600.0, wall_clock=wall), d


def test_verifier_lets_another_member_skip_the_hash(directory: Directory) -> None:
    wall = WallClock()
    a, _ = member(directory.base, wall)
    b, _ = member(directory.base, wall)
    assert login(a, "alice@d.example", "wonderland").ok
    assert a.verifications == 1
    assert login(b, "alice@d.example", "wonderland").ok  # b never saw alice: no hash work
    assert (b.verifications, b.verifier_hits) == (0, 1)
    assert not login(b, "alice@d.example", "wonderlanD").ok  # a wrong password is still hashed
    assert b.verifications == 1
    other, _ = member(directory.base, wall, key=bytes(32))  # another cluster's key
    assert login(other, "alice@d.example", "wonderland").ok
    assert (other.verifications, other.verifier_hits) == (1, 0)


def test_password_change_revokes_verifiers_and_caches_on_every_member(directory: Directory) -> None:
    wall = WallClock()
    a, da = member(directory.base, wall)
    b, db = member(directory.base, wall)
    assert login(a, "alice@d.example", "wonderland").ok
    assert login(b, "alice@d.example", "wonderland").ok  # b: verifier hit, now in b's memory cache
    ref = db.find_account("alice@d.example")
    assert ref is not None
    da.set_password(ref, "looking-glass")  # changed through member a
    for m in (a, b):
        r = login(m, "alice@d.example", "wonderland")
        assert (r.ok, r.reason) == (False, "bad-credentials")
    assert login(b, "alice@d.example", "looking-glass").ok
    assert login(a, "alice@d.example", "looking-glass").ok
    assert a.verifier_hits == 1  # a used the verifier b wrote for the new password


def test_a_stale_verifier_written_after_a_change_does_not_verify(directory: Directory) -> None:
    wall = WallClock()
    a, da = member(directory.base, wall)
    ref = da.find_account("alice@d.example")
    assert ref is not None
    old = da.password_hash(ref)
    assert old is not None
    da.set_password(ref, "looking-glass")
    # a slow member writes the verifier of the old password after the change
    da.set_credential_verifier(ref, passwords.make_verifier(KEY, ref.address, old, "wonderland", 1_900_000_000))
    assert not login(a, "alice@d.example", "wonderland").ok
    assert a.verifier_hits == 0


def test_verifier_expires_and_tampering_is_refused(directory: Directory) -> None:
    wall = WallClock()
    a, da = member(directory.base, wall)
    b, _ = member(directory.base, wall)
    ref = da.find_account("alice@d.example")
    assert ref is not None
    assert login(a, "alice@d.example", "wonderland").ok
    text = da.credential_verifier(ref)
    assert text is not None and text.startswith("v1 ")
    _, expires, mac = text.split(" ")
    # a longer validity under the same MAC, garbage, an oversized file: all misses
    for bad in (f"v1 {int(expires) + 10**6} {mac}", "v1 x y", "v2 1 2", "v1 " + "9" * 500 + " z", "v1 1 ???"):
        da.set_credential_verifier(ref, bad)
        b.reload()
        assert login(b, "alice@d.example", "wonderland").ok
    assert b.verifier_hits == 0
    # the last login wrote a fresh verifier; past its expiry it is not used
    b.reload()
    wall.now += 3601
    assert login(b, "alice@d.example", "wonderland").ok
    assert b.verifier_hits == 0


def test_no_verifier_for_a_wrong_password_or_without_a_key(directory: Directory) -> None:
    ref = directory.find_account("alice@d.example")
    assert ref is not None
    assert login(Authenticator(directory), "alice@d.example", "wonderland").ok
    assert directory.credential_verifier(ref) is None  # no key: nothing written
    a, _ = member(directory.base, WallClock())
    assert not login(a, "alice@d.example", "nope").ok
    assert directory.credential_verifier(ref) is None


def wired(base: Path, wall: WallClock, key: bytes | None = KEY) -> tuple[Authenticator, Directory]:
    """A member whose directory asks its authenticator for a verifier
    whenever it sets a password, as the server wires them."""
    d = Directory(base, main_domain="main.example", password_hasher=FAST)
    a = Authenticator(d, verifier_key=key, verifier_ttl=3600.0, wall_clock=wall)
    d.verifier_for = a.verifier_for
    return a, d


def test_a_password_set_comes_with_its_verifier(directory: Directory) -> None:
    """A new account's first login, and the first after a password change,
    skip the hash on every member: the verifier is written with the password."""
    wall = WallClock()
    _, da = wired(directory.base, wall)
    b, _ = member(directory.base, wall)
    ref = da.create_account("d.example", "carol", password="queen-of-hearts")
    assert da.credential_verifier(ref) is not None
    assert login(b, "carol@d.example", "queen-of-hearts").ok
    assert (b.verifications, b.verifier_hits) == (0, 1)
    assert not login(b, "carol@d.example", "queen-of-heartS").ok  # a wrong one is hashed
    assert b.verifications == 1
    for change in (
        lambda: da.set_password(ref, "red-queen"),
        lambda: da.update_account_settings(ref, {"Password": "white-queen"}),
        lambda: da.set_account_settings(ref, {"Password": "tweedledum"}),
    ):
        old = da.credential_verifier(ref)
        change()
        assert da.credential_verifier(ref) not in (None, old)
    c, _ = member(directory.base, wall)
    assert not login(c, "carol@d.example", "white-queen").ok
    assert login(c, "carol@d.example", "tweedledum").ok
    assert (c.verifier_hits, c.verifications) == (1, 1)  # only the refused old password was hashed
    # an imported hash comes without a password: no verifier, the first login hashes
    da.set_password_hash(ref, "{SHA512-CRYPT}" + SHA512)
    assert da.credential_verifier(ref) is None
    # an account created without a password has none either
    assert da.credential_verifier(da.create_account("d.example", "dormouse")) is None


def test_no_verifier_with_a_password_when_verifiers_are_off(directory: Directory) -> None:
    wall = WallClock()
    _, d = wired(directory.base, wall, key=None)
    ref = d.create_account("d.example", "carol", password="queen-of-hearts")
    assert d.credential_verifier(ref) is None
    # a verifier left from before (verifiers since turned off) goes with a change
    d.set_credential_verifier(ref, passwords.make_verifier(KEY, ref.address, "x", "queen-of-hearts", 2 * 10**9))
    d.set_password(ref, "red-queen")
    assert d.credential_verifier(ref) is None


def test_a_failing_verifier_does_not_fail_the_password_change(directory: Directory) -> None:
    def broken(ref: Any, stored: str, password: str) -> str:
        raise RuntimeError("no key")

    directory.verifier_for = broken
    ref = directory.create_account("d.example", "carol", password="queen-of-hearts")
    assert directory.credential_verifier(ref) is None
    directory.set_password(ref, "red-queen")
    assert directory.credential_verifier(ref) is None
    assert login(Authenticator(directory), "carol@d.example", "red-queen").ok


def test_shared_account_rehash_goes_to_the_shared_writer(tmp_path: Path) -> None:
    """In a cluster, a rehash of a shared account is a compare-and-set run by
    the Controller: here the writer runs the directory operation the way the
    Controller does, after the argument round trip of the cluster wire."""
    from dynamail.cluster import image

    d = Directory(tmp_path / "base", main_domain="main.example", password_hasher=FAST)
    d.create_domain("s.example", shared=True)
    ref = d.create_account("s.example", "sue")
    d.set_password_hash(ref, "{SHA512-CRYPT}" + SHA512)
    calls: list[str] = []

    async def controller(op: str, args: tuple[Any, ...]) -> Any:
        assert op in image.DIRECTORY_OPS
        calls.append(op)
        unpacked = image.unpack_value(image.pack_value(list(args)))
        return getattr(d, op)(*unpacked)

    auth = Authenticator(d)
    auth.shared_writer = controller
    assert login(auth, "sue@s.example", "Hello world!").ok
    assert calls == ["replace_password_record"]
    assert (d.password_hash(ref) or "").startswith("$argon2id$")
    auth.invalidate(ref)
    assert login(auth, "sue@s.example", "Hello world!").ok and calls == ["replace_password_record"]


def test_replace_password_record_is_a_compare_and_set(directory: Directory) -> None:
    ref = directory.find_account("bob")
    assert ref is not None
    old = directory.password_hash(ref)
    assert old is not None
    new = directory.password_record(ref, "builder")
    directory.set_password(ref, "changed-meanwhile")
    assert not directory.replace_password_record(ref, old, new)  # the change wins
    assert not login(Authenticator(directory), "bob", "builder").ok
    current = directory.password_hash(ref)
    assert current is not None
    for bad in ({"password": "{PLAIN}x"}, {"password": 5}, {"password": new["password"], "apop": 3}, "x"):
        with pytest.raises(BadSetting):
            directory.replace_password_record(ref, current, bad)  # type: ignore[arg-type]
    assert directory.replace_password_record(ref, current, directory.password_record(ref, "again"))
    assert login(Authenticator(directory), "bob", "again").ok
