"""How a batch is cut into statements, and what the peer may do per table kind (no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cdc_bridge.config import parse_config
from cdc_bridge.inbound.apply import Planned, allowed_ops, shape_of, statement_runs
from cdc_bridge.peer.protocol import Change, Op
from tests.helpers import FIXTURES

CONFIG = parse_config(
    (FIXTURES / "shop.yaml").read_text(),
    "shop.yaml",
    {"SHOP_DATABASE_URL": "postgresql://x@127.0.0.1/shop", "BRIDGE_SECRET": "s"},
)


def planned(table: str, op: str, key: dict[str, Any], fields: dict[str, Any] | None) -> Planned:
    change = Change(
        idempotency_key="k",
        entity=table,
        op=Op(op),
        key=key,
        fields=fields,
        committed_at=datetime.now(UTC),
        origin="erp",
    )
    plan = Planned(change, spec=CONFIG.table(table), row={**key, **(fields or {})})
    plan.shape = shape_of(plan)
    return plan


def sizes(plans: list[Planned]) -> list[int]:
    return [len(run) for run in statement_runs(plans)]


def customer(i: int, op: str = "insert") -> Planned:
    if op == "delete":
        return planned("public.customers", op, {"id": i}, None)
    return planned("public.customers", op, {"id": i}, {"id": i, "name": "N"})


def test_a_batch_of_same_shaped_changes_is_one_statement() -> None:
    assert sizes([customer(i) for i in range(500)]) == [500]


def test_inserts_and_updates_of_one_shape_share_a_statement() -> None:
    assert sizes([customer(1), customer(2, "update"), customer(3)]) == [3]


def test_a_repeated_key_starts_a_new_statement_so_its_changes_apply_in_order() -> None:
    assert sizes([customer(1), customer(2), customer(1, "update"), customer(3)]) == [2, 2]


def test_deletes_other_tables_and_other_field_sets_start_new_statements() -> None:
    product = planned("public.products", "update", {"sku": "A"}, {"sku": "A", "name": "x"})
    priced = planned("public.products", "update", {"sku": "B"}, {"sku": "B", "price": 1})
    plans = [customer(1), customer(2, "delete"), customer(3, "delete"), product, priced]
    assert sizes(plans) == [1, 2, 1, 1]


def test_what_the_peer_may_do_per_table_kind() -> None:
    shop_ops = {spec.label: allowed_ops(spec) for spec in CONFIG.table_specs}
    assert shop_ops == {
        "public.customers": frozenset(Op),  # peer
        "public.orders": frozenset(),  # handoff: born here
        "public.invoices": frozenset(),  # local
        "public.products": frozenset(Op),  # fields, key owned by the peer
        "public.accounts": {Op.INSERT, Op.UPDATE},  # fields, key owned by both
    }
