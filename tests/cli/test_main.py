"""The `dynamail` command line: --version, serve option errors, demo."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.server.test_serve import free_offset

from dynamail import __version__
from dynamail.cli.main import main


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output and "dynamail" in result.output


def test_serve_help_names_every_option() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--base", "--listen", "--port-offset", "--main-domain", "--postmaster-password",
                   "--ClusterBackend", "--ClusterFrontend", "--SharedBase", "--config"):
        assert option in result.output, option


def test_serve_needs_base() -> None:
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2 and "--base" in result.output


def test_serve_refuses_both_cluster_roles(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["serve", "--base", str(tmp_path), "--ClusterBackend", "--ClusterFrontend"]
    )
    assert result.exit_code == 2 and "exclude" in result.output


def test_serve_reports_a_bad_settings_file(tmp_path: Path) -> None:
    (tmp_path / "Settings").mkdir()
    (tmp_path / "Settings/server.toml").write_text("[limits]\nmax_connections = 'x'\n")
    result = CliRunner().invoke(main, ["serve", "--base", str(tmp_path), "--port-offset", "20000"])
    assert result.exit_code == 2
    assert "limits.max_connections" in result.output


@pytest.mark.slow
@pytest.mark.xdist_group("server")
def test_demo_runs_and_prints_how_to_connect(tmp_path: Path) -> None:
    offset = free_offset("127.0.2.5")
    cli_port = 106 + offset
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynamail", "demo", str(tmp_path / "demo"),
         "--listen", "127.0.2.5", "--port-offset", str(offset)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Stop with Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "alice@example.test" in text and "bob@example.test" in text, text
        assert "admin CLI" in text and str(cli_port) in text
        pm = re.search(r"postmaster@\S+\s+password (\S+)", text)
        assert pm, text
        alice = re.search(r"alice@example.test\s+password (\S+)", text)
        assert alice
        with socket.create_connection(("127.0.2.5", cli_port), timeout=10) as s:
            f = s.makefile("rb")
            assert f.readline().startswith(b"200 ")
            s.sendall(b"USER alice@example.test\r\nPASS " + alice.group(1).encode() + b"\r\n")
            assert f.readline().startswith(b"300 ")
            assert f.readline().startswith(b"200 OK")
            s.sendall(b"USER x\r\n")
        with socket.create_connection(("127.0.2.5", cli_port), timeout=10) as s:
            # the demo domain is the default login domain: the plain name works
            f = s.makefile("rb")
            assert f.readline().startswith(b"200 ")
            s.sendall(b"USER alice\r\nPASS " + alice.group(1).encode() + b"\r\n")
            assert f.readline().startswith(b"300 ")
            assert f.readline().startswith(b"200 OK")
        with socket.create_connection(("127.0.2.5", cli_port), timeout=10) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"USER postmaster\r\nPASS " + pm.group(1).encode() + b"\r\nINLINE\r\nLISTDOMAINS\r\n")
            assert f.readline().startswith(b"300 ")
            assert f.readline().startswith(b"200 OK")
            assert f.readline().startswith(b"200 OK")
            assert b"example.test" in f.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_reports_an_unusable_base(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = subprocess.run(
        [sys.executable, "-m", "dynamail", "serve", "--base", str(blocker / "base"),
         "--listen", "127.0.2.6", "--port-offset", str(free_offset("127.0.2.6"))],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "cannot read" in proc.stderr or "cannot set up the base directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_systemd_unit_has_this_installs_paths(tmp_path: Path) -> None:
    from dynamail.cli.deploy import render, shipped_unit

    assert "ExecStart=/opt/dynamail/bin/dynamail serve" in shipped_unit()
    cfg = tmp_path / "server.toml"
    cfg.write_text('base = "/srv/mail-base"\n[cluster]\nrole = "backend"\nshared_base = "/mnt/shared"\n')
    unit = render(cfg, "mailsvc", "/venv/bin/dynamail")
    assert "User=mailsvc\n" in unit and "Group=mailsvc\n" in unit
    assert f"Environment=DYNAMAIL_CONFIG={cfg}\n" in unit
    assert "ExecStart=/venv/bin/dynamail serve\n" in unit
    assert "ReadWritePaths=/srv/mail-base /mnt/shared\n" in unit
    assert "RequiresMountsFor=/srv/mail-base /mnt/shared\n" in unit
    result = CliRunner().invoke(main, ["systemd-unit", "--config", str(cfg), "--user", "mailsvc"])
    assert result.exit_code == 0 and "User=mailsvc" in result.output


def test_serve_needs_a_base_from_the_option_or_the_settings_file(tmp_path: Path) -> None:
    from dynamail.server.config import base_in_file

    cfg = tmp_path / "server.toml"
    cfg.write_text('listen = "127.0.0.1"\n')
    result = CliRunner().invoke(main, ["serve", "--config", str(cfg)])
    assert result.exit_code == 2 and "--base" in result.output
    cfg.write_text('base = "/var/lib/x"\nlisten = "127.0.0.1"\n')
    assert base_in_file(cfg) == Path("/var/lib/x")


def test_installed_version_is_the_package_version() -> None:
    from importlib.metadata import version

    assert version("dynamail") == __version__
