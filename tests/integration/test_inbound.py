"""`serve` over real HTTP against a real database: refusals, savepoints, idempotency, echo."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cdc_bridge.inbound.apply import SKIPPED_REASON, prune_applied_keys
from cdc_bridge.peer.protocol import READ_PATH, ReadRequest, ReadResponse, Signer, dumps
from tests.helpers import SECRET
from tests.integration.inbound_support import (
    Server,
    batch_body,
    change,
    load,
    rows,
    running,
    snapshot,
    statuses,
)
from tests.relay_support import wait_until

CUSTOMER = {"id": 1, "name": "Ann", "email": "ann@example.com", "tier": "gold"}


@pytest.fixture
def shop(db: str) -> Iterator[Server]:
    with running(load("shop.yaml", db)) as server:
        yield server


def good_body() -> bytes:
    return batch_body("erp", [change("public.customers", "insert", {"id": 1}, CUSTOMER)])


# ------------------------------------------------------------------ whole-batch refusals


def assert_refused(shop: Server, response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]
    assert rows(shop.dsn, "SELECT count(*) FROM customers") == [(0,)]
    assert rows(shop.dsn, "SELECT count(*) FROM cdc_bridge.applied_keys") == [(0,)]


def test_bad_signature_is_refused_with_401_and_nothing_applied(shop: Server) -> None:
    body = good_body()
    headers = Signer("another-secret").headers("m1", body)
    assert_refused(shop, shop.post(body, headers), 401, "no valid signature")


def test_missing_signature_is_refused_with_401(shop: Server) -> None:
    assert_refused(shop, shop.post(good_body(), {}), 401, "missing webhook-id")


def test_altered_body_is_refused_with_401(shop: Server) -> None:
    body = good_body()
    headers = Signer(SECRET).headers("m1", body)
    assert_refused(shop, shop.post(body.replace(b"Ann", b"Bob"), headers), 401, "no valid")


def test_stale_timestamp_is_refused_with_401(shop: Server) -> None:
    body = good_body()
    headers = Signer(SECRET).headers("m1", body, now=time.time() - 3600)
    assert_refused(shop, shop.post(body, headers), 401, "outside the 300s tolerance")


def test_body_over_the_declared_limit_is_refused_with_413(db: str) -> None:
    config = load(
        "shop.yaml",
        db,
        {
            'inbound: {listen: "127.0.0.1:8082"}': (
                'inbound: {listen: "127.0.0.1:8082", max_body_bytes: 2000}'
            )
        },
    )
    with running(config) as server:
        changes = [
            change("public.customers", "insert", {"id": i}, {**CUSTOMER, "id": i})
            for i in range(1, 40)
        ]
        body = batch_body("erp", changes)
        assert len(body) > 2000
        assert_refused(server, server.post(body), 413, "over the 2000-byte limit")

        # Without Content-Length (chunked), the streamed size is what counts.
        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 500):
                yield body[start : start + 500]

        headers = {**Signer(SECRET).headers("m2", body), "content-type": "application/json"}
        response = httpx.post(server.url + "/v1/batches", content=chunks(), headers=headers)
        assert "content-length" not in {k.lower() for k in response.request.headers}
        assert_refused(server, response, 413, "over the 2000-byte limit")


def test_batch_signed_under_another_id_is_refused_with_400(shop: Server) -> None:
    """The signature covers webhook-id and body, but they must also agree: a batch seen
    once cannot be resent under an id of someone else's choosing."""
    body = good_body()
    headers = Signer(SECRET).headers("not-the-batch-id", body)
    assert_refused(
        shop, shop.post(body, headers), 400, "webhook-id 'not-the-batch-id' differs from"
    )
    assert shop.post(body).status_code == 200  # the same body, signed under its own id


def test_malformed_json_is_refused_with_400(shop: Server) -> None:
    assert_refused(shop, shop.post(b'{"protocol": "cdc-bridge/1", '), 400, "not valid JSON")


def test_json_that_is_not_a_batch_is_refused_with_400(shop: Server) -> None:
    body = orjson.dumps({"protocol": "cdc-bridge/1", "source": "erp", "batch_id": "b"})
    assert_refused(shop, shop.post(body), 400, "not a valid Batch: changes: Field required")


def test_batch_from_another_source_is_refused_with_400(shop: Server) -> None:
    body = batch_body("crm", [change("public.customers", "insert", {"id": 1}, CUSTOMER)])
    assert_refused(shop, shop.post(body), 400, "source 'crm' is not this bridge's peer")


# ------------------------------------------------------------------ per-change refusals


def test_changes_the_config_does_not_allow_are_rejected_alone_and_never_reach_sql(
    shop: Server,
) -> None:
    response = shop.send(
        change("public.nowhere", "insert", {"id": 1}, {"id": 1}),
        change("public.customers", "insert", {"id": 1}, {**CUSTOMER, "secret_column": 1}),
        change("public.products", "update", {"sku": "P1"}, {"sku": "P1", "description": "x"}),
        change("public.invoices", "insert", {"id": 1}, {"id": 1, "amount": 5}),
        change("public.orders", "update", {"id": 1}, {"id": 1, "total": 5}),
        change("public.accounts", "delete", {"id": 1}),
        change("public.customers", "insert", {"id": 2}, {**CUSTOMER, "id": 2}),
    )
    reasons = [r.reason for r in response.results]
    assert statuses(response) == ["rejected"] * 6 + ["applied"]
    assert reasons[0] == "entity 'public.nowhere' is not configured on this side"
    assert reasons[1] == "fields ['secret_column'] of public.customers are not the peer's to change"
    assert reasons[2] == "fields ['description'] of public.products are not the peer's to change"
    assert reasons[3] == (
        "public.invoices is owned by this side (sor: local); the peer may not change it"
    )
    assert reasons[4] == (
        "public.orders is owned by this side (sor: handoff); the peer may not change it"
    )
    assert reasons[5] == "delete is not allowed on public.accounts: this side owns its rows' keys"
    assert rows(shop.dsn, "SELECT id FROM customers") == [(2,)]


def test_constraint_violation_rejects_only_that_change_with_the_database_message(
    shop: Server,
) -> None:
    response = shop.send(
        change("public.customers", "insert", {"id": 1}, CUSTOMER),
        change("public.customers", "insert", {"id": 2}, {**CUSTOMER, "id": 2, "name": None}),
        change("public.customers", "insert", {"id": 3}, {**CUSTOMER, "id": 3}),
        change("public.customers", "update", {"id": 2}, {**CUSTOMER, "id": 2, "name": "Late"}),
        change("public.customers", "update", {"id": 3}, {**CUSTOMER, "id": 3, "tier": "x"}),
    )
    assert statuses(response) == ["applied", "rejected", "applied", "skipped", "applied"]
    reason = response.results[1].reason or ""
    assert 'null value in column "name" of relation "customers"' in reason
    assert response.results[3].reason == SKIPPED_REASON
    assert rows(shop.dsn, "SELECT id, tier FROM customers ORDER BY id") == [
        (1, "gold"),
        (3, "x"),
    ]
    # The rejected and skipped keys stay unrecorded, so a fixed replay can apply them.
    recorded = rows(shop.dsn, "SELECT count(*) FROM cdc_bridge.applied_keys")
    assert recorded == [(3,)]


def test_replaying_a_batch_applies_nothing_new(shop: Server) -> None:
    changes = [
        change("public.customers", "insert", {"id": 1}, CUSTOMER),
        change("public.customers", "update", {"id": 1}, {**CUSTOMER, "tier": "silver"}),
    ]
    assert statuses(shop.send(*changes)) == ["applied", "applied"]
    with psycopg.connect(shop.dsn, autocommit=True) as conn:
        # Someone changes the row locally after the batch: a replay must not undo it.
        conn.execute("SET cdc_bridge.origin = 'erp'")
        conn.execute("UPDATE customers SET tier = 'bronze' WHERE id = 1")
    before = snapshot(shop.dsn)
    assert statuses(shop.send(*changes)) == ["duplicate", "duplicate"]
    assert snapshot(shop.dsn) == before


def test_same_idempotency_key_twice_in_one_batch_applies_once(shop: Server) -> None:
    first = change("public.customers", "insert", {"id": 1}, CUSTOMER)
    again = first.model_copy(update={"fields": {**CUSTOMER, "name": "Other"}})
    assert statuses(shop.send(first, again)) == ["applied", "duplicate"]
    assert rows(shop.dsn, "SELECT name FROM customers") == [("Ann",)]


def test_applied_changes_are_captured_as_the_peer_s_so_they_never_echo(shop: Server) -> None:
    shop.send(
        change("public.customers", "insert", {"id": 1}, CUSTOMER),
        change("public.products", "insert", {"sku": "P1"}, {"sku": "P1", "name": "Pen"}),
        change("public.accounts", "insert", {"id": 9}, {"id": 9, "company_name": "Acme"}),
    )
    outbox = rows(shop.dsn, "SELECT table_name, op, origin FROM cdc_bridge.outbox ORDER BY id")
    assert outbox == [("public.products", "I", "erp"), ("public.accounts", "I", "erp")]
    # customers is `peer` here: nothing is captured at all, and the guard let the write in.
    assert rows(shop.dsn, "SELECT name FROM customers") == [("Ann",)]


def test_prune_forgets_keys_older_than_the_retention(shop: Server) -> None:
    shop.send(change("public.customers", "insert", {"id": 1}, CUSTOMER, idempotency_key="old"))
    shop.send(change("public.customers", "insert", {"id": 2}, {**CUSTOMER, "id": 2}))
    with psycopg.connect(shop.dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE cdc_bridge.applied_keys SET applied_at = %s WHERE idempotency_key = 'old'",
            (datetime.now(UTC) - timedelta(days=8),),
        )
        assert prune_applied_keys(conn, shop.config) == 1
    assert len(rows(shop.dsn, "SELECT 1 FROM cdc_bridge.applied_keys")) == 1


# ------------------------------------------------------------------ read endpoint


def read(server: Server, table: str, after: dict[str, object] | None, limit: int) -> httpx.Response:
    body = dumps(ReadRequest(source="erp", entity=table, after=after, limit=limit))
    headers = {**Signer(SECRET).headers(uuid.uuid4().hex, body)}
    return httpx.post(server.url + READ_PATH, content=body, headers=headers, timeout=60)


def test_read_returns_key_ordered_pages_of_what_the_peer_owns(shop: Server) -> None:
    shop.send(
        *[
            change("public.products", "insert", {"sku": s}, {"sku": s, "name": s, "price": 1})
            for s in ("C", "A", "B")
        ]
    )
    with psycopg.connect(shop.dsn, autocommit=True) as conn:
        conn.execute("UPDATE products SET description = 'shop text', stock = 4")
    first = ReadResponse.model_validate_json(read(shop, "public.products", None, 2).content)
    assert first.more is True
    assert first.rows == [
        {"sku": "A", "name": "A", "price": 1.0},
        {"sku": "B", "name": "B", "price": 1.0},
    ]
    second = ReadResponse.model_validate_json(
        read(shop, "public.products", {"sku": "B"}, 2).content
    )
    assert (second.rows, second.more) == ([{"sku": "C", "name": "C", "price": 1.0}], False)


def test_read_after_a_column_was_dropped_at_the_receiver_needs_no_restart(
    shop: Server,
) -> None:
    assert statuses(shop.send(change("public.customers", "insert", {"id": 1}, CUSTOMER))) == [
        "applied"
    ]
    with psycopg.connect(shop.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE customers DROP COLUMN tier")
    response = read(shop, "public.customers", None, 10)
    assert response.status_code == 200, response.text
    without_tier = {k: v for k, v in CUSTOMER.items() if k != "tier"}
    assert ReadResponse.model_validate_json(response.content).rows == [without_tier]


def test_read_of_a_table_this_side_owns_is_refused(shop: Server) -> None:
    response = read(shop, "public.invoices", None, 10)
    assert response.status_code == 400
    assert response.json()["error"] == (
        "public.invoices holds nothing this side receives from the peer"
    )


def test_a_concurrent_batch_with_the_same_keys_waits_and_is_a_duplicate(shop: Server) -> None:
    first = change("public.customers", "insert", {"id": 1}, CUSTOMER, idempotency_key="k1")
    with psycopg.connect(shop.dsn) as other:
        # Another in-flight apply of the same change holds its idempotency key.
        other.execute("INSERT INTO cdc_bridge.applied_keys VALUES ('k1', now(), 'applied')")
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(shop.send, first)
            wait_until_blocked(shop.dsn)
            other.commit()
            response = pending.result(timeout=120)
    assert statuses(response) == ["duplicate"]
    assert rows(shop.dsn, "SELECT count(*) FROM customers") == [(0,)]


def wait_until_blocked(dsn: str) -> None:
    deadline = time.monotonic() + 60
    query = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while rows(dsn, query) != [(1,)]:
        assert time.monotonic() < deadline, "the second apply never waited"
        time.sleep(0.05)


def test_a_lock_timeout_answers_503_and_applies_nothing(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', NULL, NULL)")
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET lock_timeout = '300ms'").format(sql.Identifier(name[0]))
        )
    with running(load("shop.yaml", db)) as shop, psycopg.connect(shop.dsn) as locker:
        locker.execute("SELECT * FROM customers WHERE id = 1 FOR UPDATE")
        body = batch_body(
            "erp",
            [
                change("public.customers", "insert", {"id": 2}, {**CUSTOMER, "id": 2}),
                change("public.customers", "update", {"id": 1}, {**CUSTOMER, "tier": "x"}),
            ],
        )
        response = shop.post(body)
        locker.rollback()
    assert response.status_code == 503
    assert "nothing applied, retry later" in response.json()["error"]
    assert rows(db, "SELECT id, tier FROM customers") == [(1, None)]
    assert rows(db, "SELECT count(*) FROM cdc_bridge.applied_keys") == [(0,)]


def test_successive_changes_of_a_both_field_in_one_batch_are_no_conflict(shop: Server) -> None:
    shop.send(change("public.accounts", "insert", {"id": 1}, {"id": 1, "company_name": "A"}))
    response = shop.send(
        change(
            "public.accounts",
            "update",
            {"id": 1},
            {"id": 1, "company_name": "B"},
            old={"company_name": "A"},
        ),
        change(
            "public.accounts",
            "update",
            {"id": 1},
            {"id": 1, "company_name": "C"},
            old={"company_name": "B"},
        ),
    )
    assert statuses(response) == ["applied", "applied"]
    assert rows(shop.dsn, "SELECT company_name FROM accounts") == [("C",)]
    assert rows(shop.dsn, "SELECT count(*) FROM cdc_bridge.conflicts") == [(0,)]


def test_old_values_for_fields_not_owned_by_both_sides_are_rejected(shop: Server) -> None:
    response = shop.send(
        change(
            "public.accounts",
            "insert",
            {"id": 1},
            {"id": 1, "credit_limit": 5},
            old={"credit_limit": 1},
        ),
    )
    assert statuses(response) == ["rejected"]
    assert response.results[0].reason == (
        "old values ['credit_limit'] given for fields not owned by both sides"
    )


def test_healthz_answers_503_while_the_database_refuses_connections(shop: Server) -> None:
    health = httpx.get(shop.url + "/healthz", timeout=30)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    name = rows(shop.dsn, "SELECT current_database()")[0][0]
    database = sql.Identifier(name)
    with psycopg.connect(make_conninfo(shop.dsn, dbname="postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(database))
        try:
            admin.execute(
                # Waits (up to 10 s) until each session has ended.
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = 'cdc-bridge serve'",
                (name,),
            )
            health = httpx.get(shop.url + "/healthz", timeout=30)
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(database)
            )
    assert health.status_code == 503
    [problem] = health.json()["problems"]
    assert problem.startswith("database unreachable: ")
    # Connections are allowed again: healthy again, without a restart.
    wait_until(
        lambda: httpx.get(shop.url + "/healthz", timeout=30).status_code == 200,
        what="/healthz to recover",
    )
