"""A real ``dynamail serve`` process for SMTP/POP3 tests, and an SMTP sink.

Each server gets its own loopback address in 127.0.12.x (and a port offset of
20000), so servers of different tests never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher

from dynamail.directory import Directory
from dynamail.server.config import DEFAULT_PORTS
from dynamail.server.context import ServerContext

OFFSET = 20000
MAIN_DOMAIN = "test.example"
_used: set[str] = set()
_PROBE_PORTS = (2525, 2526, 20025, 20110, 20143, 20465, 20587, 20995)


def _free(host: str) -> bool:
    for port in _PROBE_PORTS:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def next_host() -> str:
    """A loopback address in 127.0.12.10-249 whose test ports are free now
    (several test runs may share the machine), starting at a random place."""
    start = random.randrange(240)
    for i in range(240):
        host = f"127.0.12.{10 + (start + i) % 240}"
        if host not in _used and _free(host):
            _used.add(host)
            return host
    raise RuntimeError("no free loopback address in 127.0.12.x")


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wait_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def prepare(
    base: Path, accounts: dict[str, str], toml: str = "", settings: dict[str, dict[str, str]] | None = None,
    forwarders: dict[str, str] | None = None, aliases: dict[str, list[str]] | None = None,
) -> None:
    """Create the base directory with domains and accounts (before first start)."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "Settings").mkdir(exist_ok=True)
    (base / "Settings" / "server.toml").write_text(f'main_domain = "{MAIN_DOMAIN}"\n' + toml)
    d = Directory(base, main_domain=MAIN_DOMAIN, password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    for address, password in accounts.items():
        name, domain = address.split("@")
        if not d.domain_exists(domain):
            d.create_domain(domain)
        d.create_account(domain, name, password=password, settings=(settings or {}).get(address))
    for address, names in (aliases or {}).items():
        ref = d.find_account(address)
        assert ref is not None
        d.set_account_aliases(ref, names)
    for address, target in (forwarders or {}).items():
        name, domain = address.split("@")
        d.set_forwarder(domain, name, target)


@dataclass
class LiveServer:
    base: Path
    host: str
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.base.parent / f"{self.base.name}.log"

    def port(self, name: str) -> int:
        return DEFAULT_PORTS[name] + OFFSET

    def start(self) -> None:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dynamail", "serve", "--base", str(self.base), "--listen", self.host,
             "--port-offset", str(OFFSET), "--postmaster-password", "postmaster-pw"],
            stdout=out, stderr=subprocess.STDOUT,
        )
        out.close()
        try:
            for name in ("smtp", "pop3"):
                wait_port(self.host, self.port(name))
        except OSError:
            self.stop()
            raise RuntimeError(f"server did not start:\n{self.log.read_text()[-3000:]}") from None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


class _SinkHandler(socketserver.StreamRequestHandler):
    server: Sink

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self.reply("220 sink.example ESMTP sink")
        sender, rcpts = "", []
        while True:
            line = self.rfile.readline(2000)
            if not line:
                return
            cmd = line.decode("utf-8", "replace").strip()
            verb = cmd[:4].upper()
            if verb in ("MAIL", "RCPT"):
                with self.server.lock:
                    self.server.commands.append(cmd)
            if verb in ("EHLO", "HELO"):
                dsn = "250-DSN\r\n" if self.server.dsn else ""
                self.reply(f"250-sink.example\r\n{dsn}250-8BITMIME\r\n250 SIZE 100000000" if verb == "EHLO" else "250 sink")
            elif verb == "MAIL":
                sender, rcpts = cmd[10:].split(">")[0].lstrip("<"), []
                self.reply("250 2.1.0 ok")
            elif verb == "RCPT":
                addr = cmd[8:].split(">")[0].lstrip("<")
                if addr.startswith("reject"):
                    self.reply("550 5.1.1 no such user here")
                elif addr.startswith("later"):
                    self.reply("451 4.3.0 try later")
                else:
                    rcpts.append(addr)
                    self.reply("250 2.1.5 ok")
            elif verb == "DATA":
                self.reply("354 go ahead")
                data = bytearray()
                while True:
                    chunk = self.rfile.readline()
                    if not chunk or chunk == b".\r\n":
                        break
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                with self.server.lock:
                    self.server.messages.append((sender, list(rcpts), bytes(data)))
                self.reply("250 2.0.0 stored")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


class Sink(socketserver.ThreadingTCPServer):
    """A minimal SMTP server standing in for a remote MX."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, *, dsn: bool = False) -> None:
        super().__init__((host, port), _SinkHandler)
        self.dsn = dsn  # advertise DSN (RFC 3461)
        self.commands: list[str] = []  # MAIL and RCPT lines as received
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def wait_messages(self, n: int, timeout: float = 30.0) -> list[tuple[str, list[str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.1)
        raise AssertionError(f"sink got {len(self.messages)} messages, expected {n}")


@contextlib.asynccontextmanager
async def in_process(base: Path, host: str, names: tuple[str, ...]) -> AsyncIterator[tuple[ServerContext, dict[str, int]]]:
    """A ServerContext on ``base`` with the listeners ``names`` open in this
    process (for tests that need the adapters but not a whole server)."""
    from dynamail.server import config as config_mod
    from dynamail.server.app import build_context, collect_listeners

    cfg = config_mod.load(base, overrides={"listen": host, "port_offset": OFFSET})
    loop = asyncio.get_running_loop()
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    ctx = await loop.run_in_executor(None, lambda: build_context(cfg, password_hasher=hasher))
    ports: dict[str, int] = {}
    try:
        for spec in collect_listeners(ctx):
            if spec.name in names:
                await ctx.listeners.start(spec)
                port = ctx.listeners.port_of(spec.name)
                assert port is not None
                ports[spec.name] = port
        yield ctx, ports
    finally:
        await ctx.listeners.close(grace=1.0)
        for closer in ctx.extras.get("closers", []):
            await closer()
        await ctx.accounts.close()
