"""The admin port of real cluster members (``dynamail cluster up``)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from http_support import RealCluster, api_call

pytestmark = [pytest.mark.xdist_group("http-cluster"), pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RealCluster]:
    real = RealCluster(tmp_path / "cluster")
    try:
        yield real
    finally:
        real.close()


def _health(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _eventually(what: str, check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r}")
        time.sleep(0.1)


def _error_code(call: Any) -> tuple[int, str]:
    try:
        call()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]["code"]
    raise AssertionError("the call succeeded")


def test_single_service_image_and_ready_state(cluster: RealCluster) -> None:
    b1, b2 = cluster.url("b1"), cluster.url("b2")
    pm = (cluster.user, cluster.password)

    def settled() -> dict[str, Any] | None:
        s: dict[str, Any] = api_call(b2 + "/api/v1/cluster", *pm)
        return s if s["controller"] and s["backup"] else None

    status = _eventually("cluster status", settled)
    assert {status["controller"], status["backup"]} == {"b1", "b2"} and status["clustered"] is True
    assert sorted(m["name"] for m in status["members"]) == ["b1", "b2"]
    assert all({"role", "ready", "load", "open_accounts", "version"} <= set(m) for m in status["members"])
    assert api_call(b1 + "/api/v1/cluster/controller", *pm) == {"controller": status["controller"]}
    for name, url in cluster.urls.items():
        with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert 'dynamail_cluster_role{role="backend"} 1.0' in text
        is_controller = name == status["controller"]
        assert f'dynamail_cluster_role{{role="controller"}} {1.0 if is_controller else 0.0}' in text

    # a shared domain made on one member is served by every member
    made = api_call(b2 + "/api/v1/domains", *pm, "POST", {"name": "shared.test", "shared": True})
    assert made["shared"] is True
    api_call(b1 + "/api/v1/domains/shared.test/accounts", *pm, "POST", {"name": "sam", "password": "sam-pw"})
    listed = _eventually("account on b2", lambda: api_call(b2 + "/api/v1/domains/shared.test/accounts", *pm)
                         ["accounts"])
    assert listed == ["sam"]
    api_call(b2 + "/api/v1/domains/shared.test/accounts/sam/settings", *pm, "PATCH", {"RealName": "Sam"})
    assert api_call(b1 + "/api/v1/domains/shared.test/accounts/sam/settings", *pm) == {"RealName": "Sam"}

    # a session token of a shared-domain account works on every member
    token = api_call(b1 + "/api/v1/session", *pm, "POST", {"user": "sam@shared.test", "password": "sam-pw"})
    req = urllib.request.Request(b2 + "/api/v1/session", headers={"Authorization": f"Bearer {token['token']}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["account"] == "sam@shared.test"
    # ... but not a token of a member's own Main Domain account, which exists on that member only
    token = api_call(b1 + "/api/v1/session", *pm, "POST", {"user": cluster.user, "password": cluster.password})
    code = _error_code(lambda: urllib.request.urlopen(urllib.request.Request(
        b2 + "/api/v1/session", headers={"Authorization": f"Bearer {token['token']}"}), timeout=10))
    assert code == (401, "unauthorized")

    # Make Non-Ready needs Can Control Cluster
    code = _error_code(lambda: api_call(b1 + "/api/v1/cluster/members/b2/nonready", "sam@shared.test", "sam-pw",
                                        "POST"))
    assert code == (403, "forbidden")
    assert _health(b2)[0] == 200
    api_call(b1 + "/api/v1/cluster/members/b2/nonready", *pm, "POST")
    _eventually("b2 Non-Ready", lambda: _health(b2)[0] == 503)
    assert _health(b2)[1]["status"] == "nonready" and _health(b1)[0] == 200
    after = api_call(b1 + "/api/v1/cluster", *pm)
    assert {m["name"]: m["ready"] for m in after["members"]} == {"b1": True, "b2": False}
    api_call(b2 + "/api/v1/cluster/members/b2/ready", *pm, "POST")
    _eventually("b2 Ready", lambda: _health(b2)[0] == 200)


def test_admin_command_line_against_a_cluster(cluster: RealCluster) -> None:
    from click.testing import CliRunner

    from dynamail.cli.admin import admin

    server = cluster.url("b2").removeprefix("http://")
    env = {"DYNAMAIL_PASSWORD": cluster.password}
    def settled() -> dict[str, Any] | None:
        out = CliRunner().invoke(admin, ["--server", server, "--user", cluster.user, "--json", "cluster", "status"],
                                 env=env)
        assert out.exit_code == 0, out.output
        data: dict[str, Any] = json.loads(out.output)
        return data if data["controller"] and data["backup"] else None

    assert _eventually("cluster status", settled)["controller"] in ("b1", "b2")
    out = CliRunner().invoke(admin, ["--server", server, "--user", cluster.user, "domain", "create", "--shared",
                                     "cli.test"], env=env)
    assert out.exit_code == 0 and "created shared domain cli.test" in out.output, out.output
    out = CliRunner().invoke(admin, ["--server", server, "--user", cluster.user, "cluster", "nonready", "b1"], env=env)
    assert out.exit_code == 0 and "b1 is Non-Ready" in out.output
    _eventually("b1 Non-Ready", lambda: _health(cluster.url("b1"))[0] == 503)
    out = CliRunner().invoke(admin, ["--server", server, "--user", cluster.user, "cluster", "status"], env=env)
    assert "Non-Ready" in out.output and "(Controller)" in out.output
