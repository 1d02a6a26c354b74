"""The relay ships whole source transactions: one larger than a batch goes whole, one over
`relay.max_transaction_changes` goes in parts in order, a batch the peer keeps failing
with 500 is split until the transaction at fault is alone, and a new leader closes the
batches an earlier one left unfinished."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.helpers import fetch, install
from tests.peer import PeerServer
from tests.relay_support import (
    customer_record,
    relay_config,
    running_relay,
    wait_drained,
    wait_until,
)


def write(dsn: str, statements: list[str], *params: Any) -> None:
    """The statements in one transaction."""
    with psycopg.connect(dsn) as conn:
        for statement in statements:
            conn.execute(statement.encode(), params or None)


def batches_of_txn(dsn: str, first_key: int, last_key: int) -> list[int]:
    """Sizes of the batches that carried the changes of customers first..last_key."""
    rows = fetch(
        dsn,
        "SELECT count(*) FROM cdc_bridge.delivered WHERE table_name = 'public.customers' "
        "AND (key->>'id')::int BETWEEN %s AND %s GROUP BY batch_id ORDER BY min(id)",
        first_key,
        last_key,
    )
    return [r[0] for r in rows]


def test_a_transaction_ships_whole_past_the_batch_size_and_in_parts_past_the_limit(
    db: str, peer: PeerServer
) -> None:
    config = relay_config(db, peer.url, batch_size=20, max_transaction_changes=50)
    install(config)
    insert = "INSERT INTO customers VALUES (%s, 'v0', NULL, NULL)"
    with running_relay(config):
        write(db, ["INSERT INTO customers SELECT n, 'v0' FROM generate_series(1, 30) n"])
        write(db, ["INSERT INTO customers SELECT n, 'v0' FROM generate_series(101, 220) n"])
        write(db, ["UPDATE customers SET name = 'v1' WHERE id > 100"])
        write(db, [insert], 999)
        wait_drained(db)
    assert batches_of_txn(db, 1, 30) == [30]  # 30 > batch_size 20: still one batch
    parts = batches_of_txn(db, 101, 220)
    # 240 changes of two transactions over the limit of 50: parts of at most 50, in order.
    assert sum(parts) == 240 and max(parts) <= 50 and len(parts) >= 5
    applied = peer.applied_names()
    assert all(applied[customer_record(k)] == ["v0", "v1"] for k in range(101, 221))
    assert applied[customer_record(999)] == ["v0"]


def test_a_change_the_peer_keeps_failing_with_500_parks_alone(db: str, peer: PeerServer) -> None:
    config = relay_config(db, peer.url, batch_size=100, concurrency=2)
    install(config)
    peer.state.crash_records.add(customer_record(77))
    with running_relay(config):
        with psycopg.connect(db, autocommit=True) as conn:
            for key in range(1, 301):
                conn.execute("INSERT INTO customers VALUES (%s, 'v0', NULL, NULL)", (key,))
        wait_until(
            lambda: (
                fetch(db, "SELECT count(*) FROM cdc_bridge.failed")[0][0] == 1
                and fetch(db, "SELECT count(*) FROM cdc_bridge.outbox")[0][0] == 0
            ),
            what="all but the crashing change delivered",
        )
    applied = peer.applied_names()
    assert set(applied) == {customer_record(k) for k in range(1, 301) if k != 77}
    failed = fetch(db, "SELECT key->>'id', http_status, reason FROM cdc_bridge.failed")
    assert failed[0][:2] == ("77", 500)
    assert "HTTP 500" in failed[0][2]
    statuses = dict(fetch(db, "SELECT status, count(*) FROM cdc_bridge.batches GROUP BY 1"))
    assert statuses["split"] >= 1 and "pending" not in statuses


def test_a_peer_failing_everything_with_500_blames_no_change(db: str, peer: PeerServer) -> None:
    config = relay_config(db, peer.url, batch_size=10)
    install(config)
    peer.set_mode("error500")
    with running_relay(config):
        write(db, ["INSERT INTO customers SELECT n, 'v0' FROM generate_series(1, 40) n"])
        with psycopg.connect(db, autocommit=True) as conn:
            for key in range(41, 61):
                conn.execute("INSERT INTO customers VALUES (%s, 'v0', NULL, NULL)", (key,))
        wait_until(
            lambda: fetch(db, "SELECT count(*) FROM cdc_bridge.attempts")[0][0] >= 20,
            what="many answers of HTTP 500",
        )
        peer.set_mode("ok")
        wait_drained(db)
    assert fetch(db, "SELECT count(*) FROM cdc_bridge.failed") == [(0,)]
    assert set(peer.applied_names()) == {customer_record(k) for k in range(1, 61)}


def test_an_answer_to_a_batch_sent_before_an_outage_blames_no_change(
    db: str, peer: PeerServer
) -> None:
    # One batch is in the peer's hands (slow, then 200) when the peer starts failing
    # everything with 500. Its 200 arrives after another transaction first failed, but
    # it left before that failure: it shows nothing about the peer after the outage began,
    # so the other transaction, alone and failing, is retried and never failed.
    config = relay_config(db, peer.url, concurrency=2)
    install(config)
    peer.set_mode("slow", delay_s=1.5)
    with running_relay(config):
        write(db, ["INSERT INTO customers VALUES (1, 'v0', NULL, NULL)"])
        wait_until(lambda: peer.state.requests >= 1, what="the first batch at the peer")
        peer.set_mode("error500")
        write(db, ["INSERT INTO customers VALUES (2, 'v0', NULL, NULL)"])
        wait_until(lambda: peer.applied_count() == 1, what="the slow batch answered")
        answered_at = peer.state.requests
        wait_until(
            lambda: peer.state.requests >= answered_at + 2,
            what="the failing transaction sent twice more after the slow batch's 200",
        )
        peer.set_mode("ok")
        wait_drained(db)
    assert fetch(db, "SELECT count(*) FROM cdc_bridge.failed") == [(0,)]
    assert peer.applied_names() == {customer_record(1): ["v0"], customer_record(2): ["v0"]}


def test_a_new_leader_closes_unfinished_batches_as_abandoned(db: str, peer: PeerServer) -> None:
    config = relay_config(db, peer.url)
    install(config)
    peer.set_mode("error500")
    with running_relay(config):
        write(db, ["INSERT INTO customers VALUES (1, 'v0', NULL, NULL)"])
        wait_until(
            lambda: (
                fetch(db, "SELECT count(*) FROM cdc_bridge.batches WHERE status = 'pending'")[0][0]
                == 1
            ),
            what="a batch left pending by a retry",
        )
    unfinished = fetch(db, "SELECT batch_id FROM cdc_bridge.batches")
    peer.set_mode("ok")
    with running_relay(config):
        wait_drained(db)
    status = fetch(
        db, "SELECT status FROM cdc_bridge.batches WHERE batch_id = %s", unfinished[0][0]
    )
    assert status == [("abandoned",)]
    assert peer.applied_names() == {customer_record(1): ["v0"]}
