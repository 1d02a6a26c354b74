"""How a batch is applied in PostgreSQL, against a real database: the incoming rows are
found by their key however much the table grew after a statement was prepared, and only
a batch that raises its sender's watermark locks it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from cdc_bridge.config import BridgeConfig
from cdc_bridge.inbound.apply import Applier
from cdc_bridge.peer import codec
from cdc_bridge.peer.protocol import Batch, Change
from tests.helpers import fetch, install
from tests.integration.inbound_support import change, load, statuses


@pytest.fixture
def shop(db: str) -> BridgeConfig:
    config = load("shop.yaml", db)
    install(config)
    return config


@contextmanager
def applying(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection like serve's pooled ones, preparing every statement at once."""
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as conn:
        codec.use_exact_json(conn)
        yield conn


def batch(*changes: Change, settled_below: int | None = None) -> Batch:
    return Batch(source="erp", batch_id=uuid.uuid4().hex, changes=list(changes),
                 settled_below=settled_below)


def customer(id_: int, name: str = "Zoë 𝄞") -> Change:
    return change("public.customers", "insert", {"id": id_},
                  {"id": id_, "name": f"{name} {id_}", "email": None, "tier": "gold"})


def scans(conn: psycopg.Connection[Any], dsn: str) -> tuple[int, int]:
    """(sequential, index) scans of the shop's customers so far, with what `conn` did
    counted (its statistics are flushed when it next goes idle)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    ((seq, idx),) = fetch(
        dsn, "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables"
        " WHERE relid = 'public.customers'::regclass",
    )
    return int(seq), int(idx)


def test_rows_are_found_by_key_after_the_table_grew_under_a_plan_made_when_it_was_empty(
    shop: BridgeConfig,
) -> None:
    dsn = shop.database.url.get_secret_value()
    applier = Applier(shop)
    with psycopg.connect(dsn, autocommit=True) as admin:
        # A DBA switched autovacuum off: nothing ANALYZEs the table, so nothing makes
        # PostgreSQL plan the prepared statements again.
        admin.execute("ALTER TABLE public.customers SET (autovacuum_enabled = off)")
    with applying(dsn) as conn:
        # The table holds at most a row while every statement is prepared and run more
        # than five times: PostgreSQL keeps a generic plan of each from then on.
        for i in range(1, 13):
            assert statuses(applier.apply(conn, batch(customer(i)))) == ["applied"]
            renamed = change("public.customers", "update", {"id": i},
                             {"id": i, "name": "Bob", "email": "b@example.com", "tier": "std"})
            assert statuses(applier.apply(conn, batch(renamed))) == ["applied"]
            gone = change("public.customers", "delete", {"id": i})
            assert statuses(applier.apply(conn, batch(gone))) == ["applied"]
        grown = [customer(i) for i in range(100, 20_100)]
        assert set(statuses(applier.apply(conn, batch(*grown)))) == {"applied"}
        before = scans(conn, dsn)
        # One change of each kind on the grown table: each finds its row by the key.
        updated = change("public.customers", "update", {"id": 5_000},
                         {"id": 5_000, "name": "Ann", "email": None, "tier": "std"})
        assert statuses(applier.apply(conn, batch(updated))) == ["applied"]
        deleted = change("public.customers", "delete", {"id": 7_000})
        assert statuses(applier.apply(conn, batch(deleted))) == ["applied"]
        seq, idx = scans(conn, dsn)
    assert seq == before[0], "an apply read the whole table"
    assert idx > before[1]
    assert fetch(dsn, "SELECT id, name, email, tier FROM public.customers"
                      " WHERE id IN (5000, 7000)") == [(5_000, "Ann", None, "std")]
    assert fetch(dsn, "SELECT count(*) FROM public.customers") == [(19_999,)]


def watermark(dsn: str, source: str = "erp") -> int | None:
    found = fetch(dsn, "SELECT settled_below FROM cdc_bridge.watermarks WHERE source = %s",
                  source)
    return int(found[0][0]) if found else None


def test_only_a_batch_that_raises_the_watermark_locks_it_and_it_never_falls(
    shop: BridgeConfig,
) -> None:
    dsn = shop.database.url.get_secret_value()
    applier = Applier(shop)
    with applying(dsn) as conn, psycopg.connect(dsn) as raising:
        # The sender's first batch writes its watermark.
        assert statuses(applier.apply(conn, batch(customer(1), settled_below=100))) == [
            "applied"
        ]
        assert watermark(dsn) == 100
        # Another batch raises it and has not committed: it holds the row.
        raising.execute("UPDATE cdc_bridge.watermarks SET settled_below = 200"
                        " WHERE source = 'erp'")
        # A batch carrying the watermark already there does not wait for that one (a
        # wait would end in this lock timeout's error).
        conn.execute("SET lock_timeout = '2s'")
        assert statuses(applier.apply(conn, batch(customer(2), settled_below=100))) == [
            "applied"
        ]
        conn.execute("RESET lock_timeout")
        # One that would raise it waits for the raising one, then leaves the higher value.
        done: list[list[str]] = []
        lower = threading.Thread(target=lambda: done.append(
            statuses(applier.apply(conn, batch(customer(3), settled_below=150)))))
        lower.start()
        raising.commit()
        lower.join(60)
        assert done == [["applied"]]
        assert watermark(dsn) == 200
        assert statuses(applier.apply(conn, batch(customer(4), settled_below=300))) == [
            "applied"
        ]
    assert watermark(dsn) == 300
    assert fetch(dsn, "SELECT id FROM public.customers ORDER BY id") == [(1,), (2,), (3,), (4,)]
