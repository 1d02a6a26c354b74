"""`check`, and `run`/`serve` at start, hold an entity mapping against the live tables:
each bad mapping is named with its key and its fix."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from cdc_bridge.capture.check import check_database
from cdc_bridge.config import parse_config
from tests.acceptance.unlike_pair import create_unlike_database, unlike_config
from tests.helpers import SECRET
from tests.pg import TestServer

PORTS = {"erp": (1, 2), "shop": (3, 4)}


@pytest.fixture
def shop_db(pg_server: TestServer) -> Iterator[str]:
    name = pg_server.new_name("shop")
    yield create_unlike_database(pg_server, name, "shop")
    pg_server.drop_database(name)


def shop_config(dsn: str, change: Callable[[dict[str, Any]], None] | None = None) -> str:
    text, _ = unlike_config("shop", dsn, PORTS)
    data = yaml.safe_load(text)
    if change is not None:
        change(data["tables"])
    return yaml.safe_dump(data)


def problems_of(dsn: str, text: str) -> list[str]:
    config = parse_config(text, "shop.yaml", {})
    with psycopg.connect(dsn) as conn:
        return check_database(config, conn)


def test_the_example_mappings_fit_their_tables(shop_db: str, pg_server: TestServer) -> None:
    assert problems_of(shop_db, shop_config(shop_db)) == []
    name = pg_server.new_name("erp")
    dsn = create_unlike_database(pg_server, name, "erp")
    try:
        _, config = unlike_config("erp", dsn, PORTS)
        with psycopg.connect(dsn) as conn:
            assert check_database(config, conn) == []
    finally:
        pg_server.drop_database(name)


def _set(path: list[str], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(tables: dict[str, Any]) -> None:
        node = tables
        for part in path[:-1]:
            node = node[part]
        if value is None:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            _set(["public.products", "fields", "name"], "lable"),
            'tables."public.products".fields.name: column \'lable\' does not exist in '
            "public.products; fix: correct its spelling",
        ),
        (
            _set(
                ["public.orders", "fields", "state"],
                {"column": "status", "map": {"open": "O", "shipped": "S", "closed": "C"}},
            ),
            'tables."public.orders".fields.state.map: public.orders.status can hold '
            "'cancelled', which the map does not cover",
        ),
        (
            _set(["public.products", "defaults"], None),
            "tables.\"public.products\": column 'tax_class' is NOT NULL without a default, "
            "and no field fills it",
        ),
        (
            _set(["public.products", "defaults"], {"tax_class": "standard", "visible": "maybe"}),
            'tables."public.products".defaults: \'maybe\' is not a valid boolean for visible',
        ),
        (
            _set(["public.products", "key"], ["label"]),
            "public.products: key (label) is not unique",
        ),
        (
            _set(
                ["public.products", "fields", "visible"],
                {"column": "visible", "map": {"si": True, "no": False}},
            ),
            'tables."public.products".fields.visible.map: \'si\' is not a valid boolean',
        ),
    ],
    ids=["missing column", "enum gap", "required column", "bad default", "key not unique",
         "map value of the wrong type"],
)
def test_a_bad_mapping_is_named_with_its_key_and_fix(
    shop_db: str, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    problems = problems_of(shop_db, shop_config(shop_db, change))
    assert any(expected in p for p in problems), problems


def test_a_generated_key_needs_a_sequence_or_default(shop_db: str) -> None:
    with psycopg.connect(shop_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE customers ALTER COLUMN id DROP DEFAULT")
    problems = problems_of(shop_db, shop_config(shop_db))
    assert any(
        p.startswith('tables."public.customers".xref: key column \'id\' has no sequence')
        for p in problems
    ), problems


def test_serve_and_run_refuse_to_start_with_a_mapping_that_does_not_fit(
    shop_db: str, tmp_path: Path
) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(shop_config(shop_db, _set(["public.products", "fields", "name"], "lable")))
    for command in ("serve", "run"):
        done = subprocess.run(
            [sys.executable, "-m", "cdc_bridge", "--config", str(path), command],
            capture_output=True,
            text=True,
            env={**os.environ, "BRIDGE_SECRET": SECRET},
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert str(path) in done.stderr
        assert "fields.name: column 'lable' does not exist" in done.stderr
