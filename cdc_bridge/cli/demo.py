"""`cdc-bridge demo`: see the bridge work on an embedded PostgreSQL, nothing to set up."""

from __future__ import annotations

import sys

import click

from cdc_bridge.cli.common import cli


@cli.command()
@click.option(
    "--keep-running",
    is_flag=True,
    help="Leave both bridges and the database up afterwards; Ctrl-C stops them.",
)
def demo(keep_running: bool) -> None:
    """Run two databases (erp, shop) and two bridges, play a short story, check convergence.

    Needs only Python: the PostgreSQL server is embedded and temporary. Exits 0 only if both
    databases converged.

    \b
    Example:
      cdc-bridge demo
      cdc-bridge demo --keep-running   # then write SQL yourself and watch it flow
    """
    from cdc_bridge.demo.story import run_demo

    if not run_demo(keep_running=keep_running):
        sys.exit(1)
