"""A local Dynamic Cluster on one machine (SPEC section 6).

``up`` lays out a directory and starts every member as a background
``dynamail serve`` process::

    DIR/cluster.json          members, pids, ports, admin credentials
    DIR/shared/               the shared storage (--SharedBase); cluster.secret
    DIR/members/<name>/       each member's base directory; its serve.log
                              and argv.json (how ``start`` restarts it)

Backend ``b<i>`` listens on ``<prefix>.<i>`` (default 127.0.7.i; with
``first_host`` F on ``<prefix>.<F + i - 1>``), frontend ``f<j>`` after the
backends; every port is the standard port plus
the port offset (default 10000, so that no root is needed and no system mail
daemon on the standard ports is in the way: IMAP 10143, SMTP 10025, the
cluster protocol 17070).  The cluster secret is generated once (mode 0600).

Tools talk to the members over the cluster protocol itself (role "tool"),
authenticated with the same secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dynamail.cluster import wire
from dynamail.cluster.handoff import status_dict
from dynamail.cluster.member import load_secret
from dynamail.cluster.peer import Peer, PeerClosed, client_tls, dial
from dynamail.durable import atomic_write
from dynamail.filemodes import open_private, private_dirs

DEFAULT_OFFSET = 10000
DEFAULT_PREFIX = "127.0.7"
PORT_NAMES = {"smtp": 25, "submission": 587, "smtps": 465, "lmtp": 24, "imap": 143, "imaps": 993,
              "pop3": 110, "pop3s": 995, "cli": 106, "managesieve": 4190, "http": 8010, "https": 9010}
CLUSTER_PORT = 7070
SIGNALS = {"KILL": signal.SIGKILL, "STOP": signal.SIGSTOP, "CONT": signal.SIGCONT,
           "TERM": signal.SIGTERM}


class LauncherError(Exception):
    pass


def cluster_file(directory: Path) -> Path:
    return Path(directory) / "cluster.json"


def read_cluster(directory: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(cluster_file(directory).read_text())
        return data
    except FileNotFoundError:
        raise LauncherError(f"no cluster in {directory} (cluster.json missing)") from None


def write_cluster(directory: Path, data: dict[str, Any]) -> None:
    # holds the admin password: private to the owner
    atomic_write(cluster_file(directory), (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)


def _member(data: dict[str, Any], name: str) -> dict[str, Any]:
    for m in data["members"]:
        if m["name"] == name:
            return m
    raise LauncherError(f"no member {name!r} (members: {', '.join(m['name'] for m in data['members'])})")


_REAPED: dict[int, int] = {}  # wait statuses alive() collected from this process's own children


def reaped_status(pid: int) -> int | None:
    """The wait status of a child of ours that :func:`alive` reaped (once)."""
    return _REAPED.pop(pid, None)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    with contextlib.suppress(ChildProcessError):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            # kept: the demo's watch tells "killed by SIGKILL" from this status
            # even when a status look (this function) reaped the child first
            _REAPED[pid] = status
            return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _write_member_settings(base: Path, name: str, role: str, backends: list[str], secret_file: Path,
                           lease: float, margin: float, heartbeat: float, extra: str = "") -> None:
    settings = base / "Settings"
    private_dirs(settings)
    path = settings / "server.toml"
    lines = [f'main_domain = "{name}.cluster.test"', "", "[cluster]", f'name = "{name}"',
             f'role = "{role}"', "backends = [" + ", ".join(f'"{b}"' for b in backends) + "]",
             f'secret_file = "{secret_file}"', f"lease_seconds = {lease}",
             f"lease_margin = {margin}", f"heartbeat_interval = {heartbeat}", "", extra]
    atomic_write(path, "\n".join(lines).encode())


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    out = open_private(log, "ab")  # logs name accounts and addresses
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **(env or {})})
    finally:
        out.close()
    return proc.pid


def up(directory: Path, backends: int = 3, frontends: int = 0, *, port_offset: int = DEFAULT_OFFSET,
       prefix: str = DEFAULT_PREFIX, first_host: int = 1, lease: float = 1.5, margin: float = 0.3,
       heartbeat: float = 0.25, timeout: float = 60.0,
       env: dict[str, str] | None = None, extra_settings: str = "",
       hosts: list[str] | None = None,
       wrappers: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Start a local cluster and return its cluster.json data once it serves.
    ``extra_settings`` is TOML appended to every member's settings file.
    ``hosts`` gives the members' addresses explicitly (in member order) and
    ``wrappers`` a command prefix per member name (for example
    ``["ip", "netns", "exec", NS]`` to run it in a network namespace)."""
    directory = Path(directory).absolute()
    if cluster_file(directory).exists():
        data = read_cluster(directory)
        if any(alive(m["pid"]) for m in data["members"]):
            raise LauncherError(f"a cluster is already running in {directory}; run `down` first")
    if backends < 1:
        raise LauncherError("a cluster needs at least one backend")
    shared = directory / "shared"
    private_dirs(shared)
    secret_file = shared / "cluster.secret"
    load_secret(secret_file, create=True)
    pw_file = directory / "admin.password"
    if pw_file.exists():
        password = pw_file.read_text().strip()
    else:
        password = secrets.token_urlsafe(12)
        atomic_write(pw_file, (password + "\n").encode(), mode=0o600)
    if not 1 <= first_host or first_host + backends + frontends - 1 > 254:
        raise LauncherError("member addresses must stay within <prefix>.1 - <prefix>.254")
    h0 = first_host - 1
    addresses = hosts or [f"{prefix}.{h0 + i}" for i in range(1, backends + frontends + 1)]
    if len(addresses) != backends + frontends:
        raise LauncherError("give one host per member")
    backend_addrs = [f"{h}:{CLUSTER_PORT + port_offset}" for h in addresses[:backends]]
    members: list[dict[str, Any]] = []
    roles = [("b", "backend", i, i - 1) for i in range(1, backends + 1)]
    roles += [("f", "frontend", j, backends + j - 1) for j in range(1, frontends + 1)]
    for letter, role, i, host_index in roles:
        name = f"{letter}{i}"
        host = addresses[host_index]
        base = directory / "members" / name
        _write_member_settings(base, name, role, backend_addrs, secret_file, lease, margin, heartbeat,
                               extra_settings)
        flag = "--ClusterBackend" if role == "backend" else "--ClusterFrontend"
        argv = [*(wrappers or {}).get(name, []),
                sys.executable, "-m", "dynamail", "serve", "--base", str(base), "--listen", host,
                "--port-offset", str(port_offset), flag, "--SharedBase", str(shared),
                "--postmaster-password-file", str(pw_file)]  # never on argv (ps shows it)
        atomic_write(base / "argv.json", json.dumps({"argv": argv, "env": env or {}}).encode(), mode=0o600)
        pid = _spawn(argv, base / "serve.log", env)
        members.append({"name": name, "role": role, "pid": pid, "host": host,
                        "ports": {k: v + port_offset for k, v in PORT_NAMES.items()},
                        "cluster_port": CLUSTER_PORT + port_offset})
    data = {"members": members, "admin": {"user": "postmaster", "password": password},
            "port_offset": port_offset, "shared": str(shared)}
    write_cluster(directory, data)
    try:
        wait_serving(directory, timeout=timeout)
    except BaseException:
        down(directory, timeout=5.0)  # never leave half a cluster behind
        raise
    return data


def start(directory: Path, name: str) -> int:
    data = read_cluster(directory)
    m = _member(data, name)
    if alive(m["pid"]):
        raise LauncherError(f"{name} is running (pid {m['pid']})")
    base = Path(directory).absolute() / "members" / name
    spec = json.loads((base / "argv.json").read_text())
    m["pid"] = _spawn(spec["argv"], base / "serve.log", spec.get("env") or None)
    write_cluster(directory, data)
    return int(m["pid"])


def kill(directory: Path, name: str, sig: str = "KILL") -> None:
    data = read_cluster(directory)
    m = _member(data, name)
    try:
        os.kill(m["pid"], SIGNALS[sig.upper()])
    except ProcessLookupError:
        raise LauncherError(f"{name} is not running") from None
    if sig.upper() == "KILL":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(m["pid"], 0)


def down(directory: Path, timeout: float = 10.0) -> None:
    data = read_cluster(directory)
    for m in data["members"]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(m["pid"], signal.SIGCONT)
            os.kill(m["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(m["pid"]) for m in data["members"]):
        time.sleep(0.05)
    for m in data["members"]:
        with contextlib.suppress(ProcessLookupError):
            if alive(m["pid"]):
                os.kill(m["pid"], signal.SIGKILL)


# -- talking to members -------------------------------------------------------
async def _none(peer: Peer, msg: wire.Message) -> None:
    return None


async def dial_tool(host: str, port: int, name: str, secret: bytes, timeout: float) -> Peer:
    """A tool connection to a member: over TLS ([cluster] tls, the default),
    or in plaintext when the member runs with ``tls = false``."""
    try:
        return await dial(host, port, name, secret, _none, role="tool", timeout=timeout,
                          tls=client_tls())
    except (ssl.SSLError, ConnectionError, wire.ProtocolError, PeerClosed):
        return await dial(host, port, name, secret, _none, role="tool", timeout=timeout)


async def _ask(directory: Path, msg_factory: Any, member: str | None = None,
               timeout: float = 2.0) -> wire.Message:
    data = read_cluster(directory)
    secret = load_secret(Path(data["shared"]) / "cluster.secret", create=False)
    order = [m for m in data["members"] if alive(m["pid"])]
    if member is not None:
        order = [m for m in order if m["name"] == member]
    last: Exception | None = None
    for m in order:
        try:
            peer = await dial_tool(m["host"], m["cluster_port"], f"tool-{os.getpid()}", secret,
                                   timeout)
        except (OSError, TimeoutError, wire.ProtocolError) as exc:
            last = exc
            continue
        try:
            reply: wire.Message = await peer.request(msg_factory(peer.next_id()), timeout=timeout)
            if isinstance(reply, wire.Error) and reply.code in ("unavailable", "not-controller") \
                    and member is None:
                last = LauncherError(reply.text)
                continue
            return reply
        except (OSError, TimeoutError, ConnectionError) as exc:
            last = exc
        finally:
            peer.close()
    raise LauncherError(f"no member answered: {last}")


def status(directory: Path, timeout: float = 2.0) -> dict[str, Any]:
    """SPEC section 6 status: controller, backup, members with role, ready,
    load, open_accounts, version (and pid, running)."""
    data = read_cluster(directory)
    try:
        reply = asyncio.run(_ask(directory, wire.StatusRequest, timeout=timeout))
        out = status_dict(reply)
    except LauncherError as exc:
        out = {"controller": "", "backup": "", "members": [], "error": str(exc)}
    known = {m["name"]: m for m in out["members"]}
    members = []
    for m in data["members"]:
        row = known.get(m["name"], {"name": m["name"], "role": m["role"], "alive": False,
                                    "ready": False, "load": 0, "open_accounts": 0, "sessions": 0,
                                    "version": ""})
        row = dict(row)
        row["role"] = m["role"]
        row["pid"] = m["pid"]
        row["running"] = alive(m["pid"])
        row["host"] = m["host"]
        members.append(row)
    out["members"] = members
    return out


def locate(directory: Path, account: str) -> str:
    name, _, domain = account.partition("@")
    if not domain:
        raise LauncherError("ACCOUNT must be name@domain")
    key = f"{domain.lower()}/{name.lower()}"
    reply = asyncio.run(_ask(directory, lambda i: wire.Locate(i, key)))
    return reply.owner if isinstance(reply, wire.Location) else ""


def set_ready(directory: Path, member: str, ready: bool, drain: float | None = None) -> None:
    """Make ``member`` Ready or Non-Ready; with ``drain`` (a grace period in
    seconds, Non-Ready only) it also moves its open accounts away."""
    data = read_cluster(directory)
    _member(data, member)
    if drain is not None and not ready:
        grace = int(drain * 1000)
        reply = asyncio.run(_ask(directory, lambda i: wire.Drain(i, member, grace)))
    else:
        reply = asyncio.run(_ask(directory, lambda i: wire.SetReady(i, member, ready)))
    if not isinstance(reply, wire.Ok):
        raise LauncherError(f"refused: {getattr(reply, 'text', reply)}")


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_serving(directory: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until one Controller knows every running member (and a Backup
    when there are two or more backends) and their client ports accept."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        data = read_cluster(directory)
        for m in data["members"]:
            if not alive(m["pid"]):
                log = Path(directory) / "members" / m["name"] / "serve.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise LauncherError(f"{m['name']} exited while starting:\n{tail}")
        last = status(directory, timeout=1.0)
        running = [m for m in last["members"] if m["running"]]
        backends = [m for m in running if m["role"] == "backend"]
        ok = bool(last.get("controller")) and all(m.get("alive") for m in running)
        if len(backends) >= 2:
            ok = ok and bool(last.get("backup"))
        if ok:
            ok = all(_port_open(m["host"], m["ports"]["imap"]) or _port_open(m["host"], m["ports"]["cli"])
                     or _port_open(m["host"], m["cluster_port"])
                     for m in data["members"] if alive(m["pid"]))
        if ok:
            return last
        time.sleep(0.1)
    raise LauncherError(f"cluster did not come up within {timeout:.0f} s: {last}")
