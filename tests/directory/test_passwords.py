"""Password hash formats with published or independently produced vectors."""

from __future__ import annotations

import bcrypt
import pytest
from argon2 import PasswordHasher

from dynamail.directory import BadSetting, Directory, passwords, shacrypt

# Vectors from the SHA-crypt specification ("Unix crypt using SHA-256 and SHA-512").
SHA_CRYPT_VECTORS = [
    ("$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    (
        "$5$rounds=10000$saltstringsaltstring",
        "Hello world!",
        "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
    ),
    (
        "$5$rounds=5000$toolongsaltstring",
        "This is just a test",
        "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5",
    ),
    (
        "$6$saltstring",
        "Hello world!",
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
    ),
    (
        "$6$rounds=10000$saltstringsaltstring",
        "Hello world!",
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
    (
        "$6$rounds=1400$anotherlongsaltstring",
        "a very much longer text to encrypt.  This one even stretches over morethan one line.",
        "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1",
    ),
]


@pytest.mark.parametrize(("setting", "password", "expected"), SHA_CRYPT_VECTORS)
def test_sha_crypt_vectors(setting: str, password: str, expected: str) -> None:
    assert shacrypt.sha_crypt(password.encode(), setting) == expected
    assert shacrypt.verify(password.encode(), expected)
    assert not shacrypt.verify(b"wrong", expected)


def test_dovecot_style_schemes() -> None:
    vector = SHA_CRYPT_VECTORS[3]
    assert passwords.verify("{SHA512-CRYPT}" + vector[2], "Hello world!")
    assert not passwords.verify("{SHA512-CRYPT}" + vector[2], "Hello world")
    assert passwords.verify("{SHA256-CRYPT}" + SHA_CRYPT_VECTORS[0][2], "Hello world!")
    assert not passwords.verify("{SHA256-CRYPT}" + vector[2], "Hello world!")  # scheme mismatch
    blf = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    assert passwords.verify("{BLF-CRYPT}" + blf, "s3cret")
    assert passwords.verify("{BLF-CRYPT}" + blf.replace("$2b$", "$2y$", 1), "s3cret")
    assert not passwords.verify("{BLF-CRYPT}" + blf, "s3cre")
    fast = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    a2 = fast.hash("pw")
    assert passwords.verify("{ARGON2ID}" + a2, "pw")
    assert passwords.verify(a2, "pw")
    assert not passwords.verify(a2, "pW")
    assert passwords.verify("{PLAIN}clear text", "clear text")
    assert not passwords.verify("{PLAIN}clear text", "clear")
    assert passwords.clear_from_hash("{PLAIN}x") == "x"
    assert not passwords.verify("{MD5}whatever", "x")
    assert not passwords.verify("{SHA512-CRYPT}garbage", "x")
    assert not passwords.verify("{BLF-CRYPT}garbage", "x")
    assert not passwords.verify(a2, "x" * (passwords.MAX_PASSWORD + 1))


def test_imported_hash_on_account(directory: Directory) -> None:
    ref = directory.create_account("main.example", "imp")
    directory.set_password_hash(ref, "{SHA512-CRYPT}" + SHA_CRYPT_VECTORS[3][2])
    stored = directory.password_hash(ref)
    assert stored is not None and passwords.verify(stored, "Hello world!")
    assert directory.apop_secret(ref) is None
    with pytest.raises(BadSetting):
        directory.set_password_hash(ref, "{NOPE}x")
    directory.set_password_hash(ref, "{PLAIN}open")
    assert directory.apop_secret(ref) == "open"


def test_apop_secret_follows_allow_apop(directory: Directory) -> None:
    ref = directory.create_account("main.example", "ap", password="first")
    assert directory.apop_secret(ref) == "first"
    key = directory.base / "Settings" / "apop.key"
    assert key.stat().st_mode & 0o077 == 0
    assert b"first" not in (directory.account_dir(ref) / "Account.json").read_bytes()
    directory.update_account_settings(ref, {"AllowAPOP": "NO"})
    assert directory.apop_secret(ref) is None  # not used while disallowed
    directory.set_password(ref, "second")
    assert directory.apop_secret(ref) is None
    assert '"apop": null' in (directory.account_dir(ref) / "Account.json").read_text()
    directory.update_server_account_defaults({"AllowAPOP": "NO"})
    directory.update_account_settings(ref, {"AllowAPOP": "default"})
    other = directory.create_account("main.example", "nope", password="x")
    assert directory.apop_secret(other) is None


def test_shared_accounts_use_cluster_key(directory: Directory) -> None:
    directory.create_domain("s.example", shared=True)
    ref = directory.create_account("s.example", "sh", password="pw")
    assert (directory.cluster_dir / "apop.key").is_file()
    assert directory.apop_secret(ref) == "pw"
    # Another member (another Directory on the same shared storage) reads it too.
    twin = Directory(directory.base.parent / "twin", main_domain="twin.example",
                     shared_base=directory.shared_base)
    assert twin.apop_secret(ref) == "pw"


@pytest.mark.skipif(not shacrypt._lib().available, reason="the system has no libcrypt with crypt_r")
@pytest.mark.parametrize("setting", ["$6$saltstring", "$5$rounds=1000$abc", "$6$rounds=1200$a.b/c", "$6$$", "$5$x"])
@pytest.mark.parametrize("password", [b"", b"p", b"Hello world!", "p\u00e4ss w\u00f6rd".encode(), b"x" * 300])
def test_system_crypt_agrees_with_the_python_implementation(setting: str, password: bytes) -> None:
    expected = shacrypt.sha_crypt(password, setting)
    assert shacrypt._lib().crypt(password, setting) == expected
    assert shacrypt.verify(password, expected)
    assert not shacrypt.verify(password + b"!", expected)


def test_nul_in_a_password_never_reaches_the_system_crypt() -> None:
    hashed = shacrypt.sha_crypt(b"a\x00b", "$6$salt")
    assert shacrypt._lib().crypt(b"a\x00b", hashed) is None
    assert shacrypt.verify(b"a\x00b", hashed) and not shacrypt.verify(b"a", hashed)
