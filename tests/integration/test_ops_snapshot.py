"""`snapshot` against a real PostgreSQL: chunks into the outbox, live writes, kill and resume."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest

from cdc_bridge.ops import snapshot as snapshot_ops
from tests.integration.ops_fixtures import Bridge, bridge

__all__ = ["bridge"]

SNAPSHOT_ROWS = (
    "SELECT key, fields, op, origin, changed, old FROM cdc_bridge.outbox "
    "WHERE table_name = %s ORDER BY id"
)


def _customers(bridge: Bridge, count: int) -> None:
    with bridge.connect() as conn:
        conn.execute(
            "INSERT INTO customers SELECT i, 'name ' || i, i || '@x', NULL "
            "FROM generate_series(1, %s) AS i",
            (count,),
        )
        conn.execute("DELETE FROM cdc_bridge.outbox")  # keep only what the snapshot writes


def test_whole_row_table_ships_every_row_as_upserts_in_key_order(bridge: Bridge) -> None:
    _customers(bridge, 250)
    code, out, _ = bridge.cli("snapshot", "public.customers", "--chunk", "100")
    assert code == 0 and "250 row(s) queued" in out
    rows = bridge.rows(SNAPSHOT_ROWS, "public.customers")
    assert [r[0] for r in rows] == [{"id": i} for i in range(1, 251)]
    assert rows[0][1:] == (
        {"id": 1, "name": "name 1", "email": "1@x", "tier": None},
        "U",
        "erp",
        None,
        None,
    )
    assert bridge.rows(
        "SELECT status, rows, finished_at IS NOT NULL FROM cdc_bridge.snapshots"
    ) == [("finished", 250, True)]


def test_per_field_table_ships_only_owned_fields_and_honours_both_filters(
    bridge: Bridge,
) -> None:
    with bridge.connect() as conn:
        conn.execute("INSERT INTO products VALUES ('P1', 'Pen', 1.5, 'theirs', 3)")
        conn.execute(
            "INSERT INTO accounts (id, company_name, address, credit_limit, status) VALUES "
            "(1, 'A', 'a st', 50, 'active'), (2, 'B', 'b st', 500, 'active'), "
            "(3, 'C', 'c st', 900, 'draft')"
        )
        conn.execute("DELETE FROM cdc_bridge.outbox")
    assert bridge.cli("snapshot", "public.products")[0] == 0
    assert [r[1] for r in bridge.rows(SNAPSHOT_ROWS, "public.products")] == [
        {"sku": "P1", "name": "Pen", "price": 1.5}
    ]
    # The table's own filter (status <> 'draft') and --where both apply.
    code, _, _ = bridge.cli("snapshot", "public.accounts", "--where", "credit_limit > 100")
    assert code == 0
    assert [r[1] for r in bridge.rows(SNAPSHOT_ROWS, "public.accounts")] == [
        {"id": 2, "company_name": "B", "address": "b st", "credit_limit": 500}
    ]


def test_handed_off_rows_are_not_shipped(bridge: Bridge) -> None:
    with bridge.connect() as conn:
        conn.execute("INSERT INTO orders (id, total) VALUES (1, 10), (2, 20)")
        conn.execute(
            "INSERT INTO cdc_bridge.handoffs (table_name, key) VALUES ('public.orders', %s)",
            ('{"id": 1}',),
        )
        conn.execute("DELETE FROM cdc_bridge.outbox")
    assert bridge.cli("snapshot", "public.orders")[0] == 0
    assert [r[0] for r in bridge.rows(SNAPSHOT_ROWS, "public.orders")] == [{"id": 2}]


def test_bad_input_is_a_user_error(bridge: Bridge) -> None:
    cases = [
        (("public.invoices",), "nothing to snapshot from here"),
        (("public.customers", "--where", "id = 1; DROP TABLE customers"), "statements"),
        (("public.customers", "--where", "id IN (SELECT 1)"), "not allowed"),
        (("public.customers", "--resume"), "no interrupted snapshot"),
        (("public.customers", "--where", "nosuch = 1"), "nosuch, not a column"),
        (("public.nope",), "is not configured"),
    ]
    for args, message in cases:
        code, out, err = bridge.cli("snapshot", *args)
        assert (code, message in err) == (2, True), (args, out, err)
    assert bridge.rows("SELECT count(*) FROM customers") == [(0,)]
    assert bridge.rows("SELECT count(*) FROM cdc_bridge.snapshots") == [(0,)]


def _writer(dsn: str, keys: int, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        n = 0
        while not stop.is_set():
            n += 1
            with conn.transaction():
                key = rng.randint(1, keys)
                conn.execute(
                    "UPDATE customers SET name = %s, tier = %s WHERE id = %s",
                    (f"w{seed}-{n}", str(n), key),
                )
                # Hold the row lock a moment so chunks meet uncommitted updates.
                time.sleep(rng.random() * 0.003)


def test_rows_written_during_the_snapshot_end_at_their_latest_state(bridge: Bridge) -> None:
    keys = 1500
    _customers(bridge, keys)
    stop = threading.Event()
    writers = [
        threading.Thread(target=_writer, args=(bridge.dsn, keys, stop, seed)) for seed in range(3)
    ]
    for w in writers:
        w.start()
    try:
        code, out, err = bridge.cli("snapshot", "public.customers", "--chunk", "25")
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert code == 0, (out, err)
    # A writer's transaction captures its one update; a snapshot chunk writes 25 rows.
    live_updates = bridge.rows(
        "SELECT count(*) FROM (SELECT txid FROM cdc_bridge.outbox GROUP BY txid"
        " HAVING count(*) = 1 AND bool_and(fields->>'name' LIKE 'w%')) AS live"
    )[0][0]
    assert live_updates > 0
    mismatched = bridge.rows(
        "SELECT c.id FROM customers c JOIN LATERAL ("
        "  SELECT o.fields FROM cdc_bridge.outbox o"
        "  WHERE o.table_name = 'public.customers' AND o.key = jsonb_build_object('id', c.id)"
        "  ORDER BY o.id DESC LIMIT 1) last ON true "
        "WHERE last.fields IS DISTINCT FROM to_jsonb(c)"
    )
    assert mismatched == []
    snapshot_keys = bridge.rows(
        "SELECT count(DISTINCT key) FROM cdc_bridge.outbox WHERE changed IS NULL AND op = 'U'"
    )
    assert snapshot_keys == [(keys,)]


def _wait_for(condition: Any, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_snapshot_killed_halfway_resumes_and_ships_every_row(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, chunk = 1200, 100
    _customers(bridge, keys)
    # An open update of row 601 stops the snapshot at its 7th chunk (FOR SHARE waits),
    # so the kill lands halfway through, after exactly 6 committed chunks.
    blocker = psycopg.connect(bridge.dsn)
    blocker.execute("UPDATE customers SET tier = 'held' WHERE id = 601")
    command = [
        sys.executable,
        "-c",
        "from cdc_bridge.cli import main; main()",
        "-c",
        str(bridge.config_path),
        "snapshot",
        "public.customers",
        "--chunk",
        str(chunk),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        progress = "SELECT coalesce(max(rows), 0) FROM cdc_bridge.snapshots"
        _wait_for(lambda: bridge.rows(progress)[0][0] >= 600, "600 rows of progress")
        # While it runs, a second snapshot of the table is refused.
        monkeypatch.setattr(snapshot_ops, "LOCK_WAIT_S", 0.5)
        code, _, err = bridge.cli("snapshot", "public.customers")
        assert code == 2 and "another snapshot of public.customers is running" in err
        monkeypatch.undo()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        blocker.rollback()
        blocker.close()
    assert bridge.rows("SELECT status, rows, last_key FROM cdc_bridge.snapshots") == [
        ("running", 600, {"id": 600})
    ]
    code, out, err = bridge.cli("snapshot", "public.customers", "--resume", "--chunk", "500")
    assert code == 0, (out, err)
    assert "(resumed)" in out
    shipped = bridge.rows(
        "SELECT count(DISTINCT key) FROM cdc_bridge.outbox WHERE changed IS NULL AND op = 'U'"
    )
    assert shipped == [(keys,)]
    assert bridge.rows("SELECT status, rows FROM cdc_bridge.snapshots") == [("finished", keys)]
