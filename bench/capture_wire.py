"""Capture cost of exact values: a table holding double precision, jsonb and text[] columns,
its install's wire function against the same function reduced to to_jsonb alone, in one run.

Run:  .venv/bin/python bench/capture_wire.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
          [--rows 100000] [--rounds 3]

A table holding none of the types jsonb changes gets `COALESCE($2, to_jsonb($1))`, inlined
(tests/integration/test_capture.py checks the plan); this measures what a table that holds
them pays. Each round installs the table's triggers, then for each variant (order rotated
from round to round) empties the table and the outbox and times, in a new session, one
INSERT of `--rows` rows (one in 1000 with a -0) and one UPDATE of all of them. Prints the
medians and the ratio exact / to_jsonb.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdc_bridge.capture.function import wire_function_name
from cdc_bridge.capture.render import render_install
from cdc_bridge.config import parse_config

DATABASE = "cdc_bridge_bench_wire"
TABLE = """
CREATE TABLE public.items (id bigint PRIMARY KEY, name text, qty int, price numeric(12,2),
                           f8 float8, doc jsonb, tags text[])
"""
INSERT = """
INSERT INTO public.items
SELECT g, 'item ' || g, g %% 100, g / 10.0, CASE WHEN g %% 1000 = 0 THEN '-0' ELSE g / 7.0 END,
       jsonb_build_object('g', g, 'tags', ARRAY['a', 'b']), ARRAY['x', g::text]
FROM generate_series(1, %s) AS g
"""
TO_JSONB = "SELECT COALESCE($2, pg_catalog.to_jsonb($1))"
REPLACE = "CREATE OR REPLACE FUNCTION {}(public.items, jsonb) RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE AS {}"  # noqa: E501


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True, help="a server's admin database")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dsn = make_conninfo(args.dsn, dbname=DATABASE)
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(DATABASE)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    try:
        times = measure(dsn, args.rows, args.rounds)
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(DATABASE)))
    host = conninfo_to_dict(args.dsn).get("host", "local")
    print(f"{args.rows} rows, {args.rounds} rounds, server {host}")
    for statement in ("insert", "update"):
        exact, plain = (statistics.median(times[v][statement]) for v in ("exact", "to_jsonb"))
        print(
            f"{statement}: exact {exact:.3f} s, to_jsonb alone {plain:.3f} s, "
            f"ratio {exact / plain:.2f} (rounds: exact {fmt(times['exact'][statement])}; "
            f"to_jsonb {fmt(times['to_jsonb'][statement])})"
        )


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def measure(dsn: str, rows: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    config = parse_config(
        f"system: erp\ndatabase: {{url: '{dsn}'}}\n"
        "peer: {name: shop, url: 'http://127.0.0.1:1', secret: unused}\n"
        "tables: {public.items: {key: [id], sor: local}}\n",
        "bench.yaml",
        {},
    )
    spec = config.table_specs[0]
    function = sql.Identifier(config.bridge_schema, wire_function_name(spec))
    times: dict[str, dict[str, list[float]]] = {
        v: {"insert": [], "update": []} for v in ("exact", "to_jsonb")
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE)
        conn.execute(render_install(config).encode())
        found = conn.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = %s", [wire_function_name(spec)]
        ).fetchone()
        assert found is not None
        bodies = {"exact": str(found[0]), "to_jsonb": TO_JSONB}
        for n in range(rounds):
            for variant in ("exact", "to_jsonb") if n % 2 == 0 else ("to_jsonb", "exact"):
                conn.execute(sql.SQL(REPLACE).format(function, sql.Literal(bodies[variant])))
                conn.execute("DELETE FROM public.items")
                conn.execute("DELETE FROM cdc_bridge.outbox")
                conn.execute("VACUUM public.items")
                with psycopg.connect(dsn, autocommit=True) as writer:  # fresh plans
                    started = time.perf_counter()
                    writer.execute(INSERT, [rows])
                    times[variant]["insert"].append(time.perf_counter() - started)
                    started = time.perf_counter()
                    writer.execute("UPDATE public.items SET qty = qty + 1")
                    times[variant]["update"].append(time.perf_counter() - started)
    return times


if __name__ == "__main__":
    main()
