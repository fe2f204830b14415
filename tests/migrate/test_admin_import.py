"""``Admin.import_mail`` and its three front doors: the JSON API route,
``dynamail admin account import`` and the CLI protocol's IMPORTMAIL — on a
real server context (directory, authenticator, standalone locator, storage)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from click.testing import CliRunner
from tests.migrate.corpus import Expected, make_maildir, make_mbox

from dynamail.accounts import AccountRef
from dynamail.admin import AdminError
from dynamail.cli.admin import admin as admin_cli
from dynamail.http.app import HttpServer, build_app, start
from dynamail.server import app as server_app
from dynamail.server import config as config_mod
from dynamail.server.context import ServerContext

PM_PASSWORD = "pm-import-pw"
HOST = "127.0.10.1"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def make_ctx(base: Path) -> ServerContext:
    cfg = config_mod.load(base, overrides={"main_domain": "main.test", "postmaster_password": PM_PASSWORD,
                                           "listen": HOST})
    ctx = server_app.build_context(cfg, password_hasher=FAST)
    d = ctx.directory
    d.create_domain("a.test")
    d.create_account("a.test", "alice", password="alice-pw")
    d.create_account("a.test", "dora", password="dora-pw")
    d.set_account_rights(d.ref("a.test", "dora"), ["DomainAdmin"])
    d.create_account("main.test", "ops", password="ops-pw")
    d.set_account_rights(d.ref("main.test", "ops"), ["Users", "Settings"])
    return ctx


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ServerContext]:
    yield make_ctx(tmp_path / "base")


def run(ctx: ServerContext, coro: Coroutine[Any, Any, None]) -> None:
    """Run a scenario, then close the accounts it opened (their I/O threads)."""

    async def main() -> None:
        try:
            await coro
        finally:
            await ctx.accounts.close()

    asyncio.run(main())


def pm(ctx: ServerContext) -> AccountRef:
    ref = ctx.directory.find_account("postmaster")
    assert ref is not None
    return ref


async def _count(ctx: ServerContext, address: str) -> dict[str, int]:
    ref = ctx.directory.find_account(address)
    assert ref is not None
    async with ctx.accounts.use(ref) as placement:
        store = placement.store  # type: ignore[union-attr]
        return {m.name: (await store.status(m.name)).messages for m in await store.list_mailboxes()}


def test_admin_import_maildir_and_rights(ctx: ServerContext, tmp_path: Path) -> None:
    src = tmp_path / "Maildir"
    exp = make_maildir(src, 120)

    async def main() -> None:
        d = ctx.directory
        for who in (d.ref("a.test", "dora"), d.ref("main.test", "ops"), d.ref("a.test", "alice")):
            with pytest.raises(AdminError) as err:
                await ctx.admin.import_mail(who, "alice@a.test", str(src))
            assert err.value.code == "forbidden"
        report = await ctx.admin.import_mail(pm(ctx), "alice@a.test", str(src), "auto")
        assert (report["format"], report["imported"], report["skipped"]) == ("maildir", 120, exp.skipped)
        counts = await _count(ctx, "alice@a.test")
        assert {k: v for k, v in counts.items() if v} == {k: len(v) for k, v in exp.messages.items()}
        again = await ctx.admin.import_mail(pm(ctx), "alice@a.test", str(src))
        assert (again["imported"], again["duplicates"]) == (0, 120)
        with pytest.raises(AdminError) as err:
            await ctx.admin.import_mail(pm(ctx), "nobody@a.test", str(src))
        assert err.value.code == "not_found"

    run(ctx, main())


def test_hostile_paths_refused(ctx: ServerContext, tmp_path: Path) -> None:
    src = tmp_path / "box.mbox"
    make_mbox(src, 3, "INBOX", Expected())
    (tmp_path / "link.mbox").symlink_to(src)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "Maildir-link").mkdir()
    base = ctx.directory.base
    hostile: list[Any] = [
        "relative/path", "", "/", str(tmp_path) + "/../" + tmp_path.name + "/box.mbox",
        str(tmp_path) + "/./box.mbox", str(src) + "\0", str(tmp_path / "x\nbox"),
        str(tmp_path / "link.mbox"), str(tmp_path / "fifo"), "/dev/zero", str(tmp_path / "missing"),
        str(base), str(base / "Domains"), str(ctx.directory.shared_base), 42, None, "/" + "a" * 5000,
    ]

    async def main() -> None:
        for path in hostile:
            with pytest.raises(AdminError) as err:
                await ctx.admin.import_mail(pm(ctx), "alice@a.test", path)
                pytest.fail(f"not refused: {path!r}")
            assert err.value.code == "bad_request", path
        with pytest.raises(AdminError) as err:
            await ctx.admin.import_mail(pm(ctx), "alice@a.test", str(src), "zip")
        assert err.value.code == "bad_request"
        with pytest.raises(AdminError) as err:  # a plain directory is not a Maildir
            await ctx.admin.import_mail(pm(ctx), "alice@a.test", str(tmp_path / "Maildir-link"), "maildir")
        assert err.value.code == "bad_request"
        assert sum((await _count(ctx, "alice@a.test")).values()) == 0
        ok = await ctx.admin.import_mail(pm(ctx), "alice@a.test", str(src))
        assert ok["imported"] == 3

    run(ctx, main())


def test_json_api_route(ctx: ServerContext, tmp_path: Path) -> None:
    import base64

    src = tmp_path / "mail.mbox"
    make_mbox(src, 50, "INBOX", Expected(), garbage=False)

    def auth(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    async def main() -> None:
        async with TestClient(TestServer(build_app(ctx), host=HOST)) as client:
            url = "/api/v1/domains/a.test/accounts/alice/import"
            r = await client.post(url, json={"path": str(src), "format": "mbox"},
                                  headers=auth("postmaster", PM_PASSWORD))
            assert r.status == 200, await r.text()
            body = await r.json()
            assert (body["imported"], body["format"], body["mailboxes"]) == (50, "mbox", {"INBOX": 50})
            r = await client.post(url, json={"path": str(src)}, headers=auth("dora@a.test", "dora-pw"))
            assert r.status == 403
            r = await client.post(url, json={"path": "etc/passwd"}, headers=auth("postmaster", PM_PASSWORD))
            assert r.status == 400
            r = await client.post(url, json={}, headers=auth("postmaster", PM_PASSWORD))
            assert r.status == 400
            doc = await (await client.get("/api/openapi.json")).json()
            assert "post" in doc["paths"]["/api/v1/domains/{domain}/accounts/{account}/import"]

    run(ctx, main())


def test_cli_protocol_importmail(ctx: ServerContext, tmp_path: Path) -> None:
    from tests.cliproto.conftest import Transcript

    from dynamail.cliproto.datafmt import parse

    src = tmp_path / "Maildir"
    make_maildir(src, 30)

    async def main() -> None:
        t = Transcript(ctx)
        await t.send("USER postmaster")
        assert (await t.send(f"PASS {PM_PASSWORD}")).startswith("200")
        text = await t.send(f'IMPORTMAIL alice@a.test FROM "{src}" FORMAT maildir')
        assert text.startswith("200"), text
        data = parse(text.split("\r\n")[1])
        assert data["imported"] == 30 and data["format"] == "maildir"

    run(ctx, main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def test_admin_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_ctx(tmp_path / "base")
    cfg = ctx.config
    cfg.port_offset = 0
    cfg.ports["http"], cfg.ports["https"] = _free_port(), _free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server: HttpServer = asyncio.run_coroutine_threadsafe(start(ctx), loop).result(30)
    try:
        src = tmp_path / "Maildir"
        exp = make_maildir(src, 40)
        runner = CliRunner()
        args = ["--server", f"{HOST}:{cfg.ports['http']}", "--user", "postmaster", "--password", PM_PASSWORD]
        monkeypatch.chdir(tmp_path)  # a relative PATH is made absolute by the command
        res = runner.invoke(admin_cli, [*args, "account", "import", "alice@a.test", "Maildir"])
        assert res.exit_code == 0, res.output
        assert "imported 40 messages (maildir)" in res.output
        assert f"{exp.skipped} skipped" in res.output
        res = runner.invoke(admin_cli, [*args, "--json", "account", "import", "alice@a.test", str(src)])
        assert res.exit_code == 0, res.output
        assert (json.loads(res.output)["imported"], json.loads(res.output)["duplicates"]) == (0, 40)
        res = runner.invoke(admin_cli, [*args, "account", "import", "alice@a.test", "/"])
        assert res.exit_code == 1 and "bad_request" in res.output
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        asyncio.run_coroutine_threadsafe(ctx.accounts.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
