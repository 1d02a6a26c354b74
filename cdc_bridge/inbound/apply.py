"""Apply a peer's batch to the local database: one transaction, origin set to the peer.

A batch carries whole source transactions (changes with the same `txid`, in capture
order). Each is applied all or none: a change the database refuses rejects its whole
transaction, with the database's reason, and the rest of the batch is applied. Steps:
1. plan: each change is checked against the config (table, op, owned fields) and the
   applied idempotency keys. A change that fails here never reaches SQL. Keys stay
   compact: a change whose source transaction is below the sender's watermark (the
   batch's `settled_below`, kept per sender) was settled at the sender before, so it is
   a duplicate without a lookup; only keys above it are kept, and pruned as it rises.
2. conflicts: `both` fields whose current value is not the sender's `old` are settled by
   the table's policy (see conflicts.py); a field the peer loses is dropped from the change.
3. write: deferrable constraints are deferred, and consecutive changes of one table with
   the same shape go in one statement; the whole batch is tried at once inside a
   savepoint, its deferred constraints checked at its end. If the database refuses any
   of it, the batch is written again transaction by transaction, each in a savepoint of
   its own with its constraints checked at its end, so only the transactions at fault
   are rejected (their first refused change named, with the database's reason).
A transaction that touches a key an earlier rejected (or skipped) one touched in this
batch is skipped whole: the sender keeps it, parked, in order.
Column names always come from the config or the catalog, never from the payload.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from cdc_bridge import outbox, retention
from cdc_bridge import sql as queries
from cdc_bridge.capture.function import exact_fields
from cdc_bridge.config import BridgeConfig, ConflictPolicy, TableMode, TableSpec
from cdc_bridge.entity import Entities
from cdc_bridge.entity.inbound import LocalChange, Translator
from cdc_bridge.errors import Rejected
from cdc_bridge.inbound.conflicts import Decision, Winner, decide, find_conflict
from cdc_bridge.peer import codec, kinds
from cdc_bridge.peer.protocol import (
    Batch,
    BatchResponse,
    Change,
    ChangeResult,
    Op,
    ResultStatus,
)

Connection = psycopg.Connection[Any]
KeyId = tuple[str, bytes]  # (table label, canonical key JSON)
# A statement's shape: table, delete or not, columns, columns filled by defaults.
Shape = tuple[str, bool, tuple[str, ...], tuple[str, ...]]

_UPSERT_OPS = frozenset({Op.INSERT, Op.UPDATE})
_ALL_OPS = frozenset(Op)
_WRITTEN = (ResultStatus.APPLIED, ResultStatus.CONFLICT_RESOLVED)
_UNAPPLIED = (ResultStatus.REJECTED, ResultStatus.SKIPPED)


@dataclass
class Planned:
    """One change on its way through the batch, with what will be written."""

    change: Change
    spec: TableSpec | None = None
    row: dict[str, Any] = field(default_factory=dict)
    result: ChangeResult | None = None
    decisions: list[Decision] = field(default_factory=list)
    # The change in this side's terms (its table's key and columns), once translated.
    key: dict[str, Any] = field(init=False)
    fields: dict[str, Any] | None = field(init=False)
    old: dict[str, Any] | None = field(init=False)

    key_id: KeyId = field(init=False)
    shape: Shape = field(init=False, default=("", False, (), ()))
    parts: list[Planned] = field(init=False, default_factory=list)  # of 1:1 side tables

    def __post_init__(self) -> None:
        self.key, self.fields, self.old = self.change.key, self.change.fields, self.change.old
        self.key_id = key_id(self.change.entity, self.change.key)

    def finish(self, status: ResultStatus, reason: str | None = None) -> None:
        self.result = ChangeResult(
            idempotency_key=self.change.idempotency_key, status=status, reason=reason
        )

    def absorb_parts(self) -> None:
        """The change's one result, from its own and its side tables' plans: the first
        refusal, else a resolved conflict, else what the main plan got."""
        for part in self.parts:
            if part.result is None or self.result is None:
                continue
            mine, theirs = self.result.status, part.result.status
            refused = theirs in _UNAPPLIED and mine not in _UNAPPLIED
            resolved = theirs is ResultStatus.CONFLICT_RESOLVED and mine is ResultStatus.APPLIED
            if refused or resolved:
                self.result = part.result

    def applied(self) -> None:
        if not self.decisions:
            self.finish(ResultStatus.APPLIED)
            return
        self.result = ChangeResult(
            idempotency_key=self.change.idempotency_key,
            status=ResultStatus.CONFLICT_RESOLVED,
            resolution={d.conflict.field: d.describe() for d in self.decisions},
        )


def key_id(table: str, key: dict[str, Any]) -> KeyId:
    return (table, codec.dumps(key, sort_keys=True))


def key_origin(idempotency_key: str) -> tuple[str, int] | None:
    """(source, txid) of a bridge key `<source>:<txid>:<outbox id>`; None for other keys."""
    parts = idempotency_key.rsplit(":", 2)
    if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return parts[0], int(parts[1])


def below(
    key_source: str | None, txid: int | None, source: str, watermark: int | None
) -> bool:
    """Whether a key is under its sender's watermark: settled there, so a resend."""
    return (
        watermark is not None and key_source == source and txid is not None and txid < watermark
    )


def _json(value: Any) -> str:
    return codec.dumps_text(value)


# ------------------------------------------------------------------ rules per table


def allowed_ops(spec: TableSpec) -> frozenset[Op]:
    """What the peer may do to this table, seen from this side."""
    if spec.mode is TableMode.PEER:
        return _ALL_OPS
    if spec.mode is TableMode.ADOPT:
        return _UPSERT_OPS  # once adopted the row is ours: the peer never deletes it
    if spec.mode is TableMode.FIELDS and spec.received_fields:
        return _ALL_OPS if spec.key_owned_by_peer else _UPSERT_OPS
    return frozenset()


def _op_refusal(spec: TableSpec, op: Op) -> str:
    if not allowed_ops(spec):
        return (
            f"{spec.label} is owned by this side (sor: {spec.mode.value}); "
            "the peer may not change it"
        )
    return f"{op.value} is not allowed on {spec.label}: this side owns its rows' keys"


class Applier:
    """Applies batches for one config; caches the catalog columns of whole-row tables."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.schema = config.bridge_schema
        self._specs: dict[str, TableSpec] = {}
        for spec in config.table_specs:
            self._specs[spec.label] = spec
            self._specs.setdefault(spec.name.dotted, spec)
        self._columns: dict[str, frozenset[str]] = {}
        self.entities = Entities(config)
        self._translator = Translator(
            self.entities, self.schema, kinds.capabilities(config.peer).names_records
        )
        # Per table, its json and jsonb columns (name -> is jsonb), read once from the catalog.
        self._json_columns: dict[str, dict[str, bool]] = {}
        # Statement text per shape: composing and quoting it again for every run cost a
        # third of a batch of small transactions (a run per table and transaction).
        self._statements: dict[Shape, bytes] = {}
        # Each table's depth under foreign keys between the tables this side writes
        # (parents first), read from the catalog on the first batch; None: a cycle.
        self._ranks: dict[str, int] | None = None
        self._ranks_read = False

    # -------------------------------------------------------------- entry point

    def apply(self, conn: Connection, batch: Batch) -> BatchResponse:
        plans = [Planned(change) for change in batch.changes]
        with conn.transaction():
            conn.execute(queries.query("inbound_begin_apply"), {"origin": self.config.peer.name})
            conn.execute(queries.query("inbound_defer_constraints"))
            # One change of an entity held in a main table and 1:1 side tables is a plan
            # per table; they share the change, its transaction and its result.
            work = self._plan(conn, plans, batch.source)
            txns = transactions_of(work)
            held = settle_transactions(txns, set())
            self._settle_conflicts(conn, work)
            if not self._write_batch(conn, txns):
                self._write_each(conn, txns, held)
            self._record(conn, work)
            for plan in plans:
                plan.absorb_parts()
            if batch.settled_below is not None:
                conn.execute(
                    queries.query("inbound_raise_watermark", schema=self.schema),
                    {"source": batch.source, "settled_below": batch.settled_below},
                )
        results = [p.result for p in plans if p.result is not None]
        return BatchResponse(protocol=batch.protocol, results=results)

    # -------------------------------------------------------------- 1. plan

    def _plan(self, conn: Connection, plans: list[Planned], source: str) -> list[Planned]:
        """Plan each change; returns the plans to write (side tables' next to theirs)."""
        claimed = self._claim_keys(conn, [p.change.idempotency_key for p in plans], source)
        todo: list[Planned] = []
        for plan in plans:
            if plan.change.idempotency_key not in claimed:
                plan.finish(ResultStatus.DUPLICATE)
                continue
            claimed.discard(plan.change.idempotency_key)  # a repeat in this batch is a duplicate
            todo.append(plan)
        local = self._translator.translate(conn, [p.change for p in todo])
        for plan, change in zip(todo, local, strict=True):
            self._check(conn, plan, change)
            for part in change.parts:
                if self._part_untouched(plan.change.op, part):
                    continue
                plan.parts.append(Planned(plan.change))
                self._check(conn, plan.parts[-1], part)
        work: list[Planned] = []
        for plan in plans:
            # A side table's row goes in after its main row, and out before it.
            if plan.change.op is Op.DELETE:
                work += [*plan.parts, plan]
            else:
                work += [plan, *plan.parts]
        return work

    def _part_untouched(self, op: Op, part: LocalChange) -> bool:
        """A side table the peer may not delete from (this side owns its rows) is left to
        the database when the record goes: its foreign key's ON DELETE decides."""
        spec = None if part.emap is None else self._specs[part.emap.spec.label]
        return op is Op.DELETE and spec is not None and Op.DELETE not in allowed_ops(spec)

    def _check(self, conn: Connection, plan: Planned, change: LocalChange) -> None:
        try:
            self._localize(plan, change)
            if plan.result is not None:
                return
            assert plan.spec is not None
            plan.row = self._checked_row(conn, plan.spec, plan)
            plan.shape = shape_of(plan)
        except Rejected as exc:
            plan.finish(ResultStatus.REJECTED, str(exc))

    def _localize(self, plan: Planned, change: LocalChange) -> None:
        """Take the change's translation into this side's table, key and columns."""
        if change.emap is not None:
            plan.spec = self._specs[change.emap.spec.label]
        if change.refused is not None:
            raise Rejected(change.refused)
        if change.absent:  # a delete of a record that never came here: nothing to do
            plan.finish(ResultStatus.APPLIED)
            return
        assert change.emap is not None and change.key is not None
        plan.key, plan.fields, plan.old = change.key, change.fields, change.old
        plan.key_id = key_id(change.emap.spec.label, change.key)

    def _claim_keys(self, conn: Connection, keys: list[str], source: str) -> set[str]:
        """Record the batch's idempotency keys now; those already there are duplicates.

        Inserting first (not just looking) makes a concurrent batch carrying the same
        key wait for this transaction, then see it as a duplicate: never applied twice.
        Keys of changes that end up not applied are removed again before commit. Keys
        below the sender's watermark are duplicates without being looked up.
        """
        row = conn.execute(
            queries.query("inbound_watermark", schema=self.schema), {"source": source}
        ).fetchone()
        parsed = [[key, *(key_origin(key) or (None, None))] for key in keys]
        fresh = [p for p in parsed if not below(p[1], p[2], source, row[0] if row else None)]
        if not fresh:
            return set()
        rows = conn.execute(
            queries.query("inbound_claim_keys", schema=self.schema), {"keys": _json(fresh)}
        )
        return {r[0] for r in rows}

    def _checked_row(self, conn: Connection, spec: TableSpec, plan: Planned) -> dict[str, Any]:
        op, key = plan.change.op, plan.key
        if op not in allowed_ops(spec):
            raise Rejected(_op_refusal(spec, op))
        if set(key) != set(spec.key):
            raise Rejected(f"key {sorted(key)} does not match {spec.label}'s key {list(spec.key)}")
        if op is Op.DELETE:
            return dict(key)
        fields = plan.fields or {}
        writable = self.writable_columns(conn, spec, fields)
        foreign = sorted(set(fields) - writable)
        if foreign:
            raise Rejected(f"fields {foreign} of {spec.label} are not the peer's to change")
        stray_old = sorted(set(plan.old or {}) - set(spec.both_fields))
        if stray_old:
            raise Rejected(f"old values {stray_old} given for fields not owned by both sides")
        for name in spec.key:
            if name in fields and fields[name] != key[name]:
                raise Rejected(f"fields.{name} differs from the key; a key change is delete+insert")
        return {**spec.defaults, **key, **fields}

    def writable_columns(
        self, conn: Connection, spec: TableSpec, wanted: Iterable[str] = ()
    ) -> frozenset[str]:
        """Columns the peer may write: its fields, or every column of a whole-row table.

        A whole-row table's columns are cached; a change naming a column the cache does not
        hold reads the catalog again first, so a column added at this side is accepted at
        once, without restarting `serve`.
        """
        if not spec.receives_whole_rows:
            return frozenset(spec.key + spec.received_fields)
        cached = self._columns.get(spec.label)
        if cached is None or not cached.issuperset(wanted):
            cached = self.read_columns(conn, spec)
        return cached

    def read_columns(self, conn: Connection, spec: TableSpec) -> frozenset[str]:
        """A whole-row table's writable columns, read from the catalog now (and cached)."""
        rows = conn.execute(
            queries.query("inbound_table_columns", relation=spec.name.regclass_literal)
        )
        columns = self._columns[spec.label] = frozenset(r[0] for r in rows)
        self._json_columns.pop(spec.label, None)  # a column may have been added
        return columns

    def json_columns(self, conn: Connection, spec: TableSpec) -> dict[str, bool]:
        """The table's json and jsonb columns (name -> is jsonb), from the catalog (cached)."""
        found = self._json_columns.get(spec.label)
        if found is None:
            rows = conn.execute(
                queries.query("inbound_json_columns", relation=spec.name.regclass_literal)
            )
            found = self._json_columns[spec.label] = {name: kind for name, kind in rows}
        return found

    # -------------------------------------------------------------- 2. conflicts

    def _settle_conflicts(self, conn: Connection, plans: list[Planned]) -> None:
        contested = [p for p in plans if p.result is None and p.old and p.spec]
        if not contested:
            return
        current = self._current_values(conn, contested)
        for plan in plans:
            if plan.result is not None or plan.spec is None or not plan.spec.both_fields:
                continue
            values = current.get(plan.key_id)
            if plan.old and values is not None:
                self._decide_fields(conn, plan, values)
            # Later changes of this key in the batch compare with what this one leaves.
            if plan.change.op is Op.DELETE:
                current.pop(plan.key_id, None)
            elif values is not None:
                values.update({f: plan.row[f] for f in plan.spec.both_fields if f in plan.row})

    def _current_values(
        self, conn: Connection, plans: list[Planned]
    ) -> dict[KeyId, dict[str, Any]]:
        found: dict[KeyId, dict[str, Any]] = {}
        by_table: dict[str, list[Planned]] = {}
        for plan in plans:
            assert plan.spec is not None
            by_table.setdefault(plan.spec.label, []).append(plan)
        for label, members in by_table.items():
            spec = self._specs[label]
            query = queries.query(
                "inbound_current_values",
                table=spec.name.identifier,
                key=_column_list(spec.key),
                key_json=json_object(spec.key),
                values=exact_fields(
                    self.schema, spec, sql.SQL("t.*"), json_object(spec.both_fields)
                ),
            )
            rows = [p.key for p in members]
            for key, values in conn.execute(query, {"rows": _json(rows)}):
                found[key_id(label, key)] = values
        return found

    def _decide_fields(self, conn: Connection, plan: Planned, current: dict[str, Any]) -> None:
        assert plan.spec is not None and plan.old is not None
        for name in plan.spec.both_fields:
            if name not in plan.old or name not in plan.row:
                continue
            conflict = find_conflict(name, current.get(name), plan.old[name], plan.row[name])
            if conflict is None:
                continue
            decision = decide(
                conflict,
                plan.spec.conflicts,
                peer_changed_at=plan.change.committed_at,
                local_changed_at=self._local_changed_at(conn, plan, name),
                system=self.config.system,
                peer=self.config.peer.name,
            )
            plan.decisions.append(decision)
            if decision.winner is Winner.LOCAL:
                del plan.row[name]
                plan.shape = shape_of(plan)

    def _local_changed_at(self, conn: Connection, plan: Planned, name: str) -> datetime | None:
        if plan.spec is None or plan.spec.conflicts is not ConflictPolicy.NEWER_WINS:
            return None
        row = conn.execute(
            queries.query("inbound_latest_local_change", schema=self.schema),
            {
                "table": plan.spec.label,
                "key": _json(plan.key),
                "origin": self.config.system,
                "field": name,
            },
        ).fetchone()
        return None if row is None else row[0]

    # -------------------------------------------------------------- 3. write

    def _write_batch(self, conn: Connection, txns: list[list[Planned]]) -> bool:
        """Write every transaction at once; False (nothing written) if any is refused.

        A batch of inserts and updates of plain tables is written table by table, parents
        first (`write_order`): a few statements instead of one per table and transaction.
        """
        todo = [p for txn in txns for p in txn if p.result is None]
        ordered = write_order(todo, self._table_ranks(conn))
        try:
            # Pipelined: the runs go out without waiting for each answer (a batch of
            # small transactions over linked tables is hundreds of runs).
            # One cursor for every run: a cursor each cost about half of a run's time.
            with conn.transaction(), conn.pipeline(), conn.cursor() as cur:
                for run in statement_runs(ordered):
                    self._execute(cur, run)
                cur.execute(queries.query("inbound_check_constraints"))
        except DATA_ERRORS:
            return False
        for plan in todo:
            plan.applied()
        return True

    def _table_ranks(self, conn: Connection) -> dict[str, int] | None:
        if not self._ranks_read:
            received = [s for s in self.config.table_specs if allowed_ops(s)]
            rows = conn.execute(
                queries.query("relay_foreign_keys"),
                {
                    "labels": outbox.text_array(s.label for s in received),
                    "relations": outbox.text_array(s.name.quoted for s in received),
                },
            ).fetchall()
            self._ranks = table_ranks([(child, parent) for child, parent in rows])
            self._ranks_read = True
        return self._ranks

    def _write_each(self, conn: Connection, txns: list[list[Planned]], held: set[KeyId]) -> None:
        """Write transaction by transaction; reject those the database refuses."""
        for txn in txns:
            if held.intersection(p.key_id for p in txn):
                settle_transactions([txn], held)
                continue
            todo = [p for p in txn if p.result is None]
            try:
                with conn.transaction(), conn.cursor() as cur:
                    for run in statement_runs(todo):
                        self._execute(cur, run)
                    cur.execute(queries.query("inbound_check_constraints"))
                    conn.execute(queries.query("inbound_defer_constraints"))
            except DATA_ERRORS as exc:
                self._find_culprit(conn, todo, exc)
                settle_transactions([txn], held)
                continue
            for plan in todo:
                plan.applied()

    def _find_culprit(self, conn: Connection, todo: list[Planned], error: Exception) -> None:
        """Name the first change of a refused transaction that the database refuses alone.

        Tried one by one in a savepoint that is rolled back. If each change passes alone
        (a deferred constraint failed at the end), the first change carries the reason.
        """
        culprit, reason = todo[0], data_reason(error)
        try:
            with conn.transaction(), conn.cursor() as cur:
                for plan in todo:
                    try:
                        self._execute(cur, [plan])
                    except DATA_ERRORS as exc:
                        culprit, reason = plan, data_reason(exc)
                        break
                raise _RollBack
        except _RollBack:
            pass
        culprit.finish(ResultStatus.REJECTED, reason)

    def _execute(self, cur: psycopg.Cursor[Any], run: list[Planned]) -> None:
        statement = self._statements.get(run[0].shape)
        if statement is None:
            conn = cur.connection
            statement = self._statement(conn, run[0]).as_bytes(conn)
            self._statements[run[0].shape] = statement
        cur.execute(statement, {"rows": _json([p.row for p in run])})

    def _statement(self, conn: Connection, plan: Planned) -> sql.Composed:
        spec = plan.spec
        assert spec is not None
        if plan.change.op is Op.DELETE:
            match = sql.SQL(" AND ").join(
                sql.SQL("t.{c} = k.{c}").format(c=sql.Identifier(c)) for c in spec.key
            )
            return queries.query("inbound_delete", table=spec.name.identifier, match=match)
        columns = _row_columns(spec, plan.row)
        # Configured defaults fill a new row; they never overwrite an existing one.
        updated = [c for c in columns if c not in spec.key and c not in plan.shape[3]]
        action: sql.Composable = sql.SQL("NOTHING")
        if updated:
            action = sql.SQL("UPDATE SET ") + sql.SQL(", ").join(
                sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in updated
            )
        rows = incoming_rows(spec, columns, self.json_columns(conn, spec))
        # An entity mapped to a table may arrive in parts (a side table's fields at the
        # peer), so like a per-field table it is updated where it exists; a change that
        # carries the whole row is written like a twin's.
        partial = spec.mapped and not self._whole_row(conn, spec, plan)
        if updated and (partial or not spec.receives_whole_rows):
            return self._update_then_insert(spec, columns, updated, action, rows)
        return queries.query(
            "inbound_upsert",
            table=spec.name.identifier,
            columns=_column_list(columns),
            rows=rows,
            key=_column_list(spec.key),
            action=action,
        )

    def _whole_row(self, conn: Connection, spec: TableSpec, plan: Planned) -> bool:
        """Whether a mapped table's change carries every column of its table (none left
        to a configured default): INSERT ... ON CONFLICT then checks the very row an update
        would leave, so it writes what update-then-insert would, in one pass."""
        if not spec.receives_whole_rows or plan.shape[3]:
            return False
        return self.writable_columns(conn, spec).issubset(plan.row)

    def _update_then_insert(
        self,
        spec: TableSpec,
        columns: list[str],
        updated: list[str],
        action: sql.Composable,
        rows: sql.Composable,
    ) -> sql.Composed:
        def pairs(template: str, names: Iterable[str]) -> sql.Composable:
            return sql.SQL(" AND ").join(
                sql.SQL(template).format(c=sql.Identifier(c)) for c in names
            )

        return queries.query(
            "inbound_update_then_insert",
            table=spec.name.identifier,
            columns=_column_list(columns),
            rows=rows,
            assignments=sql.SQL(", ").join(
                sql.SQL("{c} = i.{c}").format(c=sql.Identifier(c)) for c in updated
            ),
            match=pairs("t.{c} = i.{c}", spec.key),
            returning=sql.SQL(", ").join(
                sql.SQL("t.{c}").format(c=sql.Identifier(c)) for c in spec.key
            ),
            seen=pairs("u.{c} = i.{c}", spec.key),
            key=_column_list(spec.key),
            action=action,
        )

    # -------------------------------------------------------------- bookkeeping

    def _record(self, conn: Connection, plans: list[Planned]) -> None:
        done = [p for p in plans if p.result is not None and p.result.status in _WRITTEN]
        unapplied = [
            p.change.idempotency_key
            for p in plans
            if p.result is not None and p.result.status in _UNAPPLIED
        ]
        if unapplied:  # a fixed replay of these must apply
            conn.execute(
                queries.query("inbound_release_keys", schema=self.schema),
                {"keys": _json(unapplied)},
            )
        resolved = [p.change.idempotency_key for p in done if p.decisions]
        if resolved:
            conn.execute(
                queries.query("inbound_mark_keys_resolved", schema=self.schema),
                {"keys": _json(resolved)},
            )
        settled = [
            {"table_name": p.spec.label, "key": p.key, "field": f, "value": p.row[f]}
            for p in done
            if p.spec is not None
            for f in p.spec.both_fields
            if f in p.row
        ]
        if settled:
            conn.execute(
                queries.query("inbound_resolve_by_peer", schema=self.schema),
                {"changes": _json(settled)},
            )
        for plan in done:
            for decision in plan.decisions:
                self._record_conflict(conn, plan, decision)

    def _record_conflict(self, conn: Connection, plan: Planned, decision: Decision) -> None:
        assert plan.spec is not None
        conflict = decision.conflict
        winning = conflict.peer_value if decision.winner is Winner.PEER else conflict.local_value
        conn.execute(
            queries.query("inbound_record_conflict", schema=self.schema),
            {
                "table": plan.spec.label,
                "key": _json(plan.key),
                "field": conflict.field,
                "local_value": _json(conflict.local_value),
                "peer_value": _json(conflict.peer_value),
                "policy": decision.policy.value,
                "winner": None if decision.parked else decision.winner.value,
                "status": "open" if decision.parked else "resolved",
                "resolution": None if decision.parked else _json(winning),
            },
        )


class _RollBack(Exception):
    """Leaves a savepoint by rolling it back (a trial that must leave no trace)."""


# What one change's data can make go wrong: the database refusing it (not a lost
# connection, deadlock or timeout: those are OperationalError and fail the batch, which
# the sender retries), or a value that cannot be encoded.
DATA_ERRORS = (
    psycopg.errors.IntegrityError,
    psycopg.errors.DataError,
    psycopg.errors.ProgrammingError,
    psycopg.errors.InternalError,
    psycopg.errors.NotSupportedError,
    TypeError,
    ValueError,
    OverflowError,
    RecursionError,
)


def database_reason(exc: psycopg.errors.Error) -> str:
    """The database's own message (and detail), which names the constraint at fault."""
    diag = exc.diag
    message = diag.message_primary or str(exc).strip().splitlines()[0]
    detail = f" ({diag.message_detail})" if diag.message_detail else ""
    return f"database refused the change: {message}{detail}"


def data_reason(exc: BaseException) -> str:
    if isinstance(exc, psycopg.errors.Error):
        return database_reason(exc)
    return f"the change could not be written: {type(exc).__name__}: {exc}"


# ------------------------------------------------------------------ transactions


SKIPPED_REASON = "an earlier change of this key (or of its transaction's) was rejected"


def transactions_of(plans: list[Planned]) -> list[list[Planned]]:
    """The batch's changes by source transaction, in the batch's order.

    A change without a txid is a transaction of its own.
    """
    by_txid: dict[str | int, list[Planned]] = {}
    txns: list[list[Planned]] = []
    for plan in plans:
        # Plans of one change (a main table's and its side tables') are one transaction.
        txid = plan.change.txid if plan.change.txid is not None else id(plan.change)
        if txid not in by_txid:
            by_txid[txid] = []
            txns.append(by_txid[txid])
        by_txid[txid].append(plan)
    return txns


def settle_transactions(txns: list[list[Planned]], held: set[KeyId]) -> set[KeyId]:
    """Spread each transaction's fate to all of it (pure); returns the held keys.

    A transaction with a rejected change is rejected whole. One that touches a key in
    `held` (an earlier transaction of the batch was rejected or skipped) is skipped
    whole: the sender keeps it in order behind the rejected one. Either way its keys
    are held for the later transactions.
    """
    for txn in txns:
        keys = {p.key_id for p in txn}
        rejected = next(
            (p for p in txn if p.result and p.result.status is ResultStatus.REJECTED), None
        )
        if not held.isdisjoint(keys):
            # Not tried at all: a change refused while planning is skipped too.
            _finish_unapplied(txn, ResultStatus.SKIPPED, SKIPPED_REASON, ResultStatus.REJECTED)
            held |= keys
        elif rejected is not None:
            cause = (rejected.result.reason if rejected.result else None) or ""
            # A side table's plan shares its change: the change is refused for that cause.
            _finish_unapplied(
                [p for p in txn if p.change is rejected.change], ResultStatus.REJECTED, cause
            )
            reason = (
                f"not applied: change {rejected.change.idempotency_key} of its source "
                f"transaction was rejected ({cause})"
            )
            _finish_unapplied(txn, ResultStatus.REJECTED, reason)
            held |= keys
    return held


def _finish_unapplied(
    txn: list[Planned], status: ResultStatus, reason: str, *replaced: ResultStatus
) -> None:
    for plan in txn:
        if plan.result is None or plan.result.status in replaced:
            plan.finish(status, reason)


# ------------------------------------------------------------------ grouping


def table_ranks(links: Iterable[tuple[str, str]]) -> dict[str, int] | None:
    """Each linked table's depth under the foreign keys (child, parent): 0 for a table
    that refers to no other, else one more than its deepest parent. None when the keys
    form a cycle through two or more tables (a table referring to itself is no cycle)."""
    parents: dict[str, set[str]] = {}
    for child, parent in links:
        parents.setdefault(child, set())
        parents.setdefault(parent, set())
        if child != parent:
            parents[child].add(parent)
    ranks: dict[str, int] = {}
    while len(ranks) < len(parents):
        ready = [t for t, ps in parents.items() if t not in ranks and ps <= ranks.keys()]
        if not ready:
            return None
        for table in ready:
            ranks[table] = 1 + max((ranks[p] for p in parents[table]), default=-1)
    return ranks


def write_order(plans: list[Planned], ranks: dict[str, int] | None) -> list[Planned]:
    """The order to write a whole batch in at once (pure).

    Inserts and updates only, of tables without a mapping: tables linked by foreign
    keys by their depth (`ranks`), parents before children, so that one statement writes
    all of a table's consecutive same-shaped changes; the changes of one depth keep
    their order (one table's, and those of tables not linked at all). Changes of
    different tables commute but for foreign keys, and parents first is what those
    check: the end state is the one the batch's order gives. Anything else (a delete, a
    mapped table, foreign keys in a cycle) is written in the batch's order. Only the
    batch's first attempt, as a whole, is written this way: if the database refuses
    any of it, every transaction is written again in capture order, alone.
    """
    if not ranks or any(
        p.change.op is Op.DELETE or p.spec is None or p.spec.mapped or p.parts for p in plans
    ):
        return plans
    return sorted(plans, key=lambda p: ranks.get(p.spec.label, 0) if p.spec else 0)


def shape_of(plan: Planned) -> Shape:
    """What one statement can write together: the table, delete or not, the columns, and
    the columns filled by configured defaults (written only into new rows)."""
    assert plan.spec is not None
    if plan.change.op is Op.DELETE:
        return (plan.spec.label, True, (), ())
    carried = plan.fields or {}
    defaulted = tuple(sorted(c for c in plan.spec.defaults if c not in carried))
    return (plan.spec.label, False, tuple(sorted(plan.row)), defaulted)


def statement_runs(plans: Iterable[Planned]) -> Iterator[list[Planned]]:
    """Runs of consecutive same-shaped changes, each key at most once per run.

    One statement may not touch a row twice (ON CONFLICT refuses it), and a key's
    changes must apply in order, so a repeated key starts a new run.
    """
    group: list[Planned] = []
    keys: set[KeyId] = set()
    for plan in plans:
        if group and (plan.shape != group[0].shape or plan.key_id in keys):
            yield group
            group, keys = [], set()
        group.append(plan)
        keys.add(plan.key_id)
    if group:
        yield group


def incoming_rows(
    spec: TableSpec, columns: list[str], json_columns: dict[str, bool]
) -> sql.Composed:
    """The `%(rows)s` payload as rows of the table: json and jsonb columns whose value is
    a string are cast from that text (docs/protocol.md, "Values")."""
    if not json_columns.keys() & set(columns):
        return queries.query("inbound_typed_rows", table=spec.name.identifier)
    values = []
    for name in columns:
        column = sql.Identifier(name)
        if name not in json_columns:
            values.append(sql.SQL("p.{}").format(column))
            continue
        values.append(
            sql.SQL(
                "CASE WHEN pg_catalog.jsonb_typeof(x.r -> {name}) = 'string' "
                "THEN (x.r ->> {name})::{type} ELSE p.{column} END AS {column}"
            ).format(
                name=sql.Literal(name),
                type=sql.SQL("jsonb" if json_columns[name] else "json"),
                column=column,
            )
        )
    return queries.query(
        "inbound_text_rows", table=spec.name.identifier, values=sql.SQL(", ").join(values)
    )


def _row_columns(spec: TableSpec, row: dict[str, Any]) -> list[str]:
    return list(spec.key) + sorted(c for c in row if c not in spec.key)


def _column_list(columns: Iterable[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


def _json_pairs(columns: Iterable[str]) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{name}, to_jsonb(t.{column})").format(
            name=sql.Literal(c), column=sql.Identifier(c)
        )
        for c in columns
    )


def json_object(columns: Iterable[str]) -> sql.Composable:
    return sql.SQL("jsonb_build_object({})").format(_json_pairs(columns))


# ------------------------------------------------------------------ pruning


def prune_applied_keys(
    conn: Connection, config: BridgeConfig, left_to_grow: set[str] | None = None
) -> int:
    """Forget keys below their sender's watermark or older than the retention; returns how
    many went. Their space is then vacuumed for reuse if this role may (autocommit conn);
    if neither it nor autovacuum may, that is said once per `left_to_grow`."""
    age_s = config.inbound.applied_key_retention_days * 86400
    with conn.transaction():
        cursor = conn.execute(
            queries.query("inbound_prune_keys", schema=config.bridge_schema), {"age_s": age_s}
        )
    if cursor.rowcount:
        vacuumed = retention.vacuum(conn, config.bridge_schema, ["applied_keys"])
        retention.warn_left_to_grow(
            config.bridge_schema, vacuumed, set() if left_to_grow is None else left_to_grow
        )
    return cursor.rowcount
