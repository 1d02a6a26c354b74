"""DBA commands: render the install SQL, check the config, trigger status, migrations."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cdc_bridge.capture.check import check_database, login_warnings
from cdc_bridge.capture.render import render_install, render_uninstall
from cdc_bridge.capture.revision import MIGRATIONS_DIR, generate_revision
from cdc_bridge.capture.status import has_drift, trigger_status
from cdc_bridge.cli.common import Context, cli, config_option, pass_context
from cdc_bridge.db import connection
from cdc_bridge.errors import ProblemsFound


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


@cli.command("check")
@config_option
@pass_context
def check(ctx: Context) -> None:
    """Check the config against the live database; exit 1 if anything is wrong.

    Tables, key columns, fields and `where` columns must exist, and the key columns must
    be unique (a primary key or a unique index on exactly them). It warns (exit code
    unchanged) when the bridge logs in as a superuser, as a synced table's owner, or as a
    role outside the relay role.

    \b
    Example:
      cdc-bridge --config erp.yaml check
    """
    config = ctx.config()
    with connection(config.database.url.get_secret_value()) as conn:
        problems = check_database(config, conn)
        warnings = login_warnings(config, conn)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if problems:
        raise ProblemsFound([f"{len(problems)} problem(s) found:", *problems])
    click.echo(f"ok: {len(config.table_specs)} table(s) match the database")


@cli.group()
def triggers() -> None:
    """Inspect the installed triggers.

    \b
    Example:
      cdc-bridge triggers status --json
    """


@triggers.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_context
def triggers_status(ctx: Context, as_json: bool) -> None:
    """Show each configured table as installed, outdated or missing; exit 1 on drift.

    \b
    Example:
      cdc-bridge --config erp.yaml triggers status
    """
    config = ctx.config()
    with connection(config.database.url.get_secret_value()) as conn:
        statuses = trigger_status(config, conn)
    if as_json:
        click.echo(json.dumps({"tables": [s.as_dict() for s in statuses]}, indent=2))
    else:
        width = max(len(s.label) for s in statuses)
        for status in statuses:
            reasons = "; ".join(status.reasons)
            click.echo(f"{status.label:<{width}}  {status.state.value:<9}  {reasons}".rstrip())
    if has_drift(statuses):
        drifted = sum(1 for s in statuses if s.state.value != "installed")
        raise ProblemsFound(
            [
                f"{drifted} of {len(statuses)} table(s) drifted; fix: install the"
                " current config (cdc-bridge migrations generate, then alembic upgrade head)"
            ]
        )


@cli.group()
def migrations() -> None:
    """Alembic revisions that freeze the rendered SQL.

    \b
    Example:
      cdc-bridge migrations generate -m "sync products"
      alembic upgrade head
    """


@migrations.command("generate")
@config_option
@click.option("-m", "--message", required=True, help="What the revision changes.")
@click.option(
    "--migrations",
    "migrations_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=MIGRATIONS_DIR,
    show_default=True,
    help="The Alembic environment folder.",
)
@click.option(
    "--versions",
    "versions_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where revisions live [default: MIGRATIONS/versions].",
)
@pass_context
def migrations_generate(
    ctx: Context, message: str, migrations_dir: Path, versions_dir: Path | None
) -> None:
    """Write a new revision that freezes the install SQL of the current config.

    The revision holds the SQL itself (upgrade and downgrade), never the config.

    \b
    Example:
      cdc-bridge --config erp.yaml migrations generate -m "sync invoices"
    """
    path = generate_revision(ctx.config(), message, migrations_dir, versions_dir)
    click.echo(f"wrote {path}")
