"""`replay` against a real PostgreSQL: back into the outbox under the original id and txid."""

from __future__ import annotations

import threading
import time

from tests.integration.ops_fixtures import Bridge, bridge, outbox_ids, settle

__all__ = ["bridge"]

ALL_ROWS = (
    "SELECT 'outbox', id, txid::text FROM cdc_bridge.outbox UNION ALL "
    "SELECT 'delivered', id, txid::text FROM cdc_bridge.delivered UNION ALL "
    "SELECT 'failed', id, txid::text FROM cdc_bridge.failed ORDER BY 2"
)


def _changes(bridge: Bridge) -> list[int]:
    """Customer 1: insert, update (two changes of one key); customer 2: insert."""
    with bridge.connect() as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', 'a@x', NULL)")
        conn.execute("INSERT INTO customers VALUES (2, 'Bob', 'b@x', NULL)")
        conn.execute("UPDATE customers SET tier = 'gold' WHERE id = 1")
    return outbox_ids(bridge)


def _txids(bridge: Bridge) -> dict[int, str]:
    return {row[1]: row[2] for row in bridge.rows(ALL_ROWS)}


def test_replay_failed_requeues_in_per_key_order_with_original_ids(bridge: Bridge) -> None:
    first, second, later = _changes(bridge)
    settle(bridge, "msg_ok", [second])
    settle(bridge, "msg_bad", [first], failed=True, http_status=422, body="no")
    before = _txids(bridge)
    code, out, _ = bridge.cli("replay", "--failed", "--reason", "peer constraint fixed")
    assert code == 0, out
    assert "requeued 1 change(s)" in out and "cdc-bridge run" in out
    # The failed change sits ahead of the change parked behind it, same ids. The peer never
    # applied it, so it takes the replay's txid (a new key); the others keep theirs.
    assert outbox_ids(bridge) == [first, later]
    after = _txids(bridge)
    assert int(after[first]) > max(int(t) for t in before.values())
    assert {i: t for i, t in after.items() if i != first} == {
        i: t for i, t in before.items() if i != first
    }
    assert bridge.rows("SELECT count(*) FROM cdc_bridge.failed") == [(0,)]
    [(selection, ids, reason, dry_run, force, os_user, db_user)] = bridge.rows(
        "SELECT selection, change_ids, reason, dry_run, force, os_user, db_user"
        " FROM cdc_bridge.replays"
    )
    assert (selection, ids, reason, dry_run, force) == (
        "--failed",
        [first],
        "peer constraint fixed",
        False,
        False,
    )
    assert os_user and db_user
    code, out, _ = bridge.cli("replay", "--history")
    assert code == 0 and "--failed" in out and "peer" in out


def test_dry_run_lists_and_changes_nothing(bridge: Bridge) -> None:
    first, second, _later = _changes(bridge)
    settle(bridge, "msg_bad", [first], failed=True)
    settle(bridge, "msg_ok", [second])
    before = bridge.rows(ALL_ROWS)
    code, out, _ = bridge.cli("replay", "--failed", "--dry-run")
    assert code == 0 and "would be requeued" in out and str(first) in out
    assert bridge.rows(ALL_ROWS) == before
    assert bridge.rows("SELECT dry_run, change_ids FROM cdc_bridge.replays") == [(True, [first])]


def test_replay_that_would_go_back_in_time_is_refused_unless_forced(bridge: Bridge) -> None:
    first, second, later = _changes(bridge)
    settle(bridge, "msg_1", [first, second])
    settle(bridge, "msg_2", [later])
    before = bridge.rows(ALL_ROWS)
    code, _, err = bridge.cli("replay", str(first))
    assert code == 1
    assert f"a later change ({later})" in err and "--force" in err
    assert bridge.rows(ALL_ROWS) == before
    assert bridge.rows("SELECT count(*) FROM cdc_bridge.replays") == [(0,)]
    # The whole key, later change included, ends at the latest state: allowed.
    code, out, _ = bridge.cli("replay", "--table", "public.customers", "--key", "1")
    assert code == 0, out
    assert outbox_ids(bridge) == [first, later]
    code, out, _ = bridge.cli("replay", str(second), "--force", "--reason", "peer restored")
    assert code == 0 and outbox_ids(bridge) == [first, second, later]
    assert bridge.rows("SELECT force FROM cdc_bridge.replays ORDER BY replay_id") == [
        (False,),
        (True,),
    ]


def test_batch_id_replays_every_change_of_the_batch(bridge: Bridge) -> None:
    first, second, later = _changes(bridge)
    settle(bridge, "msg_1", [first, second])
    code, out, _ = bridge.cli("replay", "msg_1", "--dry-run")
    assert code == 0 and "2 change(s) would be requeued" in out
    code, _, _ = bridge.cli("replay", "msg_1")
    assert code == 0 and outbox_ids(bridge) == [first, second, later]


def test_bad_selections_are_user_errors(bridge: Bridge) -> None:
    _first, _second, later = _changes(bridge)
    cases: list[tuple[tuple[str, ...], str]] = [
        ((str(later),), "still pending in the outbox"),
        (("msg_unknown",), "have no failed or delivered change"),
        ((), "say what to replay"),
        (("--failed", "--table", "public.customers"), "say what to replay"),
        (("--key", "1"), "add --table T"),
        (("--table", "public.customers", "--key", '{"sku": "x"}'), "give exactly those columns"),
        (("--table", "public.nope"), "is not configured"),
        (("--table", "public.customers", "--since", "yesterday"), "not ISO 8601"),
    ]
    for args, message in cases:
        code, out, err = bridge.cli("replay", *args)
        assert (code, message in err + out) == (2, True), (args, out, err)


def test_since_until_select_by_capture_time(bridge: Bridge) -> None:
    first, second, later = _changes(bridge)
    settle(bridge, "msg_1", [first, second, later])
    [(cut,)] = bridge.rows("SELECT captured_at FROM cdc_bridge.delivered WHERE id = %s", later)
    code, out, _ = bridge.cli(
        "replay", "--table", "public.customers", "--until", cut.isoformat(), "--dry-run", "--force"
    )
    assert code == 0 and "2 change(s) would be requeued" in out
    code, out, _ = bridge.cli(
        "replay", "--table", "public.customers", "--since", cut.isoformat(), "--dry-run"
    )
    assert code == 0 and "1 change(s) would be requeued" in out


def test_wait_reports_when_the_relay_has_shipped_them(bridge: Bridge) -> None:
    first, second, _later = _changes(bridge)
    settle(bridge, "msg_bad", [first, second], failed=True)
    code, out, err = bridge.cli("replay", "--failed", "--wait", "--wait-timeout", "0")
    assert code == 1 and "not all 2 change(s) shipped" in err and "shipped: 0/2" in out

    settle(bridge, "msg_bad2", [first, second], failed=True)
    acked = threading.Event()

    def relay_acks() -> None:
        # Stands in for the relay's acknowledgement: the requeued rows leave the outbox.
        while not acked.is_set():
            if len(bridge.rows("SELECT id FROM cdc_bridge.outbox WHERE id <= %s", second)) == 2:
                settle(bridge, "msg_replayed", [first, second])
                acked.set()
            time.sleep(0.05)  # poll interval, not an assertion

    worker = threading.Thread(target=relay_acks)
    worker.start()
    try:
        code, out, _ = bridge.cli("replay", "--failed", "--wait", "--wait-timeout", "120")
    finally:
        acked.set()
        worker.join()
    assert code == 0 and "all 2 change(s) acknowledged" in out
