"""Helpers of the HTTP admin port tests: a real ServerContext in tmp_path.

The objects the tests act on (domains, accounts, rights)
are created straight in the Directory; everything under test goes through
the HTTP application.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from dynamail.http.app import build_app
from dynamail.server import app as server_app
from dynamail.server import config as config_mod
from dynamail.server.context import ServerContext

PM_PASSWORD = "pm-secret-1"
PASSWORDS = {
    "postmaster@main.test": PM_PASSWORD,
    "monitor@main.test": "monitor-pw",
    "alice@a.test": "alice-pw",
    "carol@a.test": "carol-pw",
    "bob@b.test": "bob-pw",
}


def make_context(base: Path, listen: str = "127.0.6.101") -> ServerContext:
    cfg = config_mod.load(
        base,
        overrides={"main_domain": "main.test", "postmaster_password": PM_PASSWORD, "listen": listen},
    )
    ctx = server_app.build_context(cfg)
    d = ctx.directory
    d.create_domain("a.test")
    d.create_domain("b.test")
    d.create_account("main.test", "monitor", password=PASSWORDS["monitor@main.test"])
    d.set_account_rights(d.ref("main.test", "monitor"), ["Monitors"])
    d.create_account("a.test", "alice", password=PASSWORDS["alice@a.test"])
    d.set_account_rights(d.ref("a.test", "alice"), ["DomainAdmin"])
    d.create_account("a.test", "carol", password=PASSWORDS["carol@a.test"])
    d.create_account("b.test", "bob", password=PASSWORDS["bob@b.test"])
    return ctx


def basic(user: str, password: str | None = None) -> dict[str, str]:
    if password is None:
        password = PASSWORDS[user]
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


PM = basic("postmaster@main.test")


@asynccontextmanager
async def client_for(ctx: ServerContext) -> AsyncIterator[TestClient[Any, Any]]:
    server = TestServer(build_app(ctx), host="127.0.6.101")
    async with TestClient(server) as client:
        yield client


def save_screenshot(driver: Any, out_dir: Path, name: str) -> Path:
    """Save a PNG under ``out_dir`` and copy it to test-output/screenshots/."""
    path = out_dir / name
    driver.save_screenshot(str(path))
    repo = Path(__file__).resolve().parents[2]
    shots = repo / "test-output" / "screenshots"
    os.makedirs(shots, exist_ok=True)
    shutil.copy(path, shots / name)
    return path


def free_port(host: str = "127.0.6.101") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The real HTTP admin port (``dynamail.http.app.start``) on its own
    event loop in a background thread, for clients that block (a browser,
    the admin command line)."""

    def __init__(self, ctx: ServerContext) -> None:
        import asyncio
        import threading

        from dynamail.http.app import HttpServer, start

        self.ctx = ctx
        cfg = ctx.config
        cfg.port_offset = 0
        cfg.ports["http"] = free_port(cfg.listen)
        cfg.ports["https"] = free_port(cfg.listen)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: HttpServer = asyncio.run_coroutine_threadsafe(start(ctx), self.loop).result(30)
        self.url = self.server.url("http")
        self.https_url = self.server.url("https") if ctx.tls is not None else ""
        self.host = cfg.listen
        self.port = cfg.ports["http"]
        self.https_port = cfg.ports["https"]

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def api_call(url: str, user: str, password: str, method: str = "GET", body: Any = None) -> Any:
    """One JSON API request with HTTP Basic, from blocking code."""
    import json
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


class StandInCluster:
    """Stands in for the cluster layer of a member named b1 (Controller of
    three members), offering the hooks Admin and /health use: name, ready,
    current_controller(), members_status(), set_ready()."""

    name = "b1"

    def __init__(self) -> None:
        self.ready = True
        self.calls: list[tuple[str, bool]] = []

    def current_controller(self) -> str:
        return "b1"

    def members_status(self) -> list[dict[str, Any]]:
        return [
            {"name": "b1", "role": "backend", "ready": self.ready, "load": 3, "open_accounts": 2, "version": "0.1.0"},
            {"name": "b2", "role": "backend", "ready": True, "load": 1, "open_accounts": 0, "version": "0.1.0", "backup": True},
            {"name": "f1", "role": "frontend", "ready": True, "load": 0, "open_accounts": 0, "version": "0.1.0"},
        ]

    async def set_ready(self, member: str, ready: bool) -> None:
        self.calls.append((member, ready))
        if member == "b1":
            self.ready = ready


CLUSTER_PREFIX = "127.0.6"  # members on 127.0.6.1, 127.0.6.2 (single servers use 127.0.6.101+)


def free_cluster_offset(backends: int) -> int:
    """A port offset whose ports are free on every member address (several
    test runs may share this machine, so no fixed offset)."""
    import random
    import socket

    from dynamail.server.config import DEFAULT_PORTS

    for _ in range(50):
        offset = random.randrange(20000, 29000)
        try:
            for i in range(1, backends + 1):
                for port in DEFAULT_PORTS.values():
                    with socket.socket() as s:
                        s.bind((f"{CLUSTER_PREFIX}.{i}", port + offset))
        except OSError:
            continue
        return offset
    raise RuntimeError("no free port offset for a test cluster")


class RealCluster:
    """A local cluster of real ``dynamail serve`` processes (the launcher
    behind ``dynamail cluster up``), for tests of the admin port in a cluster."""

    def __init__(self, directory: Path, backends: int = 2) -> None:
        from dynamail.cluster import launcher

        self.dir = directory
        self.data = launcher.up(directory, backends=backends, prefix=CLUSTER_PREFIX,
                                port_offset=free_cluster_offset(backends))
        self.user = self.data["admin"]["user"]
        self.password = self.data["admin"]["password"]
        self.urls = {m["name"]: f"http://{m['host']}:{m['ports']['http']}" for m in self.data["members"]}

    def url(self, member: str = "b1") -> str:
        return self.urls[member]

    def close(self) -> None:
        from dynamail.cluster import launcher

        launcher.down(self.dir)
