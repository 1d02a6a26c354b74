"""Upsert and delete for every table kind, from the shop's side and from the ERP's side."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cdc_bridge.peer.protocol import Change
from tests.helpers import FIXTURES, SECRET, install
from tests.integration.inbound_support import (
    Server,
    change,
    free_port,
    load,
    rows,
    running,
    statuses,
)


@pytest.fixture
def shop(db: str) -> Iterator[Server]:
    with running(load("shop.yaml", db)) as server:
        yield server


@pytest.fixture
def erp(db: str) -> Iterator[Server]:
    with running(load("erp_pair.yaml", db)) as server:
        yield server


def shop_change(
    table: str, op: str, key: dict[str, Any], fields: dict[str, Any] | None = None
) -> Change:
    return change(table, op, key, fields, origin="shop")


# ------------------------------------------------------------------ the shop receives


def test_shop_receives_whole_customer_rows_insert_update_delete(shop: Server) -> None:
    row = {"id": 1, "name": "Ann", "email": None, "tier": None}
    response = shop.send(
        change("public.customers", "insert", {"id": 1}, row),
        change("public.customers", "insert", {"id": 2}, {**row, "id": 2, "name": "Bo"}),
        change("public.customers", "update", {"id": 1}, {**row, "tier": "gold"}),
        change("public.customers", "delete", {"id": 2}),
    )
    assert statuses(response) == ["applied"] * 4
    assert rows(shop.dsn, "SELECT id, name, tier FROM customers") == [(1, "Ann", "gold")]


def test_shop_receives_product_fields_and_keeps_its_own_description(shop: Server) -> None:
    shop.send(
        change("public.products", "insert", {"sku": "P1"}, {"sku": "P1", "name": "Pen"}),
        change("public.products", "insert", {"sku": "P2"}, {"sku": "P2", "name": "Ink"}),
    )
    with psycopg.connect(shop.dsn, autocommit=True) as conn:
        conn.execute("UPDATE products SET description = 'blue', stock = 7 WHERE sku = 'P1'")
    response = shop.send(
        change("public.products", "update", {"sku": "P1"}, {"sku": "P1", "price": 2.5}),
        change("public.products", "delete", {"sku": "P2"}),
    )
    assert statuses(response) == ["applied", "applied"]
    assert rows(shop.dsn, "SELECT sku, name, price::float, description, stock FROM products") == [
        ("P1", "Pen", 2.5, "blue", 7)
    ]


def test_shop_receives_both_fields_of_accounts_but_not_deletes(shop: Server) -> None:
    response = shop.send(
        change("public.accounts", "insert", {"id": 1}, {"id": 1, "company_name": "Acme"}),
        change("public.accounts", "update", {"id": 1}, {"id": 1, "credit_limit": 100}),
        change("public.accounts", "delete", {"id": 1}),
    )
    assert statuses(response) == ["applied", "applied", "rejected"]
    assert rows(shop.dsn, "SELECT company_name, credit_limit::int FROM accounts") == [("Acme", 100)]


# ------------------------------------------------------------------ the ERP receives


def test_erp_adopts_a_shop_order_and_may_edit_it_afterwards(erp: Server) -> None:
    order = {"id": 5, "customer_id": 1, "total": 9.5, "status": "new"}
    response = erp.send(
        shop_change("public.orders", "insert", {"id": 5}, order),
        shop_change("public.orders", "update", {"id": 5}, {**order, "status": "paid"}),
        shop_change("public.orders", "delete", {"id": 5}),
    )
    assert statuses(response) == ["applied", "applied", "rejected"]
    assert response.results[2].reason == (
        "delete is not allowed on public.orders: this side owns its rows' keys"
    )
    with psycopg.connect(erp.dsn, autocommit=True) as conn:
        conn.execute("UPDATE orders SET status = 'shipped' WHERE id = 5")  # no guard
    assert rows(erp.dsn, "SELECT status FROM orders") == [("shipped",)]
    # Adopted rows are not shipped back: nothing captured, not even the local edit.
    assert rows(erp.dsn, "SELECT count(*) FROM cdc_bridge.outbox") == [(0,)]


def test_erp_receives_whole_invoice_rows_insert_update_delete(erp: Server) -> None:
    invoice = {"id": 1, "order_id": 5, "amount": 10}
    response = erp.send(
        shop_change("public.invoices", "insert", {"id": 1}, invoice),
        shop_change("public.invoices", "insert", {"id": 2}, {**invoice, "id": 2}),
        shop_change("public.invoices", "update", {"id": 1}, {**invoice, "amount": 12}),
        shop_change("public.invoices", "delete", {"id": 2}),
    )
    assert statuses(response) == ["applied"] * 4
    assert rows(erp.dsn, "SELECT id, amount::int FROM invoices") == [(1, 12)]


def test_erp_receives_only_the_product_description(erp: Server) -> None:
    with psycopg.connect(erp.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO products VALUES ('P1', 'Pen', 1.5, NULL, 3)")
    response = erp.send(
        shop_change(
            "public.products", "update", {"sku": "P1"}, {"sku": "P1", "description": "blue"}
        ),
        shop_change("public.products", "update", {"sku": "P1"}, {"sku": "P1", "price": 0}),
        shop_change("public.products", "delete", {"sku": "P1"}),
    )
    assert statuses(response) == ["applied", "rejected", "skipped"]
    assert rows(erp.dsn, "SELECT name, price::float, description FROM products") == [
        ("Pen", 1.5, "blue")
    ]


def test_erp_refuses_changes_to_the_customers_it_owns(erp: Server) -> None:
    response = erp.send(
        shop_change("public.customers", "insert", {"id": 1}, {"id": 1, "name": "Ann"}),
    )
    assert statuses(response) == ["rejected"]
    assert response.results[0].reason == (
        "public.customers is owned by this side (sor: local); the peer may not change it"
    )
    assert rows(erp.dsn, "SELECT count(*) FROM customers") == [(0,)]


def test_cdc_bridge_serve_subprocess_applies_a_batch(db: str, tmp_path: Path) -> None:
    config = load("shop.yaml", db)
    install(config)
    text = (FIXTURES / "shop.yaml").read_text()
    path = tmp_path / "shop.yaml"
    text = text.replace("${SHOP_DATABASE_URL}", db).replace("${BRIDGE_SECRET}", SECRET)
    path.write_text(text + "logging: {format: json}\n")
    port = free_port()
    command = [str(Path(sys.executable).with_name("cdc-bridge")), "--config", str(path), "serve"]
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*command, "--listen", f"127.0.0.1:{port}"], stderr=log)
    try:
        server = Server(url=f"http://127.0.0.1:{port}", config=config)
        wait_for_health(server, process)
        response = server.send(
            change("public.customers", "insert", {"id": 1}, {"id": 1, "name": "A"})
        )
        assert statuses(response) == ["applied"]
    finally:
        process.terminate()
        # uvicorn shuts down cleanly, then re-raises SIGTERM as its exit status.
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert rows(db, "SELECT name FROM customers") == [("A",)]
    # `logging.format: json` applies to serve and to the HTTP server's own messages.
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert any("Uvicorn running" in r["msg"] for r in records), lines
    assert SECRET not in log_path.read_text()


def wait_for_health(server: Server, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/healthz", timeout=5).status_code == 200:
                return
        assert process.poll() is None, "serve exited"
        assert time.monotonic() < deadline, "serve did not answer"
        time.sleep(0.1)


def test_partial_update_of_a_row_with_not_null_columns_the_peer_does_not_send(
    erp: Server,
) -> None:
    # An upsert would check NOT NULL on the proposed row (name missing) before finding the
    # existing row; the update must reach the existing row instead.
    with psycopg.connect(erp.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE products ALTER COLUMN name SET NOT NULL")
        conn.execute("INSERT INTO products VALUES ('P1', 'Pen', 1.5, NULL, 3)")
    response = erp.send(
        shop_change(
            "public.products", "update", {"sku": "P1"}, {"sku": "P1", "description": "blue"}
        ),
        shop_change(
            "public.products", "update", {"sku": "P2"}, {"sku": "P2", "description": "new"}
        ),
    )
    assert statuses(response) == ["applied", "rejected"]
    assert "not-null" in (response.results[1].reason or "")
    assert rows(erp.dsn, "SELECT sku, name, description FROM products") == [("P1", "Pen", "blue")]


@dataclass
class ServeProcess:
    server: Server
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> str:
        """Stop it as an operator would (SIGTERM); its log file's text."""
        if self.process.poll() is None:
            self.process.terminate()
        assert self.process.wait(timeout=60) in (0, -signal.SIGTERM)
        return self.log.read_text()


@pytest.fixture
def serve_process(db: str, tmp_path: Path) -> Iterator[ServeProcess]:
    """`cdc-bridge serve` for the shop, text logs to a file, as a service manager runs it."""
    config = load("shop.yaml", db)
    install(config)
    text = (FIXTURES / "shop.yaml").read_text()
    text = text.replace("${SHOP_DATABASE_URL}", db).replace("${BRIDGE_SECRET}", SECRET)
    path = tmp_path / "shop.yaml"
    path.write_text(text + "logging: {format: text}\n")
    port = free_port()
    command = [str(Path(sys.executable).with_name("cdc-bridge")), "--config", str(path), "serve"]
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT
        )
    running_serve = ServeProcess(Server(f"http://127.0.0.1:{port}", config), process, log_path)
    try:
        wait_for_health(running_serve.server, process)
        yield running_serve
    finally:
        running_serve.stop()


def test_a_column_added_and_installed_at_the_receiver_is_accepted_without_a_restart(
    serve_process: ServeProcess, db: str
) -> None:
    server = serve_process.server
    first = {"id": 1, "name": "Ann", "email": None, "tier": "gold"}
    assert statuses(server.send(change("public.customers", "insert", {"id": 1}, first))) == [
        "applied"
    ]
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER TABLE customers ADD COLUMN vat_id text")
    install(server.config)  # the DBA reinstalls, as `triggers status` asks
    second = {**first, "vat_id": "DE-811 907 980"}
    response = server.send(change("public.customers", "update", {"id": 1}, second))
    assert statuses(response) == ["applied"], response
    assert rows(db, "SELECT c::text FROM customers c") == [("(1,Ann,,gold,\"DE-811 907 980\")",)]
    assert serve_process.process.poll() is None  # the same process all along


def test_serve_log_file_holds_no_terminal_colour_codes(serve_process: ServeProcess) -> None:
    text = serve_process.stop()
    assert "Uvicorn running on http://127.0.0.1:" in text
    assert "\x1b[" not in text and "color_message" not in text


def test_serve_sessions_name_themselves(serve_process: ServeProcess, db: str) -> None:
    server = serve_process.server
    row = {"id": 1, "name": "Ann", "email": None, "tier": None}
    assert statuses(server.send(change("public.customers", "insert", {"id": 1}, row))) == [
        "applied"
    ]
    names = rows(
        db,
        "SELECT DISTINCT application_name FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert names == [("cdc-bridge serve",)]
