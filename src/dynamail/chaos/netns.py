"""Network namespaces for the campaign's partition fault (``--netns``).

Every member runs in its own network namespace, joined to a bridge in the
root namespace (where the clients run) by a veth pair; members reach each
other and the clients through the bridge.  Isolating a member takes the
root end of its veth down: the member loses every peer and every client,
while its shared storage (a local directory) stays reachable — a real
partition of the network, not of the storage.

Needs root and iproute2 (``ip``); :func:`unavailable` says why not when it
cannot be used.  :meth:`Topology.remove` deletes everything it made.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import subprocess

NET_BASE = "10.78"  # 10.78.<random>.0/24 per campaign


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def unavailable() -> str:
    """Empty when network namespaces can be used here, else the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"dmcprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create network namespaces: {exc}"
    return ""


class Topology:
    """``count`` namespaces on one bridge; member ``i`` (1-based) has address
    ``NET.i``, the root namespace ``NET.254``."""

    def __init__(self, names: list[str]) -> None:
        self.tag = secrets.token_hex(2)
        self.net = f"{NET_BASE}.{random.randrange(1, 250)}"
        self.names = list(names)
        self.bridge = f"dmcbr{self.tag}"
        self.made: list[str] = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self.made.append("bridge")
            _ip("addr", "add", f"{self.net}.254/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, _name in enumerate(self.names, start=1):
                ns, host_end, ns_end = self.ns(i), self.host_end(i), f"dmc{self.tag}n{i}"
                _ip("netns", "add", ns)
                self.made.append(ns)
                _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
                _ip("link", "set", ns_end, "netns", ns)
                _ip("link", "set", host_end, "master", self.bridge)
                _ip("link", "set", host_end, "up")
                _ip("-n", ns, "addr", "add", f"{self.net}.{i}/24", "dev", ns_end)
                _ip("-n", ns, "link", "set", ns_end, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise

    def ns(self, i: int) -> str:
        return f"dmc{self.tag}m{i}"

    def host_end(self, i: int) -> str:
        return f"dmc{self.tag}h{i}"

    def hosts(self) -> list[str]:
        return [f"{self.net}.{i}" for i in range(1, len(self.names) + 1)]

    def wrapper(self, name: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(self.names.index(name) + 1)]

    def isolate(self, name: str, on: bool) -> None:
        _ip("link", "set", self.host_end(self.names.index(name) + 1), "down" if on else "up")

    def host(self, name: str) -> str:
        return f"{self.net}.{self.names.index(name) + 1}"

    def cut(self, a: str, b: str, on: bool) -> None:
        """Cut (or, with ``on`` false, join again) the link between members
        ``a`` and ``b`` only; joining what is not cut is no error."""
        for near, far in ((a, b), (b, a)):
            ns = self.ns(self.names.index(near) + 1)
            if on:
                _ip("-n", ns, "route", "replace", "blackhole", f"{self.host(far)}/32")
            else:
                with contextlib.suppress(subprocess.CalledProcessError):
                    _ip("-n", ns, "route", "del", "blackhole", f"{self.host(far)}/32")

    def join_all(self) -> None:
        """Undo every cut between two members."""
        for i, a in enumerate(self.names):
            for b in self.names[i + 1:]:
                self.cut(a, b, False)

    def remove(self) -> None:
        for i in range(1, len(self.names) + 1):
            with contextlib.suppress(Exception):
                _ip("netns", "del", self.ns(i))
        with contextlib.suppress(Exception):
            _ip("link", "del", self.bridge)
