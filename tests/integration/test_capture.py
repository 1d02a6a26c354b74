"""Capture triggers against a real PostgreSQL: exactly the expected outbox rows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from cdc_bridge.capture.function import legacy_capture_function_names, wire_function_name
from cdc_bridge.config import BridgeConfig, parse_config
from cdc_bridge.peer.codec import use_exact_json
from tests.helpers import (
    FIXTURES,
    SECRET,
    example_config,
    fetch,
    install,
    listen_as_relay,
    notifications_sent,
)

OUTBOX = (
    "SELECT table_name, op, key, fields, old, changed, origin, txid::text "
    "FROM cdc_bridge.outbox ORDER BY id"
)


@pytest.fixture
def conn(db: str) -> Any:
    install(example_config(db))
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection


def outbox(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(OUTBOX).fetchall()


def test_whole_row_table_captures_insert_update_delete_in_one_txid(conn: Any) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', 'a@x', NULL)")
        conn.execute("UPDATE customers SET name = 'Ann B' WHERE id = 1")
        conn.execute("DELETE FROM customers WHERE id = 1")
        txid = conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
    rows = outbox(conn)
    assert rows == [
        (
            "public.customers",
            "I",
            {"id": 1},
            {"id": 1, "name": "Ann", "email": "a@x", "tier": None},
            None,
            None,
            "erp",
            txid,
        ),
        (
            "public.customers",
            "U",
            {"id": 1},
            {"id": 1, "name": "Ann B", "email": "a@x", "tier": None},
            None,
            None,  # whole rows ship whatever changed: no list of changed columns
            "erp",
            txid,
        ),
        ("public.customers", "D", {"id": 1}, None, None, None, "erp", txid),
    ]


def test_per_field_table_ships_only_owned_fields(conn: Any) -> None:
    conn.execute("INSERT INTO products VALUES ('P1', 'Pen', 1.50, NULL, 3)")
    conn.execute("UPDATE products SET price = 2 WHERE sku = 'P1'")
    rows = [r[:6] for r in outbox(conn)]
    assert rows == [
        (
            "public.products",
            "I",
            {"sku": "P1"},
            {"sku": "P1", "name": "Pen", "price": 1.5},
            None,
            None,
        ),
        (
            "public.products",
            "U",
            {"sku": "P1"},
            {"sku": "P1", "name": "Pen", "price": 2},
            None,
            ["price"],
        ),
    ]


def test_both_fields_ship_with_old_values_only_when_changed(conn: Any) -> None:
    conn.execute("INSERT INTO accounts VALUES (1, 'Acme', 'Main st', 100, 'active', NULL)")
    conn.execute("UPDATE accounts SET company_name = 'Acme Inc', credit_limit = 200 WHERE id = 1")
    rows = [r[1:6] for r in outbox(conn)]
    assert rows[1] == (
        "U",
        {"id": 1},
        {"id": 1, "company_name": "Acme Inc", "credit_limit": 200},
        {"company_name": "Acme"},
        ["company_name", "credit_limit"],
    )


def test_no_op_and_unsynced_updates_and_filtered_rows_produce_nothing(conn: Any) -> None:
    conn.execute("INSERT INTO products VALUES ('P1', 'Pen', 1.50, NULL, 3)")
    conn.execute("INSERT INTO accounts VALUES (2, 'Draft', NULL, NULL, 'draft', NULL)")
    before = len(outbox(conn))
    conn.execute("UPDATE products SET name = name WHERE sku = 'P1'")  # no-op
    conn.execute("UPDATE products SET stock = 9 WHERE sku = 'P1'")  # unsynced field
    conn.execute("UPDATE accounts SET notes = 'x' WHERE id = 2")  # outside `where`
    assert before == 1
    assert len(outbox(conn)) == 1


def test_rows_entering_and_leaving_the_filter(conn: Any) -> None:
    conn.execute("INSERT INTO accounts VALUES (2, 'Draft', NULL, NULL, 'draft', NULL)")
    conn.execute("UPDATE accounts SET status = 'active' WHERE id = 2")
    conn.execute("UPDATE accounts SET status = 'draft' WHERE id = 2")
    assert [r[1] for r in outbox(conn)] == ["I", "D"]


def test_peer_owned_field_refused_locally_and_accepted_from_the_bridge(conn: Any) -> None:
    conn.execute("INSERT INTO products VALUES ('P1', 'Pen', 1.50, NULL, 3)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        conn.execute("UPDATE products SET description = 'blue' WHERE sku = 'P1'")
    message = str(refused.value)
    assert "public.products.description" in message and "owned by shop" in message
    with conn.transaction():
        conn.execute("SET LOCAL cdc_bridge.origin = 'shop'")
        conn.execute("UPDATE products SET description = 'blue' WHERE sku = 'P1'")
    assert conn.execute("SELECT description FROM products").fetchone() == ("blue",)


def test_peer_table_refuses_local_writes_and_marks_the_bridges(conn: Any) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="owned by shop"):
        conn.execute("INSERT INTO invoices VALUES (1, 10, 5)")
    with conn.transaction():
        conn.execute("SET LOCAL cdc_bridge.origin = 'shop'")
        conn.execute("INSERT INTO invoices VALUES (1, 10, 5)")
    assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (1,)


def test_change_applied_for_the_peer_is_marked_with_its_origin(conn: Any) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL cdc_bridge.origin = 'shop'")
        conn.execute("INSERT INTO accounts VALUES (1, 'Acme', NULL, NULL, 'active', NULL)")
    assert [r[6] for r in outbox(conn)] == ["shop"]


def test_handed_off_row_is_refused_locally(conn: Any) -> None:
    conn.execute("INSERT INTO orders VALUES (10, 1, 5.5)")
    conn.execute("UPDATE orders SET total = 6 WHERE id = 10")  # still ours: allowed
    conn.execute(
        "INSERT INTO cdc_bridge.handoffs (table_name, key) VALUES ('public.orders', '{\"id\": 10}')"
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="handed off to shop"):
        conn.execute("UPDATE orders SET total = 7 WHERE id = 10")


def test_key_change_ships_delete_then_insert(conn: Any) -> None:
    conn.execute("INSERT INTO customers VALUES (1, 'Ann', NULL, NULL)")
    conn.execute("UPDATE customers SET id = 2 WHERE id = 1")
    assert [(r[1], r[2]) for r in outbox(conn)] == [
        ("I", {"id": 1}),
        ("D", {"id": 1}),
        ("I", {"id": 2}),
    ]


def test_truncate_of_a_synced_table_is_refused(conn: Any) -> None:
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="TRUNCATE"):
        conn.execute("TRUNCATE customers")


def test_truncate_is_refused_at_the_receiver_on_every_synced_table(db: str) -> None:
    """The shop receives customers (`sor: peer`) and fields of products and accounts, and
    ships orders and invoices: none of them can be emptied behind the bridge's back."""
    config = example_config(db, "shop.yaml")
    install(config)
    assert "public.customers" in {s.label for s in config.table_specs if not s.captures}
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET cdc_bridge.origin = 'erp'")  # even as the bridge applies the peer's
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', NULL, NULL)")
        for spec in config.table_specs:
            with pytest.raises(psycopg.errors.FeatureNotSupported, match="TRUNCATE"):
                conn.execute(sql.SQL("TRUNCATE {}").format(spec.name.identifier))
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (1,)


def test_handoff_table_ships_whole_rows_until_handed_off(conn: Any) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO orders VALUES (10, 1, 5.5)")
        conn.execute("UPDATE orders SET status = 'paid' WHERE id = 10")
        txid = conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
    conn.execute("DELETE FROM orders WHERE id = 10")
    order = {"id": 10, "customer_id": 1, "total": 5.5}
    assert [r[:7] for r in outbox(conn)] == [
        ("public.orders", "I", {"id": 10}, {**order, "status": "new"}, None, None, "erp"),
        ("public.orders", "U", {"id": 10}, {**order, "status": "paid"}, None, None, "erp"),
        ("public.orders", "D", {"id": 10}, None, None, None, "erp"),
    ]
    rows = outbox(conn)
    assert rows[0][7] == rows[1][7] == txid != rows[2][7]


def test_handed_off_row_accepts_the_bridges_write_and_marks_it(conn: Any) -> None:
    conn.execute("INSERT INTO orders VALUES (10, 1, 5.5)")
    conn.execute(
        "INSERT INTO cdc_bridge.handoffs (table_name, key) VALUES ('public.orders', '{\"id\": 10}')"
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="handed off to shop"):
        conn.execute("DELETE FROM orders WHERE id = 10")
    with conn.transaction():
        conn.execute("SET LOCAL cdc_bridge.origin = 'shop'")
        conn.execute("UPDATE orders SET status = 'shipped' WHERE id = 10")
    assert [(r[1], r[6]) for r in outbox(conn)] == [("I", "erp"), ("U", "shop")]


def test_peer_table_refuses_local_update_and_delete_and_captures_nothing(conn: Any) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL cdc_bridge.origin = 'shop'")
        conn.execute("INSERT INTO invoices VALUES (1, 10, 5)")
    for statement in ("UPDATE invoices SET amount = 6", "DELETE FROM invoices"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"local .* refused"):
            conn.execute(statement)
    with conn.transaction():
        conn.execute("SET LOCAL cdc_bridge.origin = 'shop'")
        conn.execute("UPDATE invoices SET amount = 6")
        conn.execute("DELETE FROM invoices")
    assert outbox(conn) == []


def test_per_field_table_delete_ships_the_key_only(conn: Any) -> None:
    conn.execute("INSERT INTO products VALUES ('P1', 'Pen', 1.50, NULL, 3)")
    conn.execute("DELETE FROM products WHERE sku = 'P1'")
    assert [r[1:6] for r in outbox(conn)][1] == ("D", {"sku": "P1"}, None, None, None)


def test_filtered_table_deletes_only_rows_inside_the_filter(conn: Any) -> None:
    conn.execute("INSERT INTO accounts VALUES (1, 'Acme', NULL, NULL, 'active', NULL)")
    conn.execute("INSERT INTO accounts VALUES (2, 'Draft', NULL, NULL, 'draft', NULL)")
    conn.execute("DELETE FROM accounts")
    assert [(r[1], r[2]) for r in outbox(conn)] == [("I", {"id": 1}), ("D", {"id": 1})]


def test_both_field_change_from_the_peer_keeps_old_values(conn: Any) -> None:
    conn.execute("INSERT INTO accounts VALUES (1, 'Acme', 'Main st', 100, 'active', NULL)")
    with conn.transaction():
        conn.execute("SET LOCAL cdc_bridge.origin = 'shop'")
        conn.execute("UPDATE accounts SET address = 'High st' WHERE id = 1")
    assert outbox(conn)[1][1:7] == (
        "U",
        {"id": 1},
        {"id": 1, "address": "High st", "credit_limit": 100},
        {"address": "Main st"},
        ["address"],
        "shop",
    )


def test_one_transaction_over_several_tables_shares_a_txid(conn: Any) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', NULL, NULL)")
        conn.execute("INSERT INTO orders VALUES (10, 1, 5.5)")
        conn.execute("INSERT INTO products VALUES ('P1', 'Pen', 1.50, NULL, 3)")
    txids = {r[7] for r in outbox(conn)}
    assert len(outbox(conn)) == 3 and len(txids) == 1


def test_one_notification_per_table_and_transaction(db: str) -> None:
    install(example_config(db))
    with psycopg.connect(db, autocommit=True) as listener, psycopg.connect(db) as writer:
        listen_as_relay(listener)
        with writer.transaction():
            for i in range(5):
                writer.execute("INSERT INTO customers VALUES (%s, 'x', NULL, NULL)", (i,))
            writer.execute("UPDATE customers SET name = 'y'")
            writer.execute("INSERT INTO orders VALUES (1, 1, 1)")
        writer.commit()
        received = notifications_sent(listener, db)
    assert sorted(received) == ["public.customers", "public.orders"]


def test_notification_only_while_a_relay_holds_the_listening_key(db: str) -> None:
    install(example_config(db))
    with psycopg.connect(db, autocommit=True) as listener, psycopg.connect(db) as writer:
        listener.execute('LISTEN "cdc_bridge"')  # listening alone is not enough
        with writer.transaction():
            writer.execute("INSERT INTO customers VALUES (1, 'x', NULL, NULL)")
        writer.commit()
        quiet = notifications_sent(listener, db)
        listen_as_relay(listener)
        with writer.transaction():
            writer.execute("INSERT INTO customers VALUES (2, 'x', NULL, NULL)")
        writer.commit()
        woken = notifications_sent(listener, db)
    assert quiet == []
    assert woken == ["public.customers"]
    assert [r[0] for r in fetch(db, "SELECT key FROM cdc_bridge.outbox ORDER BY id")] == [
        {"id": 1},
        {"id": 2},
    ]


def test_install_over_an_earlier_install_leaves_no_old_capture_behind(db: str) -> None:
    config = example_config(db)
    customers = config.table("public.customers")
    legacy = legacy_capture_function_names(customers)
    install(config)
    with psycopg.connect(db, autocommit=True) as conn:
        # What earlier versions left: their capture functions, one still called by a row
        # trigger this config does not create (customers has no `where` filter).
        for name in legacy:
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS "
                    "'BEGIN RETURN NULL; END'"
                ).format(fn=sql.Identifier("cdc_bridge", name))
            )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER cdc_bridge_capture_leave AFTER UPDATE ON customers "
                "FOR EACH ROW EXECUTE FUNCTION {fn}()"
            ).format(fn=sql.Identifier("cdc_bridge", legacy[-1]))
        )
        install(config)
        triggers = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'customers'::regclass "
            "AND tgname LIKE 'cdc_bridge_capture%' ORDER BY tgname"
        ).fetchall()
        assert [t[0] for t in triggers] == [
            "cdc_bridge_capture_del",
            "cdc_bridge_capture_ins",
            "cdc_bridge_capture_upd",
        ]
        for name in legacy:
            found = conn.execute("SELECT to_regproc(%s)", (f"cdc_bridge.{name}",)).fetchone()
            assert found == (None,), name
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', NULL, NULL)")
        conn.execute("UPDATE customers SET name = 'Bo' WHERE id = 1")
        assert [(r[1], r[3]) for r in outbox(conn)] == [
            ("I", {"id": 1, "name": "Ann", "email": None, "tier": None}),
            ("U", {"id": 1, "name": "Bo", "email": None, "tier": None}),
        ]


def test_install_over_an_install_with_a_notify_trigger_retires_it(db: str) -> None:
    # Earlier versions woke the relay from a trigger of their own on every table, calling
    # notify_v2, and kept a CHECK on the outbox's op; capture now does both jobs itself.
    config = example_config(db)
    install(config)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION cdc_bridge.notify_v2() RETURNS trigger LANGUAGE plpgsql AS "
            "'BEGIN PERFORM pg_notify(TG_ARGV[0], TG_ARGV[1]); RETURN NULL; END'"
        )
        for table in ("customers", "orders"):
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER cdc_bridge_notify AFTER INSERT OR UPDATE OR DELETE ON {} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION cdc_bridge.notify_v2('x', 'y')"
                ).format(sql.Identifier(table))
            )
        conn.execute(
            "ALTER TABLE cdc_bridge.outbox ADD CONSTRAINT outbox_op_check "
            "CHECK (op IN ('I', 'U', 'D'))"
        )
        install(config)
        left = conn.execute(
            "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = 'cdc_bridge_notify' "
            "UNION ALL SELECT 'function' WHERE to_regproc('cdc_bridge.notify_v2') IS NOT NULL "
            "UNION ALL SELECT conname FROM pg_constraint "
            "WHERE conrelid = 'cdc_bridge.outbox'::regclass AND contype = 'c'"
        ).fetchall()
        assert left == []
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', NULL, NULL)")
        assert [(r[1], r[3]) for r in outbox(conn)] == [
            ("I", {"id": 1, "name": "Ann", "email": None, "tier": None}),
        ]


def test_updates_are_seen_by_stored_value_for_every_type(conn: Any) -> None:
    # json has no `=`: comparing with IS DISTINCT FROM made every such UPDATE fail. And
    # 1.0 -> 1.00 is equal by `=` yet shows in row::text: it must ship.
    conn.execute("ALTER TABLE customers ADD COLUMN score numeric, ADD COLUMN prefs json")
    conn.execute("""INSERT INTO customers VALUES (1, 'Ann', NULL, NULL, 1.0, '{"a": 1}')""")
    conn.execute("""UPDATE customers SET prefs = '{"a": 2}' WHERE id = 1""")
    conn.execute("UPDATE customers SET score = 1.00 WHERE id = 1")
    conn.execute("UPDATE customers SET score = 1.00, prefs = prefs WHERE id = 1")  # no change
    rows = conn.execute(
        "SELECT op, fields->>'score', fields->>'prefs', changed FROM cdc_bridge.outbox ORDER BY id"
    ).fetchall()
    assert rows == [
        ("I", "1.0", '{"a": 1}', None),
        ("U", "1.0", '{"a": 2}', None),  # whole rows: no list of changed columns
        ("U", "1.00", '{"a": 2}', None),  # jsonb calls 1.0 and 1.00 equal; the row still ships
    ]


# ------------------------------------------------------------------ wire functions

ODD_DDL = """
CREATE DOMAIN public.temperature AS double precision;
CREATE TABLE public.odd (id int PRIMARY KEY, f8 float8, t public.temperature, f4 real,
                         js json, jb jsonb, ia int[], fa float8[], n numeric);
"""


def _with_odd(dsn: str) -> BridgeConfig:
    """The example config plus public.odd, a whole-row table of the types jsonb changes."""
    data = yaml.safe_load((FIXTURES / "erp.yaml").read_text())
    data["tables"]["public.odd"] = {"key": ["id"], "sor": "local"}
    env = {"ERP_DATABASE_URL": dsn, "BRIDGE_SECRET": SECRET}
    return parse_config(yaml.safe_dump(data), "erp.yaml", env)


def _through_wire(
    conn: Any, config: BridgeConfig, label: str, fields: str = "NULL::jsonb"
) -> tuple[list[Any], str]:
    """The table's rows through its wire function (whole rows, or the `fields` of `t`),
    and the plan of that query."""
    spec = next(s for s in config.table_specs if s.label == label)
    call = sql.SQL("SELECT {}(t.*, {}) FROM {} AS t ORDER BY id").format(
        sql.Identifier("cdc_bridge", wire_function_name(spec)),
        sql.SQL(fields),
        spec.name.identifier,
    )
    rows = [r[0] for r in conn.execute(call)]
    plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN VERBOSE ") + call))
    return rows, plan


def test_wire_function_is_to_jsonb_itself_for_a_table_without_such_types(db: str) -> None:
    config = example_config(db)
    install(config)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', 'a@x', NULL)")
        rows, plan = _through_wire(conn, config, "public.customers")
    assert rows == [{"id": 1, "name": "Ann", "email": "a@x", "tier": None}]
    # Inlined: the query computes to_jsonb once and nothing else (no call, no test, no
    # concatenation; COALESCE of one argument returns it).
    assert "Output: COALESCE(to_jsonb(t.*)), id" in plan and "wire_v1" not in plan, plan


def test_wire_function_gives_the_values_jsonb_changes_as_their_text(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as setup:
        setup.execute(ODD_DDL)
    config = _with_odd(db)
    install(config)
    with psycopg.connect(db, autocommit=True) as conn:
        use_exact_json(conn)  # 1.10 stays 1.10
        conn.execute(
            "INSERT INTO public.odd VALUES"
            " (1, '-0', '-0', '-0', '{\"b\": 1,  \"a\": 2, \"a\": 3}', 'null',"
            "  '[0:1]={1,2}', '{1.5}', -0.0),"
            " (2, 0, 1.5, 'NaN', '[1]', '\"x\"', '{1,2}', NULL, 1.10),"
            " (3, NULL, NULL, NULL, NULL, NULL, '{}', NULL, NULL)"
        )
        rows, _ = _through_wire(conn, config, "public.odd")
        captured = conn.execute(
            "SELECT fields FROM cdc_bridge.outbox WHERE table_name = 'public.odd' ORDER BY id"
        ).fetchall()
    assert rows == [
        {
            **{"id": 1, "f8": "-0", "t": "-0", "f4": "-0", "jb": "null"},
            **{"js": '{"b": 1,  "a": 2, "a": 3}', "ia": "[0:1]={1,2}", "fa": "{1.5}", "n": 0},
        },
        {
            **{"id": 2, "f8": 0, "t": Decimal("1.5"), "f4": "NaN", "jb": '"x"'},
            **{"js": "[1]", "ia": [1, 2], "fa": None, "n": Decimal("1.10")},
        },
        {
            **{"id": 3, "f8": None, "t": None, "f4": None, "jb": None},
            **{"js": None, "ia": [], "fa": None, "n": None},
        },
    ]
    assert [r[0] for r in captured] == rows  # capture writes the same
    # A subset of the fields: only the keys it holds are replaced.
    with psycopg.connect(db, autocommit=True) as conn:
        use_exact_json(conn)
        subset, _ = _through_wire(conn, config, "public.odd", "jsonb_build_object('id', t.id)")
        pairs, _ = _through_wire(conn, config, "public.odd", "jsonb_build_object('js', t.js)")
    assert subset == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert pairs == [{"js": '{"b": 1,  "a": 2, "a": 3}'}, {"js": "[1]"}, {"js": None}]
