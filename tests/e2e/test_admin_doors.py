"""One administration, three doors: the CLI protocol (port 106), the JSON
API and the ``dynamail admin`` command give the same results and the same
refusals on a running server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.e2e.conftest import DOMAIN, PM_PASSWORD, Server

from dynamail.cliproto.datafmt import parse

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

PM = ("postmaster", PM_PASSWORD)
ALICE = (f"alice@{DOMAIN}", "alice-pw-1")


def _data(reply: str) -> Any:
    assert reply.startswith("201 "), reply
    return parse(reply[4:])


class Doors:
    """The same operation through each door; each returns the result, or
    raises Refused with the door's error text."""

    def __init__(self, srv: Server, who: tuple[str, str]) -> None:
        self.srv, self.who = srv, who

    def cli(self, command: str) -> Any:
        reply = self.srv.cli(*self.who, [command])[0]
        if reply.startswith("201 "):
            return _data(reply)
        if reply == "200 OK":
            return None
        raise Refused(reply[:3], reply[4:])

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.srv.api(*self.who, method, path, body)
        if status >= 400:
            raise Refused(str(status), answer["error"]["message"])
        return answer

    def tool(self, *args: str) -> Any:
        r = self.srv.admin_cmd(*self.who, *args)
        if r.returncode != 0:
            assert r.stderr.startswith("dynamail admin: "), r.stderr
            raise Refused(str(r.returncode), r.stderr.strip().split(": ", 2)[2])
        return json.loads(r.stdout) if r.stdout.strip() else None


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message


def _settings_everywhere(d: Doors, name: str) -> list[dict[str, Any]]:
    address = f"{name}@{DOMAIN}"
    return [
        d.cli(f"GETACCOUNTSETTINGS {address}"),
        d.api("GET", f"/domains/{DOMAIN}/accounts/{name}/settings"),
        d.tool("account", "settings", address),
    ]


def _accounts_everywhere(d: Doors) -> list[set[str]]:
    return [
        set(d.cli(f"LISTACCOUNTS {DOMAIN}")),
        set(d.api("GET", f"/domains/{DOMAIN}/accounts?limit=1000")["accounts"]),
        set(d.tool("account", "list", DOMAIN)["accounts"]),
    ]


def test_same_results_through_every_door(server: Server) -> None:
    d = Doors(server, PM)
    d.cli(f'CREATEACCOUNT door1@{DOMAIN} {{Password="pw-door-1";RealName="Door One";}}')
    d.api("POST", f"/domains/{DOMAIN}/accounts",
          {"name": "door2", "password": "pw-door-2", "settings": {"RealName": "Door Two"}})
    d.tool("account", "create", f"door3@{DOMAIN}", "--password", "pw-door-3", "--setting", "RealName=Door Three")
    try:
        for seen in _accounts_everywhere(d):
            assert {"door1", "door2", "door3"} <= seen
        assert len({frozenset(s) for s in _accounts_everywhere(d)}) == 1

        # a change made through one door is read back identically through all
        d.tool("account", "settings", f"door1@{DOMAIN}", "--set", "MaxAccountSize=10M")
        d.cli(f"UPDATEACCOUNTSETTINGS door2@{DOMAIN} {{MaxAccountSize=20M;}}")
        d.api("PATCH", f"/domains/{DOMAIN}/accounts/door3/settings", {"MaxAccountSize": "30M"})
        for n, (name, size) in enumerate([("door1", "10M"), ("door2", "20M"), ("door3", "30M")], 1):
            views = _settings_everywhere(d, name)
            real = ["Door One", "Door Two", "Door Three"][n - 1]
            assert views == [{"RealName": real, "MaxAccountSize": size}] * 3, views
        # the passwords set through each door work on the CLI door
        for n in (1, 2, 3):
            assert server.cli(f"door{n}@{DOMAIN}", f"pw-door-{n}", ["NOOP"]) == ["200 OK"]
    finally:
        d.cli(f"DELETEACCOUNT door1@{DOMAIN}")
        d.api("DELETE", f"/domains/{DOMAIN}/accounts/door2")
        d.tool("account", "delete", f"door3@{DOMAIN}")
    for seen in _accounts_everywhere(d):
        assert not seen & {"door1", "door2", "door3"}


def _refusal(fn: Any, *args: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        fn(*args)
    return caught.value


@pytest.mark.parametrize("what", [
    "read another account's settings", "create an account", "read a missing account", "create a domain",
])
def test_same_refusals_through_every_door(server: Server, what: str) -> None:
    """A plain user is refused with the same message through every door,
    whether or not the account it names exists."""
    d = Doors(server, ALICE)
    cli, api, tool = {
        "read another account's settings": (
            (f"GETACCOUNTSETTINGS bob@{DOMAIN}",),
            ("GET", f"/domains/{DOMAIN}/accounts/bob/settings"),
            ("account", "settings", f"bob@{DOMAIN}")),
        "create an account": (
            (f"CREATEACCOUNT mallory@{DOMAIN}",),
            ("POST", f"/domains/{DOMAIN}/accounts", {"name": "mallory"}),
            ("account", "create", f"mallory@{DOMAIN}", "--password", "x")),
        "read a missing account": (
            (f"GETACCOUNTSETTINGS ghost@{DOMAIN}",),
            ("GET", f"/domains/{DOMAIN}/accounts/ghost/settings"),
            ("account", "settings", f"ghost@{DOMAIN}")),
        "create a domain": (
            ("CREATEDOMAIN evil.test",),
            ("POST", "/domains", {"name": "evil.test"}),
            ("domain", "create", "evil.test")),
    }[what]
    refusals = [_refusal(d.cli, *cli), _refusal(d.api, *api), _refusal(d.tool, *tool)]
    assert [r.code for r in refusals] == ["520", "403", "1"], refusals
    assert len({r.message for r in refusals}) == 1, [r.message for r in refusals]
    # and nothing happened
    pm = Doors(server, PM)
    assert {"alice", "bob"} <= set(pm.cli(f"LISTACCOUNTS {DOMAIN}"))
    assert "mallory" not in set(pm.cli(f"LISTACCOUNTS {DOMAIN}"))
    assert "evil.test" not in set(pm.cli("LISTDOMAINS"))


def test_unreadable_limit_refused_alike(server: Server) -> None:
    """A quota nobody could enforce is refused, with one message, everywhere."""
    d = Doors(server, PM)
    refusals = [
        _refusal(d.cli, f"UPDATEACCOUNTSETTINGS bob@{DOMAIN} {{MaxAccountSize=lots;}}"),
        _refusal(d.api, "PATCH", f"/domains/{DOMAIN}/accounts/bob/settings", {"MaxAccountSize": "lots"}),
        _refusal(d.tool, "account", "settings", f"bob@{DOMAIN}", "--set", "MaxAccountSize=lots"),
    ]
    assert [r.code[0] for r in refusals] == ["5", "4", "1"], refusals
    assert len({r.message for r in refusals}) == 1, [r.message for r in refusals]
    assert "MaxAccountSize" not in d.cli(f"GETACCOUNTSETTINGS bob@{DOMAIN}")
