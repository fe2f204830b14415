"""Plain user names: which domain they log in to (directory/logins.py), and
the same rules through the authenticator every login door uses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from dynamail.auth import Authenticator
from dynamail.directory import Directory
from dynamail.directory.logins import ip_list
from dynamail.directory.model import BadSetting
from dynamail.metrics import Metrics

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def _directory(tmp_path: Path) -> Directory:
    d = Directory(tmp_path / "base", main_domain="main.example", password_hasher=FAST)
    d.create_domain("by-ip.example", settings={"IPAddresses": ["127.0.0.9", "::1"]})
    d.create_domain("shared.example", shared=True)
    for domain in ("main.example", "by-ip.example", "shared.example"):
        d.create_account(domain, "bob", password=f"pw-{domain}")
    d.create_account("main.example", "postmaster", password="pm")
    return d


def test_plain_name_resolution_order(tmp_path: Path) -> None:
    d = _directory(tmp_path)
    # no rule applies: the Main Domain
    assert d.login_address("bob") == "bob@main.example"
    # the domain whose IPAddresses list the local address
    assert d.login_address("bob", "127.0.0.9") == "bob@by-ip.example"
    assert d.login_address("bob", "0:0::1") == "bob@by-ip.example"
    assert d.login_address("bob", "127.0.0.10") == "bob@main.example"
    # the cluster-wide default login domain (a shared domain can be it)
    d.update_cluster_domain_defaults({"DefaultLoginDomain": "shared.example"})
    assert d.login_address("bob") == "bob@shared.example"
    assert d.login_address("bob", "127.0.0.9") == "bob@by-ip.example"  # the address still wins
    # the server-wide one comes before the cluster-wide one
    d.update_server_domain_defaults({"DefaultLoginDomain": "by-ip.example"})
    assert d.login_address("bob") == "bob@by-ip.example"
    d.update_server_domain_defaults({"DefaultLoginDomain": "no-such.example"})  # unknown: skipped
    assert d.login_address("bob") == "bob@shared.example"
    # explicit domains: user@domain and user%domain
    assert d.login_address("bob@main.example", "127.0.0.9") == "bob@main.example"
    assert d.login_address("bob%main.example", "127.0.0.9") == "bob@main.example"
    # a changed IPAddresses applies at once
    with pytest.raises(BadSetting):  # refused at write time (issue 17)
        d.update_domain_settings("by-ip.example", {"IPAddresses": "127.0.0.11, bogus"})
    d.update_domain_settings("by-ip.example", {"IPAddresses": "127.0.0.11"})
    assert d.login_address("bob", "127.0.0.9") == "bob@shared.example"
    assert d.login_address("bob", "127.0.0.11") == "bob@by-ip.example"
    # the Main Domain is tried after the chosen domain
    assert d.login_addresses("postmaster") == ["postmaster@shared.example", "postmaster@main.example"]
    assert ip_list(["10.0.0.1", "x", 5]) == ["10.0.0.1"]


def test_authenticator_uses_the_login_rules(tmp_path: Path) -> None:
    d = _directory(tmp_path)
    auth = Authenticator(d, metrics=Metrics())
    d.update_cluster_domain_defaults({"DefaultLoginDomain": "shared.example"})

    async def go() -> None:
        r = await auth.authenticate("bob", "pw-shared.example", protocol="pop3", remote="10.1.1.1")
        assert r.ok and r.ref is not None and r.ref.address == "bob@shared.example"
        r = await auth.authenticate("bob", "pw-by-ip.example", protocol="smtp", remote="10.1.1.1", local="127.0.0.9")
        assert r.ok and r.ref is not None and r.ref.address == "bob@by-ip.example"
        r = await auth.authenticate("bob%main.example", "pw-main.example", protocol="cli", remote="10.1.1.1")
        assert r.ok and r.ref is not None and r.ref.address == "bob@main.example"
        # the server's own accounts keep their plain names
        r = await auth.authenticate("postmaster", "pm", protocol="cli", remote="10.1.1.1")
        assert r.ok and r.ref is not None and r.ref.address == "postmaster@main.example"
        # the name means one account: another domain's password does not open it
        r = await auth.authenticate("bob", "pw-main.example", protocol="imap", remote="10.1.1.1")
        assert not r.ok

    asyncio.run(go())
