"""End-to-end tests: real ``dynamail serve`` processes, real clients.

Every server gets its own loopback address in 127.0.11.10-249 (checked free
at start) and a port offset of 20000, so servers of different test runs on
one machine do not collide.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

OFFSET = 20000
DOMAIN = "e2e.test"
PM_PASSWORD = "pm-secret-1"
PORTS = {
    "smtp": 25, "submission": 587, "smtps": 465, "imap": 143, "imaps": 993,
    "pop3": 110, "pop3s": 995, "cli": 106, "http": 8010, "https": 9010,
}
IMPLICIT_TLS = ("smtps", "imaps", "pop3s", "https")
ACCOUNTS = {"alice": "alice-pw-1", "bob": "bob-pw-2"}
_used: set[str] = set()


def _raise_open_files() -> int:
    """Raise this process's open-file limit (servers started from it inherit
    it): the connection-limit tests open more than a thousand connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


OPEN_FILES = _raise_open_files()


def free_host() -> str:
    start = random.randrange(240)
    for i in range(240):
        host = f"127.0.11.{10 + (start + i) % 240}"
        if host in _used:
            continue
        try:
            for port in PORTS.values():
                with socket.socket() as s:
                    s.bind((host, port + OFFSET))
        except OSError:
            continue
        _used.add(host)
        return host
    raise RuntimeError("no free loopback address in 127.0.11.x")


def source(n: int) -> str:
    """A loopback address to connect from (1-9 are never servers), so that
    per-address limits apply to it alone."""
    assert 1 <= n <= 9
    return f"127.0.11.{n}"


@dataclass
class Server:
    base: Path
    host: str
    proc: subprocess.Popen[bytes] | None = None
    offset: int = OFFSET
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.base.parent / f"{self.base.name}.log"

    def port(self, name: str) -> int:
        return PORTS[name] + self.offset

    @property
    def cert(self) -> Path:
        return self.base / "Settings" / "server.crt"

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "dynamail", "serve", "--base", str(self.base),
            "--listen", self.host, "--port-offset", str(self.offset),
            "--main-domain", DOMAIN, "--postmaster-password", PM_PASSWORD,
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                for name in ("smtp", "imap", "pop3", "cli", "http"):
                    socket.create_connection((self.host, self.port(name)), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- clients --------------------------------------------------------
    def tls_client(self) -> ssl.SSLContext:
        """Trusts exactly the server's generated certificate, names checked."""
        ctx = ssl.create_default_context(cafile=str(self.cert))
        ctx.check_hostname = True
        return ctx

    def cli(self, user: str, password: str, commands: list[str]) -> list[str]:
        """Log in to the CLI protocol, INLINE mode, one reply line per command."""
        with socket.create_connection((self.host, self.port("cli")), timeout=30) as s:
            f = s.makefile("rb")
            assert f.readline().startswith(b"200 ")
            s.sendall(f"USER {user}\r\n".encode())
            assert f.readline().startswith(b"300")
            s.sendall(f"PASS {password}\r\n".encode())
            login = f.readline()
            assert login.startswith(b"200"), login
            s.sendall(b"INLINE\r\n")
            assert f.readline().startswith(b"200")
            out = []
            for c in commands:
                s.sendall(c.encode() + b"\r\n")
                out.append(f.readline().decode().rstrip("\r\n"))
            s.sendall(b"QUIT\r\n")
            return out

    def api(self, user: str, password: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://{self.host}:{self.port('http')}/api/v1{path}", data=data, method=method,
            headers={
                "Content-Type": "application/json",
                "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def admin_cmd(self, user: str, password: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [
            sys.executable, "-m", "dynamail", "admin", "--server", f"{self.host}:{self.port('http')}",
            "--user", user, "--password", password, "--json", *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "NO_COLOR": "1"})


def start_server(base: Path, accounts: dict[str, str]) -> Server:
    srv = Server(base, free_host())
    srv.start()
    replies = srv.cli("postmaster", PM_PASSWORD, [
        f'CREATEACCOUNT {name}@{DOMAIN} {{Password="{pw}";}}' for name, pw in accounts.items()
    ])
    assert all(r == "200 OK" for r in replies), replies
    return srv


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One standalone server shared by the e2e tests, with alice and bob."""
    srv = start_server(tmp_path_factory.mktemp("e2e") / "base", ACCOUNTS)
    try:
        yield srv
    finally:
        srv.stop()
