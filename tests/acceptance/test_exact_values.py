"""Every built-in type arrives exactly: rows that Hypothesis writes at the ERP are read back
at the shop with the same `row::text`, through the real capture triggers, the real relay
and the shop's real `serve` on 127.0.0.1.

Two tables hold the same columns: one ships whole rows (PostgreSQL encodes each change in
the relay's query), one names its fields in a field map (the relay's SOR filter handles
each change in Python). Both paths must keep every value.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings

from cdc_bridge.cli import cli
from cdc_bridge.config import BridgeConfig, parse_config
from cdc_bridge.ops.reconcile import reconcile
from tests import pg
from tests.helpers import FIXTURES, SECRET, install
from tests.integration.inbound_support import Server, running
from tests.relay_support import config_text, running_relay, wait_drained
from tests.values import (
    COLUMNS,
    EDGES,
    EDGES_NEGATED,
    NAMES,
    TYPES_DDL,
    insert_sql,
    params,
    rows,
    table_ddl,
    update_sql,
    without_xml,
)

WHOLE, FIELDS = "zoo", "zoo_fields"
TABLES = (WHOLE, FIELDS)
# Money and documents keyed by a 30-digit number: the values the issue saw rounded.
LEDGER_DDL = """
CREATE TABLE public.ledger (
    id numeric PRIMARY KEY, amount numeric(20, 6), rate numeric, doc jsonb, note text);
"""


def _with_tables(text: str, whole: str, owner: str) -> str:
    data = yaml.safe_load(text)
    data["tables"]["public.ledger"] = {"key": ["id"], "sor": whole}
    data["tables"][f"public.{WHOLE}"] = {"key": ["id"], "sor": whole}
    data["tables"][f"public.{FIELDS}"] = {
        "key": ["id"],
        "sor": dict.fromkeys(("id", *NAMES), owner),
    }
    return yaml.safe_dump(data)


def shop_config(dsn: str) -> BridgeConfig:
    env = {"SHOP_DATABASE_URL": dsn, "BRIDGE_SECRET": SECRET}
    text = _with_tables((FIXTURES / "shop.yaml").read_text(), "peer", "peer")
    return parse_config(text, "shop.yaml", env)


def create_tables(*dsns: str) -> None:
    for dsn in dsns:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TYPES_DDL.encode())
            conn.execute(LEDGER_DDL.encode())
            for table in TABLES:
                conn.execute(table_ddl(table).encode())


def row_text(dsn: str, table: str, key: int) -> str | None:
    with psycopg.connect(dsn) as conn:
        # The alias is no column's name: a column would shadow it.
        query = f"SELECT whole_row::text FROM public.{table} AS whole_row WHERE id = %s"  # noqa: S608
        row = conn.execute(query.encode(), [key]).fetchone()
    return None if row is None else str(row[0])


def failures(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT table_name, key, reason FROM cdc_bridge.failed").fetchall()


def table_text(dsn: str, table: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        query = f"SELECT r::text FROM public.{table} AS r ORDER BY id"  # noqa: S608
        return [str(row[0]) for row in conn.execute(query.encode())]


def sql(dsn: str, statement: str, *values: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement.encode(), values or None)


@dataclass
class Pair:
    """The ERP's relay shipping to the shop's `serve`; `cli` runs a command at the ERP."""

    erp: BridgeConfig
    erp_dsn: str
    shop: Server
    config_path: Path

    @property
    def shop_dsn(self) -> str:
        return self.shop.dsn

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cdc_bridge", "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def settled(self) -> None:
        wait_drained(self.erp_dsn)
        assert failures(self.erp_dsn) == []


@pytest.fixture
def shop_db(pg_server: pg.TestServer, template_db: str) -> Iterator[str]:
    name = pg_server.new_name("shop")
    yield pg_server.create_database(name, template=template_db)
    pg_server.drop_database(name)


@pytest.fixture
def pair(db: str, shop_db: str, tmp_path: Path) -> Iterator[Pair]:
    create_tables(db, shop_db)
    with running(shop_config(shop_db)) as shop:
        text = _with_tables(config_text(db, shop.url), "local", "local")
        path = tmp_path / "erp.yaml"
        path.write_text(text)
        erp = parse_config(text, str(path), {})
        install(erp)
        with running_relay(erp):
            yield Pair(erp, db, shop, path)


def reads_xml(dsn: str) -> bool:
    """Whether this server was built with libxml (the embedded one is not)."""
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute("SELECT '<a/>'::xml")
        except psycopg.errors.FeatureNotSupported:
            return False
    return True


def test_rows_of_every_type_arrive_with_the_same_row_text(pair: Pair) -> None:
    keys = itertools.count(1)
    xml = reads_xml(pair.erp_dsn)
    # Without libxml the xml column stays, holding NULLs only.

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(first=rows(xml), second=rows(xml))
    @example(first=without_xml(EDGES, xml), second=without_xml(EDGES_NEGATED, xml))
    @example(first=without_xml(EDGES_NEGATED, xml), second=without_xml(EDGES, xml))
    def round_trip(first: dict[str, str | None], second: dict[str, str | None]) -> None:
        key = next(keys)
        for statement, values in (
            (insert_sql, [key, *params(first)]),
            (update_sql, [*params(second), key]),
        ):
            with psycopg.connect(pair.erp_dsn, autocommit=True) as conn:
                for table in TABLES:
                    conn.execute(statement(table).encode(), values)
            pair.settled()
            for table in TABLES:
                sent = row_text(pair.erp_dsn, table, key)
                assert sent is not None
                assert row_text(pair.shop_dsn, table, key) == sent

    round_trip()
    tools_read_every_value(pair, next(keys) - 1)


def tools_read_every_value(pair: Pair, rows: int) -> None:
    """What Hypothesis wrote passes every tool: each batch shown (text and JSON), each
    table reconciled in sync, and shipped again by a snapshot unchanged."""
    listed = pair.cli("batches", "list", "--json", "--limit", "100000")
    assert listed.returncode == 0, listed.stderr
    runner = CliRunner()
    for batch in json.loads(listed.stdout):
        for extra in ((), ("--json",)):
            args = ["--config", str(pair.config_path), "batches", "show", batch["batch_id"]]
            shown = runner.invoke(cli, [*args, *extra])
            assert shown.exit_code == 0, shown.output
    for table in TABLES:
        report = reconcile(pair.erp, f"public.{table}")
        assert report.in_sync and report.compared == rows, report.as_json()
        before = table_text(pair.erp_dsn, table)
        done = pair.cli("snapshot", f"public.{table}")
        assert done.returncode == 0, done.stdout + done.stderr
        pair.settled()
        assert table_text(pair.shop_dsn, table) == table_text(pair.erp_dsn, table) == before


# ------------------------------------------------------------------ the values

BIG = 10**30  # a numeric key past 64 bits
AS_PEER = "SELECT set_config('cdc_bridge.origin', 'erp', false)"  # passes the shop's guard
LEDGER_INSERT = "INSERT INTO ledger VALUES (%s, %s, %s, %s::jsonb, %s)"


def as_peer(dsn: str, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Write at the shop as the bridge would: its guard refuses anyone else."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(AS_PEER)
        for statement, values in statements:
            conn.execute(statement.encode(), values)


def test_reconcile_fix_repairs_every_difference_it_reports(pair: Pair) -> None:
    ledger = [
        (BIG, "12345678901234.123456", "1.10", '{"n": 123456789012345678901234567890}', "a"),
        (BIG + 1, "0.000001", "1234567.123456789012", '{"p": [1.10, 2.500]}', "b"),
        (BIG + 2, "-1.000000", "1.10", '{"n": 123456789012345678901234567891}', "c"),
        (3, "1.500000", "NaN", "[1.10]", "d"),
    ]
    with psycopg.connect(pair.erp_dsn, autocommit=True) as conn:
        for row in ledger:
            conn.execute(LEDGER_INSERT.encode(), row)
    pair.settled()
    assert table_text(pair.shop_dsn, "ledger") == table_text(pair.erp_dsn, "ledger")

    # The shop's copy as the float-rounding bridge left it, a row lost and one too many.
    as_peer(
        pair.shop_dsn,
        (
            "UPDATE ledger SET amount = 12345678901234.123000, rate = 1.1, doc = %s WHERE id = %s",
            ('{"n": 123456789012345680000000000000}', BIG),
        ),
        ("UPDATE ledger SET rate = 1.1 WHERE id = %s", (BIG + 2,)),  # a trailing zero apart
        ("DELETE FROM ledger WHERE id = %s", (BIG + 1,)),
        ("INSERT INTO ledger VALUES (99, 1, 1, NULL, 'only at the shop')", ()),
    )
    report = reconcile(pair.erp, "public.ledger")
    assert (report.different, report.missing, report.extra) == (2, 1, 1)
    assert report.differences[0].fields["rate"] == (Decimal("1.10"), Decimal("1.1"))

    fixed = reconcile(pair.erp, "public.ledger", fix=True)
    assert fixed.fixes_queued == 4  # three upserts, one delete
    pair.settled()

    after = reconcile(pair.erp, "public.ledger")
    assert after.in_sync and after.compared == 4
    assert table_text(pair.shop_dsn, "ledger") == table_text(pair.erp_dsn, "ledger")


def test_integers_past_64_bits_never_get_a_5xx_and_arrive_exactly(pair: Pair) -> None:
    # Through the relay: a 30-digit key, and integers past 64 bits inside jsonb.
    doc = '{"n": 123456789012345678901234567890, "m": [-99999999999999999999999, 1.10]}'
    sql(pair.erp_dsn, LEDGER_INSERT, BIG, "12345678901234.123456", "1.10", doc, "x")
    pair.settled()
    assert table_text(pair.shop_dsn, "ledger") == table_text(pair.erp_dsn, "ledger")
    with psycopg.connect(pair.erp_dsn) as conn:
        answers = conn.execute("SELECT DISTINCT http_status FROM cdc_bridge.attempts").fetchall()
    assert answers == [(200,)]

    # A batch written by hand, straight to `serve`. Its txid is above the watermark the
    # relay's batches carried (a key below it is a duplicate by the protocol).
    body = (
        '{"protocol": "cdc-bridge/1", "source": "erp", "batch_id": "big-values", "changes": ['
        '{"idempotency_key": "erp:4611686018427387904:1", "table": "public.ledger",'
        ' "op": "insert",'
        ' "key": {"id": 1000000000000000000000000000005},'
        ' "fields": {"id": 1000000000000000000000000000005, "amount": 12345678901234.123456,'
        ' "rate": 1.10, "doc": {"n": 123456789012345678901234567890, "f": 1.10}},'
        ' "committed_at": "2026-01-01T00:00:00+00:00", "origin": "erp"}]}'
    )
    response = pair.shop.post(body.encode())
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["applied"]
    assert row_text(pair.shop_dsn, "ledger", BIG + 5) == (
        "(1000000000000000000000000000005,12345678901234.123456,1.10,"
        '"{""f"": 1.10, ""n"": 123456789012345678901234567890}",)'
    )


def _nested(depth: int) -> str:
    return '{"d": ' * depth + "[1.10, 123456789012345678901234567890]" + "}" * depth


def test_deeply_nested_jsonb_passes_serve_and_every_tool(pair: Pair) -> None:
    deep = _nested(2000)
    sql(pair.erp_dsn, LEDGER_INSERT, 42, "1", "1", deep, "deep")
    pair.settled()
    assert table_text(pair.shop_dsn, "ledger") == table_text(pair.erp_dsn, "ledger")

    listed = pair.cli("batches", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    batch_id = json.loads(listed.stdout)[0]["batch_id"]
    for args in (("batches", "show", batch_id), ("batches", "show", batch_id, "--json")):
        shown = pair.cli(*args)
        assert shown.returncode == 0, shown.stderr
        assert batch_id in shown.stdout

    checked = pair.cli("reconcile", "public.ledger")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    for args in (
        ("replay", "--table", "public.ledger", "--key", "42"),
        ("snapshot", "public.ledger"),
    ):
        done = pair.cli(*args)
        assert done.returncode == 0, done.stdout + done.stderr
        pair.settled()
        assert table_text(pair.shop_dsn, "ledger") == table_text(pair.erp_dsn, "ledger")


# ------------------------------------------------------------------ values jsonb would change

# Each a value that to_jsonb changes: -0, json's own text, the jsonb document `null`, array
# bounds (in a column, in a composite). On the wire they travel as their text.
ODD = {
    "f4": "-0",
    "f8": "-0",
    "js": '{"b": 1,  "a": 2, "a": 3}',
    "jb": "null",
    "im": "[0:1][-2:-1]={{1,2},{3,NULL}}",
    "ta": "[-1:0]={a,NULL}",
    "addr": '(x,1,1.10,"[0:0]={a}")',
}
ODD_ON_THE_WIRE = {**ODD, "addr": "(x,1,1.10,[0:0]={a})"}  # the composite's own text
# What jsonb would have made of them: what the shop held before this fix.
ROUNDED = {
    "f4": "0",
    "f8": "0",
    "js": '{"a": 3, "b": 1}',
    "jb": None,
    "im": "{{1,2},{3,NULL}}",
    "ta": "{a,NULL}",
    "addr": '(x,1,1.10,"{a}")',
}


def odd_row(key: int, values: dict[str, str | None]) -> list[str | None]:
    return [key, *params({**dict.fromkeys(NAMES), **values})]


# One row per value, through both tables (whole rows, and the per-field SOR filter):
# a failure names the value at fault.
EACH_ALONE = (
    {"f8": "-0"},
    {"f4": "-0"},
    {"js": '{"b": 1,  "a": 2, "a": 3}'},
    {"js": "null"},
    {"jb": "null"},
    {"jb": '"null"'},
    {"im": "[0:2]={1,2,3}"},
    {"ta": "[-1:1]={a,NULL,c}"},
    {"addr": '(x,1,1.10,"[0:0]={a}")'},
)


def test_each_value_jsonb_would_change_arrives_exactly_alone(pair: Pair) -> None:
    with psycopg.connect(pair.erp_dsn, autocommit=True) as conn:
        for key, values in enumerate(EACH_ALONE, start=1):
            for table in TABLES:
                conn.execute(insert_sql(table).encode(), odd_row(key, values))
    pair.settled()
    rows = [(table, key) for key in range(1, len(EACH_ALONE) + 1) for table in TABLES]
    shop = {(t, k): row_text(pair.shop_dsn, t, k) for t, k in rows}
    erp = {(t, k): row_text(pair.erp_dsn, t, k) for t, k in rows}
    assert shop == erp


def test_values_jsonb_would_change_pass_batches_show_reconcile_and_snapshot(pair: Pair) -> None:
    with psycopg.connect(pair.erp_dsn, autocommit=True) as conn:
        conn.execute(insert_sql(WHOLE).encode(), odd_row(7, ODD))
    pair.settled()
    assert row_text(pair.shop_dsn, WHOLE, 7) == row_text(pair.erp_dsn, WHOLE, 7)

    # batches show prints the change as it went: each such value as its text.
    listed = pair.cli("batches", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    batch_id = json.loads(listed.stdout)[0]["batch_id"]
    shown = pair.cli("batches", "show", batch_id, "--json")
    assert shown.returncode == 0, shown.stderr
    (change,) = json.loads(shown.stdout)["changes"]
    assert {name: change["fields"][name] for name in ODD} == ODD_ON_THE_WIRE
    plain = pair.cli("batches", "show", batch_id)
    assert plain.returncode == 0 and batch_id in plain.stdout, plain.stderr

    checked = pair.cli("reconcile", f"public.{WHOLE}")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The shop's copy as a bridge that wrote values through jsonb left it: every one of
    # them is a difference that reconcile reports, and --fix repairs.
    types = {c.name: c.type for c in COLUMNS}
    sets = ", ".join(f"{name} = %s::{types[name]}" for name in ROUNDED)
    rounded = f"UPDATE public.{WHOLE} SET {sets} WHERE id = 7"  # noqa: S608
    as_peer(pair.shop_dsn, (rounded, tuple(ROUNDED.values())))
    report = pair.cli("reconcile", f"public.{WHOLE}", "--json")
    assert report.returncode == 1, report.stdout + report.stderr
    (difference,) = json.loads(report.stdout)["differences"]
    assert difference["fields"] == {
        name: {"local": ODD_ON_THE_WIRE[name], "peer": _rounded_on_the_wire(name)}
        for name in ROUNDED
    }
    fixed = pair.cli("reconcile", f"public.{WHOLE}", "--fix")
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr
    pair.settled()
    assert row_text(pair.shop_dsn, WHOLE, 7) == row_text(pair.erp_dsn, WHOLE, 7)
    again = pair.cli("reconcile", f"public.{WHOLE}")
    assert again.returncode == 0, again.stdout + again.stderr

    # A snapshot ships them exactly too.
    as_peer(pair.shop_dsn, (rounded, tuple(ROUNDED.values())))
    done = pair.cli("snapshot", f"public.{WHOLE}")
    assert done.returncode == 0, done.stdout + done.stderr
    pair.settled()
    assert row_text(pair.shop_dsn, WHOLE, 7) == row_text(pair.erp_dsn, WHOLE, 7)


def _rounded_on_the_wire(name: str) -> Any:
    """The shop's rounded value as the peer read sends it (exact: as it is stored)."""
    return {
        "f4": 0,
        "f8": 0,
        "js": ROUNDED["js"],
        "jb": None,
        "im": [[1, 2], [3, None]],
        "ta": ["a", None],
        "addr": "(x,1,1.10,{a})",
    }[name]
