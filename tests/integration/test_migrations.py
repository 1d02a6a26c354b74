"""Alembic revisions against a real server: the same catalog as a direct install."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.config import Config

from cdc_bridge.capture.render import render_install
from cdc_bridge.capture.revision import generate_revision
from cdc_bridge.config import BridgeConfig
from tests import pg
from tests.helpers import example_config, install

REPO = Path(__file__).resolve().parents[2]

CATALOG = {
    "relations": """
        SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'cdc_bridge' ORDER BY 1""",
    "columns": """
        SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'cdc_bridge' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1""",
    "functions": """
        SELECT pg_get_functiondef(p.oid) FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'cdc_bridge' ORDER BY p.proname""",
    "triggers": """
        SELECT pg_get_triggerdef(t.oid) || ' -- '
               || coalesce(obj_description(t.oid, 'pg_trigger'), '')
        FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgname LIKE 'cdc\\_bridge\\_%'
        ORDER BY 1""",
    "installed": """
        SELECT table_name || ' ' || definition_hash || ' ' || columns::text
        FROM cdc_bridge.installed_tables ORDER BY 1""",
    "grants": """
        SELECT table_schema || '.' || table_name || ' ' || privilege_type
        FROM information_schema.role_table_grants WHERE grantee = 'cdc_bridge_relay' ORDER BY 1""",
    "schema_grants": """
        SELECT has_schema_privilege('cdc_bridge_relay', 'cdc_bridge', 'USAGE')::text
        WHERE EXISTS (SELECT FROM pg_namespace WHERE nspname = 'cdc_bridge')""",
}


def catalog(dsn: str) -> dict[str, list[Any]]:
    with psycopg.connect(dsn) as conn:
        installed = conn.execute("SELECT to_regclass('cdc_bridge.installed_tables')").fetchone()
        return {
            name: [r[0] for r in conn.execute(query)]
            if name != "installed" or installed != (None,)
            else []
            for name, query in CATALOG.items()
        }


def alembic_config(dsn: str, versions: Path, output: io.StringIO | None = None) -> Config:
    config = Config(str(REPO / "alembic.ini"), output_buffer=output)
    config.set_main_option("version_locations", str(versions))
    config.attributes["url"] = dsn
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture
def other_db(pg_server: pg.TestServer, template_db: str) -> Iterator[str]:
    name = pg_server.new_name("direct")
    yield pg_server.create_database(name, template=template_db)
    pg_server.drop_database(name)


def changed_config(dsn: str) -> BridgeConfig:
    """The example with accounts dropped and products' description now ours."""
    config = example_config(dsn)
    tables = {k: v for k, v in config.tables.items() if k != "public.accounts"}
    products = tables["public.products"].model_copy(
        update={"sor": {"sku": "local", "name": "local", "price": "local", "description": "local"}}
    )
    tables["public.products"] = products
    return config.model_copy(update={"tables": tables})


def test_upgrade_equals_direct_install_and_downgrade_removes_everything(
    db: str, other_db: str, tmp_path: Path
) -> None:
    generate_revision(example_config(db), "first", REPO / "migrations", tmp_path)
    alembic = alembic_config(db, tmp_path)
    empty = catalog(db)

    command.upgrade(alembic, "head")
    install(example_config(other_db))
    upgraded = catalog(db)
    assert upgraded == catalog(other_db)
    assert len(upgraded["triggers"]) > 10 and upgraded["grants"]

    command.downgrade(alembic, "base")
    assert catalog(db) == empty
    assert empty == {name: [] for name in CATALOG}

    command.upgrade(alembic, "head")
    assert catalog(db) == upgraded


def test_second_revision_replaces_triggers_and_goes_back(
    db: str, other_db: str, tmp_path: Path
) -> None:
    first = example_config(db)
    generate_revision(first, "first", REPO / "migrations", tmp_path)
    command.upgrade(alembic_config(db, tmp_path), "head")
    before = catalog(db)
    generate_revision(changed_config(db), "second", REPO / "migrations", tmp_path)

    command.upgrade(alembic_config(db, tmp_path), "head")
    install(changed_config(other_db))
    after = catalog(db)
    assert after == catalog(other_db)
    assert not any(" ON public.accounts " in t for t in after["triggers"])

    command.downgrade(alembic_config(db, tmp_path), "-1")
    assert catalog(db) == before
    command.downgrade(alembic_config(db, tmp_path), "base")
    assert catalog(db) == {name: [] for name in CATALOG}


def test_offline_sql_keeps_every_colon_word(db: str, tmp_path: Path) -> None:
    config = example_config(db)
    accounts = config.tables["public.accounts"].model_copy(
        update={"where": "status <> ':draft' AND status <> 'a\\:b'"}
    )
    config = config.model_copy(update={"tables": {**config.tables, "public.accounts": accounts}})
    generate_revision(config, "colons", REPO / "migrations", tmp_path)
    output = io.StringIO()

    command.upgrade(alembic_config(db, tmp_path, output), "head", sql=True)
    script = output.getvalue()

    rendered = render_install(config).strip().removesuffix(";")
    assert "':draft'" in rendered and "::text[]" in rendered
    assert rendered in script
    assert "<> NULL" not in script
