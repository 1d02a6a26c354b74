"""The batch JSON that PostgreSQL encodes equals the one the relay encodes in Python.

Whole-row tables ship their changes as text built by `relay_fetch_pending`; every other
table goes through the SOR filter and `batch_body`. Both must give the same protocol v1
changes, for inserts, updates, deletes and values JSON handles awkwardly.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest
import yaml

from cdc_bridge import outbox
from cdc_bridge.config import BridgeConfig, parse_config
from cdc_bridge.entity.outbound import Lookups, Outbound
from cdc_bridge.errors import Unmapped
from cdc_bridge.peer import codec, kinds
from cdc_bridge.peer.bridge import batch_body
from cdc_bridge.peer.endpoint import Outgoing
from cdc_bridge.peer.protocol import Batch
from cdc_bridge.peer.rest import RestEndpoint
from cdc_bridge.relay.daemon import outgoing_of
from tests.helpers import FIXTURES, install
from tests.relay_support import config_text, relay_config

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


async def _fetch(
    dsn: str, whole_tables: list[str], entities: str = "{}"
) -> list[outbox.OutboxRow]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        codec.use_exact_json(conn)
        return await outbox.fetch_pending(
            conn, "cdc_bridge", 100, [], system="erp", whole_tables=whole_tables,
            entities=entities,
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


# ---------------------------------------------------------------- mapped tables

MAPPED_TABLES: dict[str, Any] = {
    "public.customers": {"key": ["id"], "sor": "local"},
    "public.orders": {
        "entity": "sale",
        "key": ["id"],
        "sor": "local",
        "fields": {
            "number": "id",
            "buyer": "customer_id",
            "amount": "total",
            "state": {"column": "status", "map": {"new": "N", "paid": "P", "void": None}},
        },
    },
}


def _mapped_config(dsn: str) -> BridgeConfig:
    data = yaml.safe_load(config_text(dsn, "http://127.0.0.1:9"))
    data["tables"] = MAPPED_TABLES
    return parse_config(yaml.safe_dump(data), "erp.yaml", {})


ORDERS = [
    "INSERT INTO orders VALUES (1, 10, 1234567890.12, 'new'), (2, NULL, NULL, 'paid'),"
    " (3, 30, 0.01, 'void')",
    "UPDATE orders SET status = 'paid', total = 99999999.99 WHERE id = 1",
    "DELETE FROM orders WHERE id = 2",
]


def _write_orders(dsn: str) -> None:
    """Changes of this side's own, and one the bridge applied for the shop (an echo)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in ORDERS:
            conn.execute(statement.encode())
        with conn.transaction():
            conn.execute("SELECT set_config('cdc_bridge.origin', 'shop', true)")
            conn.execute("INSERT INTO orders VALUES (4, 40, 4.5, 'new')")


async def _fetch_mapped(dsn: str, outbound: Outbound | None) -> list[outbox.OutboxRow]:
    entities = "{}" if outbound is None else codec.dumps_text(outbound.encoded_entities())
    return await _fetch(dsn, [], entities)


def _translated(outbound: Outbound, row: outbox.OutboxRow) -> Outgoing:
    """As the relay sends a row it translates itself (`Relay._entity_changes`)."""
    if row.change_json is not None:
        return outgoing_of(row, "erp", None, None)
    entity = outbound.translate(row, row.fields, row.old, Lookups())
    change = outgoing_of(row, "erp", entity.fields, entity.old)
    change.entity, change.key = entity.entity, entity.key
    return change


def _sent(outbound: Outbound, rows: list[outbox.OutboxRow]) -> list[dict[str, Any]]:
    body = batch_body("erp", "b1", [_translated(outbound, r) for r in rows])
    Batch.model_validate_json(body)
    changes: list[dict[str, Any]] = codec.loads(body)["changes"]
    for change in changes:
        change["committed_at"] = datetime.fromisoformat(change["committed_at"])
    return changes


def test_postgres_translates_mapped_changes_as_the_relay_does(db: str) -> None:
    config = _mapped_config(db)
    install(config)
    _write_orders(db)
    outbound = Outbound(config)
    assert set(outbound.encoded_entities()) == {"public.orders"}
    encoded = [r for r in asyncio.run(_fetch_mapped(db, outbound)) if r.origin == "erp"]
    parsed = [r for r in asyncio.run(_fetch_mapped(db, None)) if r.origin == "erp"]
    assert len(encoded) == 5
    assert all(r.change_json is not None and r.fields is None for r in encoded)
    assert all(r.change_json is None for r in parsed)
    sent = _sent(outbound, encoded)
    assert sent == _sent(outbound, parsed)
    assert [c["entity"] for c in sent] == ["sale"] * 5
    assert sent[0]["key"] == {"number": 1}
    assert sent[0]["fields"] == {
        "number": 1, "buyer": 10, "amount": Decimal("1234567890.12"), "state": "N"
    }
    assert sent[1]["fields"] == {"number": 2, "buyer": None, "amount": None, "state": "P"}
    assert sent[2]["fields"]["state"] is None  # mapped to null, not left out
    assert sent[3]["op"] == "update" and sent[3]["fields"]["state"] == "P"
    assert sent[4]["op"] == "delete" and sent[4]["key"] == {"number": 2}


def test_unmapped_codes_and_echoes_come_parsed_for_the_relay_to_refuse(db: str) -> None:
    config = _mapped_config(db)
    install(config)
    _write_orders(db)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO orders VALUES (5, 50, 5, 'lost')")
    outbound = Outbound(config)
    rows = asyncio.run(_fetch_mapped(db, outbound))
    parsed = {r.id: r for r in rows if r.change_json is None}
    assert sorted((r.origin, r.key_text) for r in parsed.values()) == [
        ("erp", '{"id": 5}'),
        ("shop", '{"id": 4}'),
    ]
    lost = next(r for r in parsed.values() if r.origin == "erp")
    with pytest.raises(Unmapped, match="lost"):
        outbound.translate(lost, lost.fields, lost.old, Lookups())


def test_only_plain_renames_and_text_codes_are_left_to_postgres() -> None:
    unlike = parse_config(
        (FIXTURES / "unlike" / "erp.yaml").read_text(),
        "erp.yaml",
        {"ERP_DATABASE_URL": "postgresql://x/y", "SHOP_URL": "http://x", "BRIDGE_SECRET": "s"},
    )
    # items: a computed field; customers: per-field owners; sales_orders: adopted.
    assert Outbound(unlike).encoded_entities() == {}
    data = yaml.safe_load(config_text("postgresql://x/y", "http://x"))
    data["tables"] = {
        "public.orders": {
            **MAPPED_TABLES["public.orders"],
            "fields": {"number": "id", "state": {"column": "status", "map": {1: "one"}}},
        }
    }
    numeric_codes = parse_config(yaml.safe_dump(data), "erp.yaml", {})
    assert Outbound(numeric_codes).encoded_entities() == {}
    assert Outbound(_mapped_config("postgresql://x/y")).encoded_entities() == {
        "public.orders": {
            "entity": "sale",
            "columns": {"id": "number", "customer_id": "buyer", "total": "amount",
                        "status": "state"},
            "maps": {"status": {"new": "N", "paid": "P", "void": None}},
        }
    }


def test_names_and_codes_that_look_like_sql_keep_their_text(db: str) -> None:
    """Names and codes are written into the read as literals: quotes, line breaks and
    `--` inside them stay values, and a second mapped table gets its own branch."""
    code = "it's\n-- not a comment\n  {x}"
    data = yaml.safe_load(config_text(db, "http://127.0.0.1:9"))
    data["tables"] = {
        "public.customers": {
            "entity": "person",
            "key": ["id"],
            "sor": "local",
            "fields": {"no\n-- id": "id", "label": "name"},
        },
        "public.orders": {
            **MAPPED_TABLES["public.orders"],
            "fields": {"number": "id", "state": {"column": "status", "map": {code: "odd\n"}}},
        },
    }
    config = parse_config(yaml.safe_dump(data), "erp.yaml", {})
    install(config)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO customers (id, name) VALUES (1, 'a')")
        conn.execute("INSERT INTO orders (id, status) VALUES (7, %s)", (code,))
    outbound = Outbound(config)
    assert set(outbound.encoded_entities()) == {"public.customers", "public.orders"}
    encoded = asyncio.run(_fetch_mapped(db, outbound))
    parsed = asyncio.run(_fetch_mapped(db, None))
    assert all(r.change_json is not None for r in encoded)
    sent = _sent(outbound, encoded)
    assert sent == _sent(outbound, parsed)
    assert sent[0]["entity"] == "person" and sent[0]["key"] == {"no\n-- id": 1}
    assert sent[1]["fields"] == {"number": 7, "state": "odd\n"}


# ---------------------------------------------------------------- REST bodies

LEDGER = """
CREATE TYPE mood AS ENUM ('calm', 'odd "one"');
CREATE TABLE public.ledger (
    id bigint PRIMARY KEY, amount numeric(20,6), huge numeric, doc jsonb, tags text[],
    at timestamptz, mood mood, note text);
"""


def _rest_config(dsn: str, body: dict[str, Any] | None = None) -> BridgeConfig:
    rest: dict[str, Any] = {
        "insert": "PUT /ledger/{id}", "update": "PUT /ledger/{id}",
        "delete": "DELETE /ledger/{id}",
    }
    if body is not None:
        rest["body"] = body
    data = yaml.safe_load(config_text(dsn, "http://127.0.0.1:9", peer={"adapter": "rest"}))
    data["peer"].pop("secret")
    data["tables"] = {"public.ledger": {"key": ["id"], "sor": "local", "rest": rest}}
    return parse_config(yaml.safe_dump(data), "rest.yaml", {})


def _write_ledger(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ledger VALUES (1, 12345678901234.123456, 123456789012345678901234567890,"
            " '{\"n\": 123456789012345678901234567890.5, \"s\": \"é ☃ \\\"q\\\"\", \"deep\": "
            "{\"a\": [1, 2.50, null]}}', ARRAY['a,b', 'c\"d', NULL], "
            "'2026-03-29 01:30:00.123456+02', 'odd \"one\"', E'tab\\there')"
        )
        conn.execute("INSERT INTO ledger (id, amount) VALUES (2, 0.000001)")
        conn.execute("UPDATE ledger SET amount = -1.100000, note = NULL WHERE id = 1")
        conn.execute("DELETE FROM ledger WHERE id = 2")
        with conn.transaction():
            conn.execute("SELECT set_config('cdc_bridge.origin', 'shop', true)")
            conn.execute("INSERT INTO ledger (id, amount) VALUES (3, 7.5)")


async def _fetch_rest(dsn: str, whole_tables: list[str]) -> list[outbox.OutboxRow]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        codec.use_exact_json(conn)
        return await outbox.fetch_pending(
            conn, "cdc_bridge", 100, [], system="erp", whole_tables=whole_tables,
            encoded=outbox.Encoded.FIELDS,
        )


def _bodies(config: BridgeConfig, rows: list[outbox.OutboxRow]) -> list[bytes | None]:
    endpoint = RestEndpoint(config)
    return [
        None if r.op == "D" else endpoint._body(_outgoing(r))  # what each request carries
        for r in rows
    ]


def _exact(body: bytes | None) -> bytes | None:
    """The body as canonical JSON with every number's text kept (12.50 stays 12.50)."""
    return None if body is None else codec.dumps(codec.loads(body), sort_keys=True)


def test_postgres_encoded_rest_bodies_equal_python_built_ones(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(LEDGER)
    config = _rest_config(db)
    install(config)
    _write_ledger(db)
    assert kinds.encoded_tables(config) == ["public.ledger"]
    encoded = asyncio.run(_fetch_rest(db, ["public.ledger"]))
    parsed = asyncio.run(_fetch_rest(db, []))
    # This side's inserts and updates come as their fields; the delete and the echo parsed.
    assert [r.change_json is not None for r in encoded] == [True, True, True, False, False]
    assert all(r.change_json is None for r in parsed)
    by_postgres = [_exact(b) for b in _bodies(config, encoded)]
    by_python = [_exact(b) for b in _bodies(config, parsed)]
    assert by_postgres == by_python
    first = codec.loads(_bodies(config, encoded)[0] or b"")
    assert str(first["amount"]) == "12345678901234.123456"
    assert first["huge"] == 123456789012345678901234567890
    assert str(first["doc"]["n"]) == "123456789012345678901234567890.5"
    assert first["tags"] == ["a,b", 'c"d', None] and first["mood"] == 'odd "one"'


def test_a_rest_body_built_by_the_mapping_comes_parsed(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(LEDGER)
    config = _rest_config(db, body={"/price": {"field": "amount", "cast": "string", "scale": 2}})
    install(config)
    _write_ledger(db)
    assert kinds.encoded_tables(config) == []
    rows = asyncio.run(_fetch_rest(db, kinds.encoded_tables(config)))
    assert all(r.change_json is None for r in rows)
    assert codec.loads(_bodies(config, rows)[0] or b"") == {"price": "12345678901234.12"}
