"""The partition fault's network namespaces: made, isolated, removed."""

from __future__ import annotations

import subprocess

import pytest

from dynamail.chaos import netns


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def test_isolate_takes_the_member_link_down_and_remove_cleans_up() -> None:
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    topo = netns.Topology(["b1", "b2"])
    try:
        assert topo.hosts() == [f"{topo.net}.1", f"{topo.net}.2"]
        assert f"{topo.net}.2/24" in _ip("-n", topo.ns(2), "addr")
        assert topo.wrapper("b2") == ["ip", "netns", "exec", topo.ns(2)]
        topo.isolate("b2", True)
        assert "state DOWN" in _ip("link", "show", topo.host_end(2))
        topo.isolate("b2", False)
        assert "state DOWN" not in _ip("link", "show", topo.host_end(2))
    finally:
        topo.remove()
    assert topo.ns(1) not in _ip("netns", "list")
    assert topo.bridge not in _ip("link")
