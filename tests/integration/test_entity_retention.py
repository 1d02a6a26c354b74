"""The cross-reference of a table that generates its own keys grows with its records, not
with its changes: a record deleted here loses its row once no change of it is left to
ship, and a record that still has a change to ship keeps it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from cdc_bridge.config import BridgeConfig
from cdc_bridge.entity.outbound import Outbound
from cdc_bridge.inbound.apply import Applier
from cdc_bridge.outbox import OutboxRow
from cdc_bridge.peer.protocol import Batch, Change, Op
from cdc_bridge.retention import prune, targets
from tests.acceptance.unlike_pair import create_unlike_database, unlike_config
from tests.helpers import install
from tests.pg import TestServer

PORTS = {"erp": (1, 2), "shop": (3, 4)}


def customer(key: str, op: Op, n: int) -> Change:
    return Change(
        idempotency_key=f"erp:{n}:{n}",
        txid=str(n),
        entity="customer",
        op=op,
        key={"number": key},
        fields=None if op is Op.DELETE else {"number": key, "name": f"Customer {key}"},
        committed_at=datetime.now(UTC),
        origin="erp",
    )


def xref_numbers(dsn: str, entity: str) -> list[Any]:
    with psycopg.connect(dsn) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT entity_key ->> 'number' FROM cdc_bridge.entity_xref WHERE entity = %s "
                "ORDER BY 1",
                (entity,),
            )
        ]


def test_xref_rows_of_records_gone_are_pruned_once_nothing_ships_them(
    pg_server: TestServer,
) -> None:
    name = pg_server.new_name("shop")
    dsn = create_unlike_database(pg_server, name, "shop")
    try:
        _, config = unlike_config("shop", dsn, PORTS)
        config = config.model_copy(
            update={"relay": config.relay.model_copy(update={"delivered_retention_days": 0})}
        )
        install(config)
        applier = Applier(config)
        changes = [customer(k, Op.INSERT, i) for i, k in enumerate(["C-1", "C-2", "C-3"], 1)]
        with psycopg.connect(dsn) as conn:
            applier.apply(conn, Batch(source="erp", batch_id="b1", changes=changes))
            applier.apply(
                conn,
                Batch(source="erp", batch_id="b2", changes=[customer("C-2", Op.DELETE, 4)]),
            )
        # An order born here, deleted before it shipped: its minted key is still needed
        # to ship the delete.
        with psycopg.connect(dsn, autocommit=True) as conn:
            c1 = conn.execute(
                "SELECT c.id FROM customers c JOIN cdc_bridge.entity_xref x "
                "ON x.local_key = jsonb_build_object('id', c.id) "
                "WHERE x.entity_key ->> 'number' = 'C-1'"
            ).fetchone()[0]  # type: ignore[index]
            order = conn.execute(
                "INSERT INTO orders (customer_id, total) VALUES (%s, 1) RETURNING id", (c1,)
            ).fetchone()[0]  # type: ignore[index]
            mint(conn, config, order)
            conn.execute("DELETE FROM orders WHERE id = %s", (order,))
        assert xref_numbers(dsn, "customer") == ["C-1", "C-2", "C-3"]
        assert xref_numbers(dsn, "order") == [f"shop-{order}"]

        with psycopg.connect(dsn, autocommit=True) as conn:
            pruned = prune(conn, config.bridge_schema, targets(config))
        assert pruned["entity_xref"] == 1
        assert xref_numbers(dsn, "customer") == ["C-1", "C-3"]  # C-2 is gone here
        assert xref_numbers(dsn, "order") == [f"shop-{order}"]  # its delete is still to ship
    finally:
        pg_server.drop_database(name)


def mint(conn: psycopg.Connection[Any], config: BridgeConfig, order: int) -> None:
    """What the relay does when it first ships the order: mint and record its key."""
    row = OutboxRow(
        1, "1", "public.orders", "I", {"id": order}, "", {"id": order}, None, None, "shop",
        datetime.now(UTC),
    )
    Outbound(config).prepare_sync(conn, [row])
