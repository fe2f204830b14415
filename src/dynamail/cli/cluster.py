"""`dynamail cluster ...`: run and inspect a local Dynamic Cluster (SPEC section 6)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dynamail.cluster import launcher

DIR_OPTION = click.option("--dir", "directory", required=True,
                          type=click.Path(file_okay=False, path_type=Path),
                          help="The cluster's directory (cluster.json, shared storage, members).")


def _fail(exc: Exception) -> None:
    click.echo(f"dynamail cluster: {exc}", err=True)
    sys.exit(1)


@click.group()
def cluster() -> None:
    """A local Dynamic Cluster: every member on its own loopback address."""


@cluster.command()
@DIR_OPTION
@click.option("--backends", default=3, show_default=True, type=click.IntRange(1, 200))
@click.option("--frontends", default=0, show_default=True, type=click.IntRange(0, 200))
@click.option("--port-offset", "port_offset", default=launcher.DEFAULT_OFFSET, show_default=True,
              type=click.IntRange(0, 55000), help="Added to every standard port.")
@click.option("--prefix", default=launcher.DEFAULT_PREFIX, show_default=True,
              help="First three octets of the members' loopback addresses.")
@click.option("--first-host", "first_host", default=1, show_default=True, type=click.IntRange(1, 254),
              help="Last octet of the first member's address.")
@click.option("--lease", default=1.5, show_default=True, type=float,
              help="Controller and account lease T in seconds.")
@click.option("--margin", default=0.3, show_default=True, type=float)
@click.option("--heartbeat", default=0.25, show_default=True, type=float)
def up(directory: Path, backends: int, frontends: int, port_offset: int, prefix: str,
       first_host: int, lease: float, margin: float, heartbeat: float) -> None:
    """Start the cluster in the background; return once it serves."""
    try:
        data = launcher.up(directory, backends, frontends, port_offset=port_offset, prefix=prefix,
                           first_host=first_host, lease=lease, margin=margin, heartbeat=heartbeat)
    except launcher.LauncherError as exc:
        _fail(exc)
        return
    st = launcher.status(directory)
    for m in data["members"]:
        role = m["role"]
        if m["name"] == st.get("controller"):
            role += ", Controller"
        elif m["name"] == st.get("backup"):
            role += ", Backup"
        click.echo(f"{m['name']:4} {m['host']:12} pid {m['pid']:<8} {role}   "
                   f"IMAP {m['ports']['imap']}  SMTP {m['ports']['smtp']}  CLI {m['ports']['cli']}")
    click.echo(f"admin: {data['admin']['user']} / {data['admin']['password']}")


@cluster.command()
@DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(directory: Path, as_json: bool) -> None:
    """Members, Controller, Backup, ready state, load, open accounts."""
    try:
        st = launcher.status(directory)
    except launcher.LauncherError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"Controller: {st.get('controller') or '-'}   Backup: {st.get('backup') or '-'}"
               f"   epoch {st.get('controller_epoch', 0)}")
    click.echo(f"{'member':8}{'role':10}{'running':9}{'alive':7}{'ready':7}{'load':>6}"
               f"{'accounts':>10}{'sessions':>10}")
    for m in st["members"]:
        click.echo(f"{m['name']:8}{m['role']:10}{'yes' if m['running'] else 'no':9}"
                   f"{'yes' if m.get('alive') else 'no':7}{'yes' if m.get('ready') else 'no':7}"
                   f"{m.get('load', 0):>6}{m.get('open_accounts', 0):>10}{m.get('sessions', 0):>10}")
    if st.get("error"):
        click.echo(f"({st['error']})")


@cluster.command()
@DIR_OPTION
@click.argument("account")
def locate(directory: Path, account: str) -> None:
    """Print the member that has ACCOUNT (name@domain) open; nothing when none has."""
    try:
        owner = launcher.locate(directory, account)
    except launcher.LauncherError as exc:
        _fail(exc)
        return
    if owner:
        click.echo(owner)


@cluster.command()
@DIR_OPTION
def down(directory: Path) -> None:
    """Stop every member (SIGTERM, then SIGKILL after 10 s)."""
    try:
        launcher.down(directory)
    except launcher.LauncherError as exc:
        _fail(exc)


@cluster.command()
@DIR_OPTION
@click.argument("member")
@click.option("--signal", "sig", default="KILL", show_default=True,
              type=click.Choice(sorted(launcher.SIGNALS), case_sensitive=False))
def kill(directory: Path, member: str, sig: str) -> None:
    """Send MEMBER a signal (KILL, STOP, CONT, TERM)."""
    try:
        launcher.kill(directory, member, sig)
    except launcher.LauncherError as exc:
        _fail(exc)


@cluster.command()
@DIR_OPTION
@click.argument("member")
def start(directory: Path, member: str) -> None:
    """Start MEMBER again (after kill or down)."""
    try:
        pid = launcher.start(directory, member)
    except launcher.LauncherError as exc:
        _fail(exc)
        return
    click.echo(f"{member} started (pid {pid})")


@cluster.command()
@DIR_OPTION
@click.argument("member")
def ready(directory: Path, member: str) -> None:
    """Make MEMBER Ready: the Controller places accounts on it again."""
    try:
        launcher.set_ready(directory, member, True)
    except launcher.LauncherError as exc:
        _fail(exc)


@cluster.command()
@DIR_OPTION
@click.option("--drain", is_flag=True,
              help="also release its open accounts now: idle ones at once, busy ones as "
                   "their sessions end or after --grace")
@click.option("--grace", type=float, default=60.0, show_default=True,
              help="seconds before a drain ends the remaining sessions (clients are told "
                   "to reconnect and reach the account's new owner)")
@click.argument("member")
def nonready(directory: Path, member: str, drain: bool, grace: float) -> None:
    """Make MEMBER Non-Ready: no new sessions or account opens go to it."""
    try:
        launcher.set_ready(directory, member, False, drain=grace if drain else None)
    except launcher.LauncherError as exc:
        _fail(exc)
