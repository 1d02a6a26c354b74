"""The REST adapter against an API that names its own records: created ids are learned
and kept in the cross-reference, updates and deletes hit them, a record the API already
has is adopted instead of duplicated, and bodies are nested with money as strings."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import yaml

from cdc_bridge.config import BridgeConfig, parse_config
from tests.commerce_api import CommerceApi, Credential
from tests.helpers import install
from tests.relay_support import config_text, running_relay, wait_drained, wait_until

TOKEN = "catalog-token"
CATALOG_REST = {
    "insert": "POST /api/v3/products",
    "update": "PUT /api/v3/products/{peer_id}",
    "delete": "DELETE /api/v3/products/{peer_id}",
    "id": "/id",
    "search": "GET /api/v3/products?sku={sku}",
    "found": "/0/id",
    "body": {
        "/sku": "sku",
        "/name": "name",
        "/regular_price": {"field": "price", "cast": "string", "scale": 2},
        "/type": {"const": "simple"},
        "/meta/source": {"const": "erp"},
    },
}


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_TOKEN", TOKEN)


def catalog_config(dsn: str, api: CommerceApi) -> BridgeConfig:
    data = yaml.safe_load(config_text(dsn, api.url, peer={"adapter": "rest"}))
    data["peer"].pop("secret")
    data["peer"]["auth"] = {"kind": "bearer", "token_env": "CATALOG_TOKEN"}
    data["tables"] = {"public.products": {**data["tables"]["public.products"]}}
    data["tables"]["public.products"]["rest"] = CATALOG_REST
    return parse_config(yaml.safe_dump(data), "catalog.yaml", {})


def catalog(api: CommerceApi) -> dict[str, dict[str, Any]]:
    with api.lock:
        return {p["sku"]: dict(p) for p in api.state.catalog.values()}


def xref(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return {
            key["sku"]: peer_id
            for key, peer_id in conn.execute(
                "SELECT key, peer_id FROM cdc_bridge.xref WHERE table_name = 'public.products'"
            )
        }


def test_created_ids_are_learned_used_and_existing_records_adopted(db: str) -> None:
    with CommerceApi(Credential("bearer", TOKEN)) as api:
        api.state.catalog[500] = {"id": 500, "sku": "P-OLD", "name": "Made in the shop"}
        config = catalog_config(db, api)
        install(config)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("INSERT INTO products VALUES ('P1', 'Pen', 1.5, NULL, 3)")
            conn.execute("INSERT INTO products VALUES ('P2', 'Pad', 4.25, NULL, 1)")
            conn.execute("INSERT INTO products VALUES ('P-OLD', 'Ruler', 0.999, NULL, 9)")
        api.rate_limit_next(3)  # the first requests meet a burst of 429s
        with running_relay(config):
            wait_drained(db)
            ids = xref(db)
            with psycopg.connect(db, autocommit=True) as conn:
                conn.execute("UPDATE products SET price = 2 WHERE sku = 'P1'")
                conn.execute("DELETE FROM products WHERE sku = 'P2'")
            wait_drained(db)
        found = catalog(api)
        with psycopg.connect(db) as conn:
            failed = conn.execute("SELECT count(*) FROM cdc_bridge.failed").fetchone()
    assert failed == (0,)
    assert api.state.rate_limited == 3
    assert ids["P-OLD"] == "500"  # adopted: the shop's record, not a copy
    assert set(ids) == {"P1", "P2", "P-OLD"}
    assert dict(api.state.creates) == {"P1": 1, "P2": 1}  # each created once, none twice
    assert set(found) == {"P1", "P-OLD"}  # P2 deleted through its id
    assert found["P1"] == {
        "id": int(ids["P1"]),
        "sku": "P1",
        "name": "Pen",
        "regular_price": "2.00",
        "type": "simple",
        "meta": {"source": "erp"},
    }
    assert found["P-OLD"]["id"] == 500
    assert found["P-OLD"]["name"] == "Ruler" and found["P-OLD"]["regular_price"] == "1.00"
    assert xref(db) == {"P1": ids["P1"], "P-OLD": "500"}


def test_a_change_whose_value_cannot_be_cast_is_refused_alone(db: str) -> None:
    stock = {"field": "name", "cast": "integer"}
    rest = {**CATALOG_REST, "body": {"/sku": "sku", "/stock": stock}}
    with CommerceApi(Credential("bearer", TOKEN)) as api:
        data = yaml.safe_load(config_text(db, api.url, peer={"adapter": "rest"}))
        data["peer"].pop("secret")
        data["peer"]["auth"] = {"kind": "bearer", "token_env": "CATALOG_TOKEN"}
        data["tables"] = {"public.products": {**data["tables"]["public.products"], "rest": rest}}
        config = parse_config(yaml.safe_dump(data), "catalog.yaml", {})
        install(config)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("INSERT INTO products VALUES ('BAD', 'not a number', 1, NULL, 1)")
            conn.execute("INSERT INTO products VALUES ('OK', '42', 1, NULL, 1)")
        with running_relay(config):
            wait_until(lambda: "OK" in catalog(api), what="the good product")
            wait_until(lambda: _failed(db) == 1, what="the bad one to fail")
    assert catalog(api)["OK"]["stock"] == 42
    with psycopg.connect(db) as conn:
        reason = conn.execute("SELECT reason FROM cdc_bridge.failed").fetchone()
    assert reason is not None and "cannot be cast to integer" in reason[0]


def _failed(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM cdc_bridge.failed").fetchone()
    assert row is not None
    return int(row[0])
