"""`dynamail cluster ...` as users and tests call it (SPEC section 6)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.cluster.conftest import OFFSET, PREFIX, free_hosts

from dynamail.cli.main import main
from dynamail.cluster import launcher

pytestmark = [pytest.mark.xdist_group("cluster"), pytest.mark.slow, pytest.mark.timeout(180)]


def run(*args: str) -> str:
    result = CliRunner().invoke(main, ["cluster", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_up_status_locate_ready_kill_start_down(tmp_path: Path) -> None:
    d = str(tmp_path / "lc")
    try:
        first = free_hosts(2)
        out = run("up", "--dir", d, "--backends", "2", "--port-offset", str(OFFSET),
                  "--prefix", PREFIX, "--first-host", str(first),
                  "--lease", "1.0", "--margin", "0.2", "--heartbeat", "0.15")
        assert "Controller" in out and "Backup" in out
        data = json.loads((Path(d) / "cluster.json").read_text())
        assert set(data) >= {"members", "admin"} and set(data["admin"]) == {"user", "password"}
        for m in data["members"]:
            assert set(m) >= {"name", "role", "pid", "host", "ports"}
            assert set(m["ports"]) >= {"smtp", "submission", "imap", "pop3", "http", "cli"}
            assert m["role"] == "backend" and m["ports"]["imap"] == 143 + OFFSET
        assert [m["host"] for m in data["members"]] == [f"{PREFIX}.{first}", f"{PREFIX}.{first + 1}"]
        secret = Path(d) / "shared" / "cluster.secret"
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
        # the admin password is passed by a private file, never on a command line (issue 17)
        password = data["admin"]["password"].encode()
        for private in (Path(d) / "cluster.json", Path(d) / "admin.password"):
            assert stat.S_IMODE(os.stat(private).st_mode) == 0o600, private
        for m in data["members"]:
            assert password not in Path(f"/proc/{m['pid']}/cmdline").read_bytes()
            assert password not in (Path(d) / "members" / m["name"] / "argv.json").read_bytes()

        st = json.loads(run("status", "--dir", d, "--json"))
        assert {st["controller"], st["backup"]} == {"b1", "b2"}
        for m in st["members"]:
            assert set(m) >= {"name", "role", "ready", "load", "open_accounts", "version"}
            assert m["ready"] is True
        assert "Controller:" in run("status", "--dir", d)

        assert run("locate", "--dir", d, "nobody@shared.test") == ""

        run("nonready", "--dir", d, "b2")
        st = launcher.status(Path(d))
        assert [m["ready"] for m in st["members"]] == [True, False]
        run("ready", "--dir", d, "b2")
        assert all(m["ready"] for m in launcher.status(Path(d))["members"])

        run("kill", "--dir", d, "b2", "--signal", "KILL")
        assert not launcher.alive(data["members"][1]["pid"])
        out = run("start", "--dir", d, "b2")
        assert "b2 started" in out
        launcher.wait_serving(Path(d), timeout=30)
        bad = CliRunner().invoke(main, ["cluster", "kill", "--dir", d, "b9"])
        assert bad.exit_code == 1 and "no member" in bad.output
    finally:
        run("down", "--dir", d)
    data = json.loads((Path(d) / "cluster.json").read_text())
    assert not any(launcher.alive(m["pid"]) for m in data["members"])


def test_commands_without_a_cluster_fail_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["cluster", "status", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "cluster.json missing" in result.output
