"""The outbox's rotation against a real PostgreSQL: a drained slot is emptied by TRUNCATE,
rows still pending move to the current slot unchanged, a writer still in a slot holds its
rotation back (and loses nothing), an outbox of the earlier shape is converted, and a
relay that rotates between nearly every read, as a role that owns nothing, ships every
change of concurrent writers exactly once and in order."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cdc_bridge import outbox
from cdc_bridge.config import BridgeConfig
from tests.helpers import fetch, install, login_role
from tests.peer import PeerServer
from tests.pg import TestServer
from tests.relay_support import (
    concurrent_writers,
    installed_relay,
    relay_config,
    running_relay,
    wait_drained,
    wait_until,
)

# Every column of every pending row, as PostgreSQL prints it (slot aside).
ROWS = (
    "SELECT (id, txid, table_name, op, key, fields, old, changed, origin, captured_at)::text"
    " FROM cdc_bridge.outbox ORDER BY id"
)
# Where the rows are: which of the outbox's tables holds how many.
SLOTS = (
    "SELECT tableoid::regclass::text, count(*) FROM cdc_bridge.outbox"
    " GROUP BY 1 ORDER BY 1"
)
T0, T1, PARENT = "cdc_bridge.outbox_0", "cdc_bridge.outbox_1", "cdc_bridge.outbox"


def installed(db: str, peer: PeerServer, **relay: Any) -> BridgeConfig:
    return installed_relay(db, peer.url, **relay)


def rotate(dsn: str, most_moved: int = 10_000) -> outbox.Rotation:
    async def once() -> outbox.Rotation:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await outbox.rotate(
                conn, "cdc_bridge", most_moved=most_moved, lock_timeout_ms=50
            )

    return asyncio.run(once())


def current_slot(dsn: str) -> int:
    ((slot,),) = fetch(dsn, "SELECT pg_sequence_last_value('cdc_bridge.outbox_slot')")
    return int(slot)


def write_orders(dsn: str, first: int, count: int) -> None:
    """A customer and an order in each transaction: exact money, text across planes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(first, first + count):
            with conn.transaction():
                conn.execute(
                    "INSERT INTO customers VALUES (%s, %s, NULL, 'gold')", (i, f"Zoë 𝄞 {i}")
                )
                conn.execute(
                    "INSERT INTO orders VALUES (%s, %s, 9999999999.99, 'new')", (i, i)
                )


def partition_bytes(dsn: str, slot: int) -> int:
    ((size,),) = fetch(dsn, f"SELECT pg_relation_size('cdc_bridge.outbox_{slot}')")
    return int(size)


def test_a_rotation_empties_the_drained_slot_and_moves_pending_rows_unchanged(
    db: str, peer: PeerServer
) -> None:
    installed(db, peer)
    assert current_slot(db) == 0
    write_orders(db, 1, 20)
    before = fetch(db, ROWS)
    assert fetch(db, SLOTS) == [(T0, 40)]

    first = rotate(db)  # slot 1 was empty: nothing moves; writers now fill slot 1
    assert (first.moved, current_slot(db)) == (0, 1)
    write_orders(db, 21, 5)
    assert fetch(db, SLOTS) == [(T0, 40), (T1, 10)]

    second = rotate(db)  # slot 0's 40 pending rows move to slot 1; slot 0 is emptied
    assert (second.moved, current_slot(db)) == (40, 0)
    assert fetch(db, SLOTS) == [(T1, 50)]
    assert partition_bytes(db, 0) == 0
    after = fetch(db, ROWS)
    assert after[:40] == before  # same ids, txids, values and times
    assert len(after) == 50


def test_a_backlog_larger_than_the_limit_waits_and_changes_nothing(
    db: str, peer: PeerServer
) -> None:
    installed(db, peer)
    write_orders(db, 1, 10)
    rotate(db)
    before = fetch(db, ROWS)
    held = rotate(db, most_moved=19)  # slot 0 holds 20 rows
    assert held.moved is None and held.waiting is not None and "19" in held.waiting
    assert current_slot(db) == 1
    assert fetch(db, ROWS) == before


def test_a_writer_still_in_the_slot_holds_the_rotation_back_and_loses_nothing(
    db: str, peer: PeerServer
) -> None:
    installed(db, peer)
    with psycopg.connect(db) as writer:
        writer.execute("INSERT INTO customers VALUES (1, 'open', NULL, NULL)")  # slot 0
        assert rotate(db).moved == 0  # slot 1 emptied: writers fill it now
        write_orders(db, 10, 1)  # another writer, in slot 1, is not held up
        held = rotate(db)  # slot 0: its writer has not finished
        assert held.moved is None and held.waiting == "a transaction still writes it"
        assert current_slot(db) == 1
        writer.commit()
    assert rotate(db).moved == 1
    assert fetch(db, SLOTS) == [(T1, 3)]
    assert [r[0] for r in fetch(db, "SELECT key->>'id' FROM cdc_bridge.outbox ORDER BY id")] == [
        "1", "10", "10",
    ]


def test_rows_queued_into_the_outbox_itself_move_and_its_pages_go(
    db: str, peer: PeerServer
) -> None:
    # Snapshot, reconcile, replay and conflict resolutions insert into the outbox itself.
    installed(db, peer)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            sql.SQL("{} SELECT 'public.customers', 'I', jsonb_build_object('id', i),"
                    " jsonb_build_object('id', i, 'name', 'n' || i), NULL, NULL, 'erp'"
                    " FROM generate_series(1, 30) i").format(outbox.queue_into("cdc_bridge"))
        )
        conn.execute("DELETE FROM cdc_bridge.outbox WHERE (key->>'id')::int > 25")  # shipped
    before = fetch(db, ROWS)
    assert fetch(db, SLOTS) == [(PARENT, 25)]
    assert rotate(db).moved == 25
    assert fetch(db, SLOTS) == [(T0, 25)]
    assert fetch(db, ROWS) == before
    ((size,),) = fetch(db, "SELECT pg_relation_size('cdc_bridge.outbox')")
    assert size == 0  # the dead rows' pages went too


def test_an_outbox_of_the_earlier_shape_is_converted_with_its_rows_and_ids(
    db: str, peer: PeerServer
) -> None:
    config = relay_config(db, peer.url)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA cdc_bridge")
        # The outbox as earlier versions created it: one plain table.
        conn.execute(
            "CREATE TABLE cdc_bridge.outbox ("
            " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " txid xid8 NOT NULL DEFAULT pg_current_xact_id(),"
            " table_name text NOT NULL, op text NOT NULL CHECK (op IN ('I', 'U', 'D')),"
            " key jsonb NOT NULL, fields jsonb, old jsonb, changed text[],"
            " origin text NOT NULL,"
            " captured_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        conn.execute("CREATE INDEX outbox_txid ON cdc_bridge.outbox (txid, id)")
        conn.execute(
            "INSERT INTO cdc_bridge.outbox (table_name, op, key, fields, origin)"
            " SELECT 'public.orders', 'I', jsonb_build_object('id', i),"
            " jsonb_build_object('id', i, 'total', 12345678901234.123456,"
            " 'big', 123456789012345678901234567890), 'erp'"
            " FROM generate_series(1, 30) i"
        )
        conn.execute("DELETE FROM cdc_bridge.outbox WHERE id > 20")  # shipped: ids 21-30 used
    before = fetch(db, ROWS)
    install(config)
    assert fetch(db, ROWS) == before
    assert fetch(db, SLOTS) == [(T0, 20)]
    assert fetch(db, "SELECT to_regclass('cdc_bridge.outbox_unrotated')") == [(None,)]
    write_orders(db, 1, 1)
    ids = [int(r[0]) for r in fetch(db, "SELECT id FROM cdc_bridge.outbox WHERE id > 20")]
    assert len(ids) == 2 and min(ids) > 30  # ids go on above every id ever given


def test_a_relay_that_owns_nothing_rotates_while_concurrent_writers_lose_nothing(
    db: str, peer: PeerServer, pg_server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Rotation between nearly every read; the relay logs in as a member of the relay role;
    # for a while the peer answers 500, so a backlog sits in both slots and moves.
    caplog.set_level(logging.DEBUG, logger="cdc_bridge.relay.daemon")
    config = installed(db, peer, rotate_interval_s=0.05, batch_size=200)
    with login_role(pg_server, db, "bridge", member_of=config.database.relay_role) as name:
        relay = relay_config(make_conninfo(db, user=name), peer.url, rotate_interval_s=0.05,
                             batch_size=200)
        with psycopg.connect(db, autocommit=True) as conn:
            for slot in (0, 1):
                conn.execute(
                    f"ALTER TABLE cdc_bridge.outbox_{slot} SET (autovacuum_enabled = off)"
                )
        with running_relay(relay):
            threads, expected = concurrent_writers(db, writers=8, keys_per_writer=20, versions=30)
            time.sleep(0.5)
            peer.set_mode("error500")
            time.sleep(1.5)
            peer.set_mode("ok")
            for thread in threads:
                thread.join()
            wait_drained(db, timeout=120)
            ((at_drain,),) = fetch(db, "SELECT rotations FROM cdc_bridge.outbox_rotation")

            def rotated_twice_more() -> bool:
                ((count,),) = fetch(db, "SELECT rotations FROM cdc_bridge.outbox_rotation")
                return int(count) >= int(at_drain) + 2

            wait_until(rotated_twice_more, 30, "two more rotations after the drain")
    assert sum(len(v) for v in expected.values()) == 4_800
    assert peer.applied_names() == expected
    assert int(at_drain) >= 3  # it rotated along the writes, not only at the end
    moved = [int(m) for m in re.findall(r"outbox rotated, (\d+) pending", caplog.text)]
    assert any(n > 0 for n in moved), moved  # pending rows moved while shipping
    assert partition_bytes(db, 0) == 0 and partition_bytes(db, 1) == 0


def test_an_install_missing_its_rotation_row_is_named_and_the_relay_still_ships(
    db: str, peer: PeerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cdc_bridge.relay.daemon")
    config = installed(db, peer, rotate_interval_s=0.05)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DELETE FROM cdc_bridge.outbox_rotation")
    with running_relay(config):
        write_orders(db, 1, 5)
        wait_drained(db)
    warnings = [r.getMessage() for r in caplog.records if "outbox_rotation" in r.getMessage()]
    assert warnings == [
        "cdc_bridge.outbox_rotation has no row, so the outbox cannot rotate; rotation is "
        "off; fix: install again (it writes that row)"
    ]
    assert len(peer.applied_ids()) == 10
