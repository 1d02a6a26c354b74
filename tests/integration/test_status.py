"""`triggers status` and `check` against a real server, through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from cdc_bridge.capture.function import capture_function_name
from cdc_bridge.cli import main
from tests.helpers import FIXTURES, SECRET, example_config, install, login_role
from tests.pg import TestServer


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config_file(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ERP_DATABASE_URL", db)
    monkeypatch.setenv("BRIDGE_SECRET", SECRET)
    path = tmp_path / "erp.yaml"
    path.write_text((FIXTURES / "erp.yaml").read_text())
    return path


def states(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, dict[str, str]]:
    code, out, _ = run_cli(capsys, "triggers", "status", "--json", "--config", str(config))
    return code, {t["table"]: t["state"] for t in json.loads(out)["tables"]}


def execute(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


def test_status_missing_then_installed(
    db: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, found = states(capsys, config_file)
    assert code == 1 and set(found.values()) == {"missing"}
    install(example_config(db))
    code, found = states(capsys, config_file)
    assert code == 0 and set(found.values()) == {"installed"}
    assert len(found) == 5


def test_status_reports_added_and_dropped_columns(
    db: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(example_config(db))
    execute(db, "ALTER TABLE customers ADD COLUMN phone text")
    execute(db, "ALTER TABLE products DROP COLUMN stock")
    code, out, err = run_cli(capsys, "triggers", "status", "--config", str(config_file))
    assert code == 1
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "outdated" in lines["public.customers"] and "added since install: phone" in out
    assert "outdated" in lines["public.products"] and "dropped since install: stock" in out
    assert "installed" in lines["public.orders"]
    assert "2 of 5 table(s) drifted" in err


def test_status_reports_a_config_change_and_a_dropped_trigger(
    db: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(example_config(db))
    config_file.write_text(
        config_file.read_text().replace("description: peer", "description: local")
    )
    execute(db, "DROP TRIGGER cdc_bridge_capture_upd ON orders")
    code, found = states(capsys, config_file)
    assert code == 1
    assert found == {
        "public.customers": "installed",
        "public.orders": "outdated",
        "public.invoices": "installed",
        "public.products": "outdated",
        "public.accounts": "installed",
    }


def test_check_passes_on_the_example(
    db: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "check", "--config", str(config_file))
    assert (code, out) == (0, "ok: 5 table(s) match the database\n")


def test_check_reports_every_problem(
    db: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    execute(db, "DROP TABLE invoices")
    execute(db, "ALTER TABLE products DROP COLUMN description")
    execute(db, "ALTER TABLE accounts DROP COLUMN status")
    execute(db, "ALTER TABLE customers DROP CONSTRAINT customers_pkey")
    execute(db, "CREATE INDEX ON customers (id)")  # not unique: does not count
    execute(db, "ALTER TABLE orders DROP CONSTRAINT orders_pkey")
    execute(db, "CREATE UNIQUE INDEX ON orders (id, customer_id)")  # not exactly the key
    code, _, err = run_cli(capsys, "check", "--config", str(config_file))
    assert code == 1
    problems = [line for line in err.splitlines() if line.startswith("public.")]
    assert len(problems) == 5, err
    assert "public.invoices: table public.invoices does not exist" in err
    assert "public.products: field 'description' does not exist" in err
    assert "public.accounts.where: column 'status' does not exist" in err
    assert "public.customers: key (id) is not unique" in err
    assert "public.orders: key (id) is not unique" in err


def check_as(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config_file: Path,
    dsn: str,
) -> tuple[int, list[str]]:
    monkeypatch.setenv("ERP_DATABASE_URL", dsn)
    code, _, err = run_cli(capsys, "check", "--config", str(config_file))
    return code, [line for line in err.splitlines() if line.startswith("warning: ")]


def test_check_warns_when_the_bridge_logs_in_with_too_much_or_too_little(
    pg_server: TestServer,
    db: str,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(example_config(db))
    relay = "cdc_bridge_relay"
    # The tests' own login is a superuser.
    code, warnings = check_as(capsys, monkeypatch, config_file, db)
    assert code == 0 and len(warnings) == 1 and "a superuser" in warnings[0], warnings
    with login_role(pg_server, db, "bridge", member_of=relay) as bridge:
        code, warnings = check_as(capsys, monkeypatch, config_file, make_conninfo(db, user=bridge))
        assert (code, warnings) == (0, [])
        execute(db, f'ALTER TABLE invoices OWNER TO "{bridge}"')
        code, warnings = check_as(capsys, monkeypatch, config_file, make_conninfo(db, user=bridge))
        assert code == 0 and len(warnings) == 1, warnings
        assert f"logs in as {bridge}, which owns public.invoices" in warnings[0]
        execute(db, "ALTER TABLE invoices OWNER TO CURRENT_USER")
    with login_role(pg_server, db, "app") as app:
        code, warnings = check_as(capsys, monkeypatch, config_file, make_conninfo(db, user=app))
        assert code == 0 and len(warnings) == 1, warnings
        assert f"not a member of the relay role {relay}" in warnings[0]
        assert f"fix: GRANT {relay} TO {app}" in warnings[0]


def test_check_accepts_a_unique_index_as_key(
    db: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    execute(db, "ALTER TABLE customers DROP CONSTRAINT customers_pkey")
    execute(db, "CREATE UNIQUE INDEX ON customers (id)")
    code, _, err = run_cli(capsys, "check", "--config", str(config_file))
    assert code == 0, err


def test_check_of_an_unreachable_database_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ERP_DATABASE_URL", "postgresql://u:hunter2@127.0.0.1:1/x")
    monkeypatch.setenv("BRIDGE_SECRET", SECRET)
    path = tmp_path / "erp.yaml"
    path.write_text((FIXTURES / "erp.yaml").read_text())
    code, _, err = run_cli(capsys, "check", "--config", str(path))
    assert code == 1 and "cannot connect" in err
    assert "hunter2" not in err


def test_renaming_a_shipped_column_fails_writes_loudly_and_is_reported(
    db: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The generated capture function names the shipped columns: after a rename it must
    # refuse the write (the transaction rolls back) rather than ship the field as NULL.
    install(example_config(db))
    execute(db, "ALTER TABLE products RENAME COLUMN price TO unit_price")
    with pytest.raises(psycopg.errors.UndefinedColumn, match="price"):
        execute(db, "INSERT INTO products (sku, name, unit_price) VALUES ('a', 'A', 1)")
    assert fetch_count(db, "SELECT count(*) FROM products") == 0
    code, out, _ = run_cli(capsys, "triggers", "status", "--config", str(config_file))
    assert code == 1
    assert "dropped since install: price" in out and "added since install: unit_price" in out


def fetch_count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_status_reports_a_capture_function_replaced_by_hand(
    db: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = example_config(db)
    install(config)
    name = capture_function_name(config.table("public.customers"), "upd")
    # Same name, same triggers and stamps: only the function's body says it changed.
    execute(
        db,
        f'CREATE OR REPLACE FUNCTION cdc_bridge."{name}"() RETURNS trigger '
        "LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
    )
    code, out, _ = run_cli(capsys, "triggers", "status", "--config", str(config_file))
    assert code == 1
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "outdated" in lines["public.customers"]
    assert f"capture function(s) changed since install: {name}" in out
    assert "installed" in lines["public.products"]
