"""The JSON API: every route, rights refusals, bad input, sessions."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

from http_support import PM, PM_PASSWORD, StandInCluster, basic, client_for

from dynamail.http.api import api
from dynamail.http.keys import LIFECYCLE
from dynamail.http.limits import MAX_BODY
from dynamail.http.openapi import openapi_path
from dynamail.server.context import ServerContext

V1 = "/api/v1"


async def _json(resp: Any, status: int) -> Any:
    text = await resp.text()
    assert resp.status == status, f"{resp.method} {resp.url}: {resp.status} {text}"
    return json.loads(text) if text else None


async def _error(resp: Any, status: int, code: str) -> str:
    body = await _json(resp, status)
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return str(body["error"]["message"])


# ---- unauthenticated routes ------------------------------------------------------------


async def test_health_serving_nonready_and_stopping(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        body = await _json(await client.get("/health"), 200)
        assert body["status"] == "ok" and body["ready"] is True
        ctx.cluster = SimpleNamespace(ready=False, name="backend-1")
        body = await _json(await client.get("/health"), 503)
        assert body == {"status": "nonready", "ready": False, "member": "backend-1", "version": body["version"]}
        ctx.cluster = None
        ctx.extras["stopping"] = True  # the server began to shut down
        assert (await _json(await client.get("/health"), 503))["status"] == "stopping"
        ctx.extras.pop("stopping")
        assert (await _json(await client.get("/health"), 200))["status"] == "ok"
        client.app[LIFECYCLE].stopping = True  # the HTTP port itself is closing
        assert (await _json(await client.get("/health"), 503))["status"] == "stopping"


async def test_metrics_are_prometheus_text(ctx: ServerContext) -> None:
    ctx.metrics.sessions_total.labels(protocol="imap").inc(3)
    async with client_for(ctx) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
        assert 'dynamail_sessions_total{protocol="imap"} 3.0' in text
        assert 'dynamail_cluster_role{role="standalone"} 1.0' in text
        assert "dynamail_cluster_ready 1.0" in text
        await client.get("/api/v1/version", headers=PM)
        text = await (await client.get("/metrics")).text()
        assert 'dynamail_commands_total{command="get_version",protocol="http"} 1.0' in text


async def test_api_needs_authentication(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        resp = await client.get(V1 + "/domains")
        await _error(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Basic")
        await _error(await client.get(V1 + "/domains", headers=basic("postmaster@main.test", "wrong")), 401, "unauthorized")
        await _error(await client.get(V1 + "/domains", headers={"Authorization": "Basic !!!"}), 401, "unauthorized")
        await _error(await client.get(V1 + "/domains", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
        await _error(await client.get(V1 + "/domains", headers={"Authorization": "Digest x"}), 401, "unauthorized")


async def test_session_tokens(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        await _error(await client.post(V1 + "/session", json={"user": "postmaster", "password": "bad"}), 401, "unauthorized")
        body = await _json(await client.post(V1 + "/session", json={"user": "postmaster", "password": "pm-secret-1"}), 201)
        token = body["token"]
        assert body["account"] == "postmaster@main.test" and len(token) > 30
        bearer = {"Authorization": f"Bearer {token}"}
        me = await _json(await client.get(V1 + "/session", headers=bearer), 200)
        assert me["account"] == "postmaster@main.test" and "Master" in me["rights"]
        tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        await _error(await client.get(V1 + "/session", headers={"Authorization": f"Bearer {tampered}"}), 401,
                     "unauthorized")
        await _error(await client.get(V1 + "/session", headers={"Authorization": "Bearer " + "x" * 5000}), 401,
                     "unauthorized")
        await _json(await client.delete(V1 + "/session", headers=bearer), 204)
        await _error(await client.get(V1 + "/session", headers=bearer), 401, "unauthorized")
        await _error(await client.delete(V1 + "/session"), 401, "unauthorized")


async def test_plain_login_names(ctx: ServerContext) -> None:
    """A plain user name resolves as on every other door (docs/directory.md,
    "Login names"): the domain listing the address the client connected to
    in IPAddresses, else DefaultLoginDomain, else the Main Domain;
    user%domain names its domain."""
    async def account(user: str, password: str) -> str:
        body = await _json(await client.post(V1 + "/session", json={"user": user, "password": password}), 201)
        return str(body["account"])

    d = ctx.directory
    async with client_for(ctx) as client:
        await _error(await client.post(V1 + "/session", json={"user": "bob", "password": "bob-pw"}), 401,
                     "unauthorized")
        assert await account("bob%b.test", "bob-pw") == "bob@b.test"
        d.update_server_domain_defaults({"DefaultLoginDomain": "b.test"})
        assert await account("bob", "bob-pw") == "bob@b.test"
        assert await account("postmaster", PM_PASSWORD) == "postmaster@main.test"  # the Main Domain still
        # the domain of the address the client connected to comes first
        d.create_domain("ip.test", settings={"IPAddresses": [client.host]})
        d.create_account("ip.test", "bob", password="other-pw")
        assert await account("bob", "other-pw") == "bob@ip.test"
        await _error(await client.post(V1 + "/session", json={"user": "bob", "password": "bob-pw"}), 401,
                     "unauthorized")
        # HTTP Basic resolves the same way
        resp = await client.get(V1 + "/session", headers=basic("bob", "other-pw"))
        assert (await _json(resp, 200))["account"] == "bob@ip.test"


async def test_a_password_change_ends_sessions(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        token = (await _json(await client.post(V1 + "/session", json={"user": "carol@a.test", "password": "carol-pw"}),
                             201))["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        await _json(await client.get(V1 + "/session", headers=bearer), 200)
        await _json(await client.put(V1 + "/domains/a.test/accounts/carol/password", headers=PM,
                                     json={"password": "carol-new"}), 200)
        await _error(await client.get(V1 + "/session", headers=bearer), 401, "unauthorized")
        token = (await _json(await client.post(V1 + "/session", json={"user": "carol@a.test", "password": "carol-new"}),
                             201))["token"]
        await _json(await client.post(V1 + "/domains/a.test/accounts/carol/rename", headers=PM,
                                      json={"new_name": "caroline"}), 200)
        await _json(await client.post(V1 + "/domains/a.test/accounts", headers=PM,
                                      json={"name": "carol", "password": "carol-new"}), 201)
        # the old token named carol@a.test, which is now another account
        await _error(await client.get(V1 + "/session", headers={"Authorization": f"Bearer {token}"}), 401,
                     "unauthorized")


async def test_server_version_main_domain_monitors(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        assert "dynamail" in (await _json(await client.get(V1 + "/version", headers=PM), 200))["version"]
        assert (await _json(await client.get(V1 + "/maindomain", headers=PM), 200))["name"] == "main.test"
        ctx.metrics.sessions.labels(protocol="imap").set(4)
        ctx.metrics.deliveries.labels(result="ok").inc(7)
        ctx.metrics.queue_size.set(2)
        mon = await _json(await client.get(V1 + "/monitors", headers=basic("monitor@main.test")), 200)
        assert mon["sessions"]["imap"]["open"] == 4
        assert mon["deliveries"] == 7 and mon["queue_size"] == 2
        await _error(await client.get(V1 + "/monitors", headers=basic("carol@a.test")), 403, "forbidden")


# ---- domains -----------------------------------------------------------------------------


async def test_domain_lifecycle(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        listed = await _json(await client.get(V1 + "/domains", headers=PM), 200)
        names = {d["name"]: d for d in listed["domains"]}
        assert {"main.test", "a.test", "b.test"} <= set(names)
        assert names["a.test"]["shared"] is False and names["a.test"]["accounts"] == 2

        created = await _json(await client.post(V1 + "/domains", headers=PM,
                                                json={"name": "New.Test", "settings": {"RealName": "New"}}), 201)
        assert created["name"] == "new.test" and created["settings"] == {"RealName": "New"}
        await _error(await client.post(V1 + "/domains", headers=PM, json={"name": "new.test"}), 409, "exists")

        d = V1 + "/domains/new.test"
        got = await _json(await client.get(d, headers=PM), 200)
        assert got["shared"] is False and got["accounts"] == 0
        patched = await _json(await client.patch(d, headers=PM, json={"MaxAccounts": "10"}), 200)
        assert patched["settings"] == {"RealName": "New", "MaxAccounts": "10"}
        put = await _json(await client.put(d, headers=PM, json={"MaxAccounts": "20"}), 200)
        assert put["settings"] == {"MaxAccounts": "20"}
        assert await _json(await client.patch(d + "/settings", headers=PM, json={"RealName": "N2"}), 200) == {
            "MaxAccounts": "20", "RealName": "N2"}
        assert await _json(await client.put(d + "/settings", headers=PM, json={"RealName": "N3"}), 200) == {"RealName": "N3"}
        assert await _json(await client.get(d + "/settings", headers=PM), 200) == {"RealName": "N3"}
        assert await _json(await client.patch(d + "/settings", headers=PM, json={"RealName": "default"}), 200) == {}
        eff = await _json(await client.get(d + "/settings/effective", headers=PM), 200)
        assert eff["MaxAccounts"] == "unlimited"

        assert await _json(await client.get(d + "/account-defaults", headers=PM), 200) == {}
        assert await _json(await client.patch(d + "/account-defaults", headers=PM, json={"MaxAccountSize": "5M"}), 200) == {
            "MaxAccountSize": "5M"}
        assert await _json(await client.put(d + "/account-defaults", headers=PM, json={"RealName": "x"}), 200) == {"RealName": "x"}

        await _json(await client.post(d + "/accounts", headers=PM, json={"name": "u1"}), 201)
        await _error(await client.delete(d, headers=PM), 400, "bad_request")  # not empty
        await _json(await client.delete(d + "?force=true", headers=PM), 204)
        await _error(await client.get(d, headers=PM), 404, "not_found")
        await _error(await client.delete(d, headers=PM), 404, "not_found")


async def test_shared_domain_needs_a_cluster_or_lives_in_shared_storage(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        resp = await client.post(V1 + "/domains", headers=PM, json={"name": "s.test", "shared": True})
        if resp.status == 201:
            assert (await resp.json())["shared"] is True
            listed = await _json(await client.get(V1 + "/domains", headers=PM), 200)
            assert {"name": "s.test", "shared": True, "accounts": 0} in listed["domains"]
        else:
            assert resp.status in (400, 409)


# ---- accounts ----------------------------------------------------------------------------


async def test_account_lifecycle(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        base = V1 + "/domains/a.test/accounts"
        made = await _json(await client.post(base, headers=PM, json={
            "name": "Dave", "password": "dave-pw", "settings": {"RealName": "Dave D"}}), 201)
        assert made == {"address": "dave@a.test", "name": "dave", "domain": "a.test", "settings": {"RealName": "Dave D"}}
        await _error(await client.post(base, headers=PM, json={"name": "dave"}), 409, "exists")
        a = base + "/dave"
        assert (await _json(await client.get(a, headers=PM), 200))["settings"] == {"RealName": "Dave D"}
        assert (await _json(await client.patch(a, headers=PM, json={"Language": "German"}), 200))["settings"] == {
            "RealName": "Dave D", "Language": "German"}
        assert (await _json(await client.put(a, headers=PM, json={"RealName": "D"}), 200))["settings"] == {"RealName": "D"}
        assert await _json(await client.patch(a + "/settings", headers=PM, json={"MaxAccountSize": "1G"}), 200) == {
            "RealName": "D", "MaxAccountSize": "1G"}
        assert await _json(await client.put(a + "/settings", headers=PM, json={"RealName": "E"}), 200) == {"RealName": "E"}
        assert await _json(await client.get(a + "/settings", headers=PM), 200) == {"RealName": "E"}
        await _json(await client.patch(V1 + "/domains/a.test/account-defaults", headers=PM, json={"TimeZone": "Europe/Paris"}), 200)
        eff = await _json(await client.get(a + "/settings/effective", headers=PM), 200)
        assert eff["RealName"] == "E" and eff["TimeZone"] == "Europe/Paris" and eff["MaxAccountSize"] == "100M"

        assert (await _json(await client.post(a + "/password/verify", headers=PM, json={"password": "dave-pw"}), 200))["valid"]
        assert await _json(await client.put(a + "/password", headers=PM, json={"password": "new-pw"}), 200) == {"ok": True}
        assert not (await _json(await client.post(a + "/password/verify", headers=PM, json={"password": "dave-pw"}), 200))["valid"]
        assert (await _json(await client.get(V1 + "/session", headers=basic("dave@a.test", "new-pw")), 200))["account"] == "dave@a.test"

        assert await _json(await client.get(a + "/prefs", headers=PM), 200) == {}
        assert await _json(await client.patch(a + "/prefs", headers=PM, json={"SortOrder": "From"}), 200) == {"SortOrder": "From"}
        assert await _json(await client.put(a + "/prefs", headers=PM, json={"Language": "French"}), 200) == {"Language": "French"}

        assert await _json(await client.get(a + "/rights", headers=PM), 200) == {"rights": []}
        assert await _json(await client.put(a + "/rights", headers=PM, json={"rights": ["DomainAdmin"]}), 200) == {
            "rights": ["DomainAdmin"]}

        renamed = await _json(await client.post(a + "/rename", headers=PM, json={"new_name": "david"}), 200)
        assert renamed["address"] == "david@a.test"
        await _error(await client.get(a, headers=PM), 404, "not_found")
        moved = await _json(await client.post(base + "/david/rename", headers=PM, json={"new_name": "david@b.test"}), 200)
        assert moved["address"] == "david@b.test"
        await _json(await client.delete(V1 + "/domains/b.test/accounts/david", headers=PM), 204)
        await _error(await client.get(V1 + "/domains/b.test/accounts/david", headers=PM), 404, "not_found")


async def test_account_listing_pages_and_prefix(ctx: ServerContext) -> None:
    for i in range(30):
        ctx.directory.create_account("b.test", f"user{i:02d}")
    async with client_for(ctx) as client:
        base = V1 + "/domains/b.test/accounts"
        page = await _json(await client.get(base + "?limit=10&offset=5", headers=PM), 200)
        assert page["total"] == 31 and page["accounts"][0] == "user04" and len(page["accounts"]) == 10
        pre = await _json(await client.get(base + "?prefix=USER1&limit=4", headers=PM), 200)
        assert pre["total"] == 10 and pre["accounts"] == ["user10", "user11", "user12", "user13"]
        default = await _json(await client.get(base, headers=PM), 200)
        assert default["limit"] == 100 and len(default["accounts"]) == 31
        await _error(await client.get(base + "?limit=0", headers=PM), 400, "bad_request")
        await _error(await client.get(base + "?limit=5000", headers=PM), 400, "bad_request")
        await _error(await client.get(base + "?offset=-1", headers=PM), 400, "bad_request")
        await _error(await client.get(base + "?colour=red", headers=PM), 400, "bad_request")


# ---- alerts and defaults ------------------------------------------------------------------


async def test_alerts_of_every_scope(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        for path in ("/server", "/cluster", "/domains/a.test", "/domains/a.test/accounts/carol"):
            url = V1 + path + "/alerts"
            assert await _json(await client.get(url, headers=PM), 200) == {"alerts": []}
            posted = await _json(await client.post(url, headers=PM, json={"text": f"notice {path}"}), 201)
            stamp = posted["posted"]["stamp"]
            assert [a["text"] for a in posted["alerts"]] == [f"notice {path}"]
            listed = await _json(await client.get(url, headers=PM), 200)
            assert listed["alerts"][0]["stamp"] == stamp
            await _json(await client.delete(url + "/" + stamp, headers=PM), 204)
            await _error(await client.delete(url + "/" + stamp, headers=PM), 404, "not_found")
            await _error(await client.delete(url + "/not-a-stamp", headers=PM), 400, "bad_request")
            assert await _json(await client.get(url, headers=PM), 200) == {"alerts": []}


async def test_server_and_cluster_defaults(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        for scope in ("server", "cluster"):
            for kind in ("account-defaults", "domain-defaults", "account-prefs"):
                url = f"{V1}/{scope}/{kind}"
                assert await _json(await client.get(url, headers=PM), 200) == {}
                assert await _json(await client.patch(url, headers=PM, json={"X-Scope": scope}), 200) == {"X-Scope": scope}
                assert await _json(await client.put(url, headers=PM, json={"X-Kind": kind}), 200) == {"X-Kind": kind}
                assert await _json(await client.patch(url, headers=PM, json={"X-Kind": "default"}), 200) == {}
        await _json(await client.patch(V1 + "/server/account-defaults", headers=PM, json={"TimeZone": "Asia/Tokyo"}), 200)
        eff = await _json(await client.get(V1 + "/domains/b.test/accounts/bob/settings/effective", headers=PM), 200)
        assert eff["TimeZone"] == "Asia/Tokyo"


# ---- cluster -------------------------------------------------------------------------------


async def test_cluster_routes_standalone(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        status = await _json(await client.get(V1 + "/cluster", headers=PM), 200)
        assert status["clustered"] is False and len(status["members"]) == 1
        member = status["members"][0]
        assert {"name", "role", "ready", "load", "open_accounts", "version"} <= set(member)
        await _error(await client.get(V1 + "/cluster/controller", headers=PM), 409, "not_cluster")
        await _error(await client.post(V1 + "/cluster/members/x/ready", headers=PM), 409, "not_cluster")
        await _error(await client.post(V1 + "/cluster/members/x/nonready", headers=PM), 409, "not_cluster")
        # without Can Control Cluster: refused before anything else
        await _error(await client.post(V1 + "/cluster/members/x/nonready", headers=basic("monitor@main.test")), 403, "forbidden")
        await _error(await client.post(V1 + "/cluster/members/x/ready", headers=basic("alice@a.test")), 403, "forbidden")
        await _error(await client.get(V1 + "/cluster", headers=basic("carol@a.test")), 403, "forbidden")


async def test_cluster_ready_state_needs_can_control_cluster(ctx: ServerContext) -> None:
    cluster = StandInCluster()
    ctx.cluster = cluster
    ctx.admin.cluster = cluster
    ctx.directory.create_account("main.test", "operator", password="op-pw")
    ctx.directory.set_account_rights(ctx.directory.ref("main.test", "operator"), ["CanControlCluster"])
    op = basic("operator@main.test", "op-pw")
    async with client_for(ctx) as client:
        status = await _json(await client.get(V1 + "/cluster", headers=op), 200)
        assert status["controller"] == "b1" and status["backup"] == "b2"
        assert [m["name"] for m in status["members"]] == ["b1", "b2", "f1"]
        assert (await _json(await client.get(V1 + "/cluster/controller", headers=op), 200)) == {"controller": "b1"}
        await _error(await client.post(V1 + "/cluster/members/b1/nonready", headers=basic("monitor@main.test")), 403, "forbidden")
        assert cluster.calls == []
        assert (await _json(await client.post(V1 + "/cluster/members/b1/nonready", headers=op), 200))["ready"] is False
        assert (await _json(await client.get("/health"), 503))["status"] == "nonready"
        await _json(await client.post(V1 + "/cluster/members/b1/ready", headers=op), 200)
        assert cluster.calls == [("b1", False), ("b1", True)]
        assert (await _json(await client.get("/health"), 200))["ready"] is True


# ---- mailboxes -----------------------------------------------------------------------------


async def test_mailboxes(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        base = V1 + "/domains/a.test/accounts/carol/mailboxes"
        if ctx.accounts is None:  # no storage engine in this build: a clean 503
            await _error(await client.get(base, headers=PM), 503, "unavailable")
            return
        made = await _json(await client.post(base, headers=PM, json={"name": "Projects/2026"}), 201)
        assert made == {"name": "Projects/2026"}
        names = [m["name"] for m in (await _json(await client.get(base, headers=PM), 200))["mailboxes"]]
        assert "INBOX" in names and "Projects/2026" in names
        await _error(await client.post(base, headers=PM, json={"name": "Projects/2026"}), 409, "exists")
        renamed = await _json(await client.patch(base + "/Projects/2026", headers=PM, json={"name": "Projects/2027"}), 200)
        assert renamed == {"name": "Projects/2027"}
        await _json(await client.delete(base + "/Projects/2027", headers=PM), 204)
        await _error(await client.delete(base + "/Projects/2027", headers=PM), 404, "not_found")
        await _error(await client.post(base, headers=PM, json={"name": "../evil"}), 400, "bad_name")


# ---- rights ----------------------------------------------------------------------------------


async def test_domain_administrator_is_confined_to_its_domain(ctx: ServerContext) -> None:
    alice = basic("alice@a.test")
    async with client_for(ctx) as client:
        own = await _json(await client.get(V1 + "/domains/a.test/accounts", headers=alice), 200)
        assert own["accounts"] == ["alice", "carol"]
        await _json(await client.post(V1 + "/domains/a.test/accounts", headers=alice, json={"name": "erin"}), 201)
        await _json(await client.patch(V1 + "/domains/a.test/accounts/carol/settings", headers=alice,
                                       json={"RealName": "Carol"}), 200)
        await _error(await client.get(V1 + "/domains/b.test/accounts", headers=alice), 403, "forbidden")
        await _error(await client.post(V1 + "/domains/b.test/accounts", headers=alice, json={"name": "x"}), 403, "forbidden")
        await _error(await client.get(V1 + "/domains/b.test/accounts/bob", headers=alice), 403, "forbidden")
        await _error(await client.put(V1 + "/domains/b.test/accounts/bob/password", headers=alice,
                                      json={"password": "stolen"}), 403, "forbidden")
        await _error(await client.delete(V1 + "/domains/b.test/accounts/bob", headers=alice), 403, "forbidden")
        await _error(await client.post(V1 + "/domains/b.test/alerts", headers=alice, json={"text": "x"}), 403, "forbidden")
        await _error(await client.post(V1 + "/domains", headers=alice, json={"name": "mine.test"}), 403, "forbidden")
        await _error(await client.patch(V1 + "/server/account-defaults", headers=alice, json={"A": "b"}), 403, "forbidden")
        await _error(await client.put(V1 + "/domains/a.test/accounts/carol/rights", headers=alice,
                                      json={"rights": ["Master"]}), 403, "forbidden")
        listed = await _json(await client.get(V1 + "/domains", headers=alice), 200)
        assert [d["name"] for d in listed["domains"]] == ["a.test"]
        # a plain user reads itself, nothing else
        carol = basic("carol@a.test")
        await _json(await client.get(V1 + "/domains/a.test/accounts/carol/settings", headers=carol), 200)
        await _error(await client.get(V1 + "/domains/a.test/accounts/alice/settings", headers=carol), 403, "forbidden")
        await _error(await client.get(V1 + "/domains", headers=carol), 403, "forbidden")


async def test_aliases_forwarders_prefs_and_own_alerts(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        a = V1 + "/domains/a.test/accounts/carol"
        assert await _json(await client.get(a + "/aliases", headers=PM), 200) == {"aliases": []}
        assert await _json(await client.put(a + "/aliases", headers=PM, json={"aliases": ["caro"]}), 200) == {"aliases": ["caro"]}
        await _error(await client.put(a + "/aliases", headers=PM, json={"aliases": "caro"}), 400, "bad_request")
        f = V1 + "/domains/a.test/forwarders"
        assert await _json(await client.get(f, headers=PM), 200) == {"forwarders": {}}
        assert await _json(await client.put(f + "/sales", headers=PM, json={"target": "bob@b.test"}), 200) == {
            "forwarders": {"sales": "bob@b.test"}}
        await _json(await client.delete(f + "/sales", headers=PM), 204)
        await _error(await client.delete(f + "/sales", headers=PM), 404, "not_found")
        await _error(await client.put(f + "/a..b", headers=PM, json={"target": "x@y.test"}), 400, "bad_name")
        await _json(await client.patch(V1 + "/server/account-prefs", headers=PM, json={"MessagesPerPage": 50}), 200)
        eff = await _json(await client.get(a + "/prefs/effective", headers=PM), 200)
        assert eff["MessagesPerPage"] == 50 and eff["SortOrder"] == "Date"
        # alerts as the account itself sees them
        carol = basic("carol@a.test")
        await _json(await client.post(V1 + "/server/alerts", headers=PM, json={"text": "server notice"}), 201)
        await _json(await client.post(a + "/alerts", headers=PM, json={"text": "personal notice"}), 201)
        unseen = (await _json(await client.get(V1 + "/session/alerts", headers=carol), 200))["alerts"]
        assert sorted(x["text"] for x in unseen) == ["personal notice", "server notice"]
        newest = max(x["stamp"] for x in unseen)
        left = await _json(await client.post(V1 + "/session/alerts/seen", headers=carol, json={"upto": newest}), 200)
        assert left == {"alerts": []}
        # replacing a whole list
        put = await _json(await client.put(V1 + "/domains/a.test/alerts", headers=PM, json={"alerts": [
            {"text": "one", "time": "2026-01-02T03:04:05Z"}, {"text": "two"}]}), 200)
        assert [x["text"] for x in put["alerts"]] == ["one", "two"]
        assert put["alerts"][0]["time"].startswith("2026-01-02T03:04:05")
        await _error(await client.put(V1 + "/domains/a.test/alerts", headers=PM,
                                      json={"alerts": [{"text": "x", "time": "yesterday"}]}), 400, "bad_request")
        assert await _json(await client.post(V1 + "/server/reload", headers=PM), 200) == {"ok": True}
        await _error(await client.post(V1 + "/server/reload", headers=carol), 403, "forbidden")


async def test_failed_logins_are_throttled(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        for _ in range(8):
            await _error(await client.get(V1 + "/session", headers=basic("bob@b.test", "guess")), 401, "unauthorized")
        message = await _error(await client.get(V1 + "/session", headers=basic("bob@b.test")), 401, "unauthorized")
        assert "throttled" in message


# ---- bad input ---------------------------------------------------------------------------------


async def test_oversize_bodies_are_refused(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        huge = json.dumps({"name": "x.test", "settings": {"RealName": "a" * (MAX_BODY + 10)}})
        resp = await client.post(V1 + "/domains", headers={**PM, "Content-Type": "application/json"}, data=huge)
        await _error(resp, 413, "too_large")
        async def chunks() -> Any:  # no Content-Length: the limit still holds
            for _ in range(MAX_BODY // 1024 + 2):
                yield b" " * 1024
        resp = await client.post(V1 + "/domains", headers={**PM, "Content-Type": "application/json"}, data=chunks())
        await _error(resp, 413, "too_large")
        assert "x.test" not in [d["name"] for d in (await _json(await client.get(V1 + "/domains", headers=PM), 200))["domains"]]


async def test_wrong_types_are_refused(ctx: ServerContext) -> None:
    bad_bodies: list[tuple[str, str, Any]] = [
        ("POST", "/domains", {"name": 7}),
        ("POST", "/domains", {"name": "x.test", "shared": "yes"}),
        ("POST", "/domains", {"name": "x.test", "settings": ["a"]}),
        ("POST", "/domains", {"name": "x.test", "colour": "red"}),
        ("POST", "/domains", {}),
        ("POST", "/domains", ["x.test"]),
        ("POST", "/domains/a.test/accounts", {"name": "x", "password": 5}),
        ("PATCH", "/domains/a.test/settings", {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}),
        ("PATCH", "/domains/a.test/settings", {"": "x"}),
        ("PATCH", "/domains/a.test/settings", "RealName"),
        ("PUT", "/domains/a.test/accounts/carol/rights", {"rights": "Master"}),
        ("POST", "/server/alerts", {"text": None}),
        ("POST", "/domains/a.test/accounts/carol/rename", {}),
    ]
    async with client_for(ctx) as client:
        for method, path, body in bad_bodies:
            await _error(await client.request(method, V1 + path, headers=PM, json=body), 400, "bad_request")
        await _error(await client.post(V1 + "/domains", headers={**PM, "Content-Type": "application/json"},
                                       data=b"{not json"), 400, "bad_json")
        await _error(await client.post(V1 + "/domains", headers=PM), 400, "bad_request")  # no body
        await _error(await client.patch(V1 + "/domains/a.test/settings", headers=PM, json={"Limit": float("inf")}),
                     400, "bad_json")  # Infinity is not JSON (RFC 8259 6)
        deep = b"[" * 100_000 + b"]" * 100_000
        await _error(await client.post(V1 + "/domains", headers={**PM, "Content-Type": "application/json"},
                                       data=deep), 400, "bad_json")
        await _error(await client.post(V1 + "/domains", headers={**PM, "Content-Type": "application/json"},
                                       data=b'{"name": "\xff\xfe"}'), 400, "bad_json")
        await _error(await client.get(V1 + "/domains/a.test/accounts?limit=\u00b2", headers=PM), 400, "bad_request")
        resp = await client.post(V1 + "/domains", headers={**PM, "Content-Type": "text/plain"}, data=b'{"name":"x.test"}')
        await _error(resp, 415, "unsupported_media_type")


async def test_strict_json_lone_surrogates_duplicate_keys_nan(ctx: ServerContext) -> None:
    """Issue 17 finding 6: a lone surrogate was a 500 with a traceback; a
    duplicate key silently let the last one win."""
    bodies = [
        rb'{"name": "dave", "password": "\ud800"}',
        rb'{"name": "dave", "password": "x", "settings": {"\udfff": "y"}}',
        rb'{"name": "dave", "password": "a", "password": "b"}',
        rb'{"name": "dave", "settings": {"RealName": "A", "RealName": "B"}}',
        rb'{"name": "dave", "settings": {"MaxAccountSize": NaN}}',
        rb'{"name": "dave", "settings": {"MaxAccountSize": -Infinity}}',
    ]
    async with client_for(ctx) as client:
        for body in bodies:
            resp = await client.post(V1 + "/domains/a.test/accounts", headers={**PM, "Content-Type": "application/json"},
                                     data=body)
            message = await _error(resp, 400, "bad_json")
            assert "Traceback" not in message, body
        resp = await client.patch(V1 + "/domains/a.test/accounts/carol/settings",
                                  headers={**PM, "Content-Type": "application/json"}, data=rb'{"RealName": "\ud800x"}')
        await _error(resp, 400, "bad_json")
        assert ctx.directory.find_account("dave@a.test") is None
        # a surrogate pair is one valid character
        resp = await client.patch(V1 + "/domains/a.test/accounts/carol/settings",
                                  headers={**PM, "Content-Type": "application/json"}, data=rb'{"RealName": "\ud83d\ude00"}')
        await _json(resp, 200)


async def test_hostile_names_are_refused(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        for name in ("..", "a/b", "a\\b", "x" * 64 + ".test", "bad name.test", "-x.test", "a..b", "é\u202e.test"):
            await _error(await client.post(V1 + "/domains", headers=PM, json={"name": name}), 400, "bad_name")
        for name in ("..", "a/b", "x" * 60 + "@x", ".hidden", "a b", "a\u200bb"):
            await _error(await client.post(V1 + "/domains/a.test/accounts", headers=PM, json={"name": name}), 400, "bad_name")
        for body in ({"name": "a\x00b"}, {"name": "x" * 300}):  # refused by the body schema already
            await _error(await client.post(V1 + "/domains", headers=PM, json=body), 400, "bad_request")
        for path in ("/domains/%2E%2E/settings", "/domains/a%00b/settings", "/domains/" + "x" * 300,
                     "/domains/a.test/accounts/..%2Fetc", "/domains/a.test/accounts/a%0Ab",
                     "/domains/a.test/accounts/carol/alerts/%2E%2E"):
            resp = await client.get(V1 + path, headers=PM)
            assert resp.status in (400, 404), path
            body = await resp.json()
            assert body["error"]["code"] in ("bad_name", "not_found", "method_not_allowed"), (path, body)
        await _error(await client.get(V1 + "/domains/a%00b/settings", headers=PM), 400, "bad_name")
        await _error(await client.get(V1 + "/domains/a.test/accounts/a%0Ab", headers=PM), 400, "bad_name")
        assert sorted(p.name for p in (ctx.config.base / "Domains").iterdir()) == ["a.test", "b.test", "main.test"]


async def test_unknown_routes_and_methods_are_json_errors(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        await _error(await client.get(V1 + "/nothing", headers=PM), 404, "not_found")
        await _error(await client.patch(V1 + "/domains", headers=PM, json={}), 405, "method_not_allowed")


async def test_cookie_session_api_writes_need_the_csrf_header(ctx: ServerContext) -> None:
    async with client_for(ctx) as client:
        token = (await _json(await client.post(V1 + "/session", json={"user": "postmaster", "password": "pm-secret-1"}), 201))
        client.session.cookie_jar.update_cookies({"dynamail_session": token["token"]})
        assert (await _json(await client.get(V1 + "/session"), 200))["account"] == "postmaster@main.test"
        await _error(await client.post(V1 + "/domains", json={"name": "c.test"}), 403, "csrf")
        await _error(await client.post(V1 + "/domains", json={"name": "c.test"}, headers={"X-CSRF-Token": "wrong"}), 403, "csrf")
        await _json(await client.post(V1 + "/domains", json={"name": "c.test"}, headers={"X-CSRF-Token": token["csrf"]}), 201)


# ---- every route answers ------------------------------------------------------------------------

_SAMPLE = {"domain": "a.test", "account": "carol", "mailbox": "Nothing", "member": "b9", "alert": "20260101T000000Z",
           "name": "fwd", "selector": "nosuchselector", "script": "nosuchscript"}
_BODY = {
    "create_session": {"user": "postmaster", "password": "pm-secret-1"},
    "create_domain": {"name": "every.test"},
    "create_account": {"name": "every"},
    "rename_account": {"new_name": "carol2"},
    "set_account_rights": {"rights": []},
    "create_mailbox": {"name": "Every"},
    "rename_mailbox": {"name": "Other"},
    "set_account_aliases": {"aliases": []},
    "set_forwarder": {"target": "x@elsewhere.test"},
    "mark_alerts_seen": {"upto": "20260101T000000Z"},
    "import_mail": {"path": "/nonexistent/maildir"},
    **{f"set_{s}_alerts": {"alerts": [{"text": "replaced"}]} for s in ("server", "cluster", "domain", "account")},
}


_TYPES: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool,
                         "integer": int, "null": type(None)}


def conforms(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str = "$") -> None:
    """Check ``value`` against the subset of JSON Schema the document uses."""
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        ok = any(isinstance(value, _TYPES[k]) and not (k == "integer" and isinstance(value, bool)) for k in kinds)
        assert ok, f"{where}: {value!r} is not {kinds}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key}"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                conforms(value[key], sub, doc, f"{where}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                if key not in schema.get("properties", {}):
                    conforms(item, extra, doc, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            conforms(item, schema["items"], doc, f"{where}[{i}]")


async def test_every_route_answers_as_documented(ctx: ServerContext) -> None:
    """Each documented operation is served: a JSON answer of the documented
    shape (or 204), never a missing route, a wrong method or an internal error."""
    async with client_for(ctx) as client:
        doc = await (await client.get("/api/openapi.json")).json()
        checked = 0
        for route in sorted(api.routes, key=lambda r: r.method == "DELETE"):
            path = re.sub(r"\{([a-z_]+)(?::[^}]*)?\}", lambda m: _SAMPLE[m.group(1)], route.full_path)
            body: Any = None
            if route.body is not None:
                body = _BODY.get(route.operation_id, {"text": "hello"} if "alert" in route.operation_id else
                                 {"password": "x-pw"} if "password" in route.operation_id else {"RealName": "Every"})
            resp = await client.request(route.method, path, headers=PM, json=body)
            if resp.content_type == "application/gzip":  # an account archive (GET .../export)
                assert route.operation_id == "export_account" and resp.status == 200
                checked += 1
                continue
            text = await resp.text()
            assert resp.status not in (405, 500), (route.method, path, resp.status, text)
            if resp.status == 404:
                assert json.loads(text)["error"]["message"] != "no such route", (route.method, path)
            if resp.status != 204:
                answer = json.loads(text)
                op = doc["paths"][openapi_path(route.full_path)][route.method.lower()]
                documented = op["responses"].get(str(resp.status))
                assert documented is not None, (route.method, path, resp.status)
                conforms(answer, documented["content"]["application/json"]["schema"], doc)
                checked += resp.status < 300
        assert checked > 50  # the rest answer a documented error (e.g. not_cluster) or 204


async def _raw_exchange(host: str, port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    import asyncio

    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_every_error_is_json_without_echo_or_library_version(tmp_path: Any) -> None:
    from http_support import free_port, make_context

    from dynamail.http.app import start

    host = "127.0.18.1"
    ctx = make_context(tmp_path / "server", listen=host)
    ctx.config.port_offset = 0
    ctx.config.ports["http"] = free_port(host)
    server = await start(ctx)
    port = server.addresses[0][2]
    probe = "<probe-7f3a>"
    cases = [
        # malformed requests that aiohttp's parser refuses itself
        (f"{probe} / HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400, "bad_request"),
        (f"GET / HTTP/1.1\r\nHost: x\r\nBad{probe}: y\r\n\r\n".encode(), 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n", None, None),
        # unknown routes and methods, outside and inside /api/
        (f"GET /nothing/{probe} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), 404, "not_found"),
        (b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 405, "method_not_allowed"),
        (f"GET /api/v1/{probe} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), 404, "not_found"),
    ]
    try:
        for request, status, code in cases:
            got, headers, body = await _raw_exchange(host, port, request)
            assert got >= 400, (request[:60], got)
            if status is not None:
                assert got == status, (request[:60], got, body)
            assert headers.get("content-type", "").startswith("application/json"), (request[:60], headers)
            error = json.loads(body)["error"]
            assert set(error) == {"code", "message"}
            if code is not None:
                assert error["code"] == code
            assert b"probe-7f3a" not in body and b"aaaa" not in body
            assert headers.get("server") == "dynamail", headers
            assert "aiohttp" not in json.dumps(headers).lower() and b"aiohttp" not in body.lower()
    finally:
        await server.close()
