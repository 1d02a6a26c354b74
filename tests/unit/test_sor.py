"""The SOR filter is pure: every rule checked on hand-built rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cdc_bridge.config import BridgeConfig, parse_config
from cdc_bridge.outbox import OutboxRow
from cdc_bridge.relay.sor import Drop, Ship, decide
from tests.helpers import FIXTURES

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def config() -> BridgeConfig:
    env = {"ERP_DATABASE_URL": "postgresql://u@h/d", "BRIDGE_SECRET": "s"}
    return parse_config((FIXTURES / "erp.yaml").read_text(), "erp.yaml", env)


def row(table: str, op: str = "U", **overrides: Any) -> OutboxRow:
    values: dict[str, Any] = {
        "id": 1,
        "txid": "100",
        "table_name": table,
        "op": op,
        "key": {"id": 1},
        "key_text": '{"id": 1}',
        "fields": {"id": 1, "name": "x"},
        "old": None,
        "changed": ["name"],
        "origin": "erp",
        "captured_at": NOW,
        **overrides,
    }
    return OutboxRow(**values)


def test_echo_of_the_peer_is_dropped() -> None:
    spec = config().table("public.customers")
    assert decide(row("public.customers", origin="shop"), spec, "erp") == Drop(
        "echo of a change made by shop", diverges=False
    )


def test_whole_row_table_ships_as_captured() -> None:
    spec = config().table("public.customers")
    assert decide(row("public.customers"), spec, "erp") == Ship({"id": 1, "name": "x"}, None)


def test_unconfigured_and_receive_only_tables_are_dropped() -> None:
    cfg = config()
    gone = decide(row("public.gone"), None, "erp")
    receive_only = decide(row("public.invoices"), cfg.table("public.invoices"), "erp")
    # This side's own changes, not shipped: reported as a possible divergence.
    assert isinstance(gone, Drop) and gone.diverges
    assert isinstance(receive_only, Drop) and receive_only.diverges


def test_fields_not_owned_are_removed_and_old_keeps_only_both_fields() -> None:
    spec = config().table("public.accounts")
    change = row(
        "public.accounts",
        fields={"id": 1, "company_name": "A", "credit_limit": 5, "notes": "narrowed away"},
        old={"company_name": "Z", "notes": "n"},
        changed=["company_name", "notes"],
    )
    assert decide(change, spec, "erp") == Ship(
        {"id": 1, "company_name": "A", "credit_limit": 5}, {"company_name": "Z"}
    )


def test_update_of_only_unowned_fields_is_dropped() -> None:
    spec = config().table("public.products")
    change = row("public.products", key={"sku": "P"}, fields={"sku": "P"}, changed=["stock"])
    decision = decide(change, spec, "erp")
    assert isinstance(decision, Drop) and "stock" in decision.reason


def test_local_changes_of_a_handoff_table_ship_the_guard_decided_ownership() -> None:
    # Whatever the relay reads later, a local change in the outbox passed the guard: it
    # was made while this side owned the row.
    spec = config().table("public.orders")
    for op in ("I", "U", "D"):
        change = row("public.orders", op=op, fields=None if op == "D" else {"id": 1})
        assert isinstance(decide(change, spec, "erp"), Ship)


def test_delete_of_a_field_table_ships_without_fields() -> None:
    spec = config().table("public.products")
    change = row("public.products", op="D", key={"sku": "P"}, fields=None, changed=None)
    assert decide(change, spec, "erp") == Ship(None, None)
