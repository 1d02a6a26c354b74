"""How a batch is cut into statements, and what the peer may do per table kind (no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cdc_bridge.config import parse_config
from cdc_bridge.inbound.apply import (
    Planned,
    allowed_ops,
    shape_of,
    statement_runs,
    table_ranks,
    write_order,
)
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


# Foreign keys (child, parent) as `relay_foreign_keys` gives them: orders -> customers,
# and a table that refers to itself.
LINKS = [("public.orders", "public.customers"), ("public.accounts", "public.accounts")]


def order(i: int, op: str = "insert") -> Planned:
    fields = None if op == "delete" else {"id": i, "customer_id": i}
    return planned("public.orders", op, {"id": i}, fields)


def test_tables_rank_by_depth_under_their_foreign_keys() -> None:
    links = [("c", "b"), ("b", "a"), ("d", "a"), ("a", "a")]
    assert table_ranks(links) == {"a": 0, "b": 1, "c": 2, "d": 1}
    assert table_ranks([]) == {}


def test_foreign_keys_in_a_cycle_give_no_ranks() -> None:
    assert table_ranks([("a", "b"), ("b", "a")]) is None


def test_inserts_of_linked_tables_are_written_parents_first_each_table_in_order() -> None:
    plans = [customer(1), order(1), customer(2), order(2), customer(1, "update")]
    ordered = write_order(plans, table_ranks(LINKS))
    assert [(p.spec.label if p.spec else "", p.key["id"]) for p in ordered] == [
        ("public.customers", 1),
        ("public.customers", 2),
        ("public.customers", 1),
        ("public.orders", 1),
        ("public.orders", 2),
    ]
    assert sizes(ordered) == [2, 1, 2]  # the repeated key 1 still starts a new statement


def test_a_batch_with_a_delete_or_without_ranks_is_written_in_its_order() -> None:
    plans = [customer(1), order(1), customer(2, "delete"), order(3)]
    assert write_order(plans, table_ranks(LINKS)) == plans
    inserts = [customer(1), order(1), customer(2)]
    assert write_order(inserts, None) == inserts
    assert write_order(inserts, {}) == inserts


def test_tables_not_linked_keep_their_order() -> None:
    product = planned("public.products", "update", {"sku": "A"}, {"sku": "A", "name": "x"})
    plans = [product, customer(1), order(1), customer(2)]
    ordered = write_order(plans, table_ranks(LINKS))
    assert ordered == [product, plans[1], plans[3], plans[2]]
