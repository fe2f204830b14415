"""`dynamail demo`: a local Dynamic Cluster (three backends and a frontend)
with demo accounts.

It starts (or re-uses) a cluster in ``DIR`` with the launcher, creates the
shared domain ``example.test`` with ``alice`` and ``bob`` through one
member's admin CLI (the change reaches every member), prints every port of
every member and commands that work as printed, and then watches the
cluster until Ctrl-C (or SIGTERM), which stops every member.

Watching: a live status line (Controller, Backup, load, open accounts,
sessions).  A member whose process is gone although nobody asked the demo to
stop it is reported as *crashed* (with its exit status when the demo started
it) and started again after ``RESTART_DELAY`` seconds, long enough to watch
the others take over its accounts.  Passwords are kept in
``DIR/demo-accounts.txt`` (mode 0600).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from dynamail.cluster import launcher
from dynamail.durable import atomic_write

DEMO_DOMAIN = "example.test"
DEMO_ACCOUNTS = ("alice", "bob")
ACCOUNTS_FILE = "demo-accounts.txt"
RESTART_DELAY = 5.0  # seconds between noticing a crash and starting the member again
PORT_LABELS = (("imap", "IMAP"), ("imaps", "IMAPS"), ("pop3", "POP3"), ("pop3s", "POP3S"),
               ("smtp", "SMTP"), ("submission", "submission"), ("smtps", "SMTPS"),
               ("lmtp", "LMTP"), ("managesieve", "ManageSieve"), ("cli", "CLI"), ("http", "HTTP"),
               ("https", "HTTPS"))


def program() -> str:
    """How to run ``dynamail`` from the current directory, as the user will
    type it: ``./dev`` says so in DYNAMAIL_PROG; else the command on PATH,
    the path this process was started as, or ``python -m dynamail``."""
    given = os.environ.get("DYNAMAIL_PROG")
    if given:
        return given
    exe = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if exe is not None and exe.name == "dynamail" and exe.exists():
        on_path = shutil.which("dynamail")
        if on_path and Path(on_path).resolve() == exe.resolve():
            return "dynamail"
        return shlex.quote(shown(exe))
    return f"{shlex.quote(sys.executable)} -m dynamail"


def shown(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it."""
    try:
        rel = path.absolute().relative_to(Path.cwd())
    except ValueError:
        return str(path.absolute())
    return str(rel) if str(rel).startswith((".", "/")) or "/" in str(rel) else f"./{rel}"


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
    member = next(m for m in data["members"] if m["role"] == "backend")
    # plain user names (bob) log in to the shared domain on every member
    cmds = [f"CREATEDOMAIN {DEMO_DOMAIN} SHARED", f'UPDATECLUSTERDOMAINDEFAULTS {{DefaultLoginDomain="{DEMO_DOMAIN}";}}']
    for name in DEMO_ACCOUNTS:
        cmds.append(f'CREATEACCOUNT {name}@{DEMO_DOMAIN} {{Password="{passwords[name]}";'
                    f'RealName="{name.capitalize()}";}}')
        cmds.append(f'SETACCOUNTPASSWORD {name}@{DEMO_DOMAIN} PASSWORD "{passwords[name]}"')
    _cli(member, data["admin"], *cmds)


def banner(directory: Path, data: dict[str, Any], passwords: dict[str, str]) -> str:
    prog = program()
    where = shlex.quote(shown(directory))
    lines = ["", f"dynamail local cluster running in {directory}", ""]
    for m in data["members"]:
        p = m["ports"]
        known = dict(PORT_LABELS)
        order = [k for k, _ in PORT_LABELS if k in p] + sorted(k for k in p if k not in known)
        ports = "  ".join(f"{known.get(key, key.upper())} {p[key]}" for key in order)
        lines.append(f"  {m['name']} ({m['role']}) {m['host']}:  {ports}")
    lines += ["", f"Shared domain {DEMO_DOMAIN} (served by every member):"]
    for name in DEMO_ACCOUNTS:
        lines.append(f"  {name + '@' + DEMO_DOMAIN:24s} password {passwords[name]}")
    admin = data["admin"]
    backend = next(m for m in data["members"] if m["role"] == "backend")
    front = next((m for m in data["members"] if m["role"] == "frontend"), backend)
    lines += [
        f"  {admin['user']} (Main Domain of each member) password {admin['password']}",
        "",
        f"Mail clients: any member, e.g. the frontend {front['name']}: IMAP {front['host']}:"
        f"{front['ports']['imap']}, submission {front['host']}:{front['ports']['submission']}",
        f"WebAdmin:     http://{backend['host']}:{backend['ports']['http']}/ "
        f"(https on {backend['ports'].get('https', '-')}), {admin['user']} and its password",
        "",
        "Try (from this directory):",
        f"  {prog} cluster status --dir {where}",
        f"  {prog} admin --dir {where} account list {DEMO_DOMAIN}",
        f"  {prog} cluster kill --dir {where} b1     (the others take over; the demo restarts it)",
        "",
        "Ctrl-C stops the cluster.",
        "",
    ]
    return "\n".join(lines)


@dataclass
class Watch:
    """What the demo knows about its members between two looks."""

    directory: Path
    restart: bool = True
    down_since: dict[str, float] = field(default_factory=dict)

    def exit_status(self, pid: int) -> str:
        """The exit status of a member the demo started (it is its child);
        '' for one started by someone else (``cluster start``)."""
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            # reaped already, by a status look (launcher.alive) between two checks
            kept = launcher.reaped_status(pid)
            if kept is None:
                return ""
            done, status = pid, kept
        if done != pid:
            return ""
        if os.WIFSIGNALED(status):
            return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        return f"exit status {os.WEXITSTATUS(status)}"

    def check(self) -> list[str]:
        """Notice members that died and restart those due; the events to print."""
        events: list[str] = []
        data = launcher.read_cluster(self.directory)
        now = time.monotonic()
        for m in data["members"]:
            name = m["name"]
            how = self.exit_status(m["pid"])  # before alive(), which would reap our child
            if not how and launcher.alive(m["pid"]):
                self.down_since.pop(name, None)
                continue
            if name not in self.down_since:
                self.down_since[name] = now
                then = f"; restarting it in {RESTART_DELAY:.0f} s" if self.restart else ""
                what = "stopped" if how == "exit status 0" else "crashed"
                events.append(f"{name} {what} ({how or 'process gone'}){then}")
            elif self.restart and now - self.down_since[name] >= RESTART_DELAY:
                try:
                    pid = launcher.start(self.directory, name)
                except launcher.LauncherError as exc:
                    events.append(f"{name}: restart failed: {exc}")
                else:
                    events.append(f"{name} restarted (pid {pid})")
                self.down_since.pop(name, None)
        return events


def status_line(directory: Path) -> str:
    st = launcher.status(directory, timeout=1.0)
    parts = []
    for m in st["members"]:
        role = "C" if m["name"] == st.get("controller") else "B" if m["name"] == st.get("backup") else " "
        state = ("up" if m.get("alive") else "not answering") if m["running"] else "crashed"
        parts.append(f"{m['name']}[{role}] {state} load {m.get('load', 0)} "
                     f"acc {m.get('open_accounts', 0)} ses {m.get('sessions', 0)}")
    return " | ".join(parts)


def run_cluster_demo(directory: Path, *, backends: int = 3, frontends: int = 1,
                     port_offset: int | None = None, prefix: str = launcher.DEFAULT_PREFIX,
                     restart: bool = True) -> None:
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    offset = launcher.DEFAULT_OFFSET if port_offset is None else port_offset
    passwords = _passwords(directory)
    stop = _Stop()
    try:
        with stop.signals():
            running = launcher.cluster_file(directory).exists() and any(
                launcher.alive(m["pid"]) for m in launcher.read_cluster(directory)["members"])
            if not running:
                click.echo(f"starting {backends} backends and {frontends} frontend(s) ...")
                launcher.up(directory, backends, frontends, port_offset=offset, prefix=prefix)
            data = launcher.read_cluster(directory)
            _provision(data, passwords)
    except KeyboardInterrupt:
        click.echo("\ninterrupted; stopping the cluster ...")
        _down(directory)
        return
    except (launcher.LauncherError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(banner(directory, data, passwords))
    watch = Watch(directory, restart=restart)
    with stop.signals():
        try:
            while True:
                for event in watch.check():
                    click.echo("\r" + " " * 120 + "\r" + time.strftime("%H:%M:%S ") + event)
                line = status_line(directory)
                click.echo("\r" + line[:200].ljust(120), nl=False)
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
    click.echo("\nstopping the cluster ...")
    _down(directory)


def _down(directory: Path) -> None:
    # a second Ctrl-C while members shut down must not leave any behind
    with _Stop().ignored():
        if launcher.cluster_file(directory).exists():
            launcher.down(directory)
        data = launcher.read_cluster(directory) if launcher.cluster_file(directory).exists() else {}
        for m in data.get("members", []):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(m["pid"], os.WNOHANG)
    click.echo("cluster stopped.")


class _Stop:
    """SIGINT and SIGTERM both end the demo the same way (KeyboardInterrupt)."""

    @contextlib.contextmanager
    def signals(self) -> Any:
        def interrupted(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        old = {s: signal.signal(s, interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def ignored(self) -> Any:
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)
