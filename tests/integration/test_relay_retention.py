"""The relay's retention against a real PostgreSQL and a real HTTP peer: everything it
writes on the shipping path (batches, attempts, delivered) is pruned, and said so."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

from cdc_bridge.config import BridgeConfig
from cdc_bridge.sql import query
from tests import pg
from tests.peer import PeerServer
from tests.relay_support import (
    installed_relay,
    running_relay,
    wait_drained,
    wait_until,
)

COUNTS = (
    "SELECT (SELECT count(*) FROM cdc_bridge.batches), (SELECT count(*) FROM cdc_bridge.attempts),"
    " (SELECT count(*) FROM cdc_bridge.delivered)"
)


def installed(db: str, peer: PeerServer, **relay: Any) -> BridgeConfig:
    return installed_relay(db, peer.url, **relay)


def write(dsn: str, first: int, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(first, first + count):
            conn.execute("INSERT INTO customers VALUES (%s, %s, NULL, NULL)", (i, f"c{i}"))


def fetch(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def counts(dsn: str) -> tuple[int, int, int]:
    ((batches, attempts, delivered),) = fetch(dsn, COUNTS)
    return int(batches), int(attempts), int(delivered)


def test_a_batch_delivered_on_its_first_attempt_is_finished(db: str, peer: PeerServer) -> None:
    with running_relay(installed(db, peer)):
        write(db, 1, 30)
        wait_drained(db)
    batches = fetch(
        db,
        "SELECT status, finished_at IS NOT NULL, (SELECT count(*) FROM cdc_bridge.attempts a"
        " WHERE a.batch_id = b.batch_id) FROM cdc_bridge.batches b",
    )
    assert batches and all(b == ("delivered", True, 1) for b in batches)


def test_the_relay_prunes_batches_and_attempts_and_logs_it(
    db: str, peer: PeerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cdc_bridge")
    # A retention of about a second, checked five times a second.
    with running_relay(installed(db, peer, delivered_retention_days=1.2 / 86400,
                                 retention_interval_s=0.2)):
        write(db, 1, 30)
        wait_drained(db)
        write(db, 100, 5)
        wait_drained(db)
        wait_until(lambda: counts(db) == (0, 0, 0), 60, "batches, attempts and delivered pruned")
        # The pass that pruned the last rows logs after it has pruned every table and
        # vacuumed them: the rows can be gone before its line is written.
        wait_until(lambda: all(t in pruned_text(caplog) for t in TABLES), 60, "the log line")
    assert all(t in pruned_text(caplog) for t in TABLES)


TABLES = ("batches", "attempts", "delivered")


def pruned_text(caplog: pytest.LogCaptureFixture) -> str:
    return " ".join(
        r.getMessage() for r in caplog.records if "retention pruned" in r.getMessage()
    )


def settled_below(dsn: str) -> int:
    ((value,),) = fetch(dsn, query("relay_settled_below", schema="cdc_bridge").as_string(None))
    return int(value)


def finish_a_later_transaction(dsn: str) -> None:
    """A snapshot's xmax is the latest finished xid + 1: later ones count as running."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_current_xact_id()")


def test_the_watermark_waits_for_open_transactions_of_its_own_database_only(
    db: str, peer: PeerServer, pg_server: pg.TestServer, template_db: str
) -> None:
    installed(db, peer)
    name = pg_server.new_name("other")
    other = pg_server.create_database(name, template=template_db)
    try:
        with psycopg.connect(other) as elsewhere, psycopg.connect(db) as here:
            ((far,),) = elsewhere.execute("SELECT pg_current_xact_id()::text::bigint").fetchall()
            finish_a_later_transaction(db)
            assert settled_below(db) > far  # another database's open transaction: no hold
            ((near,),) = here.execute("SELECT pg_current_xact_id()::text::bigint").fetchall()
            finish_a_later_transaction(db)
            assert settled_below(db) == near  # this database's: it may still write the outbox
            here.execute("INSERT INTO customers VALUES (1, 'Ann', NULL, NULL)")
            here.commit()
            assert settled_below(db) == near  # its change is in the outbox until shipped
    finally:
        pg_server.drop_database(name)
