"""`serve` translating a batch into a shop that generates its own keys: one statement per
table looks up the batch's entity keys in the cross-reference and records new ones, in
the batch's transaction (tests/fixtures/unlike/shop.yaml, its orders taken from the peer)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import yaml

from cdc_bridge.config import BridgeConfig, parse_config
from cdc_bridge.entity import Entities
from cdc_bridge.entity.inbound import Translator
from cdc_bridge.inbound.apply import Applier
from cdc_bridge.peer import codec
from cdc_bridge.peer.protocol import Batch, BatchResponse, Change, Op
from tests.acceptance.unlike_pair import create_unlike_database, unlike_config
from tests.helpers import install
from tests.pg import TestServer

PORTS = {"erp": (1, 2), "shop": (3, 4)}
NOW = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)


@pytest.fixture
def shop(pg_server: TestServer) -> Iterator[BridgeConfig]:
    """The unlike shop, installed, with `orders` taken from the peer (a reference to
    `customer` through the cross-reference of a generated key, a code map on its state)."""
    name = pg_server.new_name("shop")
    dsn = create_unlike_database(pg_server, name, "shop")
    try:
        text, _ = unlike_config("shop", dsn, PORTS)
        data = yaml.safe_load(text)
        orders = data["tables"]["public.orders"]
        orders["sor"] = "peer"
        orders["fields"]["state"] = {
            "column": "status",
            "map": {"open": "O", "shipped": "S", "closed": "C"},
        }
        config = parse_config(yaml.safe_dump(data), "shop.yaml", {})
        install(config)
        yield config
    finally:
        pg_server.drop_database(name)


def change(entity: str, op: Op, number: str, txid: int, **fields: Any) -> Change:
    return Change(
        idempotency_key=f"erp:{txid}:{txid}",
        txid=str(txid),
        entity=entity,
        op=op,
        key={"number": number},
        fields=None if op is Op.DELETE else fields,
        committed_at=NOW,
        origin="erp",
    )


def apply(config: BridgeConfig, *changes: Change) -> BatchResponse:
    with connect(config) as conn:
        return Applier(config).apply(conn, Batch(source="erp", batch_id="b", changes=[*changes]))


def connect(config: BridgeConfig) -> psycopg.Connection[Any]:
    conn = psycopg.connect(config.database.url.get_secret_value(), autocommit=True)
    codec.use_exact_json(conn)
    return conn


def fetch(config: BridgeConfig, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(config.database.url.get_secret_value()) as conn:
        return conn.execute(query.encode()).fetchall()


def xref(config: BridgeConfig) -> list[tuple[Any, ...]]:
    return fetch(
        config,
        "SELECT entity, entity_key ->> 'number', (local_key ->> 'id')::bigint "
        "FROM cdc_bridge.entity_xref ORDER BY 1, 2",
    )


def test_a_later_change_of_the_batch_finds_the_record_an_earlier_one_created(
    shop: BridgeConfig,
) -> None:
    response = apply(
        shop,
        change("customer", Op.INSERT, "C-1", 1, name="Anna Berg", email="anna@example.com"),
        change("order", Op.INSERT, "O-1", 2, customer="C-1", state="O", total="12.500000"),
        change("customer", Op.UPDATE, "C-1", 3, name="Anna Lind", email="anna@example.com"),
        change("customer", Op.DELETE, "C-404", 4),
    )

    assert [(r.status.value, r.reason) for r in response.results] == [("applied", None)] * 4
    customers = fetch(shop, "SELECT id, full_name, email_address FROM customers")
    assert len(customers) == 1
    customer_id = customers[0][0]
    assert customers == [(customer_id, "Anna Lind", "anna@example.com")]
    orders = fetch(shop, "SELECT id, customer_id, status::text, total::text FROM orders")
    assert len(orders) == 1
    order_id = orders[0][0]
    assert orders == [(order_id, customer_id, "open", "12.500000")]
    # One entry per record; the delete of a record never here records nothing.
    assert xref(shop) == [("customer", "C-1", customer_id), ("order", "O-1", order_id)]


def test_a_reference_to_a_record_that_has_not_arrived_is_rejected_with_its_reason(
    shop: BridgeConfig,
) -> None:
    response = apply(
        shop,
        change("customer", Op.INSERT, "C-1", 1, name="Anna Berg"),
        change("order", Op.INSERT, "O-2", 2, customer="C-9", state="O", total="3.000000"),
        change("order", Op.INSERT, "O-3", 3, customer="C-1", state="S", total="4.000000"),
    )

    statuses = [(r.status.value, r.reason) for r in response.results]
    assert statuses[0] == ("applied", None)
    assert statuses[1] == (
        "rejected",
        "order.customer refers to customer 'C-9', which has not arrived here; it is never "
        "applied dangling",
    )
    assert statuses[2] == ("applied", None)
    assert fetch(shop, "SELECT status::text, total::text FROM orders") == [
        ("shipped", "4.000000")
    ]


def test_an_unmapped_value_is_still_refused(shop: BridgeConfig) -> None:
    response = apply(
        shop,
        change("customer", Op.INSERT, "C-1", 1, name="Anna Berg"),
        change("order", Op.INSERT, "O-1", 2, customer="C-1", state="X", total="1.000000"),
    )

    assert [(r.status.value, r.reason) for r in response.results] == [
        ("applied", None),
        (
            "rejected",
            "order.state: value 'X' has no mapping to public.orders.status; fix: add it to "
            "the field's `map`",
        ),
    ]
    assert fetch(shop, "SELECT count(*) FROM orders") == [(0,)]


def test_a_change_carrying_part_of_a_row_updates_it_and_a_whole_row_replaces_it(
    shop: BridgeConfig,
) -> None:
    whole = {"customer": "C-1", "placed_at": "2026-11-30T08:00:00+00:00"}
    first = apply(
        shop,
        change("customer", Op.INSERT, "C-1", 1, name="Anna Berg"),
        change("order", Op.INSERT, "O-1", 2, **whole, state="O", total="12.500000"),
    )
    # Only the state: the order's other NOT NULL columns are not carried, and stay.
    second = apply(shop, change("order", Op.UPDATE, "O-1", 3, state="S"))
    third = apply(
        shop, change("order", Op.UPDATE, "O-1", 4, **whole, state="C", total="13.000000")
    )

    assert [r.status.value for r in [*first.results, *second.results, *third.results]] == [
        "applied"
    ] * 4
    assert fetch(
        shop, "SELECT count(*), min(status::text), min(total::text), min(created_at) FROM orders"
    ) == [(1, "closed", "13.000000", datetime(2026, 11, 30, 8, 0, tzinfo=UTC))]


def test_keys_recorded_in_a_transaction_that_is_rolled_back_are_not_left_behind(
    shop: BridgeConfig,
) -> None:
    translator = Translator(Entities(shop), shop.bridge_schema)
    with connect(shop) as conn:
        with pytest.raises(_RolledBack), conn.transaction():
            local = translator.translate(
                conn, [change("customer", Op.INSERT, "C-7", 1, name="Carl Dahl")]
            )
            assert local[0].key is not None and local[0].refused is None
            assert xref_in(conn) == [("customer", "C-7")]
            raise _RolledBack
        assert xref_in(conn) == []

    response = apply(shop, change("customer", Op.INSERT, "C-7", 1, name="Carl Dahl"))

    assert [r.status.value for r in response.results] == ["applied"]
    (customer_id,) = fetch(shop, "SELECT id FROM customers")[0]
    assert xref(shop) == [("customer", "C-7", customer_id)]


def test_a_generated_key_already_taken_is_not_reused(shop: BridgeConfig) -> None:
    # An entry holds local id 1 (what the shop's sequence hands out first) already.
    with psycopg.connect(shop.database.url.get_secret_value()) as conn:
        conn.execute(
            "INSERT INTO cdc_bridge.entity_xref (entity, entity_key, local_key) "
            """VALUES ('customer', '{"number": "C-old"}', '{"id": 1}')"""
        )

    response = apply(shop, change("customer", Op.INSERT, "C-2", 1, name="Dora Ek"))

    assert [r.status.value for r in response.results] == ["applied"]
    (customer_id,) = fetch(shop, "SELECT id FROM customers")[0]
    assert customer_id != 1
    assert xref(shop) == [("customer", "C-2", customer_id), ("customer", "C-old", 1)]


def xref_in(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT entity, entity_key ->> 'number' FROM cdc_bridge.entity_xref ORDER BY 1, 2"
    ).fetchall()


class _RolledBack(Exception):
    """Leaves the transaction by rolling it back."""
