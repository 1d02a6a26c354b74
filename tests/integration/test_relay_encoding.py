"""The batch JSON that PostgreSQL encodes equals the one the relay encodes in Python.

Whole-row tables ship their changes as text built by `relay_fetch_pending`; every other
table goes through the SOR filter and `batch_body`. Both must give the same protocol v1
changes, for inserts, updates, deletes and values JSON handles awkwardly.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import orjson
import psycopg

from cdc_bridge import outbox
from cdc_bridge.peer import codec
from cdc_bridge.peer.bridge import batch_body
from cdc_bridge.peer.endpoint import Outgoing
from cdc_bridge.peer.protocol import Batch
from cdc_bridge.relay.daemon import outgoing_of
from tests.helpers import install
from tests.relay_support import relay_config

WHOLE = ["public.customers", "public.orders"]


def _write(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO customers VALUES (1, 'quote \" backslash \\ é ☃', NULL, 'gold'),"
            " (2, E'tab\\tnewline\\n', 'b@example.com', NULL)"
        )
        conn.execute("UPDATE customers SET tier = NULL WHERE id = 1")
        conn.execute("DELETE FROM customers WHERE id = 2")
        conn.execute("INSERT INTO orders (id, total) VALUES (7, 12345678.91)")


async def _fetch(dsn: str, whole_tables: list[str]) -> list[outbox.OutboxRow]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        codec.use_exact_json(conn)
        return await outbox.fetch_pending(
            conn, "cdc_bridge", 100, [], system="erp", whole_tables=whole_tables
        )


def _outgoing(row: outbox.OutboxRow) -> Outgoing:
    return outgoing_of(row, "erp", row.fields, row.old)


def _changes(rows: list[outbox.OutboxRow]) -> list[dict[str, Any]]:
    body = batch_body("erp", "b1", [_outgoing(r) for r in rows])
    Batch.model_validate_json(body)  # a valid protocol v1 batch either way
    changes: list[dict[str, Any]] = orjson.loads(body)["changes"]
    for change in changes:  # same instant, whatever the text form of the offset
        change["committed_at"] = datetime.fromisoformat(change["committed_at"])
    return changes


def test_postgres_encoded_changes_equal_python_encoded_ones(db: str) -> None:
    install(relay_config(db, "http://127.0.0.1:9"))
    _write(db)
    encoded = asyncio.run(_fetch(db, WHOLE))
    parsed = asyncio.run(_fetch(db, []))
    assert len(encoded) == 5
    assert all(r.change_json is not None and r.fields is None for r in encoded)
    assert all(r.change_json is None for r in parsed)
    assert _changes(encoded) == _changes(parsed)


def test_only_listed_tables_and_own_changes_come_encoded(db: str) -> None:
    install(relay_config(db, "http://127.0.0.1:9"))
    _write(db)
    with psycopg.connect(db, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT set_config('cdc_bridge.origin', 'shop', true)")
        conn.execute("INSERT INTO customers VALUES (99, 'from shop', NULL, NULL)")
    rows = asyncio.run(_fetch(db, ["public.orders"]))
    encoded = {(r.table_name, r.origin) for r in rows if r.change_json is not None}
    assert encoded == {("public.orders", "erp")}
    echo = [r for r in rows if r.origin == "shop"]
    assert echo[0].fields == {"id": 99, "name": "from shop", "email": None, "tier": None}


def test_array_literals_round_trip_through_postgres(db: str) -> None:
    texts = ["applied", 'a "quoted" word', "back\\slash", "comma, brace {}", "", "NULL", "é ☃"]
    ids = [1, 9_007_199_254_740_993, 42]
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT %s::text[], %s::bigint[], %s::bigint[]",
            (outbox.text_array(texts), outbox.int_array(ids), outbox.int_array([])),
        ).fetchone()
    assert row == (texts, ids, [])
