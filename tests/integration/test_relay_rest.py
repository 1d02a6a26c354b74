"""The REST adapter against a real HTTP server: templates, renames, auth, failures."""

from __future__ import annotations

import logging

import psycopg
import pytest
import yaml

from cdc_bridge.config import parse_config
from tests.helpers import install
from tests.peer import PeerServer
from tests.relay_support import config_text, running_relay, wait_drained, wait_until

PRODUCTS_REST = {
    "insert": "PUT /api/products/{sku}",
    "update": "PATCH /api/products/{sku}",
    "delete": "DELETE /api/products/{sku}",
    "rename": {"name": "title"},
}


def rest_config_text(dsn: str, peer_url: str) -> str:
    data = yaml.safe_load(
        config_text(dsn, peer_url, peer={"adapter": "rest", "auth_env": "SHOP_TOKEN"})
    )
    data["peer"]["auth_header"] = "X-Shop-Token"
    data["tables"]["public.products"]["rest"] = PRODUCTS_REST
    # The rest adapter needs a mapping for every table this side ships: keep only products
    # (and invoices, which this side only receives).
    for label in ("public.customers", "public.orders", "public.accounts"):
        del data["tables"][label]
    return yaml.safe_dump(data)


def test_rest_requests_follow_the_mapping_in_order_per_key(
    db: str, peer: PeerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "tok-123")
    config = parse_config(rest_config_text(db, peer.url), "t.yaml", {})
    install(config)
    peer.state.rest_status["/api/products/BAD"] = 422
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO products VALUES ('A/1', 'Pen', 1.5, 'd', 3)")
        conn.execute("UPDATE products SET price = 2 WHERE sku = 'A/1'")
        conn.execute("INSERT INTO products VALUES ('BAD', 'No', 1, 'd', 1)")
        conn.execute("UPDATE products SET price = 3 WHERE sku = 'BAD'")
        conn.execute("DELETE FROM products WHERE sku = 'A/1'")
    with running_relay(config):
        wait_until(lambda: _outbox_ids(db) == 1, what="all but the parked change")
    calls = [(c.method, c.path, c.body) for c in peer.state.rest_calls]
    good = [c for c in calls if "A%2F1" in c[1]]
    assert good == [
        ("PUT", "/api/products/A%2F1", {"sku": "A/1", "title": "Pen", "price": 1.5}),
        ("PATCH", "/api/products/A%2F1", {"sku": "A/1", "title": "Pen", "price": 2}),
        ("DELETE", "/api/products/A%2F1", None),
    ]
    # The refused product was tried once; its update waits behind the failed insert.
    assert [c[:2] for c in calls if "BAD" in c[1]] == [("PUT", "/api/products/BAD")]
    assert {c.headers.get("X-Shop-Token") for c in peer.state.rest_calls} == {"tok-123"}
    with psycopg.connect(db) as conn:
        failed = conn.execute("SELECT key, http_status, reason FROM cdc_bridge.failed").fetchall()
    assert failed == [({"sku": "BAD"}, 422, "HTTP 422: {}")]


def test_rest_5xx_is_retried_until_it_succeeds(
    db: str, peer: PeerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "tok")
    config = parse_config(rest_config_text(db, peer.url), "t.yaml", {})
    install(config)
    peer.state.rest_status["/api/products/"] = 503
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO products VALUES ('P', 'Pen', 1.5, 'd', 3)")
    with running_relay(config):
        wait_until(lambda: len(peer.state.rest_calls) >= 3, what="retries")
        peer.state.rest_status.clear()
        wait_drained(db)
    assert {(c.method, c.path) for c in peer.state.rest_calls} == {("PUT", "/api/products/P")}
    with psycopg.connect(db) as conn:
        statuses = [
            r[0]
            for r in conn.execute(
                "SELECT http_status FROM cdc_bridge.attempts ORDER BY attempted_at"
            )
        ]
    assert statuses[0] == 503 and statuses[-1] == 200


def _outbox_ids(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM cdc_bridge.outbox").fetchone()
    assert row is not None
    return int(row[0])


def test_rest_403_is_logged_with_the_peer_s_answer(
    db: str, peer: PeerServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "tok-not-for-logs")
    config = parse_config(rest_config_text(db, peer.url), "t.yaml", {})
    install(config)
    peer.state.rest_status["/api/products/"] = 403
    caplog.set_level(logging.INFO, logger="cdc_bridge")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO products VALUES ('P1', 'Pen', 1.5, 'd', 3)")
    with running_relay(config):
        wait_until(lambda: _outbox_ids(db) == 0, what="the refused change to leave")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "public.products" in warnings[0] and ": HTTP 403: {}; its key is parked" in warnings[0]
    assert all("tok-not-for-logs" not in r.getMessage() for r in caplog.records)
