"""Where the outbox's bytes go: one captured single-row update, column by column.

Run:  .venv/bin/python bench/capture_bytes.py [--dsn URL] [--variants shipping,per_field,ref_pgq]

Creates the databases of bench/capture.py (`capture_sql/`) for the given designs, runs
`capture_sql/bytes_per_update.sql` (20,000 single-row updates in one transaction, as
bench/capture.py's storage figure does) and prints, per captured update:
- the total (table, indexes, TOAST: what bench/capture.py reports);
- the heap: the tuple (header and data, from pageinspect's lp_len), its line pointer, and
  what the pages leave unused;
- every index, and every column's stored size (pg_column_size; NULL costs no byte but a
  bit in the header's null bitmap).
With --commit-each, every update commits on its own (a DO block that COMMITs), as
pgbench's single-row transactions do: then no index holds two rows of one transaction
(PgQ's index on the txid alone stores a transaction's rows as one entry and a list).
Then, for the bridge's outbox, what other layouts of the same rows would take (`LAYOUTS`):
each is a table filled from the captured rows by one INSERT ... SELECT, with the outbox's
two indexes (or the one named), measured the same way. None of them is what the install
writes; they say what a change of the stored shape would save.
Everything here is deterministic (no timing): run it on any machine, loaded or not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.capture import drop_databases, event_tables, prepare, read, reset

UPDATES = 20_000
DEFAULT = "shipping,per_field,ref_pgq"


COMMIT_EACH = """
DO $bytes$
BEGIN
    FOR i IN 1..20000 LOOP
        UPDATE public.items SET qty = qty + 1 WHERE id = i;
        COMMIT;
    END LOOP;
END
$bytes$;
"""


# name -> (columns, SELECT list from the outbox row `o`, indexes). Cumulative from top to
# bottom where the name starts with "+".
_COMPACT_FIELDS = "replace(replace(o.fields::text, '\": ', '\":'), ', \"', ',\"')::json"
LAYOUTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "the outbox as it is (a copy)": (
        "id bigint, txid xid8, table_name text, op text, key jsonb, fields jsonb, old jsonb,"
        " changed text[], origin text, captured_at timestamptz",
        "o.id, o.txid, o.table_name, o.op, o.key, o.fields, o.old, o.changed, o.origin,"
        " o.captured_at",
        ("(id)", "(txid, id)"),
    ),
    "+ captured_at after txid (no alignment padding)": (
        "id bigint, txid xid8, captured_at timestamptz, table_name text, op text, key jsonb,"
        " fields jsonb, old jsonb, changed text[], origin text",
        "o.id, o.txid, o.captured_at, o.table_name, o.op, o.key, o.fields, o.old, o.changed,"
        " o.origin",
        ("(id)", "(txid, id)"),
    ),
    "+ indexes at fillfactor 100": (
        "id bigint, txid xid8, captured_at timestamptz, table_name text, op text, key jsonb,"
        " fields jsonb, old jsonb, changed text[], origin text",
        "o.id, o.txid, o.captured_at, o.table_name, o.op, o.key, o.fields, o.old, o.changed,"
        " o.origin",
        ("(id) WITH (fillfactor = 100)", "(txid, id) WITH (fillfactor = 100)"),
    ),
    "+ no key where fields hold it (NULL)": (
        "id bigint, txid xid8, captured_at timestamptz, table_name text, op text, key jsonb,"
        " fields jsonb, old jsonb, changed text[], origin text",
        "o.id, o.txid, o.captured_at, o.table_name, o.op,"
        " CASE WHEN o.fields IS NULL THEN o.key END, o.fields, o.old, o.changed, o.origin",
        ("(id) WITH (fillfactor = 100)", "(txid, id) WITH (fillfactor = 100)"),
    ),
    '+ table as a smallint, op as "char", origin NULL for this side': (
        'id bigint, txid xid8, captured_at timestamptz, table_id smallint, op "char",'
        " key jsonb, fields jsonb, old jsonb, changed text[], origin text",
        "o.id, o.txid, o.captured_at, 1, o.op, CASE WHEN o.fields IS NULL THEN o.key END,"
        " o.fields, o.old, o.changed, nullif(o.origin, 'bench')",
        ("(id) WITH (fillfactor = 100)", "(txid, id) WITH (fillfactor = 100)"),
    ),
    "+ fields as compact json text (as PgQ keeps text)": (
        'id bigint, txid xid8, captured_at timestamptz, table_id smallint, op "char",'
        " key jsonb, fields json, old jsonb, changed text[], origin text",
        "o.id, o.txid, o.captured_at, 1, o.op, CASE WHEN o.fields IS NULL THEN o.key END,"
        f" {_COMPACT_FIELDS}, o.old, o.changed, nullif(o.origin, 'bench')",
        ("(id) WITH (fillfactor = 100)", "(txid, id) WITH (fillfactor = 100)"),
    ),
    "+ one index only, on txid (as PgQ): no id order for the relay's read": (
        'id bigint, txid xid8, captured_at timestamptz, table_id smallint, op "char",'
        " key jsonb, fields json, old jsonb, changed text[], origin text",
        "o.id, o.txid, o.captured_at, 1, o.op, CASE WHEN o.fields IS NULL THEN o.key END,"
        f" {_COMPACT_FIELDS}, o.old, o.changed, nullif(o.origin, 'bench')",
        ("(txid)",),
    ),
}


def layouts(conn: psycopg.Connection[Any], outbox: str, rows: int) -> None:
    print(f"\n  the same {rows} rows in other layouts (bytes per row: heap, indexes, total)")
    for number, (name, (columns, select, indexes)) in enumerate(LAYOUTS.items()):
        table = sql.Identifier(f"layout_{number}")
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(columns)))
        for index in indexes:  # before the rows: filled by inserts, as the outbox's are
            conn.execute(sql.SQL("CREATE INDEX ON {} {}").format(table, sql.SQL(index)))
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT {} FROM ONLY {} AS o ORDER BY o.id").format(
                table, sql.SQL(select), sql.SQL(outbox)
            )
        )
        heap = _one(conn, sql.SQL("SELECT pg_relation_size(%s::regclass)"), table.as_string(conn))
        total = _one(
            conn, sql.SQL("SELECT pg_total_relation_size(%s::regclass)"), table.as_string(conn)
        )
        print(f"  {name:<72} {heap / rows:6.1f} {(total - heap) / rows:6.1f} {total / rows:6.1f}")
        conn.execute(sql.SQL("DROP TABLE {}").format(table))


def breakdown(dsn: str, commit_each: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        tables = [t.as_string(conn) for t in event_tables(conn)]
    reset(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(COMMIT_EACH if commit_each else read("bytes_per_update.sql"))
        for table in tables:
            rows = _one(conn, sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.SQL(table)))
            if not rows:
                continue
            _table(conn, table, rows)
            if table.startswith('"cdc_bridge"'):
                layouts(conn, table, rows)


def _one(conn: psycopg.Connection[Any], query: sql.SQL | sql.Composed, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    return None if row is None else row[0]


def _table(conn: psycopg.Connection[Any], table: str, rows: int) -> None:
    total = _one(conn, sql.SQL("SELECT pg_total_relation_size(%s::regclass)"), table)
    heap = _one(conn, sql.SQL("SELECT pg_relation_size(%s::regclass)"), table)
    tuple_len, header = conn.execute(
        "SELECT avg(lp_len), avg(t_hoff) FROM generate_series(0, %s - 1) AS p,"
        " heap_page_items(get_raw_page(%s, p)) WHERE lp_len > 0",
        (heap // 8192, table),
    ).fetchone() or (0, 0)
    print(f"\n{table}: {rows} rows, {total / rows:.1f} bytes per row in all")
    print(f"  heap {heap / rows:.1f}: tuple {float(tuple_len):.1f} (header {float(header):.1f},"
          f" data {float(tuple_len - header):.1f}), line pointer 4,"
          f" page space left and alignment {heap / rows - float(tuple_len) - 4:.1f}")  # fmt: skip
    for name, size in conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_relation_size(i.indexrelid)"
        " FROM pg_index i WHERE i.indrelid = %s::regclass ORDER BY 1",
        (table,),
    ):
        print(f"  index {name}: {size / rows:.1f}")
    toast = _one(
        conn,
        sql.SQL("SELECT coalesce(pg_total_relation_size(nullif(reltoastrelid, 0)), 0)"
                " FROM pg_class WHERE oid = %s::regclass"),
        table,
    )  # fmt: skip
    print(f"  TOAST: {toast / rows:.1f}")
    columns = [
        name
        for (name,) in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
    ]
    sizes = conn.execute(
        sql.SQL("SELECT {} FROM ONLY {}").format(
            sql.SQL(", ").join(
                sql.SQL("avg(coalesce(pg_column_size({}), 0))").format(sql.Identifier(c))
                for c in columns
            ),
            sql.SQL(table),
        )
    ).fetchone()
    assert sizes is not None
    print("  columns: " + ", ".join(
        f"{c} {float(s):.1f}" for c, s in zip(columns, sizes, strict=True)))  # fmt: skip
    print(f"  sum of columns {sum(float(s) for s in sizes):.1f}"
          " (the data adds alignment padding)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--variants", default=DEFAULT)
    parser.add_argument("--commit-each", action="store_true", help="one transaction per update")
    args = parser.parse_args()
    variants = tuple(v for v in args.variants.split(",") if v)
    dsns = prepare(args.dsn, "bench_bytes", variants)
    try:
        for variant, dsn in dsns.items():
            print(f"\n== {variant}")
            breakdown(dsn, args.commit_each)
    finally:
        drop_databases(args.dsn, dsns)


if __name__ == "__main__":
    main()
