"""WebAdmin pages through a real HTTP client: login, forms, CSRF, cookies."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient
from http_support import PM_PASSWORD, StandInCluster, client_for

from dynamail.server.context import ServerContext

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def login(client: TestClient[Any, Any], user: str = "postmaster", password: str = PM_PASSWORD,
                landing: str = "/admin/domains") -> str:
    page = await client.get("/admin/login")
    assert page.status == 200
    resp = await client.post("/admin/login", data={"csrf": csrf_of(await page.text()), "user": user,
                                                   "password": password, "next": "/admin/domains"},
                             allow_redirects=False)
    assert resp.status == 303, await resp.text()
    cookie = resp.cookies["dynamail_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    page = await client.get(landing)
    assert page.status == 200
    return csrf_of(await page.text())


async def test_pages_need_login(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        resp = await client.get("/admin/domains", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"].startswith("/admin/login?next=")
        resp = await client.get("/", allow_redirects=False)
        assert resp.status == 303
        resp = await client.post("/admin/domains", data={"name": "x.test"}, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/admin/login"


async def test_login_failures_and_csrf(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        page = await client.get("/admin/login")
        token = csrf_of(await page.text())
        assert page.cookies["dynamail_login"]["samesite"] == "Strict"
        bad = await client.post("/admin/login", data={"csrf": token, "user": "postmaster", "password": "nope"})
        assert bad.status == 401 and "wrong user name or password" in await bad.text()
        client.session.cookie_jar.clear()
        forged = await client.post("/admin/login", data={"csrf": token, "user": "postmaster", "password": PM_PASSWORD})
        assert forged.status == 403 and "dynamail_session" not in forged.cookies


async def test_login_by_plain_name(ctx: ServerContext) -> None:
    """The login form resolves a plain user name by the login rules
    (docs/directory.md, "Login names"): here the domain that lists the
    address the browser connected to in IPAddresses."""
    ctx.directory.create_domain("ip.test", settings={"IPAddresses": ["127.0.6.101"]})
    ctx.directory.create_account("ip.test", "dora", password="dora-pw")
    ctx.directory.set_account_rights(ctx.directory.ref("ip.test", "dora"), ["DomainAdmin"])
    async with client_for(ctx) as client:
        await login(client, "dora", "dora-pw", landing="/admin/domains/ip.test")


async def test_forms_need_the_csrf_token(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        csrf = await login(client)
        resp = await client.post("/admin/domains", data={"name": "forged.test"}, allow_redirects=False)
        assert resp.status == 403
        resp = await client.post("/admin/domains", data={"name": "forged.test", "csrf": "x" + csrf}, allow_redirects=False)
        assert resp.status == 403
        assert "forged.test" not in [d.name for d in ctx.directory.list_domains()]
        resp = await client.post("/admin/domains", data={"name": "real.test", "csrf": csrf, "shared": "no"},
                                 allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/admin/domains/real.test"
        assert "real.test" in [d.name for d in ctx.directory.list_domains()]


async def test_a_valid_token_from_a_foreign_origin_is_refused(ctx: ServerContext) -> None:
    """Issue 17 finding 8: the CSRF token is not enough when Origin or
    Referer names another site (defence in depth)."""
    async with client_for(ctx) as client:
        csrf = await login(client)
        host = f"{client.host}:{client.port}"
        for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                        {"Referer": "https://evil.example/admin/domains"}, {"Origin": f"http://{host}.evil.example"},
                        {"Origin": "https://evil.example", "Referer": f"http://{host}/admin/domains"}):
            resp = await client.post("/admin/domains", data={"name": "forged.test", "csrf": csrf}, headers=headers,
                                     allow_redirects=False)
            assert resp.status == 403, headers
            resp = await client.post("/api/v1/domains", json={"name": "forged.test"},
                                     headers={**headers, "X-CSRF-Token": csrf})
            assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf", headers
        assert "forged.test" not in [d.name for d in ctx.directory.list_domains()]
        page = await client.get("/admin/login")
        resp = await client.post("/admin/login", data={"csrf": csrf_of(await page.text()), "user": "postmaster",
                                                       "password": PM_PASSWORD}, headers={"Origin": "https://evil.example"},
                                 allow_redirects=False)
        assert resp.status == 403 and "dynamail_session" not in resp.cookies
        for headers in ({"Origin": f"http://{host}"}, {"Referer": f"http://{host}/admin/domains"}, {}):
            name = f"ok{len(headers)}{'o' if 'Origin' in headers else 'r'}.test"
            resp = await client.post("/admin/domains", data={"name": name, "csrf": csrf, "shared": "no"},
                                     headers=headers, allow_redirects=False)
            assert resp.status == 303, headers


async def test_a_passwordless_account_fails_with_the_same_work(ctx: ServerContext) -> None:
    """Issue 17 finding 8: a wrong password for an account without one costs
    a hash verification too, so response times do not single it out."""
    ctx.directory.create_account("a.test", "nopass")
    assert ctx.directory.password_hash(ctx.directory.ref("a.test", "nopass")) is None
    async with client_for(ctx) as client:
        for user in ("nopass@a.test", "nobody@a.test", "carol@a.test"):
            before = ctx.auth.decoy_verifications + ctx.auth.verifications
            page = await client.get("/admin/login")
            resp = await client.post("/admin/login", data={"csrf": csrf_of(await page.text()), "user": user,
                                                           "password": "wrong"})
            assert resp.status == 401 and "wrong user name or password" in await resp.text()
            assert ctx.auth.decoy_verifications + ctx.auth.verifications == before + 1, user


async def test_oversize_forms_are_refused(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        csrf = await login(client)
        resp = await client.post("/admin/alerts/server", data={"csrf": csrf, "text": "x" * 300_000})
        assert resp.status == 413
        assert ctx.directory.alerts("server") == []


async def test_every_page_renders(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        await login(client)
        pages = {
            "/admin/domains": ["Create Domain", "a.test", "Main Domain"],
            "/admin/domains/a.test": ["Domain Settings", "Default Account Settings", "MaxAccounts"],
            "/admin/domains/a.test/accounts": ["alice", "carol", "Create Account"],
            "/admin/domains/a.test/accounts/carol": ["carol@a.test", "Set Password", "Rename", "AccessModes"],
            "/admin/settings?scope=server": ["Server-wide", "Default Account Settings", "Default Domain Settings"],
            "/admin/settings?scope=cluster": ["Cluster-wide defaults apply"],
            "/admin/alerts?scope=cluster": ["Cluster-wide Alerts"],
            "/admin/monitors": ["Sessions per listener", "Queue size"],
            "/admin/monitors/cluster": ["Ready", "standalone"],
        }
        for url, expected in pages.items():
            resp = await client.get(url)
            html = await resp.text()
            assert resp.status == 200, (url, html)
            for text in expected:
                assert text in html, (url, text)
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert "Create Shared Domain" not in await (await client.get("/admin/domains")).text()
        resp = await client.get("/admin/domains/nowhere.test")
        assert resp.status == 404
        resp = await client.get("/admin/domains/..%2F..")
        assert resp.status in (400, 404)
        assert (await client.get("/static/admin.css")).status == 200


async def test_account_work_through_forms(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        csrf = await login(client)
        resp = await client.post("/admin/domains/a.test/accounts",
                                 data={"csrf": csrf, "name": "Zed", "real_name": "Zed Z", "password": ""})
        assert resp.status == 200 and str(resp.url).endswith("/admin/domains/a.test/accounts/zed")
        assert "Account zed@a.test created." in await resp.text()
        zed = ctx.directory.ref("a.test", "zed")
        assert ctx.directory.account_settings(zed) == {"RealName": "Zed Z"}
        base = "/admin/domains/a.test/accounts/zed"
        await client.post(base + "/settings", data={
            "csrf": csrf, "key.1": "RealName", "orig.1": "Zed Z", "value.1": "",
            "key.new0": "MaxAccountSize", "value.new0": "10M", "key.new1": "AccessModes", "value.new1": '["IMAP", "pop", "webadmin"]'})
        assert ctx.directory.account_settings(zed) == {"MaxAccountSize": "10M", "AccessModes": ["IMAP", "POP", "WebAdmin"]}
        resp = await client.post(base + "/password", data={"csrf": csrf, "password": "a", "again": "b"})
        assert "differ" in await resp.text()
        await client.post(base + "/password", data={"csrf": csrf, "password": "zed-pw", "again": "zed-pw"})
        assert (await ctx.auth.authenticate("zed@a.test", "zed-pw", protocol="http", remote="t")).ok
        resp = await client.post(base + "/alerts", data={"csrf": csrf, "text": "<script>alert(1)</script>"})
        html = await resp.text()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
        stamp = ctx.directory.alerts(("account", zed))[0].stamp
        await client.post(base + "/alerts/remove", data={"csrf": csrf, "stamp": stamp})
        assert ctx.directory.alerts(("account", zed)) == []
        html = await (await client.get(base)).text()
        assert 'value="DomainAdmin"' in html and 'value="Master"' not in html  # server rights: Main Domain only
        await client.post(base + "/rights", data={"csrf": csrf, "right": "DomainAdmin"})
        assert ctx.directory.account_rights(zed) == frozenset({"DomainAdmin"})
        resp = await client.post(base + "/rights", data={"csrf": csrf, "right": ["DomainAdmin", "Master"]})
        assert "Master" not in ctx.directory.account_rights(zed) and "flash error" in await resp.text()
        if ctx.accounts is not None:  # mailboxes need the storage engine
            resp = await client.post(base + "/mailboxes", data={"csrf": csrf, "name": "Projects/2026"})
            assert "Mailbox Projects/2026 created." in await resp.text()
            resp = await client.post(base + "/mailboxes", data={"csrf": csrf, "name": "../up"})
            assert "flash error" in await resp.text()
            resp = await client.post(base + "/mailboxes/delete", data={"csrf": csrf, "name": "Projects/2026"})
            html = await resp.text()
            assert "Mailbox Projects/2026 deleted." in html and ">INBOX<" in html
        resp = await client.post(base + "/rename", data={"csrf": csrf, "new_name": "zoe"})
        assert str(resp.url).endswith("/admin/domains/a.test/accounts/zoe")
        resp = await client.post("/admin/domains/a.test/accounts/zoe/delete", data={"csrf": csrf})
        assert str(resp.url).endswith("/admin/domains/a.test/accounts")
        assert ctx.directory.find_account("zoe@a.test") is None


async def test_domain_and_global_settings_through_forms(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        csrf = await login(client)
        await client.post("/admin/domains/b.test/settings", data={
            "csrf": csrf, "kind": "domain", "key.new0": "MaxAccounts", "value.new0": "5"})
        assert ctx.directory.domain_settings("b.test") == {"MaxAccounts": "5"}
        await client.post("/admin/domains/b.test/settings", data={
            "csrf": csrf, "kind": "account-defaults", "key.new0": "TimeZone", "value.new0": "Europe/Oslo"})
        assert ctx.directory.account_defaults("b.test") == {"TimeZone": "Europe/Oslo"}
        for scope in ("server", "cluster"):
            resp = await client.post("/admin/settings", data={
                "csrf": csrf, "scope": scope, "kind": "account", "key.new0": "Language", "value.new0": scope})
            assert resp.status == 200 and "Settings saved." in await resp.text()
        assert ctx.directory.server_account_defaults() == {"Language": "server"}
        assert ctx.directory.cluster_account_defaults() == {"Language": "cluster"}
        await client.post("/admin/alerts/server", data={"csrf": csrf, "text": "maintenance tonight"})
        assert [a.text for a in ctx.directory.alerts("server")] == ["maintenance tonight"]
        await client.post("/admin/domains/b.test/delete", data={"csrf": csrf})  # not empty: refused
        assert ctx.directory.domain_exists("b.test")
        resp = await client.post("/admin/domains/b.test/delete", data={"csrf": csrf, "force": "yes"})
        assert str(resp.url).endswith("/admin/domains") and not ctx.directory.domain_exists("b.test")


async def test_accounts_page_pages_and_searches(ctx: ServerContext) -> None:
    for i in range(120):
        ctx.directory.create_account("b.test", f"m{i:03d}")
    async with client_for(ctx) as client:
        await login(client)
        html = await (await client.get("/admin/domains/b.test/accounts?page=2")).text()
        assert "121 accounts" in html and "page 2 of 3" in html
        assert ">m049<" in html and ">m048<" not in html and ">m099<" not in html
        html = await (await client.get("/admin/domains/b.test/accounts?q=m11")).text()
        assert "10 accounts starting with" in html and ">m115<" in html and ">m015<" not in html


async def test_domain_administrator_sees_only_its_domain(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        await login(client, "alice@a.test", "alice-pw")
        resp = await client.get("/admin/domains")
        assert resp.status == 200 and "a.test" in await resp.text() and "b.test" not in await resp.text()
        resp = await client.get("/admin/domains/b.test/accounts")
        assert resp.status == 403


async def test_cluster_page_needs_can_control_cluster_to_change(ctx: ServerContext) -> None:
    cluster = StandInCluster()
    ctx.cluster = ctx.admin.cluster = cluster
    ctx.directory.create_account("main.test", "operator", password="op-pw")
    ctx.directory.set_account_rights(ctx.directory.ref("main.test", "operator"), ["CanControlCluster"])
    async with client_for(ctx) as client:
        csrf = await login(client, "monitor@main.test", "monitor-pw")
        html = await (await client.get("/admin/monitors/cluster")).text()
        assert re.findall(r'action="/admin/monitors/cluster/([^/"]+)/nonready"', html) == ["b1", "b2", "f1"]
        assert "Controller" in html and "Backup" in html and "frontend" in html
        resp = await client.post("/admin/monitors/cluster/b1/nonready", data={"csrf": csrf})
        assert "you do not have the rights" in await resp.text()
        assert cluster.calls == []
    async with client_for(ctx) as client:
        csrf = await login(client, "operator", "op-pw", "/admin/monitors/cluster")
        resp = await client.post("/admin/monitors/cluster/b1/nonready", data={"csrf": csrf})
        html = await resp.text()
        assert "b1 is now Non-Ready." in html and "Make Ready" in html
        assert cluster.calls == [("b1", False)]


async def test_unseen_alerts_are_shown_until_dismissed(ctx: ServerContext) -> None:
    ctx.directory.post_alert("server", "upgrade at <b>noon</b>")
    async with client_for(ctx) as client:
        await login(client)
        html = await (await client.get("/admin/settings")).text()
        assert "upgrade at &lt;b&gt;noon&lt;/b&gt;" in html
        csrf = csrf_of(html)
        stamp = re.search(r'name="upto" value="([^"]+)"', html)
        assert stamp
        resp = await client.post("/admin/alerts/seen", data={"csrf": csrf, "upto": stamp.group(1),
                                                             "next": "/admin/settings?scope=server"})
        assert str(resp.url).endswith("/admin/settings?scope=server")
        assert "upgrade at" not in await resp.text()


async def test_logout(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        csrf = await login(client)
        resp = await client.post("/admin/logout", data={"csrf": csrf}, allow_redirects=False)
        assert resp.status == 303
        resp = await client.get("/admin/domains", allow_redirects=False)
        assert resp.status == 303


async def test_domain_dkim_keys_made_and_rotated_from_the_domain_page(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        csrf = await login(client, landing="/admin/domains/a.test")
        assert "No keys: mail from a.test is not signed." in await (await client.get("/admin/domains/a.test")).text()
        resp = await client.post("/admin/domains/a.test/dkim", data={"csrf": csrf, "action": "create",
                                                                   "algorithm": "ed25519", "selector": "web1"},
                                 allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/admin/domains/a.test"
        html = await (await client.get("/admin/domains/a.test")).text()
        assert "DKIM key made" in html
        assert 'web1._domainkey.a.test. IN TXT ( &#34;v=DKIM1; k=ed25519; p=' in html
        bad = await client.post("/admin/domains/a.test/dkim", data={"csrf": csrf, "action": "create", "algorithm": "dsa"})
        assert "DKIM algorithm must be one of" in await bad.text()  # the flash on the page it returns to
        await client.post("/admin/domains/a.test/dkim", data={"csrf": csrf, "action": "rotate"})
        keys = await ctx.admin.get_dkim_keys(ctx.directory.find_account("postmaster@" + ctx.directory.main_domain),
                                             "a.test")
        assert [(k["selector"], k["active"]) for k in keys if k["selector"] == "web1"] == [("web1", False)]
        assert sum(k["active"] for k in keys) == 1
