"""`dynamail` command line entry point."""

from __future__ import annotations

import click

from dynamail import __version__


@click.group()
@click.version_option(__version__, prog_name="dynamail")
def main() -> None:
    """dynamail: a mail server that runs alone or as a Dynamic Cluster."""
