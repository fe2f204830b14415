"""Real multi-process clusters for the cluster tests.

Members run as ``dynamail serve`` processes on 127.0.8.x with port offset
20000; timings are shortened by configuration (lease T = 1 s), never by
changing the design.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cluster.clients import admin_cli

from dynamail.cluster import launcher

PREFIX = "127.0.8"
OFFSET = 20000
LEASE, MARGIN, HEARTBEAT = 1.0, 0.2, 0.15
# SMTP copies whose owner is unreachable wait in the sender member's durable
# queue; retry them quickly in tests
EXTRA_SETTINGS = "[smtp]\nqueue_retry_seconds = 0.5\n"


class Cluster:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def data(self) -> dict[str, Any]:
        return launcher.read_cluster(self.dir)

    def member(self, name: str) -> dict[str, Any]:
        return next(m for m in self.data["members"] if m["name"] == name)

    def names(self) -> list[str]:
        return [m["name"] for m in self.data["members"]]

    def status(self) -> dict[str, Any]:
        return launcher.status(self.dir)

    def wait(self, predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(launcher.LauncherError, OSError):  # not up yet
                last = predicate()
                if last:
                    return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last {last!r}")

    def wait_controller(self, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            st = self.status()
            running = [m for m in st["members"] if m["running"] and m["name"] not in exclude]
            if st["controller"] and st["controller"] not in exclude and all(
                    m.get("alive") for m in running):
                return st
            return None

        result: dict[str, Any] = self.wait(ok, what="a controller")
        return result

    def kill(self, name: str, sig: str = "KILL") -> None:
        launcher.kill(self.dir, name, sig)

    def locate(self, account: str) -> str:
        return launcher.locate(self.dir, account)

    def cli(self, member: str, *commands: str) -> list[str]:
        return admin_cli(self.member(member), self.data["admin"], *commands, timeout=10)

    def imap(self, member: str, user: str, password: str) -> imaplib.IMAP4:
        m = self.member(member)
        conn = imaplib.IMAP4(m["host"], m["ports"]["imap"], timeout=15)
        if not m["host"].startswith("127."):  # plaintext login is for loopback only
            from dynamail.net.tls import client_context_insecure

            conn.starttls(client_context_insecure())
        conn.login(user, password)
        return conn

    def mail_path(self, domain: str, account: str) -> Path:
        shared = Path(self.data["shared"])
        found = list(shared.glob(f"{domain}/Accounts/*/{account}/Mail"))
        assert found, f"no mail directory for {account}@{domain}"
        return found[0]

    def logs(self, name: str) -> str:
        return (self.dir / "members" / name / "serve.log").read_text(errors="replace")


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def free_hosts(count: int) -> int:
    """A random run of ``count`` addresses in PREFIX whose cluster ports are
    free, so that concurrent test runs on one machine do not collide."""
    import random
    import socket

    for _ in range(200):
        first = random.randrange(1, 250 - count)
        ok = True
        for i in range(count):
            with socket.socket() as s:
                try:
                    s.bind((f"{PREFIX}.{first + i}", launcher.CLUSTER_PORT + OFFSET))
                except OSError:
                    ok = False
                    break
        if ok:
            return first
    raise RuntimeError("no free loopback addresses")


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(backends: int = 3, env: dict[str, str] | None = None, cluster_settings: str = "",
             frontends: int = 0, wrappers: dict[str, list[str]] | None = None) -> Cluster:
        d = tmp_path / f"c{len(made)}"
        c = Cluster(d)
        made.append(c)
        launcher.up(d, backends, frontends, port_offset=OFFSET, prefix=PREFIX,
                    first_host=free_hosts(backends + frontends),
                    lease=LEASE, margin=MARGIN, heartbeat=HEARTBEAT, timeout=60.0, env=env,
                    extra_settings=cluster_settings + "\n" + EXTRA_SETTINGS, wrappers=wrappers)
        return c

    yield make
    for c in made:
        with contextlib.suppress(Exception):
            launcher.down(c.dir, timeout=5.0)


def set_member_env(c: Cluster, name: str, env: dict[str, str]) -> None:
    path = c.dir / "members" / name / "argv.json"
    spec = json.loads(path.read_text())
    spec["env"] = env
    path.write_text(json.dumps(spec))


def cut(c: Cluster, name: str, on: bool) -> None:
    flag = c.dir / "members" / name / "cluster.cut"
    if on:
        flag.write_text("cut\n")
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(flag)


def _ip(*args: str) -> None:
    import subprocess

    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def netns_available() -> str:
    """Empty when network namespaces can be used here, else the reason."""
    import secrets
    import shutil
    import subprocess

    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"dmprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create network namespaces: {exc}"
    return ""


class NetnsTopology:
    """One network namespace per member, joined by veth pairs to a bridge
    in the root namespace (where the tests run).  ``cut(i)`` takes member i's
    link down: a real network partition; its shared storage stays."""

    def __init__(self, count: int) -> None:
        import random
        import secrets

        self.tag = secrets.token_hex(2)
        self.net = f"10.77.{random.randrange(1, 250)}"
        self.count = count
        self.bridge = f"dmbr{self.tag}"
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.net}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(1, count + 1):
            ns, host_end, ns_end = self.ns(i), f"dm{self.tag}h{i}", f"dm{self.tag}n{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", ns_end, "netns", ns)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("-n", ns, "addr", "add", f"{self.net}.{i}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def ns(self, i: int) -> str:
        return f"dm{self.tag}b{i}"

    def hosts(self) -> list[str]:
        return [f"{self.net}.{i}" for i in range(1, self.count + 1)]

    def wrappers(self) -> dict[str, list[str]]:
        return {f"b{i}": ["ip", "netns", "exec", self.ns(i)] for i in range(1, self.count + 1)}

    def cut(self, i: int, on: bool) -> None:
        _ip("link", "set", f"dm{self.tag}h{i}", "down" if on else "up")

    def block(self, i: int, j: int, on: bool) -> None:
        """Cut (or join again) the link between members i and j only."""
        import subprocess

        for near, far in ((i, j), (j, i)):
            if on:
                _ip("-n", self.ns(near), "route", "replace", "blackhole", f"{self.net}.{far}/32")
            else:
                with contextlib.suppress(subprocess.CalledProcessError):
                    _ip("-n", self.ns(near), "route", "del", "blackhole", f"{self.net}.{far}/32")

    def remove(self) -> None:
        for i in range(1, self.count + 1):
            with contextlib.suppress(Exception):
                _ip("netns", "del", self.ns(i))
        with contextlib.suppress(Exception):
            _ip("link", "del", self.bridge)


@pytest.fixture
def netns_cluster(tmp_path: Path) -> Iterator[Any]:
    made: list[tuple[Cluster, NetnsTopology]] = []

    def make(backends: int = 3) -> tuple[Cluster, NetnsTopology]:
        why = netns_available()
        if why:
            pytest.skip(why)
        topo = NetnsTopology(backends)
        c = Cluster(tmp_path / f"n{len(made)}")
        made.append((c, topo))
        launcher.up(c.dir, backends, port_offset=OFFSET, hosts=topo.hosts(), wrappers=topo.wrappers(),
                    lease=LEASE, margin=MARGIN, heartbeat=HEARTBEAT, timeout=60.0,
                    extra_settings=EXTRA_SETTINGS)
        return c, topo

    yield make
    for c, topo in made:
        with contextlib.suppress(Exception):
            launcher.down(c.dir, timeout=5.0)
        topo.remove()
