"""Two databases (erp, shop), each with its own bridge pointed at the other: the four sync
paths end to end, conflicts under each policy, and no echo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest

from tests.acceptance.bridges import Bridge, bridge_pair, relays_paused, wait_until
from tests.pg import TestServer


def refused(bridge: Bridge, statement: str) -> str:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as error:
        bridge.sql(statement)
    return str(error.value)


def outbox_and_history(bridge: Bridge) -> tuple[int, int]:
    return (
        bridge.value("SELECT count(*) FROM cdc_bridge.outbox"),
        bridge.value("SELECT count(*) FROM cdc_bridge.delivered"),
    )


def edit_account_on_both_sides(erp: Bridge, shop: Bridge) -> None:
    """Account 7 synced, then its company name edited on both sides before either change
    travels (the shop's edit 50 ms after the ERP's)."""
    erp.sql("INSERT INTO accounts (id, company_name) VALUES (7, 'Globex')")
    wait_until(
        "account 7",
        lambda: shop.value("SELECT company_name FROM accounts") == "Globex",
        [erp, shop],
    )
    with relays_paused(erp, shop):
        erp.sql("UPDATE accounts SET company_name = 'Globex (erp)' WHERE id = 7")
        time.sleep(0.05)
        shop.sql("UPDATE accounts SET company_name = 'Globex (shop)' WHERE id = 7")


def test_four_sync_paths_converge_without_echo(
    pg_server: TestServer, template_db: str, tmp_path: Path
) -> None:
    with bridge_pair(pg_server, template_db, tmp_path) as (erp, shop):
        both = [erp, shop]

        # 1-way, one SOR: customers are created and edited in the ERP only.
        for i in range(1, 21):
            erp.sql("INSERT INTO customers VALUES (%s, %s, NULL, 'std')", i, f"Customer {i}")
        erp.sql("UPDATE customers SET tier = 'gold' WHERE id <= 5")
        erp.sql("DELETE FROM customers WHERE id = 20")
        wait_until(
            "customers in the shop",
            lambda: (
                shop.sql("SELECT id, name, tier FROM customers ORDER BY id")
                == erp.sql("SELECT id, name, tier FROM customers ORDER BY id")
            ),
            both,
        )
        assert "owned by erp" in refused(shop, "UPDATE customers SET tier = 'x' WHERE id = 1")

        # 1-way, SOR handoff: an order born in the shop belongs to the ERP once applied.
        shop.sql("INSERT INTO orders VALUES (100, 1, 42.00, 'new')")
        shop.sql("UPDATE orders SET total = 45.00 WHERE id = 100")  # before the handoff: fine
        wait_until(
            "the handoff",
            lambda: (
                shop.value("SELECT count(*) FROM cdc_bridge.handoffs") == 1
                and erp.value("SELECT total::text FROM orders WHERE id = 100") == "45.00"
            ),
            both,
        )
        assert "handed off to erp" in refused(shop, "UPDATE orders SET total = 1 WHERE id = 100")
        erp.sql("UPDATE orders SET status = 'shipped' WHERE id = 100")

        # 2-way, one SOR per field, both edited at the same time.
        erp.sql("INSERT INTO products VALUES ('P1', 'Pen', 1.50, NULL, 10)")
        wait_until("P1 in the shop", lambda: shop.value("SELECT name FROM products") == "Pen", both)
        with relays_paused(erp, shop):
            erp.sql("UPDATE products SET price = 2.50, name = 'Blue pen' WHERE sku = 'P1'")
            shop.sql("UPDATE products SET description = 'Smooth ink' WHERE sku = 'P1'")
        query = "SELECT sku, name, price::text, description FROM products"
        wait_until(
            "per-field convergence",
            lambda: erp.sql(query) == shop.sql(query) == [("P1", "Blue pen", "2.50", "Smooth ink")],
            both,
        )
        assert "owned by erp" in refused(shop, "UPDATE products SET price = 0 WHERE sku = 'P1'")

        # No echo: once quiet, both outboxes are empty and stay so.
        wait_until("empty outboxes", lambda: all(outbox_and_history(b)[0] == 0 for b in both), both)
        settled = [outbox_and_history(b) for b in both]
        time.sleep(1.5)  # longer than the relays' poll interval: any echo would show
        assert [outbox_and_history(b) for b in both] == settled
        # The ERP's edit of the adopted order did not flow back.
        assert shop.value("SELECT status FROM orders WHERE id = 100") == "new"


@pytest.mark.parametrize(
    ("erp_policy", "shop_policy", "winner"),
    [
        ("newer_wins", "newer_wins", "shop"),  # the shop's edit is the later one
        ("local_wins", "peer_wins", "erp"),
        ("peer_wins", "local_wins", "shop"),
    ],
)
def test_concurrent_edits_of_a_field_owned_by_both_converge(
    pg_server: TestServer,
    template_db: str,
    tmp_path: Path,
    erp_policy: str,
    shop_policy: str,
    winner: str,
) -> None:
    with bridge_pair(pg_server, template_db, tmp_path, erp_policy, shop_policy) as (erp, shop):
        both = [erp, shop]
        edit_account_on_both_sides(erp, shop)
        expected = f"Globex ({winner})"
        query = "SELECT company_name FROM accounts WHERE id = 7"
        wait_until(
            f"both sides at {expected!r}, every change delivered",
            lambda: (
                erp.value(query) == shop.value(query) == expected
                and all(outbox_and_history(b)[0] == 0 for b in both)
            ),
            both,
        )
        for bridge in both:
            recorded = bridge.sql("SELECT policy, status FROM cdc_bridge.conflicts")
            assert recorded == [(erp_policy if bridge is erp else shop_policy, "resolved")]


def test_manual_conflict_is_parked_then_resolved_on_one_side_converges(
    pg_server: TestServer, template_db: str, tmp_path: Path
) -> None:
    with bridge_pair(pg_server, template_db, tmp_path, "manual", "manual") as (erp, shop):
        both = [erp, shop]
        edit_account_on_both_sides(erp, shop)
        open_conflicts = "SELECT id FROM cdc_bridge.conflicts WHERE status = 'open'"
        wait_until(
            "a parked conflict on both sides",
            lambda: len(erp.sql(open_conflicts)) == 1 == len(shop.sql(open_conflicts)),
            both,
        )
        query = "SELECT company_name FROM accounts WHERE id = 7"
        assert (erp.value(query), shop.value(query)) == ("Globex (erp)", "Globex (shop)")

        listed = erp.cli("conflicts", "list")
        assert listed.returncode == 0 and "company_name" in listed.stdout, listed.stderr
        conflict_id = erp.value(open_conflicts)
        resolved = erp.cli("conflicts", "resolve", str(conflict_id), "--take", "peer")
        assert resolved.returncode == 0, resolved.stdout + resolved.stderr
        wait_until(
            "convergence on the shop's value",
            lambda: (
                erp.value(query) == shop.value(query) == "Globex (shop)"
                and not shop.sql(open_conflicts)
            ),
            both,
        )
        resolution = erp.value(
            "SELECT resolution FROM cdc_bridge.conflicts WHERE id = %s", conflict_id
        )
        assert json.loads(json.dumps(resolution)) == "Globex (shop)"
