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


def default_hasher() -> PasswordHasher:
    return PasswordHasher()


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
