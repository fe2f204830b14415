"""`dynamail demo`: a server you can talk to with a mail client right away.

It runs one standalone server on loopback in a directory of its own, with
the domain ``example.test`` and the accounts ``alice`` and ``bob``, and
prints how to connect.  The demo's passwords are kept in
``<dir>/demo-accounts.txt`` (mode 0600) so a second run prints the same ones.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import signal
from pathlib import Path
from typing import Any

import click

from dynamail.cluster.demo import program, shown

DEMO_DOMAIN = "example.test"
DEMO_ACCOUNTS = ("alice", "bob")
ACCOUNTS_FILE = "demo-accounts.txt"
DEMO_PORT_OFFSET = 10000  # standard ports + 10000: no root needed, no clash with a system MTA


def _demo_passwords(directory: Path) -> dict[str, str]:
    from dynamail.durable import atomic_write

    path = directory / ACCOUNTS_FILE
    known: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, password = line.partition(" ")
            if name and password:
                known[name] = password
    changed = False
    for name in DEMO_ACCOUNTS:
        if name not in known:
            known[name] = secrets.token_urlsafe(9)
            changed = True
    if changed:
        text = "".join(f"{n} {p}\n" for n, p in known.items())
        atomic_write(path, text.encode(), mode=0o600)
    return known


def _ensure_demo_objects(ctx: Any, passwords: dict[str, str]) -> None:
    directory = ctx.directory
    if not directory.domain_exists(DEMO_DOMAIN):
        directory.create_domain(DEMO_DOMAIN)
    # plain user names (bob) log in to the demo domain
    directory.update_server_domain_defaults({"DefaultLoginDomain": DEMO_DOMAIN})
    for name in DEMO_ACCOUNTS:
        ref = directory.ref(DEMO_DOMAIN, name)
        if directory.find_account(ref.address) is None:
            directory.create_account(DEMO_DOMAIN, name, password=passwords[name])
            directory.update_account_settings(ref, {"RealName": name.capitalize()})
        else:
            directory.set_password(ref, passwords[name])


def _print_banner(ctx: Any, directory: Path, passwords: dict[str, str], http_running: bool) -> None:
    from dynamail.server.app import read_password_file

    cfg = ctx.config
    host = cfg.listen
    lines = [
        "",
        f"dynamail demo server running in {directory.resolve()}",
        f"  Main Domain {cfg.main_domain}; demo domain {DEMO_DOMAIN}",
        "",
        "Ports (connect to " + host + "):",
    ]
    labels = [
        ("smtp", "SMTP (incoming mail)"),
        ("submission", "SMTP submission (AUTH)"),
        ("smtps", "SMTP over TLS"),
        ("imap", "IMAP"),
        ("imaps", "IMAP over TLS"),
        ("pop3", "POP3"),
        ("pop3s", "POP3 over TLS"),
        ("cli", "admin CLI"),
    ]
    for name, label in labels:
        port = ctx.listeners.port_of(name)
        if port is not None:
            lines.append(f"  {label:26s} {port}")
    https = None
    if http_running:
        lines.append(f"  {'HTTP admin / JSON API':26s} {cfg.port('http')}")
        if ctx.tls is not None:
            https = cfg.port("https")
            lines.append(f"  {'HTTPS admin / JSON API':26s} {https}")
    lines += ["", "Accounts:"]
    for name in DEMO_ACCOUNTS:
        lines.append(f"  {name + '@' + DEMO_DOMAIN:24s} password {passwords[name]}")
    pm = cfg.postmaster_password or read_password_file(cfg.base) or "(see postmaster.password)"
    lines.append(f"  {'postmaster@' + cfg.main_domain:24s} password {pm}  (Master right)")
    cli = ctx.listeners.port_of("cli")
    if cli is not None:
        lines += ["", f"Admin CLI: nc {host} {cli}, then USER postmaster / PASS {pm} / LISTDOMAINS"]
    if http_running:
        lines.append(f"WebAdmin:  http://{host}:{cfg.port('http')}/ (postmaster and its password)")
        if https is not None:
            lines.append(f"           https://{host}:{https}/ (self-signed certificate)")
        prog = program()
        where = shlex.quote(shown(directory))
        lines += ["", "Try (from this directory):",
                  f"  {prog} admin --dir {where} account list {DEMO_DOMAIN}",
                  f"  {prog} admin --dir {where} domain list"]
    lines += ["", "Stop with Ctrl-C.", ""]
    click.echo("\n".join(lines))


def run_demo(directory: Path, *, port_offset: int | None = None, listen: str = "127.0.0.1") -> None:
    """Run the demo until interrupted (the function ``dynamail demo`` calls)."""
    from dynamail.server import app
    from dynamail.server import config as config_mod

    if port_offset is None:
        port_offset = DEMO_PORT_OFFSET
    from dynamail.filemodes import private_dirs, restrict_umask

    restrict_umask()  # as `dynamail serve`: everything the demo server writes is private
    directory = Path(directory)
    private_dirs(directory)
    cfg = config_mod.load(
        directory,
        overrides={"listen": listen, "port_offset": port_offset, "main_domain": "demo.test"},
    )
    app.setup_logging("WARNING")
    passwords = _demo_passwords(directory)

    async def main() -> None:
        server = app.Server(cfg)
        ctx = await server.start()
        await asyncio.get_running_loop().run_in_executor(None, _ensure_demo_objects, ctx, passwords)
        _print_banner(ctx, directory, passwords, server.http is not None)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_stop)
        loop.add_signal_handler(signal.SIGHUP, server.reload)
        try:
            await server.wait()
        finally:
            await server.close()

    try:
        asyncio.run(main())
    except app.StartupError as exc:
        raise click.ClickException(str(exc)) from None
