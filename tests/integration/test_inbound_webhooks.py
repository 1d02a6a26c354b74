"""The peer application's own webhooks, sent to a real `serve` on 127.0.0.1, signed the
way a WooCommerce-style shop signs them (base64 HMAC-SHA256 of the raw body)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from cdc_bridge.config import BridgeConfig, parse_config
from tests.helpers import FIXTURES, SECRET
from tests.integration.inbound_support import Server, post_webhook, rows, running, snapshot

HOOK_SECRET = "shop-webhook-secret"
ROUTE = {
    "path": "/hooks/invoices",
    "table": "public.invoices",
    "signature": {"header": "X-WC-Webhook-Signature", "secret_env": "SHOP_HOOK_SECRET"},
    "delivery_id_header": "X-WC-Webhook-Delivery-ID",
    "op_header": "X-WC-Webhook-Topic",
    "delete_when": ["invoice.deleted"],
    "fields": {"id": "/id", "order_id": "/order/id", "amount": "/amount"},
}


def webhook_config(dsn: str) -> BridgeConfig:
    data = yaml.safe_load((FIXTURES / "erp.yaml").read_text())
    data["inbound"]["webhooks"] = [ROUTE]
    env = {"ERP_DATABASE_URL": dsn, "BRIDGE_SECRET": SECRET}
    return parse_config(yaml.safe_dump(data), "erp.yaml", env)


@pytest.fixture
def erp(db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("SHOP_HOOK_SECRET", HOOK_SECRET)
    with running(webhook_config(db)) as server:
        yield server


def send(
    server: Server,
    record: Any,
    topic: str = "invoice.updated",
    delivery: str | None = None,
    secret: str = HOOK_SECRET,
) -> httpx.Response:
    return post_webhook(
        server.url + ROUTE["path"],
        record,
        secret,
        **{"X-WC-Webhook-Topic": topic, "X-WC-Webhook-Delivery-ID": delivery or uuid.uuid4().hex},
    )


def invoices(server: Server) -> list[str]:
    return [r[0] for r in rows(server.dsn, "SELECT i::text FROM invoices i ORDER BY id")]


def test_created_updated_and_deleted_records_are_applied(erp: Server) -> None:
    created = send(erp, {"id": 1, "order": {"id": 7}, "amount": "42.10", "note": "ignored"})
    assert created.status_code == 200, created.text
    assert created.json() == {"status": "applied"}
    assert send(erp, {"id": 2, "order": {"id": 8}, "amount": "5.00"}).status_code == 200
    assert invoices(erp) == ["(1,7,42.10)", "(2,8,5.00)"]
    assert send(erp, {"id": 1, "order": {"id": 7}, "amount": "43.00"}).status_code == 200
    deleted = send(erp, {"id": 2}, topic="invoice.deleted")
    assert deleted.status_code == 200, deleted.text
    assert invoices(erp) == ["(1,7,43.00)"]


def test_a_replayed_webhook_is_a_duplicate(erp: Server) -> None:
    record = {"id": 1, "order": {"id": 7}, "amount": "42.10"}
    assert send(erp, record, delivery="d-1").json() == {"status": "applied"}
    assert send(erp, {**record, "amount": "99.99"}).status_code == 200
    replayed = send(erp, record, delivery="d-1")  # the application retries an old delivery
    assert replayed.status_code == 200 and replayed.json() == {"status": "duplicate"}
    assert invoices(erp) == ["(1,7,99.99)"]


def test_forged_or_unsigned_webhooks_get_401_and_change_nothing(erp: Server) -> None:
    before = snapshot(erp.dsn)
    forged = send(erp, {"id": 1, "order": {"id": 7}, "amount": "1.00"}, secret="guessed")
    assert forged.status_code == 401
    assert "does not match" in forged.json()["error"]
    unsigned = httpx.post(erp.url + ROUTE["path"], content=b'{"id": 1}', timeout=30)
    assert unsigned.status_code == 401
    assert snapshot(erp.dsn) == before


def test_a_webhook_without_its_key_or_not_json_gets_422_and_changes_nothing(
    erp: Server,
) -> None:
    before = snapshot(erp.dsn)
    no_key = send(erp, {"order": {"id": 7}, "amount": "1.00"})
    assert no_key.status_code == 422
    assert "id" in no_key.json()["error"]
    assert send(erp, ["not", "an", "object"]).status_code == 422
    assert snapshot(erp.dsn) == before


def test_a_change_the_database_refuses_gets_422_with_the_reason(erp: Server) -> None:
    refused = send(erp, {"id": 1, "order": {"id": 7}, "amount": "not a number"})
    assert refused.status_code == 422
    assert "public.invoices" in refused.json()["error"]
    assert "numeric" in refused.json()["error"]
    assert invoices(erp) == []
    # The next webhook is not blocked behind it.
    assert send(erp, {"id": 2, "order": {"id": 7}, "amount": "3.00"}).status_code == 200
    assert invoices(erp) == ["(2,7,3.00)"]
