"""`dynamail` command line entry point.

``dynamail serve`` runs one server; ``dynamail demo`` runs the demonstration
set-up that ``./dev demo`` starts.  Other command groups (``cluster``,
``admin``) live in their own modules and are attached here when present.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from dynamail import __version__


@click.group()
@click.version_option(__version__, prog_name="dynamail")
def main() -> None:
    """dynamail: a mail server that runs alone or as a Dynamic Cluster."""


@main.command()
@click.option("--base", "base", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Base directory (settings, domains, accounts); created on first start. "
                   "May instead be the `base` setting of the --config file.")
@click.option("--listen", default=None, metavar="ADDRESS",
              help="Address every listener binds to (default 127.0.0.1).")
@click.option("--port-offset", "port_offset", type=click.IntRange(0, 65535), default=None,
              metavar="N", help="Add N to every standard port (use when not running as root).")
@click.option("--main-domain", "main_domain", default=None, metavar="NAME",
              help="Main Domain name on first start (default: the host name).")
@click.option("--postmaster-password", "postmaster_password", default=None, metavar="P",
              help="postmaster password on first start (default: generated, written to "
                   "BASE/postmaster.password).  Visible to every local user in ps: prefer "
                   "--postmaster-password-file or DYNAMAIL_POSTMASTER_PASSWORD.")
@click.option("--postmaster-password-file", "postmaster_password_file", default=None,
              type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Read the postmaster password (first line) from FILE (keep it mode 0600).")
@click.option("--ClusterBackend", "cluster_backend", is_flag=True,
              help="Run as a backend member of a Dynamic Cluster.")
@click.option("--ClusterFrontend", "cluster_frontend", is_flag=True,
              help="Run as a frontend member of a Dynamic Cluster.")
@click.option("--SharedBase", "shared_base", default=None,
              type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Directory on shared storage holding the shared domains.")
@click.option("--config", "config_file", default=None, envvar="DYNAMAIL_CONFIG",
              type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Settings file (default BASE/Settings/server.toml; or set DYNAMAIL_CONFIG).")
@click.option("--log-level", "log_level", default=None,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--workers", "workers", default=None, type=click.IntRange(0, 64), metavar="N",
              help="Serve with N processes (0: one per core; default: the `workers` setting, 1).")
@click.option("--worker-slot", "worker_slot", default=None, hidden=True)
def serve(
    base: Path | None,
    listen: str | None,
    port_offset: int | None,
    main_domain: str | None,
    postmaster_password: str | None,
    postmaster_password_file: Path | None,
    cluster_backend: bool,
    cluster_frontend: bool,
    shared_base: Path | None,
    config_file: Path | None,
    log_level: str | None,
    workers: int | None,
    worker_slot: str | None,
) -> None:
    """Run one server (standalone, or a cluster member)."""
    from dynamail.server import app
    from dynamail.server import config as config_mod

    if cluster_backend and cluster_frontend:
        raise click.UsageError("--ClusterBackend and --ClusterFrontend exclude each other")
    role = "backend" if cluster_backend else "frontend" if cluster_frontend else None
    postmaster_password = _postmaster_password(postmaster_password, postmaster_password_file)
    try:
        if base is None and config_file is not None:
            base = config_mod.base_in_file(config_file)
        if base is None:
            raise click.UsageError("give --base DIR, or a --config FILE that sets base")
        cfg = config_mod.load(
            base,
            config_file=config_file,
            overrides={
                "listen": listen,
                "port_offset": port_offset,
                "main_domain": main_domain,
                "postmaster_password": postmaster_password,
                "role": role,
                "shared_base": shared_base,
                "log_level": log_level,
                "workers": workers,
            },
        )
        if worker_slot is not None:  # started by the supervisor of `--workers`
            from dynamail.server import workers as workers_mod

            try:
                index, count = workers_mod.slot_of(worker_slot)
            except ValueError:
                raise click.UsageError(f"--worker-slot: expected I/N, not {worker_slot!r}") from None
            cfg = workers_mod.worker_config(cfg, index, count)
        app.check_privileged_ports(cfg)
    except (config_mod.ConfigError, app.StartupError) as exc:
        click.echo(f"dynamail: {exc}", err=True)
        sys.exit(2)
    try:
        app.run(cfg)
    except app.StartupError as exc:
        click.echo(f"dynamail: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


#: The environment variable ``dynamail serve`` reads the postmaster password from.
PASSWORD_ENV = "DYNAMAIL_POSTMASTER_PASSWORD"


def _postmaster_password(given: str | None, file: Path | None) -> str | None:
    """The postmaster password from the command line, a file or the
    environment (in that order; the first two exclude each other).  The
    variable is removed from this process's environment once read, so no
    child process inherits it."""
    env = os.environ.pop(PASSWORD_ENV, None)
    if given is not None and file is not None:
        raise click.UsageError("--postmaster-password and --postmaster-password-file exclude each other")
    if file is not None:
        try:
            st = file.stat()
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.UsageError(f"cannot read the postmaster password file {file}: {exc}") from None
        if st.st_mode & 0o077:
            click.echo(f"dynamail: warning: {file} is readable by other users (mode {st.st_mode & 0o777:04o}); "
                       "chmod 600 it", err=True)
        password = text.split("\n", 1)[0].rstrip("\r")
        if not password:
            raise click.UsageError(f"the postmaster password file {file} is empty")
        return password
    if given is not None:
        return given
    return env or None


@main.command()
@click.argument("directory", required=False, default="demo-server",
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--port-offset", "port_offset", type=click.IntRange(0, 65535), default=None,
              help="Port offset (default 10000).")
@click.option("--listen", default=None,
              help="Run one standalone server on this address (default 127.0.0.1 with "
                   "--standalone) instead of the local cluster.")
@click.option("--standalone", is_flag=True,
              help="One standalone server instead of a local cluster.")
@click.option("--backends", default=3, show_default=True, type=click.IntRange(1, 50))
@click.option("--frontends", default=1, show_default=True, type=click.IntRange(0, 50))
@click.option("--prefix", default="127.0.7", show_default=True,
              help="First three octets of the members' loopback addresses.")
@click.option("--restart/--no-restart", default=True, show_default=True,
              help="Start a crashed member again after a few seconds.")
def demo(directory: Path, port_offset: int | None, listen: str | None, standalone: bool,
         backends: int, frontends: int, prefix: str, restart: bool) -> None:
    """Run a demonstration: a local cluster of three backends (127.0.7.1-3) and a
    frontend (127.0.7.4) or, with --standalone or --listen, one server; with the
    domain example.test (alice, bob)."""
    if not standalone and listen is None:
        from dynamail.cluster.demo import run_cluster_demo

        run_cluster_demo(directory, backends=backends, frontends=frontends, port_offset=port_offset,
                         prefix=prefix, restart=restart)
        return
    from dynamail.cli.demo import run_demo

    run_demo(directory, port_offset=port_offset, listen=listen or "127.0.0.1")


def _attach_optional_groups() -> None:
    """Attach command groups of other packages (``cluster``, ``admin``, ``chaos``) when built."""
    for module_name, attr in (("dynamail.cli.cluster", "cluster"), ("dynamail.cli.admin", "admin"),
                              ("dynamail.cli.chaos", "chaos")):
        try:
            mod = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        cmd = getattr(mod, attr, None)
        if isinstance(cmd, click.Command) and attr not in main.commands:
            main.add_command(cmd, attr)


_attach_optional_groups()


def _attach_deploy() -> None:
    from dynamail.cli.deploy import systemd_unit

    main.add_command(systemd_unit)


_attach_deploy()
