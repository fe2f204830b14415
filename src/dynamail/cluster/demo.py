"""`dynamail demo`: a local three-backend Dynamic Cluster with demo accounts.

It starts (or re-uses) a cluster in ``DIR`` with the launcher, creates the
shared domain ``example.test`` with ``alice`` and ``bob`` through one
member's admin CLI (the change reaches every member), prints how to connect
to any member, and then shows a live status line until Ctrl-C, which stops
the cluster.  Passwords are kept in ``DIR/demo-accounts.txt`` (mode 0600).
"""

from __future__ import annotations

import secrets
import signal
import socket
import time
from pathlib import Path
from typing import Any

import click

from dynamail.cluster import launcher
from dynamail.durable import atomic_write

DEMO_DOMAIN = "example.test"
DEMO_ACCOUNTS = ("alice", "bob")
ACCOUNTS_FILE = "demo-accounts.txt"


def _passwords(directory: Path) -> dict[str, str]:
    path = directory / ACCOUNTS_FILE
    known: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, pw = line.partition(" ")
            if name and pw:
                known[name] = pw
    if any(n not in known for n in DEMO_ACCOUNTS):
        for n in DEMO_ACCOUNTS:
            known.setdefault(n, secrets.token_urlsafe(9))
        atomic_write(path, "".join(f"{n} {p}\n" for n, p in known.items()).encode(), mode=0o600)
    return known


def _cli(member: dict[str, Any], admin: dict[str, str], *commands: str) -> list[str]:
    with socket.create_connection((member["host"], member["ports"]["cli"]), timeout=15) as s:
        f = s.makefile("rwb")
        f.readline()
        out = []
        for c in (f"USER {admin['user']}", f"PASS {admin['password']}", *commands):
            f.write(c.encode() + b"\r\n")
            f.flush()
            line = f.readline().decode(errors="replace").rstrip()
            if line.startswith("200 data follow"):
                line = f.readline().decode(errors="replace").rstrip()
            out.append(line)
        return out[2:]


def _provision(data: dict[str, Any], passwords: dict[str, str]) -> None:
    member = data["members"][0]
    cmds = [f"CREATEDOMAIN {DEMO_DOMAIN} SHARED"]
    for name in DEMO_ACCOUNTS:
        cmds.append(f'CREATEACCOUNT {name}@{DEMO_DOMAIN} {{Password="{passwords[name]}";'
                    f'RealName="{name.capitalize()}";}}')
        cmds.append(f'SETACCOUNTPASSWORD {name}@{DEMO_DOMAIN} PASSWORD "{passwords[name]}"')
    _cli(member, data["admin"], *cmds)


def _banner(directory: Path, data: dict[str, Any], passwords: dict[str, str]) -> str:
    lines = ["", f"dynamail local cluster running in {directory.resolve()}", ""]
    for m in data["members"]:
        p = m["ports"]
        lines.append(f"  {m['name']} ({m['role']}) {m['host']}:  IMAP {p['imap']}  POP3 {p['pop3']}  "
                     f"SMTP {p['smtp']}  submission {p['submission']}  CLI {p['cli']}  HTTP {p['http']}")
    lines += ["", f"Shared domain {DEMO_DOMAIN} (served by every member):"]
    for name in DEMO_ACCOUNTS:
        lines.append(f"  {name + '@' + DEMO_DOMAIN:24s} password {passwords[name]}")
    admin = data["admin"]
    first = data["members"][0]
    lines += [
        f"  {admin['user']} (Main Domain of each member) password {admin['password']}",
        "",
        f"Try: connect a mail client to any member, e.g. IMAP {first['host']}:{first['ports']['imap']}",
        f"     dynamail cluster status --dir {directory}",
        f"     dynamail cluster kill --dir {directory} b1     (and watch the others take over)",
        f"     dynamail cluster start --dir {directory} b1",
        "",
        "Ctrl-C stops the cluster.",
        "",
    ]
    return "\n".join(lines)


def _status_line(directory: Path) -> str:
    st = launcher.status(directory, timeout=1.0)
    parts = []
    for m in st["members"]:
        role = "C" if m["name"] == st.get("controller") else "B" if m["name"] == st.get("backup") else " "
        state = ("up" if m.get("alive") else "down") if m["running"] else "stopped"
        parts.append(f"{m['name']}[{role}] {state} load {m.get('load', 0)} "
                     f"acc {m.get('open_accounts', 0)} ses {m.get('sessions', 0)}")
    return " | ".join(parts)


def run_cluster_demo(directory: Path, *, backends: int = 3, port_offset: int | None = None) -> None:
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    offset = launcher.DEFAULT_OFFSET if port_offset is None else port_offset
    passwords = _passwords(directory)
    try:
        running = launcher.cluster_file(directory).exists() and any(
            launcher.alive(m["pid"]) for m in launcher.read_cluster(directory)["members"])
        if not running:
            click.echo(f"starting {backends} backends ...")
            launcher.up(directory, backends, port_offset=offset)
        data = launcher.read_cluster(directory)
        _provision(data, passwords)
    except (launcher.LauncherError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_banner(directory, data, passwords))

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        while True:
            click.echo("\r" + _status_line(directory)[:200].ljust(120), nl=False)
            time.sleep(1.0)
    except KeyboardInterrupt:
        click.echo("\nstopping the cluster ...")
        launcher.down(directory)
