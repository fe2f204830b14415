"""A real ``dynamail serve`` process on 127.0.2.x driven by a plain socket client."""

from __future__ import annotations

import json
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamail.cliproto.datafmt import parse
from dynamail.cliproto.limits import MAX_LINE

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server")]

START_TIMEOUT = 60.0


class CliClient:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=15)
        self.file = self.sock.makefile("rb")
        self.greeting = self.readline()

    def readline(self) -> str:
        return self.file.readline().decode("utf-8")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: str) -> str:
        self.send_raw(line.encode("utf-8") + b"\r\n")
        reply = self.readline()
        if reply.startswith("200 data follow"):
            reply += self.readline()
        return reply

    def data(self, line: str) -> object:
        reply = self.cmd(line)
        if reply.startswith("201 "):
            return parse(reply[4:])
        assert reply.startswith("200 data follow\r\n"), (line, reply)
        return parse(reply.split("\r\n", 1)[1])

    def login(self, user: str, password: str) -> None:
        assert self.cmd(f"USER {user}").startswith("300 ")
        reply = self.cmd(f"PASS {password}")
        assert reply.startswith("200 "), reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def free_offset(host: str) -> int:
    """A port offset at which every standard port is free on ``host`` (other
    test runs may use the same loopback address at the same time)."""
    from dynamail.server.config import DEFAULT_PORTS

    rng = random.Random()
    for _ in range(200):
        offset = rng.randrange(20000, 50000)
        socks: list[socket.socket] = []
        try:
            for port in DEFAULT_PORTS.values():
                s = socket.socket()
                socks.append(s)
                s.bind((host, port + offset))
            return offset
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port offset")


class ServerProcess:
    def __init__(self, base: Path, host: str, offset: int | None, *extra: str) -> None:
        self.base = base
        self.host = host
        self.offset = free_offset(host) if offset is None else offset
        self.log_path = base.parent / f"{base.name}.log"
        self.log = open(self.log_path, "wb")
        args = [sys.executable, "-m", "dynamail", "serve", "--base", str(base),
                "--listen", host, "--port-offset", str(self.offset), "--main-domain", "main.test", *extra]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_port(106)

    def port(self, standard: int) -> int:
        return standard + self.offset

    def wait_port(self, standard: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.output()}")
            if " serving " not in self.output():  # our own process, not a stranger
                time.sleep(0.1)
                continue
            try:
                socket.create_connection((self.host, self.port(standard)), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server did not start:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def client(self) -> CliClient:
        return CliClient(self.host, self.port(106))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "base", "127.0.2.1", None)
    try:
        yield srv
    finally:
        srv.stop()


def _password(srv: ServerProcess) -> str:
    return (srv.base / "postmaster.password").read_text().strip()


def test_first_start_password_file(server: ServerProcess) -> None:
    path = server.base / "postmaster.password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(_password(server)) >= 12
    assert tomllib.loads((server.base / "Settings/server.toml").read_text())["main_domain"] == "main.test"
    # where `dynamail admin --dir BASE` finds the HTTP admin port
    urls = (server.base / "admin.url").read_text().split()
    assert f"http://{server.host}:{server.port(8010)}" in urls


def test_session_over_a_socket(server: ServerProcess) -> None:
    c = server.client()
    assert c.greeting.startswith("200 ") and "@main.test>" in c.greeting
    assert c.cmd("LISTDOMAINS").startswith("500 ")
    assert c.cmd("USER postmaster").startswith("300 ")
    assert c.cmd("PASS wrong").startswith("515 ")
    c.login("postmaster", _password(server))
    assert c.data("LISTDOMAINS") == ["main.test"]
    assert c.cmd("CREATEDOMAIN example.test").startswith("200 OK")
    assert c.cmd("CREATEACCOUNT alice@example.test {Password=apw; RealName=\"Alice\";}").startswith("200 OK")
    assert c.cmd("UPDATEACCOUNTDEFAULTS example.test {MaxAccountSize=7M;}").startswith("200 OK")
    eff = c.data("GETACCOUNTEFFECTIVESETTINGS alice@example.test")
    assert isinstance(eff, dict) and eff["MaxAccountSize"] == "7M" and eff["RealName"] == "Alice"
    assert c.cmd("UPDATEACCOUNTSETTINGS alice@example.test {MaxAccountSize=1M;}").startswith("200 OK")
    assert c.data("GETACCOUNTEFFECTIVESETTINGS alice@example.test")["MaxAccountSize"] == "1M"  # type: ignore[index]
    assert c.cmd("UPDATEACCOUNTSETTINGS alice@example.test {MaxAccountSize=default;}").startswith("200 OK")
    assert c.data("GETACCOUNTEFFECTIVESETTINGS alice@example.test")["MaxAccountSize"] == "7M"  # type: ignore[index]
    assert c.cmd("INLINE").startswith("200 OK")
    assert c.cmd("LISTACCOUNTS example.test") == "201 {alice=macnt;}\r\n"
    # hostile names
    for line in ('CREATEDOMAIN "../x"', 'CREATEACCOUNT "../../x@example.test"', 'CREATEACCOUNT "a/b@example.test"'):
        assert c.cmd(line).startswith("501 "), line
    assert not (server.base.parent / "x").exists()
    # malformed and oversize lines keep the session usable
    assert c.cmd("UPDATEDOMAINSETTINGS example.test {a=").startswith("501 ")
    c.send_raw(b"NOOP " + b"x" * (MAX_LINE + 10) + b"\r\n")
    assert c.readline().startswith("512 ")
    assert c.cmd("NOOP").startswith("200 OK")
    # the account logs in itself, and cannot administer
    c2 = server.client()
    c2.login("alice@example.test", "apw")
    assert c2.cmd("CREATEDOMAIN evil.test").startswith("520 ")
    assert c.cmd("QUIT").startswith("200 ")
    c.close()
    c2.close()


def test_apop_over_a_socket(server: ServerProcess) -> None:
    import hashlib

    c = server.client()
    token = c.greeting[c.greeting.index("<"): c.greeting.index(">") + 1]
    digest = hashlib.md5((token + _password(server)).encode()).hexdigest()
    assert c.cmd(f"APOP postmaster {digest}").startswith("200 OK")
    assert c.data("MAINDOMAINNAME") == "main.test"


def test_sighup_reloads_and_sigterm_stops_cleanly(server: ServerProcess) -> None:
    c = server.client()
    c.login("postmaster", _password(server))
    settings = server.base / "Settings/server.toml"
    assert "log_level" not in tomllib.loads(settings.read_text())
    settings.write_text(settings.read_text() + '\nlog_level = "DEBUG"\n')
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "settings reloaded" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "settings reloaded" in server.output()
    assert c.cmd("GETVERSION").startswith("200")
    deadline = time.monotonic() + 10
    while "DEBUG dynamail.cli: cli GETVERSION" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "DEBUG dynamail.cli: cli GETVERSION" in server.output()  # the new log level is in force
    assert c.cmd("NOOP").startswith("200 OK")  # sessions survive a reload
    c.close()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    out = server.output()
    assert "shutting down" in out and "stopped" in out
    assert "Traceback" not in out


def test_bad_settings_file_on_reload_keeps_running(server: ServerProcess) -> None:
    (server.base / "Settings/server.toml").write_text("this is = not [toml\n")
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reload refused" in server.output()
    c = server.client()
    c.login("postmaster", _password(server))


def test_idle_session_times_out(tmp_path: Path) -> None:
    base = tmp_path / "idle"
    (base / "Settings").mkdir(parents=True)
    (base / "Settings/server.toml").write_text("[limits]\ncli_idle_timeout = 1\nlogin_timeout = 1\n")
    srv = ServerProcess(base, "127.0.2.2", None, "--postmaster-password", "pw")
    try:
        c = srv.client()
        c.login("postmaster", "pw")
        reply = c.readline()  # nothing sent: the server gives up on us
        assert reply.startswith("5") and "timeout" in reply
        assert c.readline() == ""
        c2 = srv.client()
        assert c2.readline().startswith("5")  # also before login
    finally:
        srv.stop()


def test_kill9_during_settings_updates_leaves_files_parseable(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "crash", "127.0.2.3", None, "--postmaster-password", "pw")
    try:
        c = srv.client()
        c.login("postmaster", "pw")
        assert c.cmd("CREATEDOMAIN example.test").startswith("200")
        assert c.cmd("CREATEACCOUNT a@example.test").startswith("200")
        c.send_raw(b"INLINE\r\n")
        c.readline()
        # a stream of pipelined updates; kill -9 while they are being written
        batch = b"".join(
            f"UPDATEACCOUNTSETTINGS a@example.test {{RealName=\"n{i}\"; X-Note=\"{'x' * 2000}\";}}\r\n"
            f"UPDATEDOMAINSETTINGS example.test {{RealName=\"d{i}\";}}\r\n"
            f"UPDATESERVERACCOUNTDEFAULTS {{Language=\"l{i}\";}}\r\n".encode()
            for i in range(400)
        )
        c.send_raw(batch)
        for _ in range(30):  # let some of them complete
            assert c.readline().startswith("200")
        srv.proc.kill()
        srv.proc.wait(10)
    finally:
        srv.stop()
    checked = 0
    for path in (tmp_path / "crash").rglob("*.json"):
        json.loads(path.read_text())
        checked += 1
    for path in (tmp_path / "crash").rglob("*.toml"):
        tomllib.loads(path.read_text())
    assert checked >= 3
    # the server starts again on the same base and serves the same data
    srv = ServerProcess(tmp_path / "crash", "127.0.2.3", None)
    try:
        c = srv.client()
        c.login("postmaster", "pw")
        name = c.data("GETACCOUNTSETTINGS a@example.test")["RealName"]  # type: ignore[index]
        assert isinstance(name, str) and name.startswith("n")
    finally:
        srv.stop()


def test_port_in_use_is_a_clear_error(server: ServerProcess, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dynamail", "serve", "--base", str(tmp_path / "second"),
         "--listen", server.host, "--port-offset", str(server.offset)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "cannot listen" in proc.stderr
    assert "Traceback" not in proc.stderr


def _unprivileged_prefix() -> list[str] | None:
    """argv prefix that runs a command without the right to bind ports below
    1024: nothing when this process lacks it already, else setpriv dropping
    CAP_NET_BIND_SERVICE from the bounding set (works for root too)."""
    from dynamail.server.app import _may_bind_low_ports

    if not _may_bind_low_ports():
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--bounding-set=-net_bind_service"]


def test_low_ports_without_privilege_name_port_offset(tmp_path: Path) -> None:
    prefix = _unprivileged_prefix()
    if prefix is None:
        pytest.skip("setpriv is not installed: cannot drop CAP_NET_BIND_SERVICE")
    base = tmp_path / "b"
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "dynamail", "serve", "--base", str(base), "--listen", "127.0.2.4"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "--port-offset" in lines[0] and "port 24 (lmtp)" in lines[0]  # the lowest port is named
    assert not base.exists()  # refused before creating anything
    # with an offset the same unprivileged process starts
    offset = free_offset("127.0.2.4")
    proc2 = subprocess.Popen(
        [*prefix, sys.executable, "-m", "dynamail", "serve", "--base", str(base), "--listen", "127.0.2.4",
         "--port-offset", str(offset), "--postmaster-password", "pw"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                c = CliClient("127.0.2.4", 106 + offset)
                break
            except OSError:
                assert proc2.poll() is None, "server exited"
                time.sleep(0.1)
        else:
            raise AssertionError("server did not start")
        c.login("postmaster", "pw")
        c.close()
    finally:
        proc2.terminate()
        proc2.wait(20)


def test_privilege_probe_matches_this_process() -> None:
    from dynamail.server.app import _lowest_unprivileged_port, _may_bind_low_ports

    limit = _lowest_unprivileged_port()
    assert 0 <= limit <= 65536
    s = socket.socket()
    try:
        try:
            s.bind(("127.0.2.7", limit - 1 if limit > 1 else 0))
            could = True
        except PermissionError:
            could = False
        except OSError:
            pytest.skip("port in use")
    finally:
        s.close()
    if limit > 1:
        assert could == _may_bind_low_ports()
