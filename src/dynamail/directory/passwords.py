"""Password hash formats and the recoverable APOP secret.

The stored hash of a password set through dynamail is argon2id
(argon2-cffi).  Hashes imported from Dovecot passwd files are accepted as
they are, with their scheme prefix: ``{ARGON2ID}``/``{ARGON2I}``,
``{SHA512-CRYPT}``, ``{SHA256-CRYPT}``, ``{BLF-CRYPT}`` (bcrypt),
``{PLAIN}``/``{CLEAR}``; an unprefixed ``$argon2…``, ``$6$``, ``$5$`` or
``$2…$`` string is recognised by its own prefix.

APOP (RFC 1939 section 7) and the CLI protocol's APOP login need the clear
password on the server.  When the effective setting ``AllowAPOP`` is yes,
the password is also kept encrypted with AES-GCM under a per-server key
(``apop.key``, mode 0600).  Trade-off: anyone who can read both an
account file and the key file learns the clear password, which an argon2
hash alone would not reveal; setting ``AllowAPOP`` to ``NO`` removes the
secret at the next password change.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
from pathlib import Path

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dynamail.directory import shacrypt
from dynamail.durable import atomic_write, fsync_dir

MAX_PASSWORD = 1024  # longer presented passwords are refused before hashing

_APOP_AAD = b"dynamail-apop-v1"


# Default argon2id parameters of new hashes: OWASP's first recommended
# minimum (m=19 MiB, t=2, p=1), about 30 ms of one core per hash.  RFC 9106
# section 4 recommends m=64 MiB, t=3, p=4 ("second recommended option")
# when memory allows; a server configures its own (``[auth]``), and hashes
# made with other parameters keep verifying with theirs.
ARGON2_MEMORY_KIB = 19456
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1


def make_hasher(
    memory_kib: int = ARGON2_MEMORY_KIB, time_cost: int = ARGON2_TIME_COST, parallelism: int = ARGON2_PARALLELISM
) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


def default_hasher() -> PasswordHasher:
    return make_hasher()


SUPPORTED_SCHEMES = frozenset({
    "ARGON2", "ARGON2ID", "ARGON2I", "ARGON2D", "SHA512-CRYPT", "SHA256-CRYPT",
    "BLF-CRYPT", "BCRYPT", "PLAIN", "CLEAR",
})


def split_scheme(stored: str) -> tuple[str, str]:
    """``(SCHEME, rest)`` of a stored hash; the scheme is upper-case."""
    if stored.startswith("{"):
        end = stored.find("}")
        if end > 0:
            return stored[1:end].upper(), stored[end + 1:]
    if stored.startswith("$argon2"):
        return "ARGON2", stored
    if stored.startswith("$6$"):
        return "SHA512-CRYPT", stored
    if stored.startswith("$5$"):
        return "SHA256-CRYPT", stored
    if stored.startswith(("$2a$", "$2b$", "$2y$", "$2x$")):
        return "BLF-CRYPT", stored
    return "UNKNOWN", stored


def verify(stored: str, password: str, hasher: PasswordHasher | None = None) -> bool:
    """Whether ``password`` matches ``stored`` (any supported format)."""
    if len(password) > MAX_PASSWORD:
        return False
    pw = password.encode("utf-8")
    scheme, rest = split_scheme(stored)
    if scheme in ("ARGON2", "ARGON2ID", "ARGON2I", "ARGON2D"):
        try:
            return (hasher or _HASHER).verify(rest, pw)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
    if scheme == "SHA512-CRYPT" and rest.startswith("$6$"):
        return shacrypt.verify(pw, rest)
    if scheme == "SHA256-CRYPT" and rest.startswith("$5$"):
        return shacrypt.verify(pw, rest)
    if scheme in ("BLF-CRYPT", "BCRYPT"):
        if len(pw) > 72:  # bcrypt only looks at 72 bytes; refuse rather than truncate silently
            return False
        try:
            return bcrypt.checkpw(pw, rest.encode("ascii"))
        except ValueError:
            return False
    if scheme in ("PLAIN", "CLEAR"):
        return hmac.compare_digest(rest.encode("utf-8"), pw)
    return False


def needs_upgrade(stored: str) -> bool:
    """Whether ``stored`` is an imported (non-argon2) hash that a successful
    login should replace with argon2id."""
    return split_scheme(stored)[0] not in ("ARGON2", "ARGON2ID", "ARGON2I", "ARGON2D")


def needs_rehash(stored: str, hasher: PasswordHasher | None = None) -> bool:
    """Whether ``stored`` differs from what ``hasher`` would store now: an
    imported hash, another argon2 variant, or other argon2 parameters."""
    scheme, rest = split_scheme(stored)
    if scheme not in ("ARGON2", "ARGON2ID"):
        return True
    try:
        return (hasher or _HASHER).check_needs_rehash(rest)
    except (InvalidHashError, ValueError):
        return True


# -- keyed verifiers ---------------------------------------------------------
# A verified-credentials record that any server holding ``key`` can check
# with one HMAC instead of an argon2 verification (see ``dynamail.auth``):
#
#     "v1" SP expires SP base64(HMAC-SHA256(key, "dynamail-verifier-v1" NUL
#                                address NUL stored hash NUL expires NUL password))
#
# It binds the stored hash, so a password change (any new stored hash)
# revokes every verifier at once, wherever it is checked.

VERIFIER_MAX = 128  # a longer verifier text is refused unread


def _verifier_mac(key: bytes, address: str, stored: str, expires: int, password: str) -> bytes:
    msg = b"\x00".join((
        b"dynamail-verifier-v1", address.encode("utf-8"), stored.encode("utf-8", "replace"),
        str(expires).encode(), password.encode("utf-8", "surrogatepass"),
    ))
    return hmac.new(key, msg, "sha256").digest()


def make_verifier(key: bytes, address: str, stored: str, password: str, expires: int) -> str:
    mac = _verifier_mac(key, address, stored, expires, password)
    return f"v1 {expires} {base64.b64encode(mac).decode('ascii')}"


def check_verifier(key: bytes, text: str, address: str, stored: str, password: str, now: float) -> bool:
    """Whether ``text`` is an unexpired verifier of exactly this address,
    stored hash and password under ``key``."""
    if len(text) > VERIFIER_MAX:
        return False
    parts = text.split(" ")
    if len(parts) != 3 or parts[0] != "v1" or not (parts[1].isascii() and parts[1].isdigit()):
        return False
    expires = int(parts[1])
    if expires <= now:
        return False
    try:
        mac = base64.b64decode(parts[2], validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(mac, _verifier_mac(key, address, stored, expires, password))


def clear_from_hash(stored: str) -> str | None:
    """The clear password when the stored form holds it (``{PLAIN}``)."""
    scheme, rest = split_scheme(stored)
    return rest if scheme in ("PLAIN", "CLEAR") else None


_HASHER = default_hasher()


def hash_password(password: str, hasher: PasswordHasher | None = None) -> str:
    if len(password) > MAX_PASSWORD:
        raise ValueError("password is too long")
    return (hasher or _HASHER).hash(password.encode("utf-8"))


class ApopKeys:
    """The per-server AES-GCM key that protects APOP secrets.

    The key file is created without locks: the key is written to a
    temporary file and *linked* to its final name, which fails when another
    process (another cluster member on the shared storage) created it
    first; the loser then reads the winner's key.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: bytes | None = None

    def key(self) -> bytes:
        if self._key is None:
            try:
                self._key = self._read()
            except FileNotFoundError:
                self._key = self._create()
        return self._key

    def _read(self) -> bytes:
        raw = self.path.read_bytes()
        key = base64.b64decode(raw.strip())
        if len(key) != 32:
            raise ValueError(f"{self.path}: bad key length")
        return key

    def _create(self) -> bytes:
        key = AESGCM.generate_key(bit_length=256)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        atomic_write(tmp, base64.b64encode(key) + b"\n", mode=0o600)
        try:
            os.link(tmp, self.path)
            fsync_dir(self.path.parent)
        except FileExistsError:
            return self._read()
        finally:
            tmp.unlink(missing_ok=True)
        return key

    def seal(self, password: str) -> str:
        nonce = secrets.token_bytes(12)
        ct = AESGCM(self.key()).encrypt(nonce, password.encode("utf-8"), _APOP_AAD)
        return base64.b64encode(nonce + ct).decode("ascii")

    def open(self, sealed: str) -> str | None:
        try:
            raw = base64.b64decode(sealed)
            return AESGCM(self.key()).decrypt(raw[:12], raw[12:], _APOP_AAD).decode("utf-8")
        except Exception:
            return None
