from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dynamail.accounts import AccountRef
from dynamail.directory import (
    AlreadyExists,
    BadName,
    BadSetting,
    Directory,
    DomainInfo,
    LimitReached,
    NoSuchAccount,
    NoSuchDomain,
    NotEmpty,
    Recipient,
)
from dynamail.directory.model import BUILTIN_ACCOUNT_SETTINGS, BUILTIN_DOMAIN_SETTINGS

from .conftest import FAST_HASHER


def test_layout_and_main_domain(directory: Directory) -> None:
    base = directory.base
    assert (base / "Settings").is_dir()
    assert (base / "Domains" / "main.example" / "Accounts").is_dir()
    assert (base / "SharedDomains" / ".cluster").is_dir()
    assert directory.list_domains() == [DomainInfo("main.example", False)]
    assert not directory.is_shared("main.example")
    with pytest.raises(BadSetting):
        directory.delete_domain("main.example")


def test_main_domain_is_never_shared(tmp_path: Path) -> None:
    d = Directory(tmp_path, main_domain="m.example", password_hasher=FAST_HASHER)
    with pytest.raises((BadSetting, AlreadyExists)):
        d.create_domain("m.example", shared=True)


def test_shared_base_elsewhere(tmp_path: Path) -> None:
    shared = tmp_path / "nfs"
    d = Directory(tmp_path / "b", main_domain="m.example", shared_base=shared, password_hasher=FAST_HASHER)
    d.create_domain("s.example", shared=True)
    assert (shared / "s.example" / "Settings.json").is_file()
    assert d.list_domains() == [DomainInfo("m.example", False), DomainInfo("s.example", True)]
    ref = d.create_account("s.example", "ann")
    assert ref == AccountRef("s.example", "ann", True)
    assert shared in d.account_mail_path(ref).parents
    # A second server on the same shared storage sees the shared domain.
    other = Directory(tmp_path / "b2", main_domain="n.example", shared_base=shared, password_hasher=FAST_HASHER)
    assert other.find_account("ann@s.example") == ref
    assert not other.domain_exists("m.example")


def test_create_list_delete_domains(directory: Directory) -> None:
    directory.create_domain("B.example", settings={"MaxAccounts": 3, "RealName": "default"})
    directory.create_domain("a.example", shared=True)
    assert [d.name for d in directory.list_domains()] == ["a.example", "b.example", "main.example"]
    assert directory.is_shared("a.example")
    assert directory.domain_settings("b.example") == {"MaxAccounts": 3}
    with pytest.raises(AlreadyExists):
        directory.create_domain("b.example", shared=True)
    with pytest.raises(AlreadyExists):
        directory.create_domain("A.EXAMPLE")
    directory.create_account("b.example", "x")
    with pytest.raises(NotEmpty):
        directory.delete_domain("b.example")
    directory.delete_domain("b.example", force=True)
    directory.delete_domain("a.example")
    assert [d.name for d in directory.list_domains()] == ["main.example"]
    assert not any(p.name.startswith(".") for p in (directory.base / "Domains").iterdir())
    with pytest.raises(NoSuchDomain):
        directory.delete_domain("a.example")


HOSTILE = ["..", ".", "../etc", "a/b", "a\\b", "a\x00b", "a\nb", "x" * 300, "", " ", ".hidden", "a..b", "é\u202e"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_refused_everywhere(directory: Directory, name: str) -> None:
    with pytest.raises(BadName):
        directory.create_domain(name)
    with pytest.raises(BadName):
        directory.create_account("main.example", name)
    assert directory.find_account(name) is None
    assert directory.find_account(f"{name}@main.example") is None
    assert directory.resolve_recipient(f"{name}@main.example") is None
    ref = directory.create_account("main.example", "victim")
    with pytest.raises(BadName):
        directory.rename_account(ref, f"{name}@main.example")
    with pytest.raises(BadName):
        directory.set_account_aliases(ref, [name])
    with pytest.raises((BadName, NoSuchDomain)):
        directory.domain_settings(name)
    directory.delete_account(ref)
    base_entries = sorted(p.name for p in directory.base.iterdir())
    assert base_entries == ["Domains", "Settings", "SharedDomains"]


def test_bad_setting_values(directory: Directory) -> None:
    ref = directory.create_account("main.example", "u")
    with pytest.raises(BadSetting):
        directory.update_account_settings(ref, {"": "x"})
    with pytest.raises(BadSetting):
        directory.update_account_settings(ref, {"Bad\nKey": "x"})
    with pytest.raises(BadSetting):
        directory.update_account_settings(ref, {"X-K": object()})
    with pytest.raises(BadSetting):
        directory.update_account_settings(ref, {"X-K": "a\x00b"})
    with pytest.raises(BadSetting):
        directory.set_account_settings(ref, ["not", "a", "dict"])  # type: ignore[arg-type]
    # the custom namespace (X-) stores any JSON value
    directory.update_account_settings(ref, {"X-K": {"nested": [1, "two", True]}, "X-B": b"\x01\x02"})
    assert directory.account_settings(ref) == {"X-K": {"nested": [1, "two", True]}, "X-B": "AQI="}


def test_account_settings_inheritance_local(directory: Directory) -> None:
    directory.create_domain("d.example")
    ref = directory.create_account("d.example", "bob", settings={"RealName": "Bob"})
    eff = directory.effective_account_settings(ref)
    assert eff == {**BUILTIN_ACCOUNT_SETTINGS, "RealName": "Bob"}
    directory.update_server_account_defaults({"MaxAccountSize": "1G", "Language": "French"})
    directory.update_cluster_account_defaults({"MaxAccountSize": "5G"})  # not for local domains
    assert directory.effective_account_settings(ref)["MaxAccountSize"] == "1G"
    directory.update_account_defaults("d.example", {"MaxAccountSize": "2G"})
    assert directory.effective_account_settings(ref)["MaxAccountSize"] == "2G"
    directory.update_account_settings(ref, {"MaxAccountSize": "unlimited"})
    assert directory.effective_account_settings(ref)["MaxAccountSize"] == "unlimited"
    # "default" removes the key at each level in turn.
    directory.update_account_settings(ref, {"MaxAccountSize": "default"})
    assert "MaxAccountSize" not in directory.account_settings(ref)
    assert directory.effective_account_settings(ref)["MaxAccountSize"] == "2G"
    directory.update_account_defaults("d.example", {"MaxAccountSize": "default"})
    assert directory.effective_account_settings(ref)["MaxAccountSize"] == "1G"
    directory.update_server_account_defaults({"MaxAccountSize": "default"})
    assert directory.effective_account_settings(ref)["MaxAccountSize"] == "100M"
    assert directory.effective_account_settings(ref)["Language"] == "French"
    # set_* replaces the whole dictionary and drops "default" values
    directory.set_account_settings(ref, {"AccessModes": ["IMAP"], "RealName": "default"})
    assert directory.account_settings(ref) == {"AccessModes": ["IMAP"]}


def test_account_settings_inheritance_shared(directory: Directory) -> None:
    directory.create_domain("s.example", shared=True)
    ref = directory.create_account("s.example", "ann")
    directory.update_server_account_defaults({"MaxAccountSize": "1G"})  # not for shared domains
    assert directory.effective_account_settings(ref)["MaxAccountSize"] == "100M"
    directory.update_cluster_account_defaults({"MaxAccountSize": "5G"})
    assert directory.effective_account_settings(ref)["MaxAccountSize"] == "5G"
    directory.update_account_defaults("s.example", {"MaxAccountSize": "7G"})
    assert directory.effective_account_settings(ref)["MaxAccountSize"] == "7G"


def test_domain_settings_inheritance(directory: Directory) -> None:
    directory.create_domain("l.example")
    directory.create_domain("s.example", shared=True)
    assert directory.effective_domain_settings("l.example") == BUILTIN_DOMAIN_SETTINGS
    directory.update_server_domain_defaults({"MaxAccounts": 10})
    directory.update_cluster_domain_defaults({"MaxAccounts": 20})
    assert directory.effective_domain_settings("l.example")["MaxAccounts"] == 10
    assert directory.effective_domain_settings("s.example")["MaxAccounts"] == 20
    directory.update_domain_settings("s.example", {"MaxAccounts": 1})
    assert directory.effective_domain_settings("s.example")["MaxAccounts"] == 1
    directory.create_account("s.example", "one")
    with pytest.raises(LimitReached):
        directory.create_account("s.example", "two")
    directory.update_domain_settings("s.example", {"MaxAccounts": "default"})
    directory.create_account("s.example", "two")
    directory.set_domain_settings("l.example", {"RealName": "L"})
    assert directory.domain_settings("l.example") == {"RealName": "L"}
    directory.set_cluster_domain_defaults({})
    assert directory.effective_domain_settings("s.example")["MaxAccounts"] == "unlimited"


def test_prefs_inheritance(directory: Directory) -> None:
    directory.create_domain("s.example", shared=True)
    local = directory.create_account("main.example", "l")
    shared = directory.create_account("s.example", "s")
    directory.update_server_account_prefs({"Language": "German"})
    directory.update_cluster_account_prefs({"Language": "Dutch"})
    assert directory.effective_account_prefs(local)["Language"] == "German"
    assert directory.effective_account_prefs(shared)["Language"] == "Dutch"
    directory.update_account_prefs(shared, {"Language": "Greek"})
    assert directory.effective_account_prefs(shared)["Language"] == "Greek"
    directory.update_account_prefs(shared, {"Language": "default"})
    assert directory.account_prefs(shared) == {}
    directory.set_server_account_prefs({"X-Flag": 1})
    assert directory.server_account_prefs() == {"X-Flag": 1}


def test_find_account_forms(directory: Directory) -> None:
    directory.create_domain("d.example")
    ref = directory.create_account("d.example", "Carol")
    assert ref.name == "carol"
    assert directory.find_account("carol@D.Example") == ref
    pm = directory.create_account("main.example", "pm")
    assert directory.find_account("PM") == pm
    assert directory.find_account("pm@main.example") == pm
    assert directory.find_account("nobody@d.example") is None
    assert directory.find_account("carol@nowhere.example") is None
    with pytest.raises(AlreadyExists):
        directory.create_account("d.example", "CAROL")
    with pytest.raises(NoSuchDomain):
        directory.create_account("nowhere.example", "x")


def test_aliases_and_forwarders(directory: Directory) -> None:
    directory.create_domain("d.example")
    ref = directory.create_account("d.example", "dave")
    directory.set_account_aliases(ref, ["David", "d"])
    assert directory.account_aliases(ref) == ["d", "david"]
    assert directory.find_account("david@d.example") == ref
    assert directory.resolve_recipient("d@d.example") == Recipient([ref], [])
    with pytest.raises(AlreadyExists):
        directory.create_account("d.example", "david")
    directory.set_forwarder("d.example", "sales", "team@elsewhere.example")
    assert directory.resolve_recipient("Sales@d.example") == Recipient([], ["team@elsewhere.example"])
    with pytest.raises(AlreadyExists):
        directory.create_account("d.example", "sales")
    with pytest.raises(AlreadyExists):
        directory.set_forwarder("d.example", "dave", "x@y.example")
    with pytest.raises(BadSetting):
        directory.set_forwarder("d.example", "bad", "no-at-sign")
    with pytest.raises(NotEmpty):
        directory.delete_domain("d.example")  # holds a forwarder... and an account
    assert directory.resolve_recipient("unknown@d.example") is None
    assert directory.resolve_recipient("x@unknown.example") is None
    directory.set_forwarder("d.example", "sales", None)
    assert directory.resolve_recipient("sales@d.example") is None
    # Aliases follow a rename inside the domain and vanish with the account.
    new = directory.rename_account(ref, "dan@d.example")
    assert directory.find_account("david@d.example") == new
    directory.delete_account(new)
    assert directory.find_account("david@d.example") is None
    assert directory.resolve_recipient("d@d.example") is None


def test_rename_moves_mail_and_data(directory: Directory) -> None:
    directory.create_domain("a.example")
    directory.create_domain("s.example", shared=True)
    ref = directory.create_account("a.example", "eve", settings={"RealName": "Eve"}, password="pw1")
    mail = directory.account_mail_path(ref)
    mail.mkdir(parents=True)
    (mail / "data").write_bytes(b"mail")
    directory.update_account_prefs(ref, {"Language": "Latin"})
    directory.post_alert(("account", ref), "hello")
    new = directory.rename_account(ref, "eva@a.example")
    assert directory.find_account("eve@a.example") is None
    assert (directory.account_mail_path(new) / "data").read_bytes() == b"mail"
    assert directory.account_settings(new) == {"RealName": "Eve"}
    assert directory.account_prefs(new) == {"Language": "Latin"}
    assert [a.text for a in directory.alerts(("account", new))] == ["hello"]
    assert directory.list_accounts("a.example") == ["eva"]
    # into a shared domain
    moved = directory.rename_account(new, "eva@s.example")
    assert moved.shared
    assert (directory.account_mail_path(moved) / "data").read_bytes() == b"mail"
    assert directory.list_accounts("a.example") == []
    assert directory.list_accounts("s.example") == ["eva"]
    directory.create_account("s.example", "taken")
    with pytest.raises(AlreadyExists):
        directory.rename_account(moved, "taken@s.example")
    with pytest.raises(NoSuchDomain):
        directory.rename_account(moved, "x@nowhere.example")
    directory.delete_account(moved)
    with pytest.raises(NoSuchAccount):
        directory.delete_account(moved)
    with pytest.raises(NoSuchAccount):
        directory.account_settings(moved)
    assert not directory.account_dir(moved).exists()


def test_rights(directory: Directory) -> None:
    directory.create_domain("d.example")
    admin = directory.create_account("main.example", "admin")
    directory.set_account_rights(admin, ["master", "All Domains", "Domain:D.Example"])
    assert directory.account_rights(admin) == {"Master", "Users", "Domain:d.example"}
    assert directory.administered_domains(admin) == {"d.example"}
    user = directory.create_account("d.example", "da")
    with pytest.raises(BadSetting):
        directory.set_account_rights(user, ["Master"])
    with pytest.raises(BadSetting):
        directory.set_account_rights(user, ["NoSuchRight"])
    directory.set_account_rights(user, ["DomainAdmin"])
    assert directory.administered_domains(user) == {"d.example"}
    directory.set_account_rights(user, [])
    assert directory.account_rights(user) == frozenset()


def test_ensure_postmaster(directory: Directory) -> None:
    pw = directory.ensure_postmaster()
    assert pw
    ref = directory.find_account("postmaster")
    assert ref is not None and "Master" in directory.account_rights(ref)
    assert directory.ensure_postmaster("other") is None


def test_files_are_json_and_private(directory: Directory) -> None:
    ref = directory.create_account("main.example", "f", password="secret")
    raw = (directory.account_dir(ref) / "Account.json").read_bytes()
    record = json.loads(raw)
    assert record["password"].startswith("$argon2id$")
    assert b"secret" not in raw
    assert b"\r" not in raw
    assert os.stat(directory.account_dir(ref) / "Account.json").st_mode & 0o077 == 0


def test_changes_by_another_process_are_seen(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    a = Directory(tmp_path / "a", main_domain="a.example", shared_base=shared, password_hasher=FAST_HASHER)
    b = Directory(tmp_path / "b", main_domain="b.example", shared_base=shared, password_hasher=FAST_HASHER)
    a.create_domain("s.example", shared=True)
    ref = a.create_account("s.example", "x", settings={"RealName": "One"})
    assert b.account_settings(ref) == {"RealName": "One"}
    assert b.list_accounts("s.example") == ["x"]
    for i in range(20):  # replacements within one mtime tick are still noticed
        a.update_account_settings(ref, {"RealName": f"v{i}"})
        assert b.account_settings(ref)["RealName"] == f"v{i}"
    a.update_cluster_account_defaults({"MaxAccountSize": "9G"})
    assert b.effective_account_settings(ref)["MaxAccountSize"] == "9G"
    a.create_account("s.example", "y")
    assert b.list_accounts("s.example") == ["x", "y"]
    b.invalidate("s.example")
    b.invalidate()
    assert b.count_accounts("s.example") == 2


def test_cache_avoids_rereading(directory: Directory) -> None:
    ref = directory.create_account("main.example", "c", settings={"RealName": "C"})
    directory.account_settings(ref)
    reads = directory.files.reads
    for _ in range(10):
        directory.effective_account_settings(ref)
    assert directory.files.reads == reads
    directory.reload()
    directory.account_settings(ref)
    assert directory.files.reads == reads + 1


def test_password_key_is_never_stored_as_a_setting(directory: Directory) -> None:
    from dynamail.directory import passwords

    ref = directory.create_account("main.example", "pk", settings={"Password": "one", "RealName": "P"})
    assert directory.account_settings(ref) == {"RealName": "P"}
    stored = directory.password_hash(ref)
    assert stored is not None and passwords.verify(stored, "one", FAST_HASHER)
    directory.update_account_settings(ref, {"password": "two"})
    stored = directory.password_hash(ref)
    assert stored is not None and passwords.verify(stored, "two", FAST_HASHER)
    directory.set_account_settings(ref, {"PASSWORD": "three", "Language": "Manx"})
    assert directory.account_settings(ref) == {"Language": "Manx"}
    assert directory.apop_secret(ref) == "three"
    assert b"three" not in (directory.account_dir(ref) / "Account.json").read_bytes()
    with pytest.raises(BadSetting):
        directory.update_account_settings(ref, {"Password": ["not", "text"]})


def test_count_with_prefix(directory: Directory) -> None:
    for n in ("ann", "anna", "bob", "annette", "zed"):
        directory.create_account("main.example", n)
    assert directory.count_accounts("main.example") == 5
    assert directory.count_accounts("main.example", prefix="AN") == 3
    assert directory.count_accounts("main.example", prefix="q") == 0


def test_stale_temporaries_are_removed(directory: Directory) -> None:
    import time

    ref = directory.create_account("main.example", "keep")
    shard = directory.account_dir(ref).parent
    old = shard / ".new-half-built-1234"
    young = shard / ".deleted-in-progress-5678"
    for p in (old, young):
        p.mkdir()
        (p / "Account.json").write_text("{}")
    past = time.time() - 7200
    os.utime(old, (past, past))
    domain_old = directory.domains_dir / ".new-x.example-abcd"
    domain_old.mkdir()
    os.utime(domain_old, (past, past))
    directory.invalidate()
    assert directory.list_accounts("main.example") == ["keep"]
    assert [d.name for d in directory.list_domains()] == ["main.example"]
    assert not old.exists() and young.exists() and not domain_old.exists()


def test_domain_aliases(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    d = Directory(tmp_path / "a", main_domain="main.example", shared_base=shared, password_hasher=FAST_HASHER)
    d.create_domain("real.example", settings={"DomainAliases": ["Alias.example", "other.example"]})
    d.create_domain("s.example", shared=True)
    ref = d.create_account("real.example", "u")
    assert d.find_account("u@alias.example") == ref
    assert d.resolve_recipient("U@other.example") == Recipient([ref], [])
    assert d.domain_aliases("real.example") == ["alias.example", "other.example"]
    assert d.domain_settings("alias.example")["DomainAliases"] == ["alias.example", "other.example"]
    assert [x.name for x in d.list_domains()] == ["main.example", "real.example", "s.example"]
    with pytest.raises(AlreadyExists):
        d.create_domain("alias.example")
    with pytest.raises(AlreadyExists):
        d.update_domain_settings("s.example", {"DomainAliases": ["other.example"]})
    with pytest.raises(AlreadyExists):
        d.update_domain_settings("s.example", {"DomainAliases": ["real.example"]})
    with pytest.raises(BadName):
        d.update_domain_settings("s.example", {"DomainAliases": ["../x"]})
    with pytest.raises(BadSetting):
        d.delete_domain("alias.example")
    # shared aliases are seen by another member
    d.update_domain_settings("s.example", {"DomainAliases": "s-alias.example"})
    sref = d.create_account("s.example", "v")
    other = Directory(tmp_path / "b", main_domain="b.example", shared_base=shared, password_hasher=FAST_HASHER)
    assert other.find_account("v@s-alias.example") == sref
    assert other.find_account("u@alias.example") is None  # local domains stay local
    d.update_domain_settings("real.example", {"DomainAliases": ["other.example"]})
    assert d.find_account("u@alias.example") is None
    assert d.find_account("u@other.example") == ref
    d.update_domain_settings("real.example", {"DomainAliases": "default"})
    assert d.find_account("u@other.example") is None
    d.update_domain_settings("real.example", {"DomainAliases": ["alias.example"]})
    d.delete_domain("real.example", force=True)
    assert not d.domain_exists("alias.example")
    d.create_domain("alias.example")  # the name is free again


def test_rename_respects_max_accounts(directory: Directory) -> None:
    directory.create_domain("full.example", settings={"MaxAccounts": 1})
    directory.create_account("full.example", "only")
    ref = directory.create_account("main.example", "mover")
    with pytest.raises(LimitReached):
        directory.rename_account(ref, "mover@full.example")
    assert directory.rename_account(ref, "moved") == directory.ref("main.example", "moved")


def test_rename_to_own_alias(directory: Directory) -> None:
    ref = directory.create_account("main.example", "robert")
    directory.set_account_aliases(ref, ["bob", "rob"])
    new = directory.rename_account(ref, "bob")
    assert new.name == "bob"
    assert directory.account_aliases(new) == ["rob"]
    assert directory.find_account("rob") == new
    other = directory.create_account("main.example", "other")
    with pytest.raises(AlreadyExists):
        directory.rename_account(other, "rob")


def test_all_shared_directory_of_the_workers(tmp_path: Path) -> None:
    """The workers of ``serve --workers`` see the one server's base with
    every domain shared (its ownership arbitrated), the Main Domain too, and
    the server-wide settings as the cluster-wide ones."""
    from dynamail.directory import Directory

    base = tmp_path / "base"
    one = Directory(base, main_domain="main.example", password_hasher=FAST_HASHER)
    one.create_domain("other.example")
    ref = one.create_account("main.example", "ann", password="pw")
    assert not ref.shared
    w = Directory(base, main_domain="main.example", password_hasher=FAST_HASHER, all_shared=True)
    assert w.shared_base == base / "Domains" and w.cluster_dir == base / "Settings"
    assert [(d.name, d.shared) for d in w.list_domains()] == [("main.example", True), ("other.example", True)]
    found = w.find_account("ann@main.example")
    assert found is not None and found.shared
    assert w.account_dir(found) == one.account_dir(ref)  # the same files
    w.create_domain("third.example")
    assert (base / "Domains/third.example").is_dir() and w.is_shared("third.example")
    w.update_cluster_account_defaults({"MaxAccountSize": "5M"})
    assert one.server_account_defaults()["MaxAccountSize"] == "5M"
    # nothing is created by a worker's directory on its own
    fresh = Directory(tmp_path / "empty", main_domain="main.example", all_shared=True)
    assert fresh.list_domains() == []
