"""Steady load for weeks: what the bridge keeps is bounded, and idempotency stays exact.

Two real databases, a real `cdc-bridge serve` (the shop) and a real `cdc-bridge run` (the
ERP) as processes (the `pair` fixture of test_operations).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.acceptance.test_operations import PEER_CHECK, Pair, pair
from tests.relay_support import wait_until

__all__ = ["pair"]

pytestmark = pytest.mark.slow

DRAINED = "SELECT count(*) = 0 FROM cdc_bridge.outbox"


def execute(dsn: str, query: str, *params: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query, params)  # type: ignore[arg-type]


def drained(pair: Pair) -> None:
    wait_until(lambda: bool(pair.erp.sql(DRAINED)[0][0]), 60, "the outbox to drain")


def watermark(pair: Pair) -> int:
    found = pair.shop.sql("SELECT settled_below FROM cdc_bridge.watermarks")
    return int(found[0][0]) if found else 0


def advance(pair: Pair, past: int) -> None:
    """Keep writing until the shop's watermark for the ERP is above txid `past`.

    The watermark travels with batches, so it rises only while changes flow.
    """
    writes = iter(range(1_000_000))

    def moved() -> bool:
        execute(pair.erp.dsn, "UPDATE customers SET name = %s WHERE id = 2", f"v{next(writes)}")
        return watermark(pair) > past

    wait_until(moved, 60, f"the shop's watermark to pass txid {past}")


def delivered_result(pair: Pair, change_id: int) -> str | None:
    found = pair.erp.sql("SELECT result FROM cdc_bridge.delivered WHERE id = %s", change_id)
    return str(found[0][0]) if found else None


def first_change(pair: Pair, key: int) -> tuple[int, int]:
    """(outbox id, txid) of the key's first delivered change."""
    ((change_id, txid),) = pair.erp.sql(
        "SELECT id, txid::text::bigint FROM cdc_bridge.delivered WHERE key = %s::jsonb "
        "ORDER BY id LIMIT 1",
        f'{{"id": {key}}}',
    )
    return int(change_id), int(txid)


def cleanup(pair: Pair) -> str:
    done = pair.shop.cli("cleanup")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_resend_is_a_duplicate_after_its_key_was_pruned(pair: Pair) -> None:
    erp, shop = pair.erp, pair.shop
    erp.execute("INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bo')")
    drained(pair)
    change_id, txid = first_change(pair, 1)
    advance(pair, txid)
    drained(pair)

    # Pruning forgets the key: the watermark alone now stands for it.
    cleanup(pair)
    key = f"erp:{txid}:{change_id}"
    assert shop.sql("SELECT 1 FROM cdc_bridge.applied_keys WHERE idempotency_key = %s", key) == []
    shop.execute("UPDATE customers SET name = 'Edited' WHERE id = 1", origin="erp")

    # A relay that crashed after the shop applied the change, before it recorded the
    # answer, sends it again: the change is back in the outbox under its id and txid.
    execute(
        erp.dsn,
        "WITH gone AS (DELETE FROM cdc_bridge.delivered WHERE id = %s"
        " RETURNING id, txid, table_name, op, key, fields, old, changed, origin, captured_at)"
        " INSERT INTO cdc_bridge.outbox (id, txid, table_name, op, key, fields, old, changed,"
        " origin, captured_at) OVERRIDING SYSTEM VALUE SELECT * FROM gone",
        change_id,
    )
    drained(pair)
    assert delivered_result(pair, change_id) == "duplicate"
    assert pair.shop_name(1) == "Edited"

    # Days later: every key is past its age and pruned; an operator's replay of the
    # change is still recognized.
    shop.execute("UPDATE cdc_bridge.applied_keys SET applied_at = now() - interval '30 days'")
    cleanup(pair)
    assert shop.sql("SELECT count(*) FROM cdc_bridge.applied_keys") == [(0,)]
    replayed = erp.cli("replay", str(change_id), "--reason", "check")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    drained(pair)
    assert delivered_result(pair, change_id) == "duplicate"
    assert pair.shop_name(1) == "Edited"


def test_a_skipped_change_replayed_later_is_applied(pair: Pair) -> None:
    """A refused change holds nothing back, and its replay comes under a new key."""
    erp, shop = pair.erp, pair.shop
    shop.execute(PEER_CHECK)
    erp.execute("INSERT INTO customers VALUES (1, 'Bartholomew Long')")
    wait_until(lambda: bool(erp.sql("SELECT 1 FROM cdc_bridge.failed")), 60, "the failure")
    ((failed_id, failed_txid),) = erp.sql("SELECT id, txid::text::bigint FROM cdc_bridge.failed")
    skipped = erp.cli("skip", str(failed_id), "--reason", "fix later")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    erp.execute("INSERT INTO customers VALUES (2, 'Bo')")
    advance(pair, failed_txid)  # the watermark passes the skipped change
    drained(pair)
    cleanup(pair)

    shop.execute("ALTER TABLE customers DROP CONSTRAINT name_is_short")
    replayed = erp.cli("replay", str(failed_id), "--reason", "shop rule relaxed")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    drained(pair)
    assert delivered_result(pair, failed_id) == "applied"
    assert pair.customers_equal()
