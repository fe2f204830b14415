"""The JSON API's Sieve script routes: upload (checked), list, view,
activate, deactivate, delete; rights of the account itself and of others."""

from __future__ import annotations

from typing import Any

from http_support import PM, basic, client_for

from dynamail.server.context import ServerContext

V1 = "/api/v1"


async def _json(resp: Any, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return None if status == 204 else await resp.json()


async def test_sieve_scripts(ctx: ServerContext) -> None:
    base = V1 + "/domains/a.test/accounts/carol/sieve"
    async with client_for(ctx) as client:
        if ctx.accounts is None:
            assert (await client.get(base, headers=PM)).status == 503
            return
        body = {"script": 'require "fileinto"; fileinto "Archive";', "active": True}
        assert await _json(await client.put(base + "/main", headers=PM, json=body), 200) == {"name": "main"}
        await _json(await client.put(base + "/spare", headers=PM, json={"script": "keep;"}), 200)
        listing = await _json(await client.get(base, headers=PM), 200)
        assert listing == {"scripts": [{"name": "main", "active": True}, {"name": "spare", "active": False}]}
        got = await _json(await client.get(base + "/main", headers=PM), 200)
        assert got == {"name": "main", "script": body["script"]}
        bad = await client.put(base + "/bad", headers=PM, json={"script": 'fileinto "x";'})
        assert bad.status == 400 and "requires the 'fileinto' extension" in await bad.text()
        assert (await client.delete(base + "/main", headers=PM)).status == 400  # the active one
        await _json(await client.post(base + "/spare/activate", headers=PM), 200)
        await _json(await client.delete(base + "/main", headers=PM), 204)
        assert (await client.get(base + "/main", headers=PM)).status == 404
        await _json(await client.post(V1 + "/domains/a.test/accounts/carol/sieve-deactivate", headers=PM), 200)
        assert (await _json(await client.get(base, headers=PM), 200))["scripts"] == [
            {"name": "spare", "active": False}]
        # another domain's administrator may not read them
        other = await client.get(base, headers=basic("bob@b.test"))
        assert other.status in (401, 403)


async def test_sieve_scripts_on_the_webadmin_account_page(ctx: ServerContext) -> None:
    from test_http_webadmin import csrf_of, login

    if ctx.accounts is None:
        return
    base = "/admin/domains/a.test/accounts/carol"
    async with client_for(ctx) as client:
        await login(client)
        csrf = csrf_of(await (await client.get(base)).text())
        resp = await client.post(base + "/sieve", data={
            "csrf": csrf, "name": "away", "script": 'require "vacation";\r\nvacation "Back <soon>.";', "activate": "1"})
        html = await resp.text()
        assert "Script away saved." in html and "active</span>" in html
        assert "vacation &#34;Back &lt;soon&gt;.&#34;;" in html or 'vacation "Back &lt;soon&gt;.";' in html
        resp = await client.post(base + "/sieve", data={"csrf": csrf, "name": "bad", "script": 'fileinto "x";'})
        assert "requires the &#39;fileinto&#39; extension" in await resp.text()
        resp = await client.post(base + "/sieve/activate", data={"csrf": csrf, "name": ""})
        assert "No script is active." in await resp.text()
        resp = await client.post(base + "/sieve/delete", data={"csrf": csrf, "name": "away"})
        assert "Script away deleted." in await resp.text()
        listing = await ctx.admin.list_sieve_scripts(ctx.directory.ref("main.test", "postmaster"), "carol@a.test")
        assert listing == []
