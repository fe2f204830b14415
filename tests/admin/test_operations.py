"""Admin operations and the rights matrix, on a real directory, real
authenticator and a real mail store behind the standalone locator."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from dynamail.accounts import AccountRef
from dynamail.admin import Admin, AdminError
from dynamail.auth import Authenticator
from dynamail.cluster.locator import StandaloneLocator
from dynamail.directory import Directory, DomainInfo
from dynamail.storage import FileMailStore

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@dataclass
class World:
    directory: Directory
    auth: Authenticator
    admin: Admin
    locator: StandaloneLocator
    master: AccountRef
    settings: AccountRef  # Main Domain, Settings right
    users: AccountRef  # Main Domain, Users (All Domains)
    monitor: AccountRef
    controller: AccountRef  # CanControlCluster
    dadmin: AccountRef  # DomainAdmin of a.example
    other_admin: AccountRef  # Main Domain account holding Domain:b.example
    alice: AccountRef  # plain user in a.example
    bob: AccountRef  # plain user in b.example


def make_world(tmp_path: Path) -> World:
    d = Directory(tmp_path / "base", main_domain="main.example", password_hasher=FAST)
    d.ensure_postmaster("pm-pass")
    d.create_domain("a.example")
    d.create_domain("b.example")
    d.create_domain("s.example", shared=True)

    def acct(domain: str, name: str, rights: list[str]) -> AccountRef:
        ref = d.create_account(domain, name, password=f"{name}-pw")
        if rights:
            d.set_account_rights(ref, rights)
        return ref

    auth = Authenticator(d)
    locator = StandaloneLocator(FileMailStore(), d.account_mail_path)
    master = d.find_account("postmaster")
    assert master is not None
    return World(
        directory=d,
        auth=auth,
        admin=Admin(d, auth, accounts=locator),
        locator=locator,
        master=master,
        settings=acct("main.example", "settings", ["Settings"]),
        users=acct("main.example", "users", ["Users"]),
        monitor=acct("main.example", "monitor", ["Monitors"]),
        controller=acct("main.example", "ctl", ["CanControlCluster"]),
        dadmin=acct("a.example", "dadmin", ["DomainAdmin"]),
        other_admin=acct("main.example", "badmin", ["Domain:b.example"]),
        alice=acct("a.example", "alice", []),
        bob=acct("b.example", "bob", []),
    )


def run(coro: Awaitable[Any]) -> Any:
    async def wrap() -> Any:
        return await coro

    return asyncio.run(wrap())


@pytest.fixture
def w(tmp_path: Path) -> World:
    return make_world(tmp_path)


def code_of(coro: Awaitable[Any]) -> str | None:
    try:
        run(coro)
    except AdminError as exc:
        return exc.code
    return None


def test_domains(w: World) -> None:
    a = w.admin
    assert run(a.main_domain_name(w.alice)) == "main.example"
    assert "dynamail" in run(a.version(w.alice))
    run(a.create_domain(w.settings, "new.example", settings={"MaxAccounts": 5}))
    run(a.create_domain(w.master, "shared2.example", shared=True))
    names = [d.name for d in run(a.list_domains(w.monitor))]
    assert names == ["a.example", "b.example", "main.example", "new.example", "s.example", "shared2.example"]
    assert run(a.list_domains(w.dadmin)) == [DomainInfo("a.example", False)]
    assert code_of(a.list_domains(w.alice)) == "forbidden"
    assert code_of(a.create_domain(w.settings, "new.example")) == "exists"
    assert code_of(a.create_domain(w.settings, "../x")) == "bad_request"
    assert code_of(a.create_domain(w.users, "x.example")) == "forbidden"
    assert code_of(a.create_domain(w.dadmin, "x.example")) == "forbidden"
    assert run(a.get_domain_settings(w.monitor, "new.example")) == {"MaxAccounts": 5}
    run(a.update_domain_settings(w.settings, "new.example", {"MaxAccounts": "default", "RealName": "N"}))
    assert run(a.get_domain_settings(w.master, "new.example")) == {"RealName": "N"}
    assert run(a.get_domain_effective_settings(w.master, "new.example"))["MaxAccounts"] == "unlimited"
    run(a.set_domain_settings(w.master, "new.example", {}))
    assert run(a.get_domain_settings(w.master, "new.example")) == {}
    assert code_of(a.update_domain_settings(w.dadmin, "a.example", {"MaxAccounts": 1000})) == "forbidden"
    assert run(a.get_domain_settings(w.dadmin, "a.example")) == {}
    assert code_of(a.get_domain_settings(w.dadmin, "b.example")) == "forbidden"
    assert code_of(a.get_domain_settings(w.master, "nowhere.example")) == "not_found"
    run(a.create_account(w.master, "x@new.example"))
    assert code_of(a.delete_domain(w.settings, "new.example")) == "bad_request"
    run(a.delete_domain(w.settings, "new.example", force=True))
    assert code_of(a.delete_domain(w.settings, "main.example")) == "bad_request"
    assert code_of(a.delete_domain(w.users, "b.example")) == "forbidden"


def test_defaults_and_prefs(w: World) -> None:
    a = w.admin
    run(a.update_server_account_defaults(w.settings, {"MaxAccountSize": "1G"}))
    run(a.update_cluster_account_defaults(w.settings, {"MaxAccountSize": "3G"}))
    run(a.update_server_domain_defaults(w.settings, {"MaxAccounts": 50}))
    run(a.update_cluster_domain_defaults(w.settings, {"MaxAccounts": 70}))
    run(a.set_server_account_prefs(w.settings, {"Language": "Welsh"}))
    run(a.set_cluster_account_prefs(w.settings, {"Language": "Basque"}))
    assert run(a.get_server_account_defaults(w.monitor)) == {"MaxAccountSize": "1G"}
    assert run(a.get_cluster_account_defaults(w.monitor)) == {"MaxAccountSize": "3G"}
    assert run(a.get_server_domain_defaults(w.users)) == {"MaxAccounts": 50}
    assert run(a.get_cluster_domain_defaults(w.users)) == {"MaxAccounts": 70}
    assert run(a.get_server_account_prefs(w.master)) == {"Language": "Welsh"}
    assert run(a.get_cluster_account_prefs(w.master)) == {"Language": "Basque"}
    shared = run(a.create_account(w.master, "carl@s.example"))
    assert run(a.get_account_effective_settings(w.master, "carl@s.example"))["MaxAccountSize"] == "3G"
    assert run(a.get_account_effective_settings(w.alice, "alice@a.example"))["MaxAccountSize"] == "1G"
    assert run(a.get_account_effective_prefs(w.master, shared.address))["Language"] == "Basque"
    assert run(a.get_domain_effective_settings(w.master, "s.example"))["MaxAccounts"] == 70
    for actor in (w.users, w.monitor, w.dadmin, w.alice, w.controller):
        assert code_of(a.update_server_account_defaults(actor, {"X-Flag": 1})) == "forbidden"
        assert code_of(a.set_cluster_domain_defaults(actor, {})) == "forbidden"
        assert code_of(a.update_cluster_account_prefs(actor, {"X-Flag": 1})) == "forbidden"
    assert code_of(a.get_server_account_defaults(w.alice)) == "forbidden"
    assert code_of(a.update_server_account_defaults(w.settings, "nope")) == "bad_request"  # type: ignore[arg-type]
    # per-domain account defaults: domain administrators of that domain only
    run(a.update_account_defaults(w.dadmin, "a.example", {"MaxAccountSize": "2G"}))
    assert run(a.get_account_defaults(w.dadmin, "a.example")) == {"MaxAccountSize": "2G"}
    assert run(a.get_account_effective_settings(w.alice, "alice@a.example"))["MaxAccountSize"] == "2G"
    assert code_of(a.update_account_defaults(w.dadmin, "b.example", {"X-Flag": 1})) == "forbidden"
    assert code_of(a.get_account_defaults(w.dadmin, "b.example")) == "forbidden"
    run(a.set_account_defaults(w.other_admin, "b.example", {"RealName": "B"}))
    assert code_of(a.set_account_defaults(w.other_admin, "a.example", {})) == "forbidden"


def test_accounts(w: World) -> None:
    a = w.admin
    ref = run(a.create_account(w.dadmin, "Carol@a.example", settings={"RealName": "Carol"}, password="pw"))
    assert ref == AccountRef("a.example", "carol", False)
    assert run(a.verify_account_password(w.dadmin, "carol@a.example", "pw")) is True
    assert run(a.verify_account_password(w.dadmin, "carol@a.example", "px")) is False
    assert run(a.list_accounts(w.dadmin, "a.example")) == ["alice", "carol", "dadmin"]
    assert run(a.list_accounts(w.master, "a.example", prefix="c", limit=5)) == ["carol"]
    assert run(a.list_accounts(w.master, "a.example", offset=1, limit=1)) == ["carol"]
    assert run(a.count_accounts(w.monitor, "a.example")) == 3
    assert run(a.count_accounts(w.monitor, "a.example", prefix="CA")) == 1
    # The CLI's CREATEACCOUNT dictionary may carry the password.
    run(a.create_account(w.master, "pw@a.example", settings={"Password": "from-dict", "RealName": "P"}))
    assert run(a.get_account_settings(w.master, "pw@a.example")) == {"RealName": "P"}
    assert run(a.verify_account_password(w.master, "pw@a.example", "from-dict")) is True
    run(a.delete_account(w.master, "pw@a.example"))
    assert "postmaster" in run(a.list_accounts(w.master))
    assert code_of(a.list_accounts(w.master, "a.example", offset=-1)) == "bad_request"
    assert code_of(a.list_accounts(w.dadmin, "b.example")) == "forbidden"
    assert code_of(a.create_account(w.dadmin, "x@b.example")) == "forbidden"
    assert code_of(a.create_account(w.alice, "x@a.example")) == "forbidden"
    assert code_of(a.create_account(w.dadmin, "carol@a.example")) == "exists"
    assert code_of(a.create_account(w.dadmin, "bad/name@a.example")) == "bad_request"
    assert code_of(a.create_account(w.dadmin, "x@nowhere.example")) == "not_found"
    run(a.update_account_settings(w.dadmin, "carol@a.example", {"RealName": "default", "Language": "Irish"}))
    assert run(a.get_account_settings(w.dadmin, "carol@a.example")) == {"Language": "Irish"}
    run(a.set_account_settings(w.users, "carol@a.example", {"RealName": "C"}))
    assert run(a.get_account_settings(w.monitor, "carol@a.example")) == {"RealName": "C"}
    assert code_of(a.get_account_settings(w.alice, "carol@a.example")) == "forbidden"
    assert run(a.get_account_settings(w.alice, "alice@a.example")) == {}
    assert code_of(a.update_account_settings(w.alice, "alice@a.example", {"MaxAccountSize": "1T"})) == "forbidden"
    assert code_of(a.get_account_settings(w.master, "ghost@a.example")) == "not_found"
    new = run(a.rename_account(w.dadmin, "carol@a.example", "caroline@a.example"))
    assert new.name == "caroline"
    assert code_of(a.rename_account(w.dadmin, "caroline@a.example", "c@b.example")) == "forbidden"
    moved = run(a.rename_account(w.users, "caroline@a.example", "c@b.example"))
    assert moved.domain == "b.example"
    assert code_of(a.delete_account(w.dadmin, "c@b.example")) == "forbidden"
    run(a.delete_account(w.other_admin, "c@b.example"))
    assert code_of(a.delete_account(w.other_admin, "c@b.example")) == "not_found"
    assert code_of(a.delete_account(w.dadmin, "dadmin@a.example")) == "bad_request"  # itself


def test_passwords(w: World) -> None:
    a = w.admin

    def login(user: str, pw: str) -> bool:
        return run(w.auth.authenticate(user, pw, protocol="cli", remote="127.0.1.1")).ok

    assert login("alice@a.example", "alice-pw")
    run(a.set_account_password(w.alice, "alice@a.example", "new-alice"))  # own password
    assert not login("alice@a.example", "alice-pw")
    assert login("alice@a.example", "new-alice")
    run(a.set_account_password(w.dadmin, "alice@a.example", "by-admin"))
    assert login("alice@a.example", "by-admin")
    assert code_of(a.set_account_password(w.alice, "bob@b.example", "x")) == "forbidden"
    assert code_of(a.set_account_password(w.dadmin, "bob@b.example", "x")) == "forbidden"
    assert code_of(a.set_account_password(w.alice, "alice@a.example", "")) == "bad_request"
    # Users (All Domains) cannot take over an account with server rights.
    assert code_of(a.set_account_password(w.users, "postmaster", "x")) == "forbidden"
    assert code_of(a.set_account_password(w.users, "settings", "x")) == "forbidden"
    assert code_of(a.update_account_settings(w.users, "postmaster", {"AccessModes": "None"})) == "forbidden"
    assert code_of(a.delete_account(w.users, "monitor")) == "forbidden"
    run(a.set_account_password(w.master, "settings", "x"))
    run(a.set_account_password(w.settings, "settings", "own"))
    assert login("settings", "own")


def test_rights(w: World) -> None:
    a = w.admin
    assert run(a.get_account_rights(w.master, "postmaster")) == ["Master"]
    assert run(a.get_account_rights(w.alice, "alice@a.example")) == []
    assert code_of(a.get_account_rights(w.alice, "postmaster")) == "forbidden"
    run(a.set_account_rights(w.master, "users", ["Users", "Monitors"]))
    assert run(a.get_account_rights(w.users, "users")) == ["Monitors", "Users"]
    # Nobody but Master grants server rights, not even to themselves.
    for actor in (w.settings, w.users, w.dadmin, w.alice, w.controller):
        assert code_of(a.set_account_rights(actor, actor.address, ["Master"])) == "forbidden"
    # A domain administrator may grant DomainAdmin in its own domain only.
    run(a.set_account_rights(w.dadmin, "alice@a.example", ["DomainAdmin"]))
    assert run(a.get_account_rights(w.dadmin, "alice@a.example")) == ["DomainAdmin"]
    assert code_of(a.set_account_rights(w.dadmin, "bob@b.example", ["DomainAdmin"])) == "forbidden"
    assert code_of(a.set_account_rights(w.dadmin, "alice@a.example", ["Domain:b.example"])) == "forbidden"
    assert code_of(a.set_account_rights(w.master, "alice@a.example", ["Settings"])) == "bad_request"
    assert code_of(a.set_account_rights(w.master, "alice@a.example", ["Bogus"])) == "bad_request"
    run(a.set_account_rights(w.master, "alice@a.example", []))
    assert code_of(a.create_account(w.alice, "z@a.example")) == "forbidden"


def test_alerts(w: World) -> None:
    a = w.admin
    s1 = run(a.post_alert(w.settings, "server", "maintenance"))
    c1 = run(a.post_alert(w.settings, "cluster", "upgrade"))
    d1 = run(a.post_alert(w.dadmin, ("domain", "a.example"), "a news"))
    u1 = run(a.post_alert(w.dadmin, ("account", "alice@a.example"), "hi alice"))
    assert run(a.get_alerts(w.monitor, "server")) == [s1]
    assert run(a.get_alerts(w.master, "cluster")) == [c1]
    assert run(a.get_alerts(w.dadmin, ("domain", "a.example"))) == [d1]
    assert run(a.get_alerts(w.alice, ("account", "alice@a.example"))) == [u1]
    assert run(a.unseen_alerts(w.alice)) == sorted([s1, c1, d1, u1])
    run(a.mark_alerts_seen(w.alice, u1.timestamp))
    assert run(a.unseen_alerts(w.alice)) == []
    assert code_of(a.post_alert(w.users, "server", "x")) == "forbidden"
    assert code_of(a.post_alert(w.dadmin, "cluster", "x")) == "forbidden"
    assert code_of(a.post_alert(w.dadmin, ("domain", "b.example"), "x")) == "forbidden"
    assert code_of(a.post_alert(w.alice, ("account", "alice@a.example"), "x")) == "forbidden"
    assert code_of(a.get_alerts(w.alice, "server")) == "forbidden"
    assert code_of(a.get_alerts(w.alice, ("account", "bob@b.example"))) == "forbidden"
    assert code_of(a.get_alerts(w.master, "galaxy")) == "bad_request"
    assert code_of(a.post_alert(w.master, "server", "")) == "bad_request"
    run(a.remove_alert(w.settings, "server", s1.stamp))
    assert run(a.get_alerts(w.master, "server")) == []
    assert code_of(a.remove_alert(w.settings, "server", s1.stamp)) == "not_found"
    run(a.set_alerts(w.master, ("domain", "a.example"), []))
    assert run(a.get_alerts(w.master, ("domain", "a.example"))) == []
    assert code_of(a.set_alerts(w.master, "server", ["text"])) == "bad_request"


def test_mailboxes(w: World) -> None:
    a = w.admin

    async def scenario() -> list[str]:
        await a.create_mailbox(w.dadmin, "alice@a.example", "Projects/2026")
        await a.rename_mailbox(w.alice, "alice@a.example", "Projects/2026", "Projects/2027")
        with pytest.raises(AdminError) as exc:
            await a.create_mailbox(w.alice, "alice@a.example", "../../x")
        assert exc.value.code == "bad_request"
        with pytest.raises(AdminError) as exc:
            await a.list_mailboxes(w.dadmin, "bob@b.example")
        assert exc.value.code == "forbidden"
        with pytest.raises(AdminError) as exc:
            await a.delete_mailbox(w.alice, "alice@a.example", "Nope")
        assert exc.value.code == "not_found"
        names = [m.name for m in await a.list_mailboxes(w.alice, "alice@a.example")]
        await a.delete_mailbox(w.alice, "alice@a.example", "Projects/2027")
        await w.locator.close()
        return names

    names = run(scenario())
    assert "INBOX" in names and "Projects/2027" in names and "Projects/2026" not in names


def test_cluster_operations_standalone(w: World) -> None:
    a = w.admin
    members = run(a.cluster_members(w.monitor))
    assert members[0]["role"] == "standalone" and members[0]["ready"] is True
    assert code_of(a.get_current_controller(w.master)) == "not_cluster"
    assert code_of(a.set_ready(w.controller, "m1", False)) == "not_cluster"
    assert code_of(a.set_ready(w.monitor, "m1", False)) == "forbidden"
    assert code_of(a.cluster_members(w.alice)) == "forbidden"


class FakeCluster:
    """Records what the cluster seam is handed (stands in for the Controller route)."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.forwarded: list[str] = []
        self.ready: dict[str, bool] = {}

    async def forward_directory_op(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.forwarded.append(op)
        method: Callable[..., Any] = getattr(self.directory, op)
        return method(*args, **kwargs)

    def current_controller(self) -> str:
        return "backend-1"

    def members_status(self) -> list[dict[str, Any]]:
        return [{"name": "backend-1", "role": "controller", "ready": True}]

    async def set_ready(self, member: str, ready: bool) -> None:
        self.ready[member] = ready


def test_shared_mutations_go_through_the_cluster_seam(w: World) -> None:
    cluster = FakeCluster(w.directory)
    a = Admin(w.directory, w.auth, accounts=w.locator, cluster=cluster)
    run(a.create_account(w.master, "dan@s.example", password="x"))
    run(a.update_account_settings(w.master, "dan@s.example", {"RealName": "Dan"}))
    run(a.update_cluster_account_defaults(w.settings, {"X-Flag": 1}))
    run(a.post_alert(w.settings, "cluster", "c"))
    run(a.update_server_account_defaults(w.settings, {"X-Other": 1}))  # local: not forwarded
    run(a.update_account_settings(w.master, "alice@a.example", {"RealName": "A"}))  # local
    assert cluster.forwarded == [
        "create_account", "update_account_settings", "update_cluster_account_defaults", "post_alert",
    ]
    assert run(a.get_current_controller(w.monitor)) == "backend-1"
    assert run(a.cluster_members(w.monitor))[0]["role"] == "controller"
    run(a.set_ready(w.controller, "backend-1", False))
    assert cluster.ready == {"backend-1": False}


class UnreachableCluster:
    async def forward_directory_op(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from dynamail.cluster.locator import AccountUnavailable

        raise AccountUnavailable("no controller reachable")


def test_unreachable_controller_is_unavailable(w: World) -> None:
    a = Admin(w.directory, w.auth, accounts=w.locator, cluster=UnreachableCluster())
    assert code_of(a.create_account(w.master, "x@s.example")) == "unavailable"
    run(a.create_account(w.master, "x@a.example"))  # local domains do not need the Controller


def test_no_moves_between_shared_and_local_domains_in_a_cluster(w: World) -> None:
    a = Admin(w.directory, w.auth, accounts=w.locator, cluster=FakeCluster(w.directory))
    assert code_of(a.rename_account(w.master, "alice@a.example", "alice@s.example")) == "bad_request"
    moved = run(a.rename_account(w.master, "alice@a.example", "alice@b.example"))
    assert moved.domain == "b.example"


def test_settings_writes_on_a_full_file_system_are_temporary_failures(tmp_path: Path) -> None:
    """A directory write the file system refuses (ENOSPC here, on a real
    full ext4 image) is ``unavailable`` (CLI 530, HTTP 503), not a bug with
    a traceback; the same change succeeds once there is room again."""
    from dynamail.chaos import smallfs

    why = smallfs.unavailable()
    if why:
        pytest.skip(why)
    try:
        fs = smallfs.SmallFs(tmp_path, smallfs.MIN_SIZE)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot loop-mount an image here: {exc.stderr!r}")
    try:
        w = make_world(fs.shared)
        fs.fill()
        a = w.admin
        with pytest.raises(AdminError) as info:
            for n in range(200):  # a few may still fit in blocks the directory already has
                run(a.create_account(w.master, f"n{n}@a.example", password="pw"))
        assert info.value.code == "unavailable"
        assert "No space left on device" in info.value.message
        assert code_of(a.create_domain(w.master, "full.example")) == "unavailable"
        fs.empty()
        run(a.create_account(w.master, "after@a.example", password="pw"))
        run(a.create_domain(w.master, "full.example"))
        assert w.directory.find_account("after@a.example") is not None
    finally:
        fs.unmount()
