"""Receiving side: `serve` and the `conflicts` commands."""

from __future__ import annotations

from typing import Any

import click

from cdc_bridge.cli.common import Context, cli, config_option, pass_context
from cdc_bridge.errors import UserError
from cdc_bridge.peer import codec


@cli.command()
@config_option
@click.option(
    "--listen", metavar="HOST:PORT", help="Address to listen on [default: inbound.listen]."
)
@pass_context
def serve(ctx: Context, listen: str | None) -> None:
    """Receive the peer's signed batches and apply them to the local database.

    \b
    Example:
      cdc-bridge --config shop.yaml serve --listen 127.0.0.1:8082
    """
    from cdc_bridge.inbound.app import serve as run_server
    from cdc_bridge.logs import configure_logging

    if listen is not None and not _is_host_port(listen):
        raise click.BadParameter(
            f"{listen!r} is not HOST:PORT; fix: write it like 127.0.0.1:8082",
            param_hint="--listen",
        )
    config = ctx.daemon_config()
    configure_logging(config.logging, "uvicorn")
    run_server(config, listen)


@cli.command()
@config_option
@click.option("--once", is_flag=True, help="Read each poll once, then exit (for cron).")
@click.option(
    "--full",
    is_flag=True,
    help="First read each whole list, and delete the rows it no longer has.",
)
@click.argument("names", nargs=-1, metavar="[NAME]...")
@pass_context
def poll(ctx: Context, once: bool, full: bool, names: tuple[str, ...]) -> None:
    """Read the peer application's records modified since the last read (inbound.polls).

    Each poll reads its list endpoint every `interval_s`, applies what changed, and keeps
    its cursor in the bridge schema; restarted, it goes on from there. NAMEs limit it to
    those polls. A modified-since read cannot see deletions: `--full` (and every
    `full_interval_s`) reads the whole list, applies it, and deletes the rows it lacks.

    \b
    Example:
      cdc-bridge --config erp.yaml poll
      cdc-bridge --config erp.yaml poll --once customers
      cdc-bridge --config erp.yaml poll --once --full customers
    """
    import os

    from cdc_bridge.inbound.poll import run
    from cdc_bridge.logs import configure_logging

    config = ctx.config()
    known = {p.name for p in config.inbound.polls}
    unknown = [n for n in names if n not in known]
    if not known:
        raise UserError(
            "inbound.polls is empty; fix: configure a poll (docs/config.md, inbound.polls)"
        )
    if unknown:
        raise UserError(
            f"no poll named {', '.join(unknown)} in inbound.polls; "
            f"fix: use one of {', '.join(sorted(known))}"
        )
    configure_logging(config.logging)
    run(config, os.environ, names, once, full)


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


@cli.group()
def conflicts() -> None:
    """Concurrent edits of fields owned by both sides: list, show, resolve.

    \b
    Example:
      cdc-bridge conflicts list --open
      cdc-bridge conflicts resolve 7 --take peer
    """


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['id']:>6}  {row['status']:<8}  {row['table_name']}  "
        f"{codec.dumps(row['key']).decode()}  {row['field']}: "
        f"local={codec.dumps(row['local_value']).decode()} "
        f"peer={codec.dumps(row['peer_value']).decode()}  ({row['policy']})"
    )


@conflicts.command("list")
@config_option
@click.option("--open", "only_open", is_flag=True, help="Only conflicts waiting for a person.")
@pass_context
def conflicts_list(ctx: Context, only_open: bool) -> None:
    """List recorded conflicts, oldest first.

    \b
    Example:
      cdc-bridge -c erp.yaml conflicts list --open
    """
    from cdc_bridge.inbound.manual import list_conflicts

    rows = list_conflicts(ctx.config(), "open" if only_open else None)
    if not rows:
        click.echo("no conflicts")
    for row in rows:
        click.echo(_line(row))


@conflicts.command("show")
@config_option
@click.argument("conflict_id", type=int)
@pass_context
def conflicts_show(ctx: Context, conflict_id: int) -> None:
    """Show one conflict with both values and how it was settled.

    \b
    Example:
      cdc-bridge -c erp.yaml conflicts show 7
    """
    from cdc_bridge.inbound.manual import get_conflict

    row = get_conflict(ctx.config(), conflict_id)
    for name, value in row.items():
        shown = value.isoformat() if hasattr(value, "isoformat") else value
        click.echo(f"{name:>12}: {codec.dumps(shown).decode() if shown is not None else '-'}")


@conflicts.command("resolve")
@config_option
@click.argument("conflict_id", type=int)
@click.option("--take", type=click.Choice(["local", "peer"]), help="Keep one side's value.")
@click.option("--value", "value_text", metavar="V", help="Set this value (JSON, or plain text).")
@pass_context
def conflicts_resolve(
    ctx: Context, conflict_id: int, take: str | None, value_text: str | None
) -> None:
    """Settle an open conflict; the chosen value syncs to the peer.

    \b
    Example:
      cdc-bridge conflicts resolve 7 --take local
      cdc-bridge conflicts resolve 7 --value '"Acme GmbH"'
    """
    from cdc_bridge.inbound.manual import parse_value, resolve_conflict

    if (take is None) == (value_text is None):
        raise UserError("give exactly one of --take local|peer or --value V")
    if take is not None:
        row = resolve_conflict(ctx.config(), conflict_id, "local" if take == "local" else "peer")
    else:
        assert value_text is not None
        row = resolve_conflict(ctx.config(), conflict_id, "value", parse_value(value_text))
    click.echo(
        f"resolved conflict {conflict_id}: {row['field']} = "
        f"{codec.dumps(row['resolution']).decode()} (queued for the peer)"
    )
