"""DKIM keys kept with a domain: create, rotate, remove, DNS records, and
signatures made with them that dkimpy verifies (and rejects once changed)."""

from __future__ import annotations

import stat

import dkim
import pytest

from dynamail.directory import AlreadyExists, BadSetting, Directory
from dynamail.directory.dkim import DKIM_FILE, SELECTORS_SETTING
from dynamail.mailauth.signing import Signer, from_domain

MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@far.example\r\nSubject: hello\r\n"
    b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nHello Bob.\r\n"
)


def dns_of(directory: Directory, domain: str):  # type: ignore[no-untyped-def]
    records = {k["name"] + ".": k["txt"].encode() for k in directory.dkim_keys(domain)}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode())

    return dnsfunc


def test_create_both_algorithms_and_sign(directory: Directory) -> None:
    directory.create_domain("example.org")
    keys = directory.create_dkim_key("example.org", "rsa", "s1")
    keys = directory.create_dkim_key("example.org", "ed25519", "e1")
    assert [(k["selector"], k["algorithm"], k["active"]) for k in keys] == [("e1", "ed25519", True), ("s1", "rsa", True)]
    assert directory.domain_settings("example.org")[SELECTORS_SETTING] == ["s1", "e1"]
    rsa = next(k for k in keys if k["algorithm"] == "rsa")
    assert rsa["name"] == "s1._domainkey.example.org"
    assert rsa["txt"].startswith("v=DKIM1; k=rsa; p=MIIBIjAN")  # RSA-2048 SubjectPublicKeyInfo
    assert all(len(part) <= 255 for part in rsa["zone"].split('"')[1::2])
    path = directory._dpath("example.org") / DKIM_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in repr(keys).encode()

    fields = Signer(directory).signature(MESSAGE)
    assert fields.count(b"DKIM-Signature:") == 2
    signed = fields + MESSAGE
    d = dkim.DKIM(signed)
    dnsfunc = dns_of(directory, "example.org")
    assert d.verify(idx=0, dnsfunc=dnsfunc) and d.verify(idx=1, dnsfunc=dnsfunc)
    assert b"a=ed25519-sha256" in fields and b"a=rsa-sha256" in fields and b"c=relaxed/relaxed" in fields
    tampered = signed.replace(b"Hello Bob.", b"Hello Eve.")
    assert not dkim.verify(tampered, dnsfunc=dnsfunc)
    forged = signed.replace(b"Subject: hello", b"Subject: pay now")
    assert not dkim.verify(forged, dnsfunc=dnsfunc)


def test_rotate_retires_old_keys(directory: Directory) -> None:
    directory.create_domain("example.org")
    directory.create_dkim_key("example.org", "rsa", "old")
    old_fields = Signer(directory).signature(MESSAGE)
    keys = directory.rotate_dkim_keys("example.org")
    active = [k for k in keys if k["active"]]
    assert len(active) == 1 and active[0]["selector"] != "old" and active[0]["algorithm"] == "rsa"
    assert {k["selector"]: k["active"] for k in keys}["old"] is False
    new_fields = Signer(directory).signature(MESSAGE)
    assert f"s={active[0]['selector']};".encode() in new_fields.replace(b" ", b"").replace(b"\r\n\t", b"")
    # mail signed before the rotation still verifies while the old record stays published
    assert dkim.verify(old_fields + MESSAGE, dnsfunc=dns_of(directory, "example.org"))
    with pytest.raises(BadSetting):
        directory.remove_dkim_key("example.org", active[0]["selector"])
    keys = directory.remove_dkim_key("example.org", "old")
    assert [k["selector"] for k in keys] == [active[0]["selector"]]


def test_bad_input(directory: Directory) -> None:
    directory.create_domain("example.org")
    with pytest.raises(BadSetting):
        directory.create_dkim_key("example.org", "dsa")
    with pytest.raises(BadSetting):
        directory.rotate_dkim_keys("example.org")
    directory.create_dkim_key("example.org", "ed25519", "a")
    with pytest.raises(AlreadyExists):
        directory.create_dkim_key("example.org", "ed25519", "a")
    with pytest.raises(ValueError):
        directory.create_dkim_key("example.org", "ed25519", "bad selector!")


def test_nothing_signs_without_keys_or_for_other_domains(directory: Directory) -> None:
    directory.create_domain("example.org")
    assert Signer(directory).signature(MESSAGE) == b""  # no key yet
    directory.create_dkim_key("example.org", "ed25519")
    assert Signer(directory).signature(MESSAGE.replace(b"alice@example.org", b"x@other.example")) == b""
    two_froms = b"From: a@example.org\r\n" + MESSAGE
    assert from_domain(two_froms) is None
    assert Signer(directory).signature(two_froms) == b""


def test_shared_domain_keys_on_shared_storage(directory: Directory) -> None:
    directory.create_domain("shared.example", shared=True)
    directory.create_dkim_key("shared.example", "rsa")
    assert (directory.shared_base / "shared.example" / DKIM_FILE).is_file()
    # another member: a Directory on the same shared storage signs with the same key
    other = Directory(directory.base.parent / "member2", main_domain="m2.example", shared_base=directory.shared_base)
    msg = MESSAGE.replace(b"example.org", b"shared.example")
    assert dkim.verify(Signer(other).signature(msg) + msg, dnsfunc=dns_of(directory, "shared.example"))
