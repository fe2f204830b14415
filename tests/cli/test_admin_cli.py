"""``dynamail admin`` against a live HTTP admin port."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dynamail.cli.admin import admin, table
from dynamail.cli.main import main
from dynamail.http.app import HttpServer, start
from dynamail.server import app as server_app
from dynamail.server import config as config_mod

PASSWORD = "cli-pm-pw"
HOST = "127.0.6.102"  # the cluster tests use 127.0.6.1 and .2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class _Live:
    def __init__(self, base: Path) -> None:
        cfg = config_mod.load(base, overrides={"main_domain": "main.test", "postmaster_password": PASSWORD,
                                               "listen": HOST})
        cfg.ports["http"], cfg.ports["https"] = _free_port(), _free_port()
        self.ctx = server_app.build_context(cfg)
        self.ctx.directory.create_domain("a.test")
        self.ctx.directory.create_account("a.test", "dora", password="dora-pw")
        self.ctx.directory.set_account_rights(self.ctx.directory.ref("a.test", "dora"), ["DomainAdmin"])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: HttpServer = asyncio.run_coroutine_threadsafe(start(self.ctx), self.loop).result(30)
        self.http = f"{HOST}:{cfg.ports['http']}"
        self.https = f"{HOST}:{cfg.ports['https']}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[_Live]:
    server = _Live(tmp_path / "server")
    try:
        yield server
    finally:
        server.close()


def run(live: _Live, *args: str, user: str = "postmaster", password: str = PASSWORD, ok: bool = True) -> Any:
    result = CliRunner().invoke(admin, ["--server", live.http, "--user", user, *args],
                                env={"DYNAMAIL_PASSWORD": password})
    if ok:
        assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def run_json(live: _Live, *args: str) -> Any:
    return json.loads(run(live, "--json", *args).output)


def test_domains(live: _Live) -> None:
    out = run(live, "domain", "list").output
    assert out.splitlines()[0].split() == ["DOMAIN", "KIND", "ACCOUNTS"]
    assert any(line.split()[:2] == ["a.test", "local"] for line in out.splitlines())
    assert "created domain shop.test" in run(live, "domain", "create", "shop.test", "--setting", "MaxAccounts=5").output
    domains = run_json(live, "domain", "list")["domains"]
    assert {"name": "shop.test", "shared": False, "accounts": 0} in domains
    assert live.ctx.directory.domain_settings("shop.test") == {"MaxAccounts": "5"}
    dup = run(live, "domain", "create", "shop.test", ok=False)
    assert dup.exit_code == 1 and "exists" in dup.output
    run(live, "domain", "delete", "shop.test")
    assert not live.ctx.directory.domain_exists("shop.test")


def test_accounts(live: _Live) -> None:
    assert "created account eve@a.test" in run(live, "account", "create", "eve@a.test", "--password", "eve-pw",
                                               "--setting", "RealName=Eve").output
    listed = run_json(live, "account", "list", "a.test")
    assert listed["accounts"] == ["dora", "eve"] and listed["total"] == 2
    assert "eve@a.test" in run(live, "account", "list", "a.test", "--prefix", "e").output
    run(live, "account", "passwd", "eve@a.test", "--new-password", "eve-pw-2")
    assert live.ctx.directory.password_hash(live.ctx.directory.ref("a.test", "eve"))
    settings = run_json(live, "account", "settings", "eve@a.test", "--set", "MaxAccountSize=9M")
    assert settings == {"RealName": "Eve", "MaxAccountSize": "9M"}
    effective = run_json(live, "account", "settings", "eve@a.test", "--effective")
    assert effective["AccessModes"] == "All" and effective["MaxAccountSize"] == "9M"
    assert "MaxAccountSize" in run(live, "account", "settings", "eve@a.test").output
    run(live, "account", "delete", "eve@a.test")
    assert live.ctx.directory.find_account("eve@a.test") is None
    missing = run(live, "account", "delete", "eve@a.test", ok=False)
    assert missing.exit_code == 1 and "not_found" in missing.output


def test_alerts(live: _Live) -> None:
    for scope in ([], ["--cluster"], ["--domain", "a.test"], ["--account", "dora@a.test"]):
        posted = run_json(live, "alert", "post", "disk swap at noon", *scope)
        stamp = posted["alerts"][0]["stamp"]
        assert "disk swap at noon" in run(live, "alert", "list", *scope).output
        run(live, "alert", "remove", stamp, *scope)
        assert run_json(live, "alert", "list", *scope) == {"alerts": []}
    both = run(live, "alert", "list", "--cluster", "--domain", "a.test", ok=False)
    assert both.exit_code != 0


def test_cluster_commands_and_rights(live: _Live) -> None:
    status = run_json(live, "cluster", "status")
    assert len(status["members"]) == 1 and status["members"][0]["ready"] is True
    assert "Ready" in run(live, "cluster", "status").output
    refused = run(live, "cluster", "nonready", "x", ok=False)
    assert refused.exit_code == 1 and "not_cluster" in refused.output
    forbidden = run(live, "cluster", "ready", "x", user="dora@a.test", password="dora-pw", ok=False)
    assert forbidden.exit_code == 1 and "forbidden" in forbidden.output
    other = run(live, "account", "list", "main.test", user="dora@a.test", password="dora-pw", ok=False)
    assert other.exit_code == 1 and "forbidden" in other.output
    bad = run(live, "domain", "list", password="wrong", ok=False)
    assert bad.exit_code == 1 and "unauthorized" in bad.output


def test_tls_and_unreachable(live: _Live) -> None:
    result = CliRunner().invoke(admin, ["--server", live.https, "--tls", "--insecure", "--user", "postmaster",
                                        "--json", "domain", "list"], env={"DYNAMAIL_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    assert "a.test" in [d["name"] for d in json.loads(result.output)["domains"]]
    strict = CliRunner().invoke(admin, ["--server", live.https, "--tls", "--user", "postmaster", "domain", "list"],
                                env={"DYNAMAIL_PASSWORD": PASSWORD})
    assert strict.exit_code == 2 and "cannot reach" in strict.output  # self-signed: refused without --insecure
    gone = CliRunner().invoke(admin, ["--server", f"{HOST}:{_free_port()}", "--user", "p", "domain", "list"],
                              env={"DYNAMAIL_PASSWORD": "x"})
    assert gone.exit_code == 2


def test_registered_in_the_dynamail_command(live: _Live) -> None:
    assert "admin" in main.commands
    env = {**os.environ, "DYNAMAIL_PASSWORD": PASSWORD}
    proc = subprocess.run([sys.executable, "-m", "dynamail", "admin", "--server", live.http, "--user", "postmaster",
                           "--json", "domain", "list"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "main.test" in [d["name"] for d in json.loads(proc.stdout)["domains"]]


def test_help_needs_no_credentials() -> None:
    for args in (["--help"], ["alert", "--help"], ["account", "create", "--help"]):
        result = CliRunner().invoke(admin, args, env={"DYNAMAIL_PASSWORD": None, "DYNAMAIL_USER": None})
        assert result.exit_code == 0 and "Usage:" in result.output and "Password:" not in result.output


def test_missing_user_and_password_prompt(live: _Live) -> None:
    result = CliRunner().invoke(admin, ["--server", live.http, "domain", "list"],
                                env={"DYNAMAIL_PASSWORD": None, "DYNAMAIL_USER": None})
    assert result.exit_code == 2 and "--user" in result.output
    result = CliRunner().invoke(admin, ["--server", live.http, "--user", "postmaster", "domain", "list"],
                                input=PASSWORD + "\n", env={"DYNAMAIL_PASSWORD": None})
    assert result.exit_code == 0, result.output
    assert "main.test" in result.output


def test_table_layout() -> None:
    assert table(["name", "n"], [["a", 1], ["bbb", None], ["c", True]]).splitlines() == [
        "NAME  N", "a     1", "bbb", "c     yes"]


# ---- finding the server ---------------------------------------------------------------


def test_locate_order_server_env_dir_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dynamail.cli.admin import locate

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DYNAMAIL_ADMIN_URL", raising=False)
    assert locate(None, None, False).url == "http://127.0.0.1:8010"
    # the demo's directory in the current directory: its cluster.json, a running member
    demo = tmp_path / "demo-server"
    demo.mkdir()
    members = [
        {"name": "b1", "role": "backend", "pid": 2**22 + 7, "host": "127.0.7.1",
         "ports": {"http": 18010, "https": 19010}},
        {"name": "b2", "role": "backend", "pid": os.getpid(), "host": "127.0.7.2",
         "ports": {"http": 18010, "https": 19010}},
    ]
    (demo / "cluster.json").write_text(json.dumps(
        {"members": members, "admin": {"user": "postmaster", "password": "pw1"}}))
    found = locate(None, None, False)
    assert (found.url, found.user, found.password) == ("http://127.0.7.2:18010", "postmaster", "pw1")
    assert locate(None, None, True).url == "https://127.0.7.2:19010"
    # a server's base directory: the admin.url it wrote, its postmaster.password
    base = tmp_path / "base"
    base.mkdir()
    (base / "admin.url").write_text("http://127.0.0.9:8010\nhttps://127.0.0.9:9010\n")
    (base / "postmaster.password").write_text("pw2\n")
    found = locate(None, base, False)
    assert (found.url, found.user, found.password) == ("http://127.0.0.9:8010", "postmaster", "pw2")
    assert locate(None, base, True).url == "https://127.0.0.9:9010"
    # the environment beats --dir; --server beats both
    monkeypatch.setenv("DYNAMAIL_ADMIN_URL", "https://mail.example:9443/")
    assert locate(None, base, False).url == "https://mail.example:9443"
    assert locate("10.0.0.1:8011", base, False).url == "http://10.0.0.1:8011"


def test_dir_without_a_server_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DYNAMAIL_ADMIN_URL", raising=False)
    result = CliRunner().invoke(main, ["admin", "--dir", str(tmp_path), "domain", "list"])
    assert result.exit_code == 2
    assert "no running cluster or server found" in result.output
