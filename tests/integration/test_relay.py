"""The relay against a real PostgreSQL and a real HTTP peer on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.helpers import install
from tests.peer import PeerServer, Record, record_of
from tests.relay_support import relay_config, running_relay, wait_drained, wait_until


def captured(dsn: str) -> dict[Record, list[int]]:
    """Outbox ids per record, in id order (taken before the relay runs)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name, key, id FROM cdc_bridge.outbox WHERE origin = 'erp' ORDER BY id"
        ).fetchall()
    by_record: dict[Record, list[int]] = {}
    for table, key, outbox_id in rows:
        by_record.setdefault(record_of(table, key), []).append(outbox_id)
    return by_record


def write_sample_changes(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(1, 41):
            conn.execute("INSERT INTO customers VALUES (%s, %s, NULL, NULL)", (i, f"c{i}"))
        for i in range(1, 41, 3):
            conn.execute("UPDATE customers SET tier = 'gold' WHERE id = %s", (i,))
        conn.execute("DELETE FROM customers WHERE id = 2")
        conn.execute("INSERT INTO products VALUES ('P1', 'Pen', 1.5, 'blue', 3)")
        conn.execute("UPDATE products SET price = 2 WHERE sku = 'P1'")
        conn.execute("INSERT INTO orders (id, total) VALUES (7, 10)")
        with conn.transaction():
            conn.execute(
                "SELECT set_config('cdc_bridge.origin', 'shop', true)"
            )  # an echo: the bridge applying a change for the peer
            conn.execute("INSERT INTO customers VALUES (99, 'from shop', NULL, NULL)")


def test_delivers_every_change_once_in_commit_order_per_record(db: str, peer: PeerServer) -> None:
    config = relay_config(db, peer.url)
    install(config)
    write_sample_changes(db)
    expected = captured(db)
    with running_relay(config):
        wait_drained(db)
    assert peer.applied_ids() == expected
    assert peer.state.bad_signatures == 0
    with psycopg.connect(db) as conn:
        results = dict(
            conn.execute("SELECT result, count(*) FROM cdc_bridge.delivered GROUP BY 1").fetchall()
        )
        handoffs = conn.execute("SELECT table_name, key FROM cdc_bridge.handoffs").fetchall()
    assert results == {"applied": sum(len(v) for v in expected.values()), "filtered": 1}
    # The handoff table's row now belongs to the peer: recorded with the acknowledgement.
    assert handoffs == [("public.orders", {"id": 7})]


def test_ships_only_owned_fields_with_stable_idempotency_keys(db: str, peer: PeerServer) -> None:
    config = relay_config(db, peer.url)
    install(config)
    write_sample_changes(db)
    with psycopg.connect(db) as conn:
        first = conn.execute(
            "SELECT txid::text, id FROM cdc_bridge.outbox WHERE table_name = 'public.products' "
            "ORDER BY id LIMIT 1"
        ).fetchone()
    assert first is not None
    with running_relay(config):
        wait_drained(db)
    product = peer.state.applied[record_of("public.products", {"sku": "P1"})]
    assert product[0]["idempotency_key"] == f"erp:{first[0]}:{first[1]}"
    assert product[0]["fields"] == {"sku": "P1", "name": "Pen", "price": 1.5}
    assert [c["op"] for c in product] == ["insert", "update"]


def test_a_transaction_committed_late_is_delivered(db: str, peer: PeerServer) -> None:
    config = relay_config(db, peer.url)
    install(config)
    with psycopg.connect(db) as late, running_relay(config):
        late.execute("INSERT INTO customers VALUES (1, 'early id, late commit', NULL, NULL)")
        with psycopg.connect(db, autocommit=True) as conn:
            for i in range(2, 52):
                conn.execute("INSERT INTO customers VALUES (%s, 'x', NULL, NULL)", (i,))
        wait_until(lambda: peer.applied_count() == 50, what="the 50 later commits")
        late.commit()  # its outbox id is lower than all 50 already delivered
        wait_drained(db)
    applied = peer.applied_ids()
    late_ids = applied.pop(record_of("public.customers", {"id": 1}))
    assert len(applied) == 50
    assert late_ids[0] < min(ids[0] for ids in applied.values())


def test_rejected_record_is_parked_and_every_other_record_flows(db: str, peer: PeerServer) -> None:
    config = relay_config(db, peer.url)
    install(config)
    peer.state.rejected_records.add(record_of("public.customers", {"id": 4}))
    write_sample_changes(db)
    expected = captured(db)
    parked = record_of("public.customers", {"id": 4})
    with running_relay(config):
        total = sum(len(v) for v in expected.values())
        wait_until(lambda: peer.applied_count() == total - len(expected[parked]), what="others")
        # The refused record: its first change failed, its later one waits behind it.
        wait_until(lambda: _failed(db) == [(expected[parked][0], "this record is refused")])
    parked_ids = expected.pop(parked)
    assert peer.applied_ids() == expected
    with psycopg.connect(db) as conn:
        waiting = conn.execute("SELECT id FROM cdc_bridge.outbox").fetchall()
    assert [w[0] for w in waiting] == parked_ids[1:] and len(parked_ids) == 2


def _failed(dsn: str) -> list[Any]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, reason FROM cdc_bridge.failed ORDER BY id").fetchall()


def test_the_daemon_prunes_history_past_retention(db: str, peer: PeerServer) -> None:
    """Old delivered changes, applied keys and resolved conflicts go; recent and open stay."""
    config = relay_config(db, peer.url, retention_interval_s=0.2)
    install(config)
    _seed_history(db)
    with running_relay(config):
        wait_until(lambda: _history(db) == (1, 1, 2), what="the old history to be pruned")
    assert _fetch(db, "SELECT key->>'id' FROM cdc_bridge.delivered") == [("recent",)]
    assert _fetch(db, "SELECT idempotency_key FROM cdc_bridge.applied_keys") == [("shop:1:2",)]
    assert sorted(_fetch(db, "SELECT status, field FROM cdc_bridge.conflicts")) == [
        ("open", "old-open"), ("resolved", "recent")]


def _seed_history(dsn: str) -> None:
    """Rows older and newer than the 7-day retentions, written as the relay and serve do."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO cdc_bridge.delivered (id, txid, table_name, op, key, origin,"
            " captured_at, result, delivered_at) VALUES"
            " (1, '1', 'public.customers', 'I', '{\"id\": \"old\"}', 'erp', now(), 'applied',"
            "  now() - interval '8 days'),"
            " (2, '1', 'public.customers', 'I', '{\"id\": \"recent\"}', 'erp', now(),"
            "  'applied', now())"
        )
        conn.execute(
            "INSERT INTO cdc_bridge.applied_keys (idempotency_key, result, applied_at) VALUES"
            " ('shop:1:1', 'applied', now() - interval '8 days'),"
            " ('shop:1:2', 'applied', now())"
        )
        conn.execute(
            "INSERT INTO cdc_bridge.conflicts (table_name, key, field, policy, status,"
            " detected_at, resolved_at) VALUES"
            " ('public.customers', '{}', 'old', 'newer_wins', 'resolved',"
            "  now() - interval '9 days', now() - interval '8 days'),"
            " ('public.customers', '{}', 'recent', 'newer_wins', 'resolved', now(), now()),"
            " ('public.customers', '{}', 'old-open', 'manual', 'open',"
            "  now() - interval '9 days', NULL)"
        )


def _history(dsn: str) -> tuple[int, int, int]:
    row = _fetch(
        dsn,
        "SELECT (SELECT count(*) FROM cdc_bridge.delivered),"
        " (SELECT count(*) FROM cdc_bridge.applied_keys),"
        " (SELECT count(*) FROM cdc_bridge.conflicts)",
    )[0]
    return (int(row[0]), int(row[1]), int(row[2]))


def _fetch(dsn: str, query: str) -> list[Any]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()
