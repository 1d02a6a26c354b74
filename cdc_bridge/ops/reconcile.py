"""`reconcile`: compare, key by key, the fields this side owns with the peer's copy.

The peer is read in key-ordered pages; this side is read window by window over the same
key range (the rows after the previous page's last key, up to this page's last key), so
memory holds one page and the local rows are streamed. Within a window rows are matched
by key. `--fix` queues upserts (and, where this side owns the rows, deletes) into the
outbox, window by window: the running relay ships them like any other change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from cdc_bridge import outbox
from cdc_bridge import sql as queries
from cdc_bridge.config import BridgeConfig, TableMode, TableSpec
from cdc_bridge.entity import EntityMap
from cdc_bridge.entity.outbound import Outbound
from cdc_bridge.errors import UserError
from cdc_bridge.ops.common import Target
from cdc_bridge.ops.snapshot import (
    bound_where,
    check_shippable,
    fields_object,
    json_object,
    row_column,
)
from cdc_bridge.peer import codec, kinds
from cdc_bridge.peer.endpoint import KeyedReader, PagedReader

DEFAULT_PAGE = 1000
MAX_PAGE = 10_000  # the read endpoint's limit (protocol.ReadRequest)
DEFAULT_SAMPLE = 100  # differences kept for the report, per kind; the counts are exact


# ------------------------------------------------------------------ comparing values


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _as_decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _number_token(value: Any) -> dict[str, str]:
    """A number by value (1.50 and 1.5 alike), wrapped so that 7 and "7" stay apart."""
    number = _as_decimal(value)
    if number is None or not number.is_finite():
        return {"number": str(value)}
    # Every digit kept: the default context (28 digits) would round 10**30 + 1 to 10**30.
    exact = Context(prec=max(1, len(number.as_tuple().digits)))
    return {"number": str(number.normalize(exact))}


def _by_value(value: Any) -> Any:
    """`value` with every number replaced by its `_number_token` (iterative: any depth)."""
    if _is_number(value):
        return _number_token(value)
    if not isinstance(value, dict | list):
        return value
    root: Any = {} if isinstance(value, dict) else []
    todo: list[tuple[Any, Any]] = [(value, root)]
    while todo:
        source, target = todo.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for name, item in items:
            copied = item
            if _is_number(item):
                copied = _number_token(item)
            elif isinstance(item, dict | list):
                copied = {} if isinstance(item, dict) else []
                todo.append((item, copied))
            if isinstance(target, dict):
                target[name] = copied
            else:
                target.append(copied)
    return root


def json_equal(a: Any, b: Any, *, exact: bool = True) -> bool:
    """JSON equality at any depth, where true is not 1.

    Exact (the bridge peer): numbers must be written alike, as `row::text` would show
    them (1.50 is not 1.5); both sides' values come from PostgreSQL's `to_jsonb`, so the
    same value has the same text. Not exact (an application's REST API, which may
    reformat numbers): numbers compare by value.
    """
    if not exact:
        a, b = _by_value(a), _by_value(b)
    return codec.dumps(a, sort_keys=True) == codec.dumps(b, sort_keys=True)


def key_token(key: dict[str, Any], columns: tuple[str, ...]) -> str:
    """The same text for the same key on both sides, whatever the number formatting."""
    return codec.dumps_text(_by_value([key.get(c) for c in columns]))


def differing_fields(
    ours: dict[str, Any], theirs: dict[str, Any], *, exact: bool = True
) -> dict[str, tuple[Any, Any]]:
    """Fields both copies hold whose values differ: name -> (ours, theirs).

    A column the peer does not have is not compared: the peer's table defines what it keeps.
    """
    return {
        name: (value, theirs[name])
        for name, value in ours.items()
        if name in theirs and not json_equal(value, theirs[name], exact=exact)
    }


# ------------------------------------------------------------------ the report


@dataclass
class Difference:
    key: dict[str, Any]
    fields: dict[str, tuple[Any, Any]]  # name -> (this side, the peer)


@dataclass
class ReconcileReport:
    table: str
    compared: int = 0
    missing: int = 0  # rows this side has and the peer lacks
    extra: int = 0  # rows only the peer has
    different: int = 0
    missing_keys: list[dict[str, Any]] = field(default_factory=list)
    extra_keys: list[dict[str, Any]] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    extra_unchecked: bool = False  # the peer was read by key: its own rows stay unseen
    fixes_queued: int = 0
    extra_not_ours: int = 0  # extra rows left alone: this side does not own the table's rows
    missing_not_ours: int = 0  # missing rows left alone: the peer owns the key (creates rows)
    pending: int = 0  # changes of the table still in the outbox: differences may be in flight
    sample: int = DEFAULT_SAMPLE

    @property
    def in_sync(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def add_missing(self, key: dict[str, Any]) -> None:
        self.missing += 1
        if len(self.missing_keys) < self.sample:
            self.missing_keys.append(key)

    def add_extra(self, key: dict[str, Any]) -> None:
        self.extra += 1
        if len(self.extra_keys) < self.sample:
            self.extra_keys.append(key)

    def add_different(self, key: dict[str, Any], fields: dict[str, tuple[Any, Any]]) -> None:
        self.different += 1
        if len(self.differences) < self.sample:
            self.differences.append(Difference(key, fields))

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "in_sync": self.in_sync,
            "compared": self.compared,
            "missing": self.missing,
            "extra": self.extra,
            "different": self.different,
            "missing_keys": self.missing_keys,
            "extra_keys": self.extra_keys,
            "differences": [{"key": d.key, "fields": _pairs(d.fields)} for d in self.differences],
            "extra_unchecked": self.extra_unchecked,
            "fixes_queued": self.fixes_queued,
            "extra_not_ours": self.extra_not_ours,
            "missing_not_ours": self.missing_not_ours,
            "pending": self.pending,
        }


def _pairs(fields: dict[str, tuple[Any, Any]]) -> dict[str, dict[str, Any]]:
    return {name: {"local": ours, "peer": theirs} for name, (ours, theirs) in fields.items()}


@dataclass
class Window:
    """What one key range needs fixed."""

    upserts: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------ local side

Key = dict[str, Any]
LocalRow = tuple[Key, dict[str, Any], bool]  # key, owned fields, in scope


def _in_scope(target: Target, spec: TableSpec) -> sql.Composable:
    conditions: list[sql.Composable] = [sql.SQL("true")]
    if spec.where:
        conditions.append(sql.SQL("coalesce(({}), false)").format(sql.SQL(bound_where(spec.where))))
    if spec.mode is TableMode.HANDOFF:
        conditions.append(
            sql.SQL(
                "NOT EXISTS (SELECT 1 FROM {}.handoffs h WHERE h.table_name = {} AND h.key = {})"
            ).format(sql.Identifier(target.schema), sql.Literal(spec.label), json_object(spec.key))
        )
    return sql.SQL(" AND ").join(sql.SQL("({})").format(c) for c in conditions)


def _parts(target: Target, spec: TableSpec) -> dict[str, Any]:
    return {
        "schema": target.schema,
        "queue": outbox.queue_into(target.schema),
        "table": spec.name.identifier,
        "key_object": json_object(spec.key),
        "fields_object": fields_object(target.schema, spec),
        "key_columns": sql.SQL(", ").join(map(row_column, spec.key)),
        "bound_columns": sql.SQL(", ").join(
            sql.SQL("b.{}").format(sql.Identifier(k)) for k in spec.key
        ),
    }


class LocalSide:
    """This side's rows, read by key range, and the fixes queued into its outbox."""

    def __init__(self, target: Target, spec: TableSpec) -> None:
        self.target, self.spec = target, spec
        self._parts = _parts(target, spec)
        self._window = queries.query(
            "reconcile_local_window", in_scope=_in_scope(target, spec), **self._parts
        )

    def rows(
        self, conn: psycopg.Connection[Any], after: Key | None, upto: Key | None
    ) -> Iterator[LocalRow]:
        """(key, fields, in scope) of each row in (after, upto], streamed in key order."""
        params = {"after": _jsonb(after), "upto": _jsonb(upto)}
        with conn.transaction(), conn.cursor(name="cdc_bridge_reconcile") as cur:
            cur.itersize = DEFAULT_PAGE
            cur.execute(self._window, params)
            yield from cur

    def queue(self, conn: psycopg.Connection[Any], window: Window) -> int:
        params = {"label": self.spec.label, "origin": self.target.system}
        queued = 0
        with conn.transaction():
            for name, keys in (
                ("reconcile_queue_upserts", window.upserts),
                ("reconcile_queue_deletes", window.deletes),
            ):
                if keys:
                    row = conn.execute(
                        queries.query(name, **self._parts),
                        {**params, "keys": Jsonb(keys, dumps=_dumps)},
                    ).fetchone()
                    queued += int(row[0]) if row else 0
        return queued


def _jsonb(value: dict[str, Any] | None) -> Jsonb | None:
    return None if value is None else Jsonb(value, dumps=_dumps)


def _dumps(value: Any) -> str:
    return codec.dumps_text(value)  # exact numbers (read through codec.loads), any depth


# ------------------------------------------------------------------ the merge


ProgressCallback = Callable[[int], None]


class Reconciler:
    def __init__(
        self, target: Target, spec: TableSpec, fix: bool, sample: int, *, exact: bool = True
    ) -> None:
        self.local = LocalSide(target, spec)
        self.exact = exact  # numbers compared as written (bridge) or by value (REST)
        self.spec, self.fix = spec, fix
        self.report = ReconcileReport(table=spec.label, sample=sample)
        # Deleting at the peer is only right where this side decides which rows exist, and
        # creating a row there only where this side owns the key.
        self.may_delete = spec.mode is TableMode.LOCAL
        self.may_create = not spec.key_owned_by_peer

    def compare_window(
        self,
        local_rows: Iterator[LocalRow],
        peer_rows: list[dict[str, Any]],
    ) -> Window:
        theirs = {key_token(r, self.spec.key): r for r in peer_rows}
        window = Window()
        for key, fields, in_scope in local_rows:
            peer_row = theirs.pop(key_token(key, self.spec.key), None)
            if in_scope:  # else not shipped from here: not ours to judge
                self.judge(key, key, fields, peer_row, window)
        for peer_row in theirs.values():
            key = {k: peer_row.get(k) for k in self.spec.key}
            self.report.add_extra(key)
            if self.may_delete:
                window.deletes.append(key)
            else:
                self.report.extra_not_ours += 1
        return window

    def judge(
        self,
        key: Key,
        shown: Key,
        fields: dict[str, Any],
        peer_row: dict[str, Any] | None,
        window: Window,
    ) -> None:
        """Compare one row of this side (its key, the key shown in the report, the fields
        to compare) with the peer's copy, and queue its fix into `window`."""
        self.report.compared += 1
        if peer_row is None:
            self.report.add_missing(shown)
            if self.may_create:
                window.upserts.append(key)
            else:
                self.report.missing_not_ours += 1
            return
        diff = differing_fields(fields, peer_row, exact=self.exact)
        if diff:
            self.report.add_different(shown, diff)
            window.upserts.append(key)

    def extra_entities(self, peer_rows: list[dict[str, Any]]) -> Window:
        """Records only the peer has. Deleted there (where this side decides which records
        exist) when this side's key is the entity's own; with a cross-reference this side
        has no key for a record it never had, so they are reported only."""
        window = Window()
        emap = EntityMap.of(self.spec)
        for row in peer_rows:
            key = {k: row.get(k) for k in self.spec.entity_key}
            self.report.add_extra(key)
            if self.may_delete and not emap.uses_xref:
                window.deletes.append(emap.inbound_key(key))
            else:
                self.report.extra_not_ours += 1
        return window

    def apply(self, writer: psycopg.Connection[Any] | None, window: Window) -> None:
        if writer is not None and (window.upserts or window.deletes):
            self.report.fixes_queued += self.local.queue(writer, window)


def reconcile(
    config: BridgeConfig,
    table: str,
    *,
    fix: bool = False,
    page: int = DEFAULT_PAGE,
    sample: int = DEFAULT_SAMPLE,
    on_progress: ProgressCallback | None = None,
) -> ReconcileReport:
    spec = config.table(table)
    check_shippable(spec)
    if not 0 < page <= MAX_PAGE:
        raise UserError(f"--page {page} is not in 1..{MAX_PAGE}; fix: give a number such as 1000")
    target = Target.of(config)
    exact = kinds.capabilities(config.peer).exact_values
    reconciler = Reconciler(target, spec, fix, sample, exact=exact)
    with target.connect(autocommit=True) as conn, _writer(target, fix) as writer:
        reconciler.report.pending = _pending(conn, target, spec)
        sides = Sides(reconciler, conn, writer, on_progress)
        reader = kinds.endpoint(config).read(spec)  # closed by the walk below
        if isinstance(reader, PagedReader) and spec.mapped:
            # The peer lists the entity's records, but in its own key's order.
            _by_entities(sides, reader, page, Outbound(config))
        elif isinstance(reader, PagedReader):  # a peer that lists its rows in our key order
            _by_pages(sides, reader, page)
        else:
            _by_key(sides, reader)
    return reconciler.report


def _pending(conn: psycopg.Connection[Any], target: Target, spec: TableSpec) -> int:
    row = conn.execute(
        queries.query("reconcile_pending", schema=target.schema), {"label": spec.label}
    ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def _writer(target: Target, fix: bool) -> Iterator[psycopg.Connection[Any] | None]:
    """Fixes go in on their own connection, so reading never holds their locks."""
    if not fix:
        yield None
        return
    with target.connect(autocommit=True) as writer:
        yield writer


@dataclass
class Sides:
    reconciler: Reconciler
    reader: psycopg.Connection[Any]
    writer: psycopg.Connection[Any] | None
    on_progress: ProgressCallback | None

    def settle(self, window: Window) -> None:
        self.reconciler.apply(self.writer, window)
        if self.on_progress is not None:
            self.on_progress(self.reconciler.report.compared)


def _by_pages(sides: Sides, reader: PagedReader, page: int) -> None:
    reconciler = sides.reconciler
    after: dict[str, Any] | None = None
    try:
        while True:
            peer_page = reader.page(after, page)
            upto = None
            if peer_page.more and peer_page.rows:
                upto = {k: peer_page.rows[-1][k] for k in reconciler.spec.key}
            local_rows = reconciler.local.rows(sides.reader, after, upto)
            sides.settle(reconciler.compare_window(local_rows, peer_page.rows))
            if upto is None:
                return
            after = upto
    finally:
        reader.close()


def _by_entities(sides: Sides, reader: PagedReader, page: int, outbound: Outbound) -> None:
    """An entity mapped to other names: the two sides' keys do not sort alike, so the
    peer's copy is read whole (held in memory, by entity key), then this side's rows are
    read in key order, translated to the entity and matched by entity key."""
    reconciler = sides.reconciler
    spec = reconciler.spec
    theirs: dict[str, dict[str, Any]] = {}
    after: dict[str, Any] | None = None
    try:
        while True:
            peer_page = reader.page(after, page)
            for peer_row in peer_page.rows:
                theirs[key_token(peer_row, spec.entity_key)] = peer_row
            if not (peer_page.more and peer_page.rows):
                break
            after = peer_page.next or {k: peer_page.rows[-1][k] for k in spec.entity_key}
    finally:
        reader.close()
    rows: list[LocalRow] = []
    for row in reconciler.local.rows(sides.reader, None, None):
        rows.append(row)
        if len(rows) >= DEFAULT_PAGE:
            sides.settle(_entity_window(sides, outbound, rows, theirs))
            rows = []
    sides.settle(_entity_window(sides, outbound, rows, theirs))
    sides.settle(reconciler.extra_entities(list(theirs.values())))


def _entity_window(
    sides: Sides, outbound: Outbound, rows: list[LocalRow], theirs: dict[str, dict[str, Any]]
) -> Window:
    reconciler = sides.reconciler
    spec = reconciler.spec
    translated = outbound.entity_rows(sides.reader, spec.label, [(k, f) for k, f, _ in rows])
    window = Window()
    for (key, _fields, in_scope), entity in zip(rows, translated, strict=True):
        if isinstance(entity, Exception):
            raise UserError(f"{spec.label} row {codec.dumps_text(key)}: {entity}")
        peer_row = theirs.pop(key_token(entity.key, spec.entity_key), None)
        if in_scope:
            reconciler.judge(key, entity.key, {**(entity.fields or {}), **entity.key},
                             peer_row, window)
    return window


def _by_key(sides: Sides, reader: KeyedReader) -> None:
    """Each local row fetched by its key. Rows only the peer has stay unseen."""
    reconciler = sides.reconciler
    reconciler.report.extra_unchecked = True
    try:
        rows: list[LocalRow] = []
        for row in reconciler.local.rows(sides.reader, None, None):
            rows.append(row)
            if len(rows) >= DEFAULT_PAGE:
                sides.settle(_keyed_window(reconciler, reader, rows))
                rows = []
        sides.settle(_keyed_window(reconciler, reader, rows))
    finally:
        reader.close()


def _keyed_window(reconciler: Reconciler, reader: KeyedReader, rows: list[LocalRow]) -> Window:
    found = []
    for key, _fields, in_scope in rows:
        peer_row = reader.row(key) if in_scope else None
        if peer_row is not None:
            found.append({**peer_row, **key})  # fetched by this key: it is the row's key
    return reconciler.compare_window(iter(rows), found)
