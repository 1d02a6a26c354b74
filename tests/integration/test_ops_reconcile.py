"""`reconcile` against a real peer: two databases, the peer's real `serve` app on 127.0.0.1.

The erp side (this side) compares with the shop's copy read through the signed /v1/read
endpoint; --fix queues outbox rows that a relay would ship.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc_bridge.cli import main
from cdc_bridge.config import BridgeConfig, parse_config
from cdc_bridge.ops.reconcile import reconcile
from tests import pg
from tests.helpers import FIXTURES, SECRET, install
from tests.integration.inbound_support import Server, load, running

PEER_ORIGIN = "SET cdc_bridge.origin = 'erp'"  # lets the shop's guard accept the writes


@pytest.fixture
def shop_db(pg_server: pg.TestServer, template_db: str) -> Iterator[str]:
    name = pg_server.new_name("shop")
    yield pg_server.create_database(name, template=template_db)
    pg_server.drop_database(name)


@pytest.fixture
def shop(shop_db: str) -> Iterator[Server]:
    with running(load("shop.yaml", shop_db)) as server:
        yield server


def erp_config(dsn: str, peer_url: str, extra: str = "") -> BridgeConfig:
    text = (FIXTURES / "erp.yaml").read_text().replace("http://127.0.0.1:8082", peer_url)
    env = {"ERP_DATABASE_URL": dsn, "BRIDGE_SECRET": SECRET}
    return parse_config(text + extra, "erp.yaml", env)


@pytest.fixture
def erp(db: str, shop: Server) -> BridgeConfig:
    config = erp_config(db, shop.url)
    install(config)
    return config


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def new_outbox(dsn: str, after_id: int) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT op, key, fields FROM cdc_bridge.outbox WHERE id > %s ORDER BY id", (after_id,)
        ).fetchall()


def last_outbox_id(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM cdc_bridge.outbox").fetchone()
        assert row is not None
        return int(row[0])


def config_file(tmp_path: Path, dsn: str, peer_url: str) -> Path:
    text = (FIXTURES / "erp.yaml").read_text().replace("http://127.0.0.1:8082", peer_url)
    path = tmp_path / "erp.yaml"
    path.write_text(text.replace("${ERP_DATABASE_URL}", dsn).replace("${BRIDGE_SECRET}", SECRET))
    return path


def exit_code(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exited:
        return int(exited.code or 0)
    return 0


def seed_customers(erp_dsn: str, shop_dsn: str) -> None:
    """Keys 1-9 here; the shop lacks 3 and 9, has 5 with another name, and has 4.5 (50)."""
    execute(
        erp_dsn,
        "INSERT INTO customers SELECT g, 'name ' || g, g || '@example.com', NULL "
        "FROM generate_series(1, 9) g",
    )
    execute(
        shop_dsn,
        PEER_ORIGIN,
        "INSERT INTO customers SELECT g, 'name ' || g, g || '@example.com', NULL "
        "FROM generate_series(1, 9) g WHERE g NOT IN (3, 9)",
        "UPDATE customers SET name = 'edited at the shop' WHERE id = 5",
        "INSERT INTO customers VALUES (50, 'only at the shop', NULL, NULL)",
    )


@pytest.mark.parametrize("page", [2, 1000])
def test_reports_missing_extra_and_different_rows(
    erp: BridgeConfig, shop: Server, page: int
) -> None:
    seed_customers(erp.database.url.get_secret_value(), shop.dsn)
    report = reconcile(erp, "public.customers", page=page)
    assert (report.compared, report.missing, report.extra, report.different) == (9, 2, 1, 1)
    assert report.missing_keys == [{"id": 3}, {"id": 9}]
    assert report.extra_keys == [{"id": 50}]
    assert [(d.key, d.fields) for d in report.differences] == [
        ({"id": 5}, {"name": ("name 5", "edited at the shop")})
    ]
    assert not report.in_sync


def _unconstrain_price(dsn: str) -> None:
    """price becomes plain numeric at the shop (its triggers' WHEN clauses name it: they go)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        names = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'products'::regclass"
            " AND NOT tgisinternal"
        ).fetchall()
        for (name,) in names:
            conn.execute(
                psycopg.sql.SQL("DROP TRIGGER {} ON products").format(psycopg.sql.Identifier(name))
            )
        conn.execute("ALTER TABLE products ALTER COLUMN price TYPE numeric")


def test_numbers_compare_as_written(db: str, shop: Server) -> None:
    # row::text shows 1.50 and 1.5 differently, so reconcile does too; equal text is in sync.
    execute(db, "ALTER TABLE products ALTER COLUMN price TYPE numeric")
    _unconstrain_price(shop.dsn)
    erp = erp_config(db, shop.url)
    install(erp)
    execute(db, "INSERT INTO products VALUES ('a', 'A', 1.50, 'here', 3)")
    execute(shop.dsn, PEER_ORIGIN, "INSERT INTO products VALUES ('a', 'A', 1.5, 'x', 0)")
    report = reconcile(erp, "public.products")
    assert [d.fields for d in report.differences] == [{"price": (Decimal("1.50"), Decimal("1.5"))}]
    assert str(report.differences[0].fields["price"][0]) == "1.50"
    execute(shop.dsn, PEER_ORIGIN, "UPDATE products SET price = 1.50")
    report = reconcile(erp, "public.products")
    assert report.in_sync and report.compared == 1


def test_fix_queues_upserts_and_owned_deletes(erp: BridgeConfig, shop: Server) -> None:
    erp_dsn = erp.database.url.get_secret_value()
    seed_customers(erp_dsn, shop.dsn)
    before = last_outbox_id(erp_dsn)
    report = reconcile(erp, "public.customers", fix=True, page=3)
    assert report.fixes_queued == 4
    assert report.pending == 9  # the seeded inserts, never shipped: no relay runs here
    queued = new_outbox(erp_dsn, before)
    assert sorted((op, key["id"]) for op, key, _ in queued) == [
        ("D", 50),
        ("U", 3),
        ("U", 5),
        ("U", 9),
    ]
    upsert_5 = next(fields for op, key, fields in queued if key == {"id": 5})
    assert upsert_5 == {"id": 5, "name": "name 5", "email": "5@example.com", "tier": None}


def test_fix_leaves_rows_it_does_not_own(erp: BridgeConfig, shop: Server) -> None:
    """products: this side owns sku/name/price, not the rows' existence at the peer."""
    erp_dsn = erp.database.url.get_secret_value()
    execute(shop.dsn, PEER_ORIGIN, "INSERT INTO products VALUES ('z', 'Z', 2, NULL, 0)")
    before = last_outbox_id(erp_dsn)
    report = reconcile(erp, "public.products", fix=True)
    assert (report.extra, report.extra_not_ours, report.fixes_queued) == (1, 1, 0)
    assert new_outbox(erp_dsn, before) == []


def test_fix_creates_no_row_whose_key_the_peer_owns(
    pg_server: pg.TestServer, template_db: str, shop_db: str
) -> None:
    """From the shop's side: products' sku belongs to the ERP, only description is ours."""
    erp_name = pg_server.new_name("erp")
    erp_dsn = pg_server.create_database(erp_name, template=template_db)
    try:
        with running(load("erp.yaml", erp_dsn)) as erp_server:
            text = (FIXTURES / "shop.yaml").read_text()
            text = text.replace("http://127.0.0.1:8081", erp_server.url)
            shop = parse_config(
                text, "shop.yaml", {"SHOP_DATABASE_URL": shop_db, "BRIDGE_SECRET": SECRET}
            )
            install(shop)
            execute(shop_db, PEER_ORIGIN, "INSERT INTO products VALUES ('s', 'S', 1, NULL, 0)")
            before = last_outbox_id(shop_db)
            report = reconcile(shop, "public.products", fix=True)
    finally:
        pg_server.drop_database(erp_name)
    assert (report.missing, report.missing_not_ours, report.fixes_queued) == (1, 1, 0)
    assert new_outbox(shop_db, before) == []


def test_rows_out_of_scope_are_not_compared(erp: BridgeConfig, shop: Server) -> None:
    """accounts ship only `status <> 'draft'`: a draft differing at the peer is not reported."""
    erp_dsn = erp.database.url.get_secret_value()
    execute(erp_dsn, "INSERT INTO accounts VALUES (1, 'Acme', 'Road 1', 10, 'draft', NULL)")
    execute(shop.dsn, PEER_ORIGIN, "INSERT INTO accounts VALUES (1, 'Other', 'Road 9', 0)")
    report = reconcile(erp, "public.accounts")
    assert report.in_sync and report.compared == 0


def test_cli_exit_codes_and_json(
    erp: BridgeConfig, shop: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, erp.database.url.get_secret_value(), shop.url)
    assert exit_code(["-c", str(path), "reconcile", "public.customers"]) == 0
    assert "in sync" in capsys.readouterr().out
    execute(erp.database.url.get_secret_value(), "INSERT INTO customers VALUES (1, 'a')")
    assert exit_code(["-c", str(path), "reconcile", "public.customers", "--json"]) == 1
    assert '"missing_keys": [\n    {\n      "id": 1\n    }\n  ]' in capsys.readouterr().out


def test_unreachable_peer_is_a_clear_error(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = erp_config(db, "http://127.0.0.1:9")
    install(config)
    path = config_file(tmp_path, db, "http://127.0.0.1:9")
    assert exit_code(["-c", str(path), "reconcile", "public.customers"]) == 1
    err = capsys.readouterr().err
    assert "reading public.customers from the peer at http://127.0.0.1:9 failed" in err
    assert "cdc-bridge serve" in err


# ------------------------------------------------------------------ REST adapter


class _Catalogue(BaseHTTPRequestHandler):
    """GET /api/customers/{id}: the REST peer's copy (names renamed: name -> full_name)."""

    records: dict[str, dict[str, Any]] = {}
    tokens: list[str] = []

    def do_GET(self) -> None:
        self.tokens.append(self.headers.get("Authorization", ""))
        record = self.records.get(self.path)
        body = b"{}" if record is None else json.dumps(record).encode()
        self.send_response(404 if record is None else 200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def rest_peer() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Catalogue)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


REST_CONFIG = """
system: erp
database: {url: "${ERP_DATABASE_URL}"}
peer: {name: shop, url: "PEER", adapter: rest, auth_env: SHOP_TOKEN}
tables:
  public.customers:
    key: [id]
    sor: local
    rest:
      insert: "PUT /api/customers/{id}"
      update: "PUT /api/customers/{id}"
      delete: "DELETE /api/customers/{id}"
      read: "GET /api/customers/{id}"
      rename: {name: full_name}
"""


def test_rest_reads_one_row_per_key(
    db: str, rest_peer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "Bearer t0k3n")
    text = REST_CONFIG.replace("PEER", rest_peer)
    config = parse_config(text, "rest.yaml", {"ERP_DATABASE_URL": db})
    install(config)
    execute(db, "INSERT INTO customers SELECT g, 'n' || g FROM generate_series(1, 3) g")
    _Catalogue.records = {
        "/api/customers/1": {"id": 1, "full_name": "n1", "email": None, "tier": None},
        "/api/customers/2": {"full_name": "changed", "email": None, "tier": None},
    }
    _Catalogue.tokens = []
    report = reconcile(config, "public.customers")
    assert (report.compared, report.missing, report.different, report.extra) == (3, 1, 1, 0)
    assert report.missing_keys == [{"id": 3}]
    assert report.differences[0].fields == {"name": ("n2", "changed")}
    assert report.extra_unchecked
    assert set(_Catalogue.tokens) == {"Bearer t0k3n"}
