"""`batches list/show` and `skip` against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import uuid

from tests.integration.ops_fixtures import Bridge, bridge, outbox_ids, settle
from tests.relay_support import CLI, wait_until

__all__ = ["bridge"]

PEER_BODY = '{"results": [{"status": "rejected", "reason": "email must be unique"}]}'


def _one_failed_one_parked(bridge: Bridge) -> list[int]:
    """Customer 1's first change is refused; its later change waits; customer 2 flows."""
    with bridge.connect() as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', 'dup@x', NULL)")
        conn.execute("INSERT INTO customers VALUES (2, 'Bob', 'b@x', NULL)")
        conn.execute("UPDATE customers SET email = 'ann@x' WHERE id = 1")
    first, second, later = outbox_ids(bridge)
    settle(bridge, "msg_ok", [second])
    settle(bridge, "msg_bad", [first], failed=True, http_status=422, body=PEER_BODY)
    return [first, second, later]


def test_list_filters_by_status_and_table(bridge: Bridge) -> None:
    _one_failed_one_parked(bridge)
    code, out, _ = bridge.cli("batches", "list", "--status", "failed", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [(b["batch_id"], b["failed_changes"], b["last_http_status"]) for b in listed] == [
        ("msg_bad", 1, 422)
    ]
    code, out, _ = bridge.cli("batches", "list", "--table", "public.orders", "--json")
    assert (code, json.loads(out)) == (0, [])
    code, out, _ = bridge.cli("batches", "list")
    assert code == 0 and "msg_ok" in out and "msg_bad" in out


def test_show_gives_changes_attempts_peer_answer_and_parked_key(bridge: Bridge) -> None:
    first, _second, later = _one_failed_one_parked(bridge)
    code, out, _ = bridge.cli("batches", "show", "msg_bad", "--json")
    assert code == 0
    shown = json.loads(out)
    [change] = shown["changes"]
    assert change["id"] == first and change["state"] == "failed"
    assert change["blocks_key"] == {"id": 1} and change["parked_behind"] == 1
    assert change["http_status"] == 422 and "email must be unique" in change["reason"]
    [attempt] = shown["attempts"]
    assert attempt["http_status"] == 422 and attempt["response_body"] == PEER_BODY
    assert attempt["attempted_at"]
    assert outbox_ids(bridge) == [later]
    code, out, _ = bridge.cli("batches", "show", "msg_bad")
    assert code == 0 and "422" in out and "email must be unique" in out


def test_show_unknown_batch_is_a_user_error(bridge: Bridge) -> None:
    code, _, err = bridge.cli("batches", "show", "msg_nope")
    assert code == 2 and "no batch 'msg_nope'" in err


def test_skip_moves_failed_to_delivered_audits_and_unblocks_key(bridge: Bridge) -> None:
    first, _second, _later = _one_failed_one_parked(bridge)
    code, out, _ = bridge.cli("skip", str(first), "--reason", "fixed by hand at the shop")
    assert code == 0 and "unblocked" in out
    assert bridge.rows("SELECT count(*) FROM cdc_bridge.failed") == [(0,)]
    assert bridge.rows(
        "SELECT result, batch_id FROM cdc_bridge.delivered WHERE id = %s", first
    ) == [("skipped", "msg_bad")]
    [(change_id, key, os_user, db_user, reason)] = bridge.rows(
        "SELECT change_id, key, os_user, db_user, reason FROM cdc_bridge.skips"
    )
    assert (change_id, key, reason) == (first, {"id": 1}, "fixed by hand at the shop")
    assert os_user and db_user
    code, out, _ = bridge.cli("batches", "show", "msg_bad", "--json")
    assert [c["state"] for c in json.loads(out)["changes"]] == ["skipped"]


def test_skip_and_park_refuse_what_is_done_or_unknown(bridge: Bridge) -> None:
    first, second, _later = _one_failed_one_parked(bridge)
    code, _, err = bridge.cli("skip", str(second), "--reason", "x")
    assert code == 2 and "already delivered" in err
    code, _, err = bridge.cli("park", str(second), "--reason", "x")
    assert code == 2 and "already delivered" in err
    code, _, err = bridge.cli("park", str(first), "--reason", "x")
    assert code == 2 and "parked already" in err
    code, _, err = bridge.cli("park", "999999", "--reason", "x")
    assert code == 2 and "no change 999999" in err
    code, _, err = bridge.cli("skip", "999999", "--reason", "x")
    assert code == 2 and "no change 999999" in err
    code, _, err = bridge.cli("skip", "abc", "--reason", "x")
    assert code == 2 and "not a change id" in err


def test_batches_list_written_to_a_file_keeps_every_id_whole(bridge: Bridge) -> None:
    """Relay batch ids are long (`<system>-<32 hex>`): in a file each must stay pasteable."""
    with bridge.connect() as conn:
        for i in range(1, 4):
            conn.execute("INSERT INTO customers VALUES (%s, 'Ann', NULL, NULL)", (i,))
    batch_ids = [f"erp-{uuid.uuid4().hex}" for _ in range(3)]
    for batch_id, change_id in zip(batch_ids, outbox_ids(bridge), strict=True):
        settle(bridge, batch_id, [change_id])
    with tempfile.TemporaryFile("w+") as listing:
        subprocess.run(
            [CLI, "-c", str(bridge.config_path), "batches", "list"],
            stdout=listing, check=True, timeout=60, env={**os.environ, "COLUMNS": "80"},
        )
        listing.seek(0)
        text = listing.read()
    assert "…" not in text and "\x1b[" not in text
    listed = {word for line in text.splitlines() for word in line.replace("│", " ").split()}
    assert set(batch_ids) <= listed


def test_tool_sessions_name_themselves(bridge: Bridge) -> None:
    """A snapshot waits for the lock another snapshot of the table holds: its session is
    seen in pg_stat_activity, named."""
    with bridge.connect() as holder:
        holder.execute(
            "SELECT pg_advisory_lock(hashtextextended('cdc-bridge snapshot ' || %s, 0))",
            ("cdc_bridge public.customers",),
        )
        tool = subprocess.Popen(
            [CLI, "-c", str(bridge.config_path), "snapshot", "public.customers"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: waiting_sessions(bridge) != [], what="the snapshot to wait")
            assert waiting_sessions(bridge) == [("cdc-bridge tools",)]
        finally:
            holder.execute("SELECT pg_advisory_unlock_all()")
            assert tool.wait(timeout=60) == 0


def waiting_sessions(bridge: Bridge) -> list[tuple[str]]:
    return [
        (str(r[0]),)
        for r in bridge.rows(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    ]


def test_batches_show_written_to_a_file_keeps_keys_whole(bridge: Bridge) -> None:
    """A key is pasted into `replay --key`: in a file it is never shortened."""
    sku = "ACME-" + "0123456789" * 5
    with bridge.connect() as conn:
        conn.execute("INSERT INTO products VALUES (%s, 'Pen', 1.5, 'd', 3)", (sku,))
    [change_id] = outbox_ids(bridge)
    settle(bridge, "erp-long-key", [change_id], failed=True, http_status=422, body=PEER_BODY)
    with tempfile.TemporaryFile("w+") as shown:
        subprocess.run(
            [CLI, "-c", str(bridge.config_path), "batches", "show", "erp-long-key"],
            stdout=shown, check=True, timeout=60, env={**os.environ, "COLUMNS": "80"},
        )
        shown.seek(0)
        text = shown.read()
    assert "…" not in text and "\x1b[" not in text
    assert f'{{"sku":"{sku}"}}' in text


def test_a_pending_change_can_be_skipped_or_parked_and_both_are_audited(bridge: Bridge) -> None:
    with bridge.connect() as conn:
        conn.execute("INSERT INTO customers VALUES (5, 'Eve', 'e@x', NULL)")
        conn.execute("INSERT INTO customers VALUES (6, 'Fay', 'f@x', NULL)")
        conn.execute("UPDATE customers SET email = 'fay@x' WHERE id = 6")
    eve, fay, fay_later = outbox_ids(bridge)
    code, out, _ = bridge.cli("skip", str(eve), "--reason", "test row, never to ship")
    assert code == 0 and f"skipped change {eve}" in out
    code, out, _ = bridge.cli("park", str(fay), "--reason", "checking the address")
    assert code == 0 and f"parked change {fay}" in out
    assert outbox_ids(bridge) == [fay_later]  # still pending, parked behind `fay`
    assert bridge.rows("SELECT id, result FROM cdc_bridge.delivered") == [(eve, "skipped")]
    assert bridge.rows("SELECT id, reason FROM cdc_bridge.failed") == [
        (fay, "parked by an operator: checking the address")
    ]
    audit = bridge.rows(
        "SELECT change_id, action, reason, os_user <> '' FROM cdc_bridge.skips ORDER BY skip_id"
    )
    assert audit == [
        (eve, "skip", "test row, never to ship", True),
        (fay, "park", "checking the address", True),
    ]
