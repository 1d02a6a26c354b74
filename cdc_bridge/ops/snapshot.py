"""`snapshot`: initial load or full resync, as upserts written into the outbox.

Rows are read in key order, one chunk per transaction, `FOR SHARE`: a row being changed
by an open transaction makes the chunk wait for it and then read its committed version.
That chunk's outbox rows then get ids above the live change's own row, and a change
committed after the chunk has its row above the chunk's. Either way the last outbox row
of a key carries its latest state, and the relay ships per key in id order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlglot import exp

from cdc_bridge import outbox
from cdc_bridge import sql as queries
from cdc_bridge.capture.filters import parse_where, referenced_columns
from cdc_bridge.capture.function import exact_fields
from cdc_bridge.config import TableMode, TableSpec
from cdc_bridge.db import dict_cursor
from cdc_bridge.errors import UserError
from cdc_bridge.ops.common import Target

LOCK_WAIT_S = 15
ProgressCallback = Callable[[int], None]  # called with the rows shipped so far


@dataclass
class SnapshotResult:
    snapshot_id: int
    rows: int
    resumed: bool


def bound_where(text: str, alias: str = "t") -> str:
    """A validated `where` filter with each column qualified by `alias`, as PostgreSQL SQL."""
    tree = parse_where(text).copy()

    def bind(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column):
            return exp.Column(
                this=exp.Identifier(this=node.name, quoted=True),
                table=exp.Identifier(this=alias, quoted=True),
            )
        return node

    return str(tree.transform(bind).sql(dialect="postgres", normalize_functions=False))


def row_column(name: str) -> sql.Composable:
    """A column of the table aliased `t`."""
    return sql.SQL("t.{}").format(sql.Identifier(name))


def json_object(columns: tuple[str, ...]) -> sql.Composable:
    pairs = sql.SQL(", ").join(
        sql.SQL("{}, {}").format(sql.Literal(c), row_column(c)) for c in columns
    )
    return sql.SQL("jsonb_build_object({})").format(pairs)


def fields_object(schema: str, spec: TableSpec) -> sql.Composable:
    """The fields this side ships for a row of `t`, as jsonb (key included), with exact
    values as capture writes them (the table's wire function)."""
    # t.*: a column may be named t. None: the whole row (to_jsonb(t.*)).
    fields = None if spec.ships_whole_rows else json_object(spec.key + spec.shipped_fields)
    return exact_fields(schema, spec, sql.SQL("t.*"), fields)


class ChunkQuery:
    """The chunk statement for one table and filter, first chunk and following ones."""

    def __init__(self, target: Target, spec: TableSpec, where: str | None) -> None:
        self.target, self.spec = target, spec
        conditions: list[sql.Composable] = [sql.SQL("true")]
        for text in (spec.where, where):
            if text:
                conditions.append(
                    sql.SQL("coalesce(({}), false)").format(sql.SQL(bound_where(text)))
                )
        if spec.mode is TableMode.HANDOFF:
            # Handed-off rows belong to the peer now: shipping them would overwrite it.
            conditions.append(
                sql.SQL(
                    "NOT EXISTS (SELECT 1 FROM {}.handoffs h "
                    "WHERE h.table_name = {} AND h.key = {})"
                ).format(
                    sql.Identifier(target.schema), sql.Literal(spec.label), json_object(spec.key)
                )
            )
        self.conditions = conditions

    def _condition(self, resuming: bool) -> sql.Composable:
        parts = list(self.conditions)
        if resuming:
            parts.append(
                queries.query(
                    "ops_after_key",
                    table=self.spec.name.identifier,
                    key_columns=sql.SQL(", ").join(map(row_column, self.spec.key)),
                    last_columns=sql.SQL(", ").join(
                        sql.SQL("last.{}").format(sql.Identifier(k)) for k in self.spec.key
                    ),
                )
            )
        return sql.SQL(" AND ").join(sql.SQL("({})").format(p) for p in parts)

    def chunk(self, resuming: bool) -> sql.Composed:
        aliases = [sql.Identifier(f"_k{i}") for i in range(len(self.spec.key))]
        return queries.query(
            "ops_snapshot_chunk",
            schema=self.target.schema,
            queue=outbox.queue_into(self.target.schema),
            table=self.spec.name.identifier,
            key_aliases=sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(row_column(k), a)
                for k, a in zip(self.spec.key, aliases, strict=True)
            ),
            key_object=json_object(self.spec.key),
            fields_object=fields_object(self.target.schema, self.spec),
            condition=self._condition(resuming),
            key_order=sql.SQL(", ").join(map(row_column, self.spec.key)),
            alias_order=sql.SQL(", ").join(aliases),
            alias_order_desc=sql.SQL(", ").join(sql.SQL("{} DESC").format(a) for a in aliases),
        )

    def count(self) -> sql.Composed:
        return queries.query(
            "ops_count_rows", table=self.spec.name.identifier, condition=self._condition(False)
        )


def check_shippable(spec: TableSpec) -> None:
    if not spec.captures:
        raise UserError(
            f"{spec.label} has no field this side owns (sor: {spec.mode.value}); nothing to "
            "snapshot from here; fix: run the snapshot on the system of record"
        )


def count_rows(target: Target, spec: TableSpec, where: str | None) -> int:
    with target.connect() as conn:
        row = conn.execute(ChunkQuery(target, spec, where).count()).fetchone()
    return int(row[0]) if row else 0


def start_or_resume(
    target: Target, spec: TableSpec, where: str | None, resume: bool
) -> dict[str, Any]:
    """The snapshots row to work on: a new one, or the interrupted one when resuming."""
    params = {"table": spec.label, "where": where}
    with target.connect() as conn, dict_cursor(conn) as cur:
        if resume:
            cur.execute(queries.query("ops_running_snapshot", schema=target.schema), params)
            row = cur.fetchone()
            if row is None:
                raise UserError(
                    f"no interrupted snapshot of {spec.label} to resume; fix: run it without "
                    "--resume"
                )
            if where is not None and where != row["where_expr"]:
                raise UserError(
                    f"the interrupted snapshot used --where {row['where_expr']!r}; fix: resume "
                    "without --where (it is kept), or start a new snapshot"
                )
            return dict(row)
        # A new snapshot supersedes any interrupted one of the same table.
        cur.execute(queries.query("ops_abandon_snapshots", schema=target.schema), params)
        cur.execute(queries.query("ops_start_snapshot", schema=target.schema), params)
        started = cur.fetchone()
        assert started is not None
        return dict(started)


def snapshot(
    target: Target,
    spec: TableSpec,
    *,
    where: str | None = None,
    chunk: int = 1000,
    resume: bool = False,
    on_progress: ProgressCallback | None = None,
) -> SnapshotResult:
    check_shippable(spec)
    if chunk <= 0:
        raise UserError(f"--chunk {chunk} is not positive; fix: give a number such as 1000")
    if where is not None:
        parse_where(where)
    with target.connect(autocommit=True) as conn:
        _lock_table(conn, target, spec)
        _check_where_columns(conn, spec, where)
        state = start_or_resume(target, spec, where, resume)
        query = ChunkQuery(target, spec, state["where_expr"])
        last_key, rows = state["last_key"], int(state["rows"])
        while True:
            with conn.transaction():
                shipped, last_key = _ship_chunk(conn, target, query, state, chunk, last_key)
            rows += shipped
            if on_progress is not None:
                on_progress(rows)
            if shipped < chunk:
                break
        conn.execute(
            queries.query("ops_finish_snapshot", schema=target.schema),
            {"snapshot_id": state["snapshot_id"]},
        )
    return SnapshotResult(snapshot_id=state["snapshot_id"], rows=rows, resumed=resume)


def _check_where_columns(conn: psycopg.Connection[Any], spec: TableSpec, where: str | None) -> None:
    if where is None:
        return
    rows = conn.execute(
        queries.query("ops_table_columns", relation=spec.name.regclass_literal)
    ).fetchall()
    unknown = sorted(set(referenced_columns(parse_where(where))) - {r[0] for r in rows})
    if unknown:
        raise UserError(
            f"--where names {', '.join(unknown)}, not a column of {spec.label}; "
            "fix: use the table's own column names"
        )


def _lock_table(conn: psycopg.Connection[Any], target: Target, spec: TableSpec) -> None:
    """One snapshot per table at a time (held until the connection closes).

    Waits a little: the server side of a killed snapshot may still be finishing.
    """
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{LOCK_WAIT_S}s")))
    try:
        conn.execute(queries.query("ops_lock_snapshot"), {"name": f"{target.schema} {spec.label}"})
    except psycopg.errors.LockNotAvailable:
        raise UserError(
            f"another snapshot of {spec.label} is running; fix: wait for it to finish, or stop "
            "it and then use --resume"
        ) from None
    conn.execute("RESET lock_timeout")


def _ship_chunk(
    conn: Any, target: Target, query: ChunkQuery, state: dict[str, Any], chunk: int, after: Any
) -> tuple[int, Any]:
    """One chunk and its progress row, in the caller's transaction."""
    row = conn.execute(
        query.chunk(resuming=after is not None),
        {
            "chunk": chunk,
            "label": query.spec.label,
            "origin": target.system,
            "after": Jsonb(after) if after is not None else None,
        },
    ).fetchone()
    shipped, last_key = int(row[0]), row[1]
    if shipped:
        conn.execute(
            queries.query("ops_snapshot_progress", schema=target.schema),
            {"snapshot_id": state["snapshot_id"], "last_key": Jsonb(last_key), "rows": shipped},
        )
        return shipped, last_key
    return 0, after
