"""The admin CLI on a real two-backend local cluster: Single Service Image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .test_serve import CliClient, free_offset

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server")]

PREFIX = "127.0.2"
FIRST_HOST = 20


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    launcher = pytest.importorskip("dynamail.cluster.launcher")
    offset = max(free_offset(f"{PREFIX}.{FIRST_HOST}"), free_offset(f"{PREFIX}.{FIRST_HOST + 1}"))
    data = launcher.up(tmp_path / "c", 2, port_offset=offset, prefix=PREFIX, first_host=FIRST_HOST,
                       timeout=90.0)
    try:
        yield data
    finally:
        launcher.down(tmp_path / "c", timeout=10.0)


def _client(data: dict[str, Any], i: int) -> CliClient:
    m = data["members"][i]
    c = CliClient(m["host"], m["ports"]["cli"])
    c.login(data["admin"]["user"], data["admin"]["password"])
    return c


def test_cli_is_the_same_on_every_member(cluster: dict[str, Any]) -> None:
    c1, c2 = _client(cluster, 0), _client(cluster, 1)
    assert c1.cmd("CREATEDOMAIN shared.test SHARED").startswith("200 OK")
    assert c1.cmd("CREATEACCOUNT carol@shared.test {Password=cpw; RealName=Carol;}").startswith("200 OK")
    assert c1.cmd("UPDATECLUSTERACCOUNTDEFAULTS {MaxAccountSize=3G;}").startswith("200 OK")
    # seen at once through the other member
    assert "shared.test" in c2.data("LISTDOMAINS")  # type: ignore[operator]
    assert c2.data("LISTACCOUNTS shared.test") == {"carol": "macnt"}
    eff = c2.data("GETACCOUNTEFFECTIVESETTINGS carol@shared.test")
    assert isinstance(eff, dict) and eff["RealName"] == "Carol" and eff["MaxAccountSize"] == "3G"
    assert c2.cmd("VERIFYACCOUNTPASSWORD carol@shared.test PASSWORD cpw").startswith("200 OK")
    # changes through the second member are visible through the first
    assert c2.cmd("UPDATEACCOUNTSETTINGS carol@shared.test {RealName=\"Carol C\";}").startswith("200 OK")
    assert c1.data("GETACCOUNTSETTINGS carol@shared.test")["RealName"] == "Carol C"  # type: ignore[index]
    # one Controller, named the same by every member
    controller = c1.data("GETCURRENTCONTROLLER")
    assert controller and controller == c2.data("GETCURRENTCONTROLLER")
    members = c1.data("LISTCLUSTERMEMBERS")
    assert isinstance(members, list) and len(members) == 2
    c1.close()
    c2.close()
