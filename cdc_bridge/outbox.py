"""The outbox's one owner: its shape, every write to it, and the relay's reads.

Every statement that writes the outbox is composed here (SQL in cdc_bridge/sql/outbox.sql
and, for the relay's reads, acknowledgements and failures, cdc_bridge/sql/relay.sql):
the capture functions' INSERTs, `queue_into` for snapshot, reconcile and conflict
resolutions, `requeue` for replay, and `skip`/`park_pending` for operators.

There is no read cursor. Every read starts at the head of the outbox, so a transaction
that took a low id and committed late is read on the next pass instead of being skipped.
A row leaves the outbox only in the same statement that writes it to `delivered` or
`failed`. Keys with a row in `failed` are parked: their later rows are not read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import BaseRowFactory, RowMaker

from cdc_bridge.errors import IncompleteInstall
from cdc_bridge.peer import codec
from cdc_bridge.sql import compact_query, query, raw

T = TypeVar("T")

# What `delivered.result` holds for a change the SOR filter dropped without sending.
FILTERED = "filtered"


# Not frozen: a frozen dataclass costs ~1.4 us more to build; one is built per change read.
class Encoded(Enum):
    """What PostgreSQL writes into `change_json` for this side's own changes of whole-row
    tables as the relay reads them (`relay_fetch_pending`), for a kind of peer that takes
    it (`Capabilities.encoded`): the relay then neither parses nor filters those rows."""

    NOTHING = "nothing"  # every row comes parsed
    CHANGE = "change"  # the batch protocol's change JSON
    FIELDS = "fields"  # the change's fields, as jsonb prints them (deletes come parsed)


@dataclass(slots=True)
class OutboxRow:
    id: int
    txid: str
    table_name: str
    op: str  # 'I' | 'U' | 'D'
    # None for rows that come encoded (change_json): key_text says the same, unparsed (for
    # a mapped table's, this side's key: the entity key is in change_json).
    key: dict[str, Any] | None
    key_text: str  # canonical jsonb text: equal keys give equal text
    fields: dict[str, Any] | None
    old: dict[str, Any] | None
    changed: list[str] | None
    origin: str
    captured_at: datetime
    # The protocol change as JSON text, encoded by PostgreSQL, for rows of tables that
    # ship whole rows unchanged, or renamed and code-mapped (then `fields` and `old` are
    # not read: None).
    change_json: str | None = None
    # When the read was full: the pending rows of this row's source transaction and its
    # last id. None: the read held every visible pending row, so the transaction is whole.
    txn_rows: int | None = None
    txn_last_id: int | None = None
    txn_parked: bool = False  # a row of its transaction waits behind a failed change

    @property
    def record(self) -> tuple[str, str]:
        """(table, key): changes of one record must reach the peer in id order."""
        return (self.table_name, self.key_text)

    def idempotency_key(self, system: str) -> str:
        return f"{system}:{self.txid}:{self.id}"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt to deliver a batch got: kept in `attempts`.

    `status` is the endpoint's status code (an HTTP status for the HTTP kinds of peer;
    None: no answer, or a kind without codes), `detail` what it answered; they are kept
    in the columns `http_status` and `response_body` (named when every peer was HTTP).
    """

    status: int | None
    error: str | None
    detail: str | None
    duration_ms: float


@dataclass(frozen=True, slots=True)
class Failure:
    """A change the peer refused for good, with what the peer said."""

    id: int
    reason: str
    status: int | None = None  # the endpoint's status code for this change (HTTP status)
    detail: str | None = None  # what it answered (kept in `failed.response_body`)


def int_array(ids: Iterable[int]) -> str:
    """A bigint[] literal: psycopg's per-element list dumping costs ~1 ms per 1000 ids."""
    return "{" + ",".join(map(str, ids)) + "}"


def text_array(values: Iterable[str]) -> str:
    """A text[] literal with every element quoted (any text is safe)."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def dataclass_rows(cls: type[T]) -> BaseRowFactory[T]:
    """A row factory building `cls` from columns matched by name, in any SELECT order.

    Like psycopg's class_row, but the name-to-position map is built once per result
    and the object is built from positions: no dict per row (the relay reads every
    captured row once). A column `cls` lacks, or a required field no column gives, is
    an error at once.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    required = {f.name for f in fields(cls) if f.default is MISSING}  # type: ignore[arg-type]

    def factory(cursor: Any) -> RowMaker[T]:
        columns = [c.name for c in cursor.description or ()]
        unknown = set(columns) - set(names)
        missing = required - set(columns)
        if unknown or missing:
            raise TypeError(
                f"{cls.__name__} rows: unknown columns {sorted(unknown)}, missing {sorted(missing)}"
            )
        order = [columns.index(n) for n in names if n in columns]
        given = [n for n in names if n in columns]
        if order == list(range(len(names))):
            return lambda values: cls(*values)  # the SELECT lists every field in order
        if given == names[: len(given)]:
            return lambda values: cls(*[values[i] for i in order])
        return lambda values: cls(**{n: values[i] for n, i in zip(given, order, strict=True)})

    return factory


async def fetch_pending(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    limit: int,
    in_flight: Iterable[int] | str = (),
    *,
    system: str = "",
    whole_tables: Sequence[str] = (),
    entities: str = "{}",
    max_txn: int = 10_000,
    encoded: Encoded = Encoded.CHANGE,
) -> list[OutboxRow]:
    """Whole source transactions from the outbox head, minus the rows `in_flight` now.

    The oldest `limit` rows, plus up to `max_txn` rows past them that belong to their
    transactions (see `relay_fetch_pending`). Rows of parked keys come flagged.
    `in_flight` is ids, or their bigint[] literal (the relay keeps it built per batch).
    Rows that `system` captured in `whole_tables` come pre-encoded (`change_json`) as
    `encoded` says, and so do those of the mapped tables `entities` describes (JSON text,
    see `Outbound.encoded_entities`), as their entity changes.
    """
    async with conn.cursor(row_factory=dataclass_rows(OutboxRow)) as cur:
        await cur.execute(
            _fetch_query(schema, entities, encoded),
            {
                "limit": limit,
                "in_flight": in_flight if isinstance(in_flight, str) else int_array(in_flight),
                "system": system,
                "whole_tables": text_array(whole_tables),
                "max_txn": max_txn,
            },
        )
        return await cur.fetchall()


@cache
def _fetch_query(schema: str, entities: str, encoded: Encoded = Encoded.CHANGE) -> bytes:
    """The read, with the mapped tables' encoding written in when some are encoded.

    `entities` is the JSON text of `Outbound.encoded_entities`. Compact: the read runs for
    every batch, and psycopg caches the parse of statements up to 4 KiB only.
    """
    tables: dict[str, dict[str, Any]] = codec.loads(entities)
    encoding = _entity_encoding(tables) if tables else compact_query("relay_encode_whole")
    change = compact_query(f"relay_encoded_{'fields' if encoded is Encoded.FIELDS else 'change'}")
    statement = compact_query(
        "relay_fetch_pending", schema=schema, encoding=encoding, change_json=change
    )
    return statement.as_bytes(None)


def _entity_encoding(tables: dict[str, dict[str, Any]]) -> sql.Composed:
    """relay_encode_entities for `tables` (label -> entity, columns, maps)."""

    def case(piece: Callable[[dict[str, Any]], sql.Composable]) -> sql.Composed:
        return sql.SQL(" ").join(
            compact_query("relay_encode_table_when", label=sql.Literal(label), value=piece(spec))
            for label, spec in tables.items()
        )

    return compact_query(
        "relay_encode_entities",
        codes_known=case(_codes_known),
        entity=case(lambda spec: sql.Literal(spec["entity"])),
        key_json=case(_key_json),
        fields_json=case(_fields_json),
    )


def _jsonb_order(names: Iterable[str]) -> list[str]:
    """`names` in the order jsonb keeps an object's keys (shorter first, then bytewise)."""
    return sorted(names, key=lambda name: (len(name.encode()), name.encode()))


def _codes_known(spec: dict[str, Any]) -> sql.Composable:
    tests = [
        compact_query(
            "relay_encode_table_code_known",
            column=sql.Literal(column),
            codes=sql.SQL(", ").join(sql.Literal(code) for code in codes),
        )
        for column, codes in spec["maps"].items()
        if column in spec["columns"]
    ]
    return sql.SQL(" AND ").join(tests) if tests else sql.SQL("true")


def _key_json(spec: dict[str, Any]) -> sql.Composable:
    """The key renamed: a row's key holds the key columns only, so every mapped column
    is probed and the others are left out."""
    columns: dict[str, str] = spec["columns"]
    return sql.SQL(" || ").join(
        compact_query(
            "relay_encode_table_key",
            field=sql.Literal("," + codec.dumps_text(columns[column]) + ":"),
            column=sql.Literal(column),
        )
        for column in _jsonb_order(columns)
    )


def _fields_json(spec: dict[str, Any]) -> sql.Composable:
    columns: dict[str, str] = spec["columns"]
    pieces: list[sql.Composable] = []
    for column in _jsonb_order(columns):
        field = sql.Literal("," + codec.dumps_text(columns[column]) + ":")
        codes = spec["maps"].get(column)
        if codes is None:
            pieces.append(
                compact_query("relay_encode_table_field", field=field, column=sql.Literal(column))
            )
            continue
        whens = sql.SQL(" ").join(
            compact_query(
                "relay_encode_table_when",
                label=sql.Literal(code),
                value=sql.Literal(codec.dumps_text(value)),
            )
            for code, value in codes.items()
        )
        pieces.append(
            compact_query(
                "relay_encode_table_mapped_field",
                field=field,
                column=sql.Literal(column),
                codes=whens,
            )
        )
    return sql.SQL(" || ").join(pieces) if pieces else sql.Literal("")


def _compact(statement: sql.Composed) -> bytes:
    """The statement without its comment lines and indentation.

    psycopg parses the placeholders of a statement longer than 4 KiB again at every
    execution (shorter ones are cached): with its comments the read was 6.6 KiB, and
    parsing it cost about a tenth of the relay's CPU. Only for statements without
    multi-line literals (none of the relay's).
    """
    lines = (line.strip() for line in statement.as_bytes(None).splitlines())
    return b"\n".join(line for line in lines if line and not line.startswith(b"--"))


async def oldest_pending_age(conn: psycopg.AsyncConnection[Any], schema: str) -> float | None:
    """Seconds since the oldest change still in the outbox was captured; None when empty."""
    cur = await conn.execute(query("relay_oldest_pending", schema=schema))
    row = await cur.fetchone()
    return None if row is None else float(row[0])


@cache
def _moved(schema: str) -> sql.Composed:
    return query("relay_move_to_delivered", schema=schema)


@cache
def _record_query(schema: str) -> bytes:
    return _compact(
        query("relay_record_outcome", schema=schema, move_to_delivered=_moved(schema))
    )


async def record_outcome(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    batch_id: str,
    status: str,
    ids: Sequence[int],
    attempt: Attempt,
    acked: dict[int, str],
) -> None:
    """Record the batch, one attempt of it and its acknowledged changes: one statement."""
    await conn.execute(
        _record_query(schema),
        {
            "batch_id": batch_id,
            "status": status,
            "change_count": len(ids),
            "first_id": min(ids),
            "last_id": max(ids),
            "http_status": attempt.status,
            "error": attempt.error,
            "response_body": attempt.detail,
            "duration_ms": attempt.duration_ms,
            "ids": int_array(acked),
            "results": text_array(acked.values()),
        },
    )


async def acknowledge(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    batch_id: str | None,
    results: dict[int, str],
) -> None:
    """Move acknowledged (or filtered) changes to `delivered` with their result."""
    if not results:
        return
    await conn.execute(
        query("relay_ack", schema=schema, move_to_delivered=_moved(schema)),
        {
            "ids": int_array(results),
            "results": text_array(results.values()),
            "batch_id": batch_id,
        },
    )


async def fail(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    batch_id: str | None,
    failures: Sequence[Failure],
) -> None:
    """Move refused changes to `failed`: their keys are parked from now on."""
    if not failures:
        return
    await conn.execute(
        query("relay_fail", schema=schema),
        {
            "ids": [f.id for f in failures],
            "reasons": [f.reason for f in failures],
            "statuses": [f.status for f in failures],
            "bodies": [f.detail for f in failures],
            "batch_id": batch_id,
        },
    )


async def record_handoffs(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    records: Sequence[tuple[str, str]],
) -> None:
    """The peer owns these (table, key text) records now: the guard refuses local edits."""
    if not records:
        return
    await conn.execute(
        query("relay_record_handoffs", schema=schema),
        {
            "tables": text_array(t for t, _ in records),
            "keys": text_array(k for _, k in records),
        },
    )


# ------------------------------------------------------------------ writes from outside


def queue_into(schema: str) -> sql.Composed:
    """The head of an INSERT queuing changes: (table_name, op, key, fields, old, changed,
    origin), to be followed by VALUES or a SELECT of these seven, in this order."""
    return query("outbox_queue", schema=schema)


CaptureBlock = Literal[
    "capture_insert",
    "capture_delete",
    "capture_update",
    "capture_update_filtered",
]


def capture_body(block: CaptureBlock, schema: str, **parts: sql.Composable) -> sql.Composed:
    """The body of a generated capture function: its INSERT (`block`, a fragment) into
    the outbox table writers fill now (outbox.sql: capture_into_slot)."""
    inserts = {
        f"capture_{n}": sql.SQL(raw(block).strip()).format(outbox=_slot_table(schema, n), **parts)
        for n in SLOTS
    }
    return sql.SQL(raw("capture_into_slot").strip()).format(slot=_slot(schema), **inserts)


@dataclass(frozen=True, slots=True)
class Rotation:
    """What one rotation of the outbox did (see create_outbox in outbox.sql): the rows
    still pending that moved to the new current table, or why it was not done."""

    moved: int | None
    waiting: str | None = None


async def rotate(
    conn: psycopg.AsyncConnection[Any], schema: str, *, most_moved: int, lock_timeout_ms: int
) -> Rotation:
    """Empty the outbox table writers no longer fill (and the outbox itself, when it holds
    anything) and make it the one they fill, in one transaction.

    The rows still pending there move first (same id and txid). Not done when more than
    `most_moved` rows wait there (the relay ships them first) or when a writer still holds
    it after `lock_timeout_ms`: the next call tries again, and nothing was changed.
    """
    try:
        async with conn.transaction():
            await conn.execute(
                query("outbox_rotate_settings"), {"lock_timeout": f"{lock_timeout_ms}ms"}
            )
            cur = await conn.execute(
                query("outbox_rotate_current", schema=schema, slot=_slot(schema),
                      outbox=sql.Literal(sql.Identifier(schema, "outbox").as_string(None)))
            )
            row = await cur.fetchone()
            if row is None:
                raise IncompleteInstall(
                    f"{schema}.outbox_rotation has no row, so the outbox cannot rotate"
                )
            current, parent_used = int(row[0]), bool(row[1])
            other = 1 - current
            emptied = [sql.Identifier(schema, "outbox")] if parent_used else []
            emptied.append(_slot_table(schema, other))
            for table in emptied:
                cur = await conn.execute(
                    query("outbox_rotate_pending", other=table), {"most": most_moved}
                )
                pending = await cur.fetchone()
                if pending is not None and int(pending[0]) > most_moved:
                    return Rotation(None, f"more than {most_moved} rows still pending")
            moved = 0
            for table in emptied:  # the outbox first: readers lock it before its tables
                await conn.execute(query("outbox_rotate_lock", other=table))
                done = await conn.execute(
                    query("outbox_rotate_move", current=_slot_table(schema, current),
                          other=table)
                )
                moved += done.rowcount
                await conn.execute(query("outbox_rotate_truncate", other=table))
            await conn.execute(query("outbox_rotate_log", schema=schema))
            await conn.execute(query("outbox_rotate_switch", slot=_slot(schema)), {"other": other})
            return Rotation(moved)
    except psycopg.errors.LockNotAvailable:
        return Rotation(None, "a transaction still writes it")


SLOTS = (0, 1)


def _slot_table(schema: str, slot: int) -> sql.Identifier:
    return sql.Identifier(schema, f"outbox_{slot}")


def _slot(schema: str) -> sql.Literal:
    """The sequence naming the table writers fill, as a regclass literal."""
    return sql.Literal(sql.Identifier(schema, "outbox_slot").as_string(None))


def requeue(cur: psycopg.Cursor[Any], schema: str, ids: Sequence[int]) -> None:
    """Put failed or delivered changes back, under their original id and txid."""
    cur.execute(query("outbox_requeue", schema=schema), {"ids": list(ids)})


def skip(cur: psycopg.Cursor[Any], schema: str, params: dict[str, Any]) -> Any:
    """A failed or pending change to `delivered` as 'skipped', audited; its row, or None."""
    cur.execute(query("outbox_skip", schema=schema), params)
    return cur.fetchone()


def park_pending(cur: psycopg.Cursor[Any], schema: str, params: dict[str, Any]) -> Any:
    """A pending change to `failed` (its key parks), audited; its row, or None."""
    cur.execute(query("outbox_park_pending", schema=schema), params)
    return cur.fetchone()
