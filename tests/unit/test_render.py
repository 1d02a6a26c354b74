"""Rendered install SQL: quoting, stamps, stable hashes; no database involved."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from cdc_bridge.capture.function import capture_function_body
from cdc_bridge.capture.render import (
    STAMP_PREFIX,
    definition_hash,
    render_install,
    render_uninstall,
    table_triggers,
)
from cdc_bridge.capture.revision import escape_bind_colons, python_string
from cdc_bridge.config import BridgeConfig, parse_config

PACKAGE = Path(__file__).resolve().parents[2] / "cdc_bridge"
ENV = {"URL": "postgresql://u@127.0.0.1:1/nowhere", "SECRET": "s"}
BASE = """\
system: erp
database: {url: "${URL}"}
peer: {name: shop, url: "http://127.0.0.1:8082", secret: "${SECRET}"}
tables:
"""
HOSTILE_TABLE = '\'public."we""ird; DROP TABLE x --"\''


def config(tables: str) -> BridgeConfig:
    return parse_config(BASE + tables, "test.yaml", ENV)


def example() -> BridgeConfig:
    return config(
        "  public.customers: {key: [id], sor: local}\n"
        "  public.products: {key: [sku], sor: {name: local, description: peer}}\n"
        "  public.accounts: {key: [id], sor: {name: both}, where: \"status <> 'draft'\"}\n"
    )


def test_hostile_names_are_quoted_everywhere() -> None:
    cfg = config(f"  {HOSTILE_TABLE}: {{key: ['Id; x'], sor: {{'Na\"me': local}}}}\n")
    text = render_install(cfg)
    assert 'ON "public"."we""ird; DROP TABLE x --"' in text
    assert 'WHERE (ROW(n."Na""me")::record) *<> (ROW(o."Na""me")::record)' in text
    assert 'JOIN "cdc_bridge_old" AS o ON n."Id; x" = o."Id; x"' in text
    # The generated capture function names each column twice: as a quoted identifier and
    # as the jsonb key, a string literal.
    assert """jsonb_build_object('Id; x', n."Id; x", 'Na"me', n."Na""me")""" in text
    assert (
        """CASE WHEN (ROW(n."Na""me")::record) *<> (ROW(o."Na""me")::record) """
        """THEN 'Na"me' END"""
    ) in text
    # The only place the raw name appears unquoted is inside literals (labels, stamps).
    assert 'DROP TABLE x --"' in text and "; DROP TABLE x --\n" not in text


def test_every_trigger_is_stamped_with_its_tables_hash() -> None:
    cfg = example()
    text = render_install(cfg)
    for spec in cfg.table_specs:
        digest = definition_hash(cfg, spec)
        assert re.fullmatch(r"[0-9a-f]{16}", digest)
        stamps = text.count(f"'{STAMP_PREFIX}{digest}'")
        assert stamps == len(table_triggers(cfg, spec)) > 0


def test_hash_is_stable_and_tracks_only_its_own_table() -> None:
    first, again = example(), example()
    changed = config(
        "  public.customers: {key: [id], sor: local}\n"
        "  public.products: {key: [sku], sor: {name: local, description: local}}\n"
        "  public.accounts: {key: [id], sor: {name: both}, where: \"status <> 'draft'\"}\n"
    )
    hashes = [[definition_hash(c, s) for s in c.table_specs] for c in (first, again, changed)]
    assert hashes[0] == hashes[1]
    assert hashes[0][0] == hashes[2][0] and hashes[0][2] == hashes[2][2]
    assert hashes[0][1] != hashes[2][1]
    assert render_install(first) == render_install(again)


def test_updates_of_unshipped_fields_ship_nothing() -> None:
    cfg = example()
    products = cfg.table("public.products")
    body = capture_function_body(cfg, products, "upd").as_string(None)
    changed = re.search(r"JOIN .* AS o ON .*\n    WHERE (.*)\n", body)
    assert changed is not None
    condition = changed.group(1)
    assert '"name"' in condition and '"description"' not in condition


def test_render_needs_no_database() -> None:
    # ENV points at port 1, where nothing listens: rendering still works.
    assert 'CREATE SCHEMA IF NOT EXISTS "cdc_bridge"' in render_install(example())
    assert 'DROP SCHEMA IF EXISTS "cdc_bridge" CASCADE' in render_uninstall(example())


def _fstring_sql_calls(tree: ast.AST) -> list[int]:
    suspicious = {"SQL", "execute", "query", "Composed"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in suspicious and any(isinstance(a, ast.JoinedStr) for a in node.args):
                found.append(node.lineno)
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_no_f_string_reaches_sql(path: Path) -> None:
    assert _fstring_sql_calls(ast.parse(path.read_text())) == []


@pytest.mark.parametrize(
    "text",
    [
        "select ':word'",
        "a::text[]",
        "x -- note: see :this",
        "'a\\:b'",
        "'\\:'",
        ":a:b",
        "e'\\\\:q'",
    ],
)
def test_bind_escape_round_trips_through_sqlalchemy_text(text: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect(paramstyle="named")  # type: ignore[no-untyped-call]
    compiled = sa.text(escape_bind_colons(text)).compile(
        dialect=dialect, compile_kwargs={"literal_binds": True}
    )
    assert str(compiled) == text


@pytest.mark.parametrize("text", ["plain", "it's", "a\\b", "'''", "ends'", "x\ry"])
def test_frozen_strings_read_back_exactly(text: str) -> None:
    assert ast.literal_eval(python_string(text)) == text
