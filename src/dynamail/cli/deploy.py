"""``dynamail systemd-unit``: the systemd unit shipped with the package
(``dynamail/deploy/dynamail.service``), with the paths of this install.

The shipped unit names the documented layout (docs/deploying.md,
"Installing on a host"): the virtual environment ``/opt/dynamail``, the
settings file ``/etc/dynamail/server.toml``, the base directory
``/var/lib/dynamail`` and the service user ``dynamail``.  This command puts
in the ``dynamail`` executable it is run from, the settings file given, the
base directory and shared storage that file names, and the user given, so
that ``dynamail systemd-unit > /etc/systemd/system/dynamail.service`` is
right for any install.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import click

DEFAULT_CONFIG = Path("/etc/dynamail/server.toml")
DEFAULT_BASE = Path("/var/lib/dynamail")
DEFAULT_USER = "dynamail"
DEFAULT_EXE = "/opt/dynamail/bin/dynamail"


def shipped_unit() -> str:
    return resources.files("dynamail").joinpath("deploy/dynamail.service").read_text()


def this_executable() -> str:
    """The ``dynamail`` script beside this interpreter (the venv's bin/)."""
    exe = Path(sys.executable).parent / "dynamail"
    return str(exe) if exe.exists() else DEFAULT_EXE


def render(config: Path, user: str, executable: str) -> str:
    from dynamail.server import config as config_mod

    base, shared = DEFAULT_BASE, ""
    if config.exists():
        base = config_mod.base_in_file(config) or base
        cluster = config_mod.read_file(config).get("cluster", {})
        if isinstance(cluster, dict) and isinstance(cluster.get("shared_base"), str):
            shared = cluster["shared_base"]
    paths = " ".join(p for p in (str(base), shared) if p)
    out = []
    for line in shipped_unit().splitlines():
        if line.startswith("User="):
            line = f"User={user}"
        elif line.startswith("Group="):
            line = f"Group={user}"
        elif line.startswith("Environment=DYNAMAIL_CONFIG="):
            line = f"Environment=DYNAMAIL_CONFIG={config}"
        elif line.startswith("ExecStart="):
            line = f"ExecStart={executable} serve"
        elif line.startswith(("RequiresMountsFor=", "ReadWritePaths=")):
            line = line.split("=", 1)[0] + "=" + paths
        out.append(line)
    return "\n".join(out) + "\n"


@click.command("systemd-unit")
@click.option("--config", "config", default=str(DEFAULT_CONFIG), show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The server's settings file.")
@click.option("--user", default=DEFAULT_USER, show_default=True, help="The service user (and group).")
def systemd_unit(config: Path, user: str) -> None:
    """Print the systemd unit for this install (docs/deploying.md)."""
    click.echo(render(config.absolute(), user, this_executable()), nl=False)
