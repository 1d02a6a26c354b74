"""The relay's retention against a real PostgreSQL and a real HTTP peer: everything it
writes on the shipping path (batches, attempts, delivered) is pruned, and said so."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from cdc_bridge import retention
from cdc_bridge.config import BridgeConfig
from cdc_bridge.sql import query
from tests import pg
from tests.helpers import login_role
from tests.peer import PeerServer
from tests.relay_support import (
    installed_relay,
    relay_config,
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


def no_maintenance_for(dsn: str, table: str, role: str) -> None:
    """Autovacuum off for `table`, and (PostgreSQL 17+) no MAINTAIN on it for `role`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE cdc_bridge.{table} SET (autovacuum_enabled = off)")
        if conn.info.server_version >= 170000:
            conn.execute(f"REVOKE MAINTAIN ON cdc_bridge.{table} FROM {role}")


def grow_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "grows" in r.getMessage()]


def test_a_relay_that_may_not_vacuum_what_it_prunes_says_the_table_grows_once(
    db: str, peer: PeerServer, pg_server: pg.TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cdc_bridge")
    settings: dict[str, Any] = {"delivered_retention_days": 0.5 / 86400,
                                "retention_interval_s": 0.2}
    config = installed(db, peer, **settings)
    no_maintenance_for(db, "delivered", config.database.relay_role)
    with login_role(pg_server, db, "relay", member_of=config.database.relay_role) as name:
        relay = relay_config(make_conninfo(db, user=name), peer.url, **settings)
        with running_relay(relay):
            for first in (1, 100, 200):  # three passes that prune delivered
                write(db, first, 5)
                wait_drained(db)
                wait_until(lambda: counts(db)[2] == 0, 60, "delivered pruned")
    warnings = [w for w in grow_warnings(caplog) if "cdc_bridge.delivered" in w]
    assert len(warnings) == 1  # said once, not at every pass
    assert "may not VACUUM" in warnings[0] and "autovacuum_enabled = on" in warnings[0]
    assert "MAINTAIN" in warnings[0]


def test_tables_a_role_may_vacuum_or_autovacuum_keeps_are_not_left_to_grow(
    db: str, pg_server: pg.TestServer
) -> None:
    config = installed_relay(db, "http://127.0.0.1:1")
    no_maintenance_for(db, "applied_keys", config.database.relay_role)
    with psycopg.connect(db, autocommit=True) as conn:  # the owner may VACUUM anything
        owner = retention.vacuum(conn, "cdc_bridge", ["applied_keys", "delivered"])
    assert owner == retention.Vacuumed(done=["applied_keys", "delivered"], left_to_grow=[])
    with (
        login_role(pg_server, db, "relay", member_of=config.database.relay_role) as name,
        psycopg.connect(make_conninfo(db, user=name), autocommit=True) as conn,
    ):
        autovacuum = conn.execute("SHOW autovacuum").fetchone() == ("on",)
        member = retention.vacuum(conn, "cdc_bridge", ["applied_keys", "delivered"])
    assert "applied_keys" in member.left_to_grow and "applied_keys" not in member.done
    # delivered keeps its settings: vacuumed by this role from PostgreSQL 17 on (MAINTAIN),
    # else left to autovacuum when the server runs it.
    with psycopg.connect(db) as conn:
        maintain = conn.info.server_version >= 170000
    assert ("delivered" in member.done) == maintain
    assert ("delivered" in member.left_to_grow) == (not maintain and not autovacuum)


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
