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


def test_cut_parts_two_members_and_leaves_the_third_and_the_clients() -> None:
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    topo = netns.Topology(["b1", "b2", "b3"])

    def reach(i: int, host: str) -> bool:
        ns = topo.ns(i)
        proc = subprocess.run(["ip", "netns", "exec", ns, "ip", "route", "get", host],
                              capture_output=True, text=True)
        return proc.returncode == 0 and "blackhole" not in proc.stdout

    try:
        topo.cut("b1", "b2", True)
        assert not reach(1, topo.host("b2")) and not reach(2, topo.host("b1"))
        assert reach(1, topo.host("b3")) and reach(2, topo.host("b3")) and reach(3, topo.host("b1"))
        assert reach(1, f"{topo.net}.254")  # the clients' side
        topo.cut("b1", "b2", True)  # cutting twice is no error
        topo.join_all()
        assert reach(1, topo.host("b2")) and reach(2, topo.host("b1"))
        topo.join_all()  # joining what is not cut is no error
    finally:
        topo.remove()
