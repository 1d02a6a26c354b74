"""`cleanup` against a real PostgreSQL: only what is past retention goes, in bounded batches."""

from __future__ import annotations

from datetime import timedelta

from cdc_bridge.ops.cleanup import PruneTarget, prune
from cdc_bridge.ops.common import Target
from tests.integration.ops_fixtures import Bridge, bridge, outbox_ids, settle

__all__ = ["bridge"]

COUNTS = (
    "SELECT (SELECT count(*) FROM cdc_bridge.delivered), (SELECT count(*) FROM cdc_bridge.replays),"
    " (SELECT count(*) FROM cdc_bridge.snapshots), (SELECT count(*) FROM cdc_bridge.batches)"
)


def _history(bridge: Bridge) -> None:
    """Old and recent rows in each table that cleanup prunes (delivery history is kept
    about an hour, audits of operator actions 30 days)."""
    with bridge.connect() as conn:
        conn.execute(
            "INSERT INTO customers SELECT i, 'c' || i, NULL, NULL FROM generate_series(1, 5) i"
        )
    ids = outbox_ids(bridge)
    settle(bridge, "msg_old", ids[:3])
    settle(bridge, "msg_new", ids[3:])
    with bridge.connect() as conn:
        conn.execute(
            "UPDATE cdc_bridge.delivered SET delivered_at = now() - interval '8 days'"
            " WHERE batch_id = 'msg_old'"
        )
        conn.execute(
            "UPDATE cdc_bridge.batches SET finished_at = now() - interval '8 days'"
            " WHERE batch_id = 'msg_old'"
        )
        conn.execute(
            "INSERT INTO cdc_bridge.replays (os_user, selection, change_ids, dry_run, force,"
            " replayed_at) VALUES"
            " ('op', '--failed', '{1}', false, false, now() - interval '31 days'),"
            " ('op', '--failed', '{2}', false, false, now())"
        )
        conn.execute(
            "INSERT INTO cdc_bridge.snapshots (table_name, status, finished_at, started_at) VALUES"
            " ('public.customers', 'finished', now() - interval '31 days',"
            "  now() - interval '31 days'),"
            " ('public.customers', 'running', NULL, now() - interval '30 days')"
        )


def test_dry_run_counts_and_removes_nothing(bridge: Bridge) -> None:
    _history(bridge)
    before = bridge.rows(COUNTS)
    code, out, _ = bridge.cli("cleanup", "--dry-run")
    assert code == 0
    assert "delivered: would remove 3 row(s)" in out
    assert "replays: would remove 1 row(s)" in out
    assert "snapshots: would remove 1 row(s)" in out
    assert "batches: would remove 1 row(s)" in out
    assert bridge.rows(COUNTS) == before == [(5, 2, 2, 2)]


def test_cleanup_removes_only_rows_past_retention(bridge: Bridge) -> None:
    _history(bridge)
    code, out, _ = bridge.cli("cleanup")
    assert code == 0 and "delivered: removed 3 row(s)" in out
    assert bridge.rows(COUNTS) == [(2, 1, 1, 1)]
    assert bridge.rows("SELECT DISTINCT batch_id FROM cdc_bridge.delivered") == [("msg_new",)]
    assert bridge.rows("SELECT status FROM cdc_bridge.snapshots") == [("running",)]
    # The old batch's attempts go with it.
    assert bridge.rows("SELECT batch_id FROM cdc_bridge.attempts") == [("msg_new",)]


def test_prune_works_in_bounded_batches_on_any_table(bridge: Bridge) -> None:
    _history(bridge)
    target = Target.of(bridge.config)
    counts = prune(
        target,
        [PruneTarget("delivered", "delivered_at", timedelta(0))],
        batch_size=2,
    )
    assert counts == {"delivered": 5}
    assert bridge.rows("SELECT count(*) FROM cdc_bridge.delivered") == [(0,)]
