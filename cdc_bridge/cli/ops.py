"""Operator commands: batches, skip, replay, snapshot, cleanup, reconcile (parse, call, print)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cdc_bridge.cli.common import Context, cli, config_option, pass_context
from cdc_bridge.errors import ProblemsFound, UserError
from cdc_bridge.ops import batches as batch_ops
from cdc_bridge.ops import cleanup as cleanup_ops
from cdc_bridge.ops import reconcile as reconcile_ops
from cdc_bridge.ops import replay as replay_ops
from cdc_bridge.ops import snapshot as snapshot_ops
from cdc_bridge.ops.common import Target, parse_change_id
from cdc_bridge.ops.skip import park_change, skip_change
from cdc_bridge.peer import codec


def _timestamp(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not ISO 8601; fix: write e.g. 2026-11-27T09:30:00+00:00"
        ) from None


def timestamp_option(name: str, help_text: str) -> Callable[[Any], Any]:
    return click.option(name, callback=_timestamp, metavar="TIMESTAMP", help=help_text)


# Output to a file or a pipe is as wide as its longest line: nothing is cut to fit.
UNLIMITED_WIDTH = 100_000


def _console() -> Console:
    """Rich on a terminal; in a file or a pipe no colour, and no cell cut to a width."""
    console = Console(highlight=False)
    if console.is_terminal:
        return console
    return Console(highlight=False, width=UNLIMITED_WIDTH, no_color=True)


def _ids_whole(table: Table, *columns: int) -> Table:
    """Id columns are never cut or wrapped, however narrow the terminal: they are pasted."""
    for index in columns:
        column = table.columns[index]
        column.no_wrap = True
        column.min_width = max((cell_len(str(cell)) for cell in column.cells), default=None)
    return table


def _print_json(data: Any) -> None:
    click.echo(codec.dumps_text(data, indent=True))


def _short(value: Any, width: int = 60) -> str:
    """The value as text, cut to `width` on a terminal only: a file or a pipe gets it all."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else codec.dumps_text(value)
    if len(text) <= width or not _console().is_terminal:
        return text
    return text[: width - 1] + "…"


def _time(value: datetime | None) -> str:
    return value.isoformat(sep=" ", timespec="seconds") if value else ""


# ------------------------------------------------------------------ batches


@cli.group()
def batches() -> None:
    """Inspect batches sent to the peer: changes, attempts, the peer's answers, parked keys.

    \b
    Example:
      cdc-bridge -c erp.yaml batches list --status failed
      cdc-bridge -c erp.yaml batches show erp-5f1c2a
    """


@batches.command("list")
@config_option
@click.option("--status", type=click.Choice(batch_ops.BATCH_STATUSES))
@click.option("--table", metavar="T", help="Only batches holding changes of this table.")
@timestamp_option("--since", "Only batches created at or after (ISO 8601).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def batches_list(
    ctx: Context,
    status: str | None,
    table: str | None,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List batches, newest first.

    \b
    Example:
      cdc-bridge batches list --status failed --table public.customers
    """
    config = ctx.config()
    label = config.table(table).label if table else None
    rows = batch_ops.list_batches(
        Target.of(config), status=status, table=label, since=since, limit=limit
    )
    if as_json:
        _print_json(rows)
        return
    out = Table("batch", "status", "changes", "ids", "attempts", "last HTTP", "failed", "created")
    for r in rows:
        out.add_row(
            r["batch_id"],
            r["status"],
            str(r["change_count"]),
            f"{r['first_id']}-{r['last_id']}",
            str(r["attempts"]),
            str(r["last_http_status"] or ""),
            str(r["failed_changes"]),
            _time(r["created_at"]),
        )
    _console().print(_ids_whole(out, 0) if rows else "no batches match")


@batches.command("show")
@config_option
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def batches_show(ctx: Context, batch_id: str, as_json: bool) -> None:
    """Show one batch: its changes, each attempt, and the keys its failed changes block.

    \b
    Example:
      cdc-bridge batches show msg_2Yx...
    """
    config = ctx.config()
    detail = batch_ops.show_batch(Target.of(config), batch_id, config)
    if as_json:
        _print_json(detail.as_dict())
        return
    console, b = _console(), detail.batch
    console.print(
        f"batch {b['batch_id']}: {b['status']}, {b['change_count']} change(s), "
        f"created {_time(b['created_at'])}, finished {_time(b['finished_at']) or '-'}"
        + (" (replay)" if b["replay"] else "")
    )
    changes = Table("id", "table", "op", "key", "state", "HTTP", "reason", "parked behind")
    for c in detail.changes:
        parked = str(c["parked_behind"]) if c["state"] == "failed" else ""
        changes.add_row(
            str(c["id"]),
            c["table_name"],
            c["op"],
            _short(c["key"], 30),
            c["state"],
            str(c["http_status"] or ""),
            _short(c["reason"]),
            parked,
        )
    console.print(_ids_whole(changes, 0))
    for c in detail.changes:
        if c.get("entity_fields"):
            shown = ", ".join(
                f"{f['field']} <- {f['column']} = {_short(codec.dumps_text(f['value']), 40)}"
                for f in c["entity_fields"]
            )
            click.echo(f"change {c['id']} ships entity {c['entity']}: {shown}")
    for c in detail.changes:
        if c["state"] == "failed":
            click.echo(
                f"change {c['id']} failed (HTTP {c['http_status'] or '-'}: {c['reason']}); "
                f"it blocks key {_short(c['blocks_key'], 200)} of {c['table_name']}, "
                f"{c['parked_behind']} change(s) parked behind it"
            )
    attempts = Table("attempted at", "HTTP", "error", "response body", "ms")
    for a in detail.attempts:
        ms = f"{a['duration_ms']:.0f}" if a["duration_ms"] is not None else ""
        attempts.add_row(
            _time(a["attempted_at"]),
            str(a["http_status"] or ""),
            _short(a["error"]),
            _short(a["response_body"], 80),
            ms,
        )
    console.print(attempts)


# ------------------------------------------------------------------ skip


@cli.command()
@config_option
@click.argument("change_id")
@click.option("--reason", required=True, help="Why this change is given up (kept in the audit).")
@pass_context
def skip(ctx: Context, change_id: str, reason: str) -> None:
    """Give up on a failed or pending change on purpose; later changes of its key flow.

    A pending change is never sent (unless a batch holding it is in flight already).

    \b
    Example:
      cdc-bridge skip 4711 --reason "customer deleted at the shop by hand"
    """
    done = skip_change(Target.of(ctx.config()), parse_change_id(change_id), reason)
    click.echo(
        f"skipped change {done['change_id']} of {done['table_name']} "
        f"{_short(done['key'])} (skip #{done['skip_id']} by {done['db_user']}); its key is "
        "unblocked"
    )


@cli.command()
@config_option
@click.argument("change_id")
@click.option("--reason", required=True, help="Why it is held back (kept in the audit).")
@pass_context
def park(ctx: Context, change_id: str, reason: str) -> None:
    """Hold a pending change back: it becomes failed, and its key and transaction wait.

    Release it later with `replay ID` (send it) or `skip ID` (give it up).

    \b
    Example:
      cdc-bridge park 4712 --reason "price looks wrong, checking with sales"
    """
    done = park_change(Target.of(ctx.config()), parse_change_id(change_id), reason)
    click.echo(
        f"parked change {done['change_id']} of {done['table_name']} "
        f"{_short(done['key'])} (#{done['skip_id']} by {done['db_user']}); its key waits "
        "until it is replayed or skipped"
    )


# ------------------------------------------------------------------ replay


@cli.command()
@config_option
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--failed", "all_failed", is_flag=True, help="Every failed change.")
@click.option("--table", metavar="T", help="Delivered and failed changes of this table.")
@click.option("--key", metavar="K", help="With --table: one key (value, or JSON object).")
@timestamp_option("--since", "With --table: captured at or after (ISO 8601).")
@timestamp_option("--until", "With --table: captured before (ISO 8601).")
@click.option("--dry-run", is_flag=True, help="List what would be sent; change nothing.")
@click.option("--force", is_flag=True, help="Replay even over a newer state at the peer.")
@click.option("--reason", help="Why (kept in the audit).")
@click.option("--wait", is_flag=True, help="Wait until the relay has shipped them.")
@click.option("--wait-timeout", type=click.FloatRange(min=0), metavar="SECONDS")
@click.option("--history", is_flag=True, help="Show past replays instead.")
@pass_context
def replay(ctx: Context, /, ids: tuple[str, ...], **options: Any) -> None:
    """Re-ship changes through the relay, with their original idempotency keys and order.

    IDs are change ids (numbers) or batch ids (every change of the batch). The changes go
    back into the outbox; a running `cdc-bridge run` ships them.

    \b
    Examples:
      cdc-bridge replay --failed --reason "peer constraint fixed" --wait
      cdc-bridge replay --table public.customers --key 42 --dry-run
      cdc-bridge replay --history
    """
    config = ctx.config()
    target = Target.of(config)
    if options["history"]:
        _print_history(replay_ops.history(target))
        return
    selection = _selection(ctx, ids, options)
    result = replay_ops.replay(
        target,
        selection,
        dry_run=options["dry_run"],
        force=options["force"],
        reason=options["reason"],
    )
    _print_replay(result)
    if options["wait"] and result.ids and not result.dry_run:
        _wait(target, result.ids, options["wait_timeout"])


def _selection(ctx: Context, ids: tuple[str, ...], options: dict[str, Any]) -> Any:
    change_ids, batch_ids = replay_ops.split_ids(ids)
    table, key = options["table"], None
    if table is None and (options["key"] or options["since"] or options["until"]):
        raise UserError("--key, --since and --until narrow --table; fix: add --table T")
    if table is not None:
        spec = ctx.config().table(table)
        table = spec.label
        key = replay_ops.parse_key(spec, options["key"]) if options["key"] else None
    return replay_ops.Selection(
        ids=change_ids,
        batch_ids=batch_ids,
        all_failed=options["all_failed"],
        table=table,
        key=key,
        since=options["since"],
        until=options["until"],
    )


def _print_replay(result: replay_ops.ReplayResult) -> None:
    if not result.changes:
        click.echo("nothing to replay")
        return
    out = Table("id", "from", "table", "op", "key", "txid", "captured")
    for c in result.changes:
        out.add_row(
            str(c["id"]),
            c["place"],
            c["table_name"],
            c["op"],
            _short(c["key"], 40),
            c["txid"],
            _time(c["captured_at"]),
        )
    _console().print(_ids_whole(out, 0))
    for newer in result.newer:
        click.echo(
            f"forced: change {newer['id']} is older than delivered change {newer['newer_id']}"
        )
    n = len(result.changes)
    if result.dry_run:
        click.echo(f"dry run: {n} change(s) would be requeued; nothing changed")
    else:
        click.echo(
            f"requeued {n} change(s) in the outbox (replay #{result.replay_id}); "
            f"{replay_ops.SHIPPED_BY}"
        )


def _print_history(rows: list[dict[str, Any]]) -> None:
    out = Table("#", "when", "who", "selection", "changes", "dry run", "force", "reason")
    for r in rows:
        out.add_row(
            str(r["replay_id"]),
            _time(r["replayed_at"]),
            f"{r['os_user']} ({r['db_user']})",
            r["selection"],
            str(r["changes"]),
            "yes" if r["dry_run"] else "",
            "yes" if r["force"] else "",
            r["reason"] or "",
        )
    _console().print(out if rows else "no replays yet")


def _wait(target: Target, ids: list[int], timeout_s: float | None) -> None:
    click.echo(f"waiting until they leave the outbox ({replay_ops.SHIPPED_BY})")
    with _progress_reporter("shipped", len(ids)) as report:
        done = replay_ops.wait_until_shipped(
            target, ids, lambda shipped, _total: report(shipped), timeout_s=timeout_s
        )
    if not done:
        raise ProblemsFound(
            [f"not all {len(ids)} change(s) shipped within {timeout_s}s; is `cdc-bridge run` up?"]
        )
    click.echo(f"all {len(ids)} change(s) acknowledged by the peer")


@contextmanager
def _progress_reporter(
    what: str, total: int | None, every_s: float = 2.0
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on a terminal; otherwise a plain line every few seconds."""
    if _console().is_terminal:
        columns = [
            TextColumn(what),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
        ]
        with Progress(*columns, console=_console()) as progress:
            task = progress.add_task(what, total=total, rate="")

            def update(done: int) -> None:
                speed = progress.tasks[0].speed
                progress.update(task, completed=done, rate=f"{speed:,.0f}/s" if speed else "")

            yield update
        return
    started = time.monotonic()
    last = {"at": 0.0, "done": -1, "shown": -1}

    def show(done: int) -> None:
        rate = done / max(time.monotonic() - started, 1e-9)
        of = f"/{total}" if total is not None else ""
        click.echo(f"{what}: {done}{of} ({rate:,.0f}/s)")
        last["shown"] = done

    def line(done: int) -> None:
        last["done"] = done
        if time.monotonic() - last["at"] >= every_s:
            last["at"] = time.monotonic()
            show(done)

    yield line
    if last["done"] != last["shown"]:
        show(int(last["done"]))


# ------------------------------------------------------------------ snapshot


@cli.command()
@config_option
@click.argument("table")
@click.option("--where", "where", metavar="EXPR", help="Only rows matching (validated SQL).")
@click.option("--chunk", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the interrupted snapshot of TABLE.")
@pass_context
def snapshot(ctx: Context, table: str, where: str | None, chunk: int, resume: bool) -> None:
    """Ship every row's fields this side owns as upserts (initial load or full resync).

    The upserts go into the outbox in key order; a running `cdc-bridge run` ships them.

    \b
    Examples:
      cdc-bridge snapshot public.customers
      cdc-bridge snapshot public.accounts --where "credit_limit > 0" --chunk 5000
      cdc-bridge snapshot public.customers --resume
    """
    config = ctx.config()
    target, spec = Target.of(config), config.table(table)
    snapshot_ops.check_shippable(spec)
    total = None
    if _console().is_terminal and not resume:
        total = snapshot_ops.count_rows(target, spec, where)
    with _progress_reporter("rows", total) as report:
        result = snapshot_ops.snapshot(
            target, spec, where=where, chunk=chunk, resume=resume, on_progress=report
        )
    click.echo(
        f"snapshot #{result.snapshot_id} of {spec.label}: {result.rows} row(s) queued in the "
        f"outbox{' (resumed)' if resume else ''}; a running `cdc-bridge run` ships them"
    )


# ------------------------------------------------------------------ cleanup


@cli.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
@pass_context
def cleanup(ctx: Context, dry_run: bool) -> None:
    """Prune delivered changes, audits and finished snapshots past relay.delivered_retention_days.

    \b
    Example:
      cdc-bridge cleanup --dry-run
    """
    counts = cleanup_ops.cleanup(ctx.config(), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for table, count in counts.items():
        click.echo(f"{table}: {verb} {count} row(s)")


# ------------------------------------------------------------------ reconcile


@cli.command()
@config_option
@click.argument("table")
@click.option("--fix", is_flag=True, help="Queue upserts (and owned deletes) for what differs.")
@click.option(
    "--page",
    type=click.IntRange(1, reconcile_ops.MAX_PAGE),
    default=reconcile_ops.DEFAULT_PAGE,
    show_default=True,
    help="Rows per read from the peer.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def reconcile(ctx: Context, table: str, fix: bool, page: int, as_json: bool) -> None:
    """Compare, key by key, the fields this side owns with the peer's copy.

    Exit code 0 when in sync, 1 when not (also after --fix: the fixes are only queued;
    a running `cdc-bridge run` ships them, then run reconcile again).

    \b
    Examples:
      cdc-bridge reconcile public.customers
      cdc-bridge reconcile public.customers --fix
    """
    report = reconcile_ops.reconcile(ctx.config(), table, fix=fix, page=page)
    if as_json:
        _print_json(report.as_json())
    else:
        _print_reconcile(report, fix)
    if not report.in_sync:
        raise click.exceptions.Exit(1)


def _print_reconcile(report: reconcile_ops.ReconcileReport, fix: bool) -> None:
    for key in report.missing_keys:
        click.echo(f"missing at the peer: {_short(key)}")
    for key in report.extra_keys:
        click.echo(f"only at the peer:    {_short(key)}")
    for difference in report.differences:
        click.echo(f"different:           {_short(difference.key)}")
        for name, (ours, theirs) in difference.fields.items():
            click.echo(f"  {name}: here {_short(ours, 40)}, peer {_short(theirs, 40)}")
    shown = len(report.missing_keys) + len(report.extra_keys) + len(report.differences)
    total = report.missing + report.extra + report.different
    if shown < total:
        click.echo(f"... {total - shown} more not shown (use --json for the first of each kind)")
    click.echo(
        f"{report.table}: {report.compared} row(s) compared; {report.missing} missing at the "
        f"peer, {report.extra} only at the peer, {report.different} different"
    )
    if report.pending and not report.in_sync:
        click.echo(
            f"note: {report.pending} change(s) of {report.table} are still in the outbox; "
            "some differences may be on their way (a running relay ships them)"
        )
    if report.extra_unchecked:
        click.echo(
            "note: the peer was read one row per key; rows only the peer has are not found"
        )
    if fix:
        click.echo(
            f"queued {report.fixes_queued} fixes in the outbox; a running `cdc-bridge run` "
            "ships them"
        )
        if report.missing_not_ours:
            click.echo(
                f"{report.missing_not_ours} row(s) missing at the peer left alone: the peer owns "
                "the key and creates the rows; create them there, or delete them here"
            )
        if report.extra_not_ours:
            click.echo(
                f"{report.extra_not_ours} row(s) only at the peer left alone: this side does not "
                "own the table's rows (sor is not local); remove them at the peer if unwanted"
            )
    click.echo("in sync" if report.in_sync else "not in sync")
