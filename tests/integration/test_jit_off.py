"""The relay's connections and `serve`'s batch transactions never JIT-compile a statement.

PostgreSQL compiles a statement whose estimated cost passes jit_above_cost; the relay's
read is costed over the whole outbox, and statements that only a sequential scan can run
are costed at enable_seqscan's penalty, so both were compiled at every run (the read's
compilation took 180 of its 200 ms). Here every cost passes the threshold
(jit_above_cost = 0): no plan may carry a JIT section. (On a server built without JIT
support no plan ever does.)
"""

from __future__ import annotations

from typing import Any

import psycopg

from cdc_bridge import outbox
from cdc_bridge.config import BridgeConfig
from cdc_bridge.sql import query
from tests.helpers import install
from tests.integration.inbound_support import load
from tests.relay_support import relay_config

SCHEMA = "cdc_bridge"


def plan(conn: psycopg.Connection[Any], statement: Any, params: Any = None) -> str:
    text = statement if isinstance(statement, bytes) else statement.as_bytes(conn)
    rows = conn.execute(b"EXPLAIN (VERBOSE) " + text, params).fetchall()
    return "\n".join(r[0] for r in rows)


def test_the_relays_read_and_rotation_are_not_compiled(db: str) -> None:
    config: BridgeConfig = relay_config(db, "http://127.0.0.1:9")
    install(config)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(query("relay_read_settings"))
        conn.execute("SET jit_above_cost = 0")
        read = outbox._fetch_query(SCHEMA, "{}")
        params = {"limit": 500, "in_flight": "{}", "system": config.system,
                  "whole_tables": outbox.text_array(["public.customers"]), "max_txn": 10_000}
        slot = outbox._slot(SCHEMA)
        statements: list[tuple[Any, Any]] = [
            (read, params),
            (query("relay_settled_below", schema=SCHEMA), None),
            (query("outbox_rotate_current", schema=SCHEMA, slot=slot,
                   outbox=psycopg.sql.Literal(f"{SCHEMA}.outbox")), None),
            (query("outbox_rotate_move", current=outbox._slot_table(SCHEMA, 0),
                   other=outbox._slot_table(SCHEMA, 1)), None),
            (query("outbox_rotate_log", schema=SCHEMA), None),
        ]
        for statement, values in statements:
            assert "JIT" not in plan(conn, statement, values)


def test_the_relays_recording_is_not_compiled(db: str) -> None:
    install(relay_config(db, "http://127.0.0.1:9"))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(query("relay_record_settings"))
        conn.execute("SET jit_above_cost = 0")
        recorded = outbox._record_query(SCHEMA)
        params = {"batch_id": "b1", "status": "delivered", "change_count": 1, "first_id": 1,
                  "last_id": 1, "http_status": 200, "error": None, "response_body": None,
                  "duration_ms": 1.0, "ids": "{1}", "results": '{"applied"}'}
        assert "JIT" not in plan(conn, recorded, params)


def test_a_batch_is_applied_without_compiling_its_statements(db: str) -> None:
    config = load("shop.yaml", db)
    install(config)
    with psycopg.connect(db) as conn:
        conn.execute(query("inbound_begin_apply"), {"origin": "erp"})
        conn.execute("SET LOCAL jit_above_cost = 0")
        spec = config.table("public.customers")
        assert spec is not None
        deleted = query("inbound_delete", table=spec.name.identifier,
                        match=psycopg.sql.SQL("t.id = k.id"))
        assert "JIT" not in plan(conn, deleted, {"rows": '[{"id": 1}]'})
        # The key lookups of a conflict check read the outbox, which has no index on the
        # key: a sequential scan, the most expensive plan there is with it disabled.
        latest = query("inbound_latest_local_change", schema=SCHEMA)
        assert "JIT" not in plan(conn, latest, {"table": "public.accounts", "key": '{"id": 1}',
                                               "origin": "shop", "field": "address"})
