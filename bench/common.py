"""What several benchmarks share: the server to measure on, and a throw-away database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cdc_bridge.embedded import EmbeddedPostgres

BENCH_DSN_ENV = "CDC_BRIDGE_BENCH_DSN"


@contextmanager
def server() -> Iterator[str]:
    """$CDC_BRIDGE_BENCH_DSN (an admin DSN), or an embedded PostgreSQL 18."""
    dsn = os.environ.get(BENCH_DSN_ENV)
    if dsn:
        yield dsn
        return
    with EmbeddedPostgres() as embedded:
        yield embedded.dsn


@contextmanager
def bench_database(admin_dsn: str, label: str) -> Iterator[str]:
    """A database of its own for one benchmark run, dropped afterwards."""
    name = f"cdcb_bench_{label}_{os.getpid()}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
