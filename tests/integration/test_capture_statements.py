"""Statement-level capture: statements touching many rows at once (bulk updates, key
shifts, upserts, rows entering and leaving a `where` filter) ship what the peer needs to
end up with the same rows, each key's changes in order.

The property: replaying the outbox in id order (insert = the row arrives, update = its
shipped fields change, delete = it goes) gives exactly the table's rows in scope, after
any sequence of statements; an insert never arrives for a key the peer already holds,
and an update or delete never for one it does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc_bridge.config import parse_config
from tests.helpers import FIXTURES, SECRET, example_config, install

# The rows each table's peer should hold, as the capture writes them (same jsonb path).
IN_SCOPE = {
    "public.accounts": (
        "SELECT jsonb_build_object('id', id), jsonb_build_object('id', id, 'company_name',"
        " company_name, 'address', address, 'credit_limit', credit_limit)"
        " FROM accounts WHERE status <> 'draft'"
    ),
    "public.customers": "SELECT jsonb_build_object('id', id), to_jsonb(c) FROM customers c",
    "filtered customers": (
        "SELECT jsonb_build_object('id', id), to_jsonb(c) FROM customers c"
        " WHERE tier IS DISTINCT FROM 'hidden'"
    ),
}
# The example config with a `where` filter on the whole-row table too.
HIDDEN_FILTER = (
    "  public.customers: {key: [id], sor: local, where: \"tier IS DISTINCT FROM 'hidden'\"}"
)

Model = dict[str, dict[str, Any]]


@pytest.fixture
def conn(db: str, request: pytest.FixtureRequest) -> Iterator[psycopg.Connection[Any]]:
    config = example_config(db)
    if getattr(request, "param", None) == "filtered customers":
        text = (FIXTURES / "erp.yaml").read_text()
        text = text.replace("  public.customers: {key: [id], sor: local}", HIDDEN_FILTER)
        config = parse_config(text, "erp.yaml", {"ERP_DATABASE_URL": db, "BRIDGE_SECRET": SECRET})
        assert config.table("public.customers").where is not None
    install(config)
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection


def replay(conn: psycopg.Connection[Any], table: str) -> Model:
    """What the peer holds after applying every captured change of `table` in order."""
    peer: Model = {}
    rows = conn.execute(
        "SELECT op, key::text, fields FROM cdc_bridge.outbox WHERE table_name = %s ORDER BY id",
        (table,),
    ).fetchall()
    for op, key, fields in rows:
        if op == "I":
            assert key not in peer, f"insert of {key}, which the peer holds"
            peer[key] = fields
        elif op == "U":
            assert key in peer, f"update of {key}, which the peer does not hold"
            peer[key] = {**peer[key], **fields}
        else:
            assert key in peer, f"delete of {key}, which the peer does not hold"
            del peer[key]
    return peer


def keys_in_scope(conn: psycopg.Connection[Any], table: str) -> Model:
    """in_scope, keyed by the key's jsonb text as the outbox prints it."""
    rows = conn.execute(f"SELECT k::text, f FROM ({IN_SCOPE[table]}) AS s(k, f)").fetchall()  # noqa: S608 - test constant
    return {key: fields for key, fields in rows}


def test_one_bulk_update_ships_each_key_once_entering_and_leaving_the_filter(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(
        "INSERT INTO accounts VALUES (1, 'A', 'a st', 10, 'active', NULL),"
        " (2, 'B', 'b st', 20, 'draft', NULL), (3, 'C', 'c st', 30, 'active', NULL),"
        " (4, 'D', 'd st', 40, 'active', NULL), (5, 'E', 'e st', 50, 'draft', NULL)"
    )
    conn.execute(
        "UPDATE accounts SET"
        " status = CASE id WHEN 2 THEN 'active' WHEN 3 THEN 'draft' ELSE status END,"
        " credit_limit = CASE id WHEN 1 THEN 11 ELSE credit_limit END,"
        " notes = 'touched'"  # every row, a field that does not ship
    )
    rows = conn.execute(
        "SELECT op, key, fields, old, changed FROM cdc_bridge.outbox ORDER BY id OFFSET 3"
    ).fetchall()
    assert sorted(rows, key=lambda r: r[1]["id"]) == [
        ("U", {"id": 1}, {"id": 1, "credit_limit": 11}, None, ["credit_limit"]),
        (
            "I",
            {"id": 2},
            {"id": 2, "company_name": "B", "address": "b st", "credit_limit": 20},
            None,
            None,
        ),
        ("D", {"id": 3}, None, None, None),
    ]


def test_a_bulk_key_shift_ships_the_old_keys_leaving_before_the_new_ones_arrive(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 4) g")
    conn.execute("UPDATE customers SET id = id + 10, name = name || '+' WHERE id > 1")
    rows = conn.execute(
        "SELECT op, key->>'id', fields->>'name' FROM cdc_bridge.outbox ORDER BY id OFFSET 4"
    ).fetchall()
    assert sorted(rows[:3]) == [("D", "2", None), ("D", "3", None), ("D", "4", None)]
    assert sorted(rows[3:]) == [("I", "12", "c2+"), ("I", "13", "c3+"), ("I", "14", "c4+")]


def test_an_upsert_ships_inserts_and_updates(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bo')")
    conn.execute(
        "INSERT INTO customers VALUES (2, 'Bob'), (3, 'Cy'), (1, 'Ann')"
        " ON CONFLICT (id) DO UPDATE SET name = excluded.name"
    )
    rows = conn.execute(
        "SELECT op, key->>'id', fields->>'name' FROM cdc_bridge.outbox ORDER BY id OFFSET 2"
    ).fetchall()
    # One statement, two kinds of change (two triggers); (1, 'Ann') changed nothing.
    assert sorted(rows) == [("I", "3", "Cy"), ("U", "2", "Bob")]


# ------------------------------------------------------------------ the property

ids = st.lists(st.integers(1, 12), min_size=1, max_size=6, unique=True)
selector = st.tuples(st.integers(1, 4), st.integers(0, 3))  # rows with id % m = r


@st.composite
def accounts_statement(draw: st.DrawFn) -> tuple[str, tuple[Any, ...]]:
    m, r = draw(selector)
    which = draw(st.sampled_from(["upsert", "status", "fields", "noop", "shift", "delete"]))
    if which == "upsert":
        status = draw(st.sampled_from(["active", "draft"]))
        return (
            "INSERT INTO accounts SELECT i, 'co' || i, NULL, i * 10, %s, NULL"
            " FROM unnest(%s::int[]) AS i"
            " ON CONFLICT (id) DO UPDATE SET credit_limit = excluded.credit_limit + 1",
            (status, draw(ids)),
        )
    if which == "status":
        status = draw(st.sampled_from(["active", "draft"]))
        return "UPDATE accounts SET status = %s WHERE id %% %s = %s", (status, m, r)
    if which == "fields":
        return (
            "UPDATE accounts SET address = 'st ' || id, company_name = 'x' WHERE id %% %s = %s",
            (m, r),
        )
    if which == "noop":
        return (
            "UPDATE accounts SET notes = 'n', company_name = company_name WHERE id %% %s = %s",
            (m, r),
        )
    if which == "shift":
        return (
            "UPDATE accounts SET id = id + %s WHERE id %% %s = %s",
            (draw(st.integers(-3, 3)), m, r),
        )
    return "DELETE FROM accounts WHERE id %% %s = %s", (m, r)


@st.composite
def customers_statement(draw: st.DrawFn) -> tuple[str, tuple[Any, ...]]:
    m, r = draw(selector)
    which = draw(st.sampled_from(["upsert", "name", "tier", "noop", "shift", "delete"]))
    if which == "upsert":
        return (
            "INSERT INTO customers SELECT i, 'c' || i FROM unnest(%s::int[]) AS i"
            " ON CONFLICT (id) DO UPDATE SET email = 'e' || excluded.id",
            (draw(ids),),
        )
    if which == "name":
        return "UPDATE customers SET name = name || '+' WHERE id %% %s = %s", (m, r)
    if which == "tier":
        tier = draw(st.sampled_from(["hidden", "gold", None]))
        return "UPDATE customers SET tier = %s WHERE id %% %s = %s", (tier, m, r)
    if which == "noop":
        return "UPDATE customers SET name = name WHERE id %% %s = %s", (m, r)
    if which == "shift":
        return (
            "UPDATE customers SET id = id + %s WHERE id %% %s = %s",
            (draw(st.integers(-3, 3)), m, r),
        )
    return "DELETE FROM customers WHERE id %% %s = %s", (m, r)


def run(conn: psycopg.Connection[Any], statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    for text, params in statements:
        # A key shift onto a taken key fails as a whole: nothing to capture.
        with contextlib.suppress(psycopg.errors.UniqueViolation):
            conn.execute(text, params)


@pytest.mark.parametrize(
    ("conn", "table", "scope", "statement"),
    [
        # per-field, `both` fields, a filter
        (None, "public.accounts", "public.accounts", accounts_statement()),
        # whole rows
        (None, "public.customers", "public.customers", customers_statement()),
        # whole rows and a filter
        ("filtered customers", "public.customers", "filtered customers", customers_statement()),
    ],
    indirect=["conn"],
)
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_replaying_the_outbox_gives_the_tables_rows_in_scope(
    conn: psycopg.Connection[Any],
    table: str,
    scope: str,
    statement: st.SearchStrategy[tuple[str, tuple[Any, ...]]],
    data: st.DataObject,
) -> None:
    run(conn, data.draw(st.lists(statement, min_size=1, max_size=8), label="statements"))
    assert replay(conn, table) == keys_in_scope(conn, scope)


def test_columns_named_like_the_row_aliases_do_not_stand_for_the_row(
    conn: psycopg.Connection[Any],
) -> None:
    # Inside the capture function `n` and `o` name the new and old rows; a column of that
    # name must not be taken for the whole row (it once shipped a number as `fields`).
    conn.execute("ALTER TABLE customers ADD COLUMN n numeric, ADD COLUMN o text")
    conn.execute("INSERT INTO customers VALUES (1, 'Ann', NULL, NULL, 1.10, 'x')")
    conn.execute("UPDATE customers SET n = 2.20 WHERE id = 1")
    conn.execute("UPDATE customers SET o = o WHERE id = 1")  # no change: nothing ships
    rows = conn.execute("SELECT op, fields FROM cdc_bridge.outbox ORDER BY id").fetchall()
    row = {"id": 1, "name": "Ann", "email": None, "tier": None, "o": "x"}
    assert rows == [("I", {**row, "n": 1.1}), ("U", {**row, "n": 2.2})]
