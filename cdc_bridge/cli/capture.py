"""DBA commands: render the install SQL."""

from __future__ import annotations

import click

from cdc_bridge.capture.render import render_install, render_uninstall
from cdc_bridge.cli.common import Context, cli, config_option, pass_context


@cli.group()
def sql() -> None:
    """Print SQL for review; never connects to a database.

    \b
    Example:
      cdc-bridge --config erp.yaml sql render > install.sql
    """


@sql.command("render")
@config_option
@click.option("--uninstall", is_flag=True, help="Print the SQL that removes every bridge object.")
@pass_context
def sql_render(ctx: Context, uninstall: bool) -> None:
    """Print the complete install SQL for the config: schema, outbox, functions, triggers, grants.

    \b
    Example:
      cdc-bridge sql render | psql --single-transaction -f - "$ERP_DATABASE_URL"
    """
    config = ctx.config()
    click.echo(render_uninstall(config) if uninstall else render_install(config), nl=False)
