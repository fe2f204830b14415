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


def make_context(base: Path, listen: str = "127.0.6.1") -> ServerContext:
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
    server = TestServer(build_app(ctx), host="127.0.6.1")
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
