"""An application peer's records refer to other records by the application's own ids.
Records this side created there are known by the ids learned from the API's answers, so
a webhook's reference arrives as this side's key; an id this side never learned is
refused, never stored dangling."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from cdc_bridge.config import BridgeConfig, parse_config
from tests.commerce_api import CommerceApi, Credential
from tests.integration.inbound_support import Server, post_webhook, running
from tests.integration.test_rest_created_ids import CATALOG_REST, TOKEN, xref
from tests.relay_support import config_text, running_relay, wait_drained

HOOK_SECRET = "shop-lines-secret"
LINES_DDL = """
CREATE TABLE public.order_lines (
    order_id bigint, line_no int, sku text NOT NULL REFERENCES products, qty int NOT NULL,
    PRIMARY KEY (order_id, line_no)
)
"""
ROUTE = {
    "path": "/hooks/lines",
    "table": "public.order_lines",
    "signature": {"header": "X-WC-Webhook-Signature", "secret_env": "SHOP_LINES_SECRET"},
    "delivery_id_header": "X-WC-Webhook-Delivery-ID",
    "fields": {"order": "/order_id", "line": "/line", "product": "/product_id", "qty": "/qty"},
}


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_TOKEN", TOKEN)
    monkeypatch.setenv("SHOP_LINES_SECRET", HOOK_SECRET)


def lines_config(dsn: str, api: CommerceApi) -> BridgeConfig:
    data = yaml.safe_load(config_text(dsn, api.url, peer={"adapter": "rest"}))
    data["peer"].pop("secret")
    data["peer"]["auth"] = {"kind": "bearer", "token_env": "CATALOG_TOKEN"}
    data["tables"] = {
        "public.products": {**data["tables"]["public.products"], "rest": CATALOG_REST},
        "public.order_lines": {
            "entity": "order_line",
            "key": ["order_id", "line_no"],
            "sor": "peer",
            "fields": {
                "order": "order_id",
                "line": "line_no",
                "product": {"column": "sku", "ref": "public.products"},
                "qty": "qty",
            },
        },
    }
    data.setdefault("inbound", {})["webhooks"] = [ROUTE]
    return parse_config(yaml.safe_dump(data), "erp.yaml", {})


def send(server: Server, record: Any) -> httpx.Response:
    return post_webhook(
        server.url + ROUTE["path"],
        record,
        HOOK_SECRET,
        **{"X-WC-Webhook-Delivery-ID": uuid.uuid4().hex},
    )


def test_a_webhook_refers_to_a_product_by_the_api_s_id(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(LINES_DDL)
    with CommerceApi(Credential("bearer", TOKEN)) as api:
        config = lines_config(db, api)
        with running(config) as server:
            with psycopg.connect(db, autocommit=True) as conn:
                conn.execute("INSERT INTO products VALUES ('P1', 'Pen', 1.5, NULL, 3)")
                conn.execute("INSERT INTO products VALUES ('P2', 'Pad', 4.25, NULL, 1)")
            with running_relay(config):
                wait_drained(db)
            ids = xref(db)
            assert set(ids) == {"P1", "P2"} and ids["P1"] != ids["P2"]

            applied = send(server, {"order_id": 77, "line": 1, "product_id": int(ids["P2"]),
                                    "qty": 5})
            assert applied.status_code == 200, applied.text
            unknown = send(server, {"order_id": 77, "line": 2, "product_id": 99999, "qty": 1})
            assert unknown.status_code == 422
            assert "refers to public.products 99999, which has not arrived here" in unknown.text
            with psycopg.connect(db) as conn:
                lines = conn.execute("SELECT l::text FROM order_lines l").fetchall()
    assert lines == [("(77,1,P2,5)",)]


def test_serve_for_an_application_peer_takes_no_bridge_batches(db: str) -> None:
    with CommerceApi(Credential("bearer", TOKEN)) as api:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(LINES_DDL)
        with running(lines_config(db, api)) as server:
            answer = httpx.post(server.url + "/v1/batches", content=b"{}", timeout=30)
    assert answer.status_code == 401
    assert "takes no bridge batches" in answer.text
