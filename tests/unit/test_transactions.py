"""Source transactions at the relay: grouping, order by last id, tokens and lanes (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from cdc_bridge.outbox import OutboxRow
from cdc_bridge.relay.transactions import Txn, families, group, plan_lanes

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FKS = families([("public.orders", "public.customers"), ("public.lines", "public.orders")])


def row(id_: int, txid: int, table: str = "public.t", key: int = 0, **extra: object) -> OutboxRow:
    values: dict[str, object] = {
        "id": id_,
        "txid": str(txid),
        "table_name": table,
        "op": "I",
        "key": None,
        "key_text": f'{{"id": {key}}}',
        "fields": None,
        "old": None,
        "changed": None,
        "origin": "erp",
        "captured_at": NOW,
        **extra,
    }
    return OutboxRow(**values)  # type: ignore[arg-type]


def ids(lanes: list[list[Txn]]) -> list[list[int]]:
    return [[r.id for t in lane for r in t.rows] for lane in lanes]


def test_rows_group_by_transaction_ordered_by_last_id() -> None:
    # T20 wrote rows 1 and 4, T10 wrote 2 and 3 and committed first: T10 goes first.
    rows = [row(1, 20, key=1), row(2, 10, key=2), row(3, 10, key=3), row(4, 20, key=4)]
    txns = group(rows, {}, max_changes=100)
    assert [(t.txid, [r.id for r in t.rows]) for t in txns] == [("10", [2, 3]), ("20", [1, 4])]
    assert all(t.complete and t.ready for t in txns)


def test_same_key_later_transaction_follows_in_the_same_lane() -> None:
    # T2 changed key 7 after T1 did (row 3 after row 2): one lane, T1 first.
    rows = [row(1, 2, key=5), row(2, 1, key=7), row(3, 2, key=7)]
    lanes = plan_lanes(group(rows, {}, 100), lanes=4, per_lane=100)
    assert ids(lanes) == [[2, 1, 3]]


def test_independent_transactions_spread_over_lanes() -> None:
    rows = [row(i, i, key=i) for i in range(1, 9)]
    lanes = plan_lanes(group(rows, {}, 100), lanes=4, per_lane=100)
    assert sorted(len(lane) for lane in lanes) == [2, 2, 2, 2]


def test_tables_linked_by_foreign_keys_share_one_lane_in_order() -> None:
    assert {
        t: "public.customers" for t in ("public.customers", "public.orders", "public.lines")
    } == FKS
    rows = [
        row(1, 1, "public.customers", 1),
        row(2, 2, "public.orders", 10),
        row(3, 3, "public.lines", 100),
        row(4, 4, "public.t", 5),
    ]
    lanes = plan_lanes(group(rows, FKS, 100), lanes=4, per_lane=100)
    assert sorted(ids(lanes)) == [[1, 2, 3], [4]]


def test_busy_or_held_tokens_hold_back_every_later_transaction_touching_them() -> None:
    rows = [row(1, 1, key=1), row(2, 2, key=2), row(3, 2, key=3), row(4, 3, key=3)]
    lanes = plan_lanes(
        group(rows, {}, 100),
        lanes=2,
        per_lane=100,
        busy={("public.t", '{"id": 1}'), ("public.t", '{"id": 2}')},
    )
    # T2 waits for key 2's batch; T3 touches key 3 after T2: it waits too.
    assert ids(lanes) == []


def test_incomplete_or_parked_transactions_wait_and_hold_their_keys() -> None:
    rows = [
        row(1, 1, key=1, txn_rows=3, txn_last_id=9),
        row(2, 2, key=1, txn_rows=1, txn_last_id=10),
        row(3, 3, key=2, txn_rows=1, txn_last_id=11, txn_parked=True),
        row(4, 4, key=3, txn_rows=1, txn_last_id=12),
    ]
    txns = group(rows, {}, 100)
    assert [t.ready for t in txns] == [False, True, False, True]
    assert ids(plan_lanes(txns, lanes=2, per_lane=100)) == [[4]]


def test_a_full_lane_holds_the_rest_of_its_tokens_back() -> None:
    rows = [row(1, 1, key=1), row(2, 1, key=2), row(3, 2, key=1), row(4, 3, key=4)]
    lanes = plan_lanes(group(rows, {}, 100), lanes=1, per_lane=2)
    assert ids(lanes) == [[1, 2]]


def test_a_transaction_larger_than_a_batch_goes_whole_and_alone() -> None:
    rows = [row(i, 1, key=i) for i in range(1, 6)] + [row(6, 2, key=9)]
    lanes = plan_lanes(group(rows, {}, 100), lanes=1, per_lane=3)
    assert ids(lanes) == [[1, 2, 3, 4, 5]]


def test_a_transaction_over_the_limit_ships_its_first_part_alone() -> None:
    rows = [row(i, 1, key=i, txn_rows=10, txn_last_id=10) for i in range(1, 5)]
    rows.append(row(5, 2, key=50, txn_rows=1, txn_last_id=11))
    txns = group(rows, {}, max_changes=3)
    assert txns[0].large and [r.id for r in txns[0].rows] == [1, 2, 3]
    assert ids(plan_lanes(txns, lanes=1, per_lane=100)) == [[1, 2, 3]]
    assert ids(plan_lanes(txns, lanes=2, per_lane=100)) == [[1, 2, 3], [5]]


def test_tied_transactions_use_the_room_other_lanes_leave() -> None:
    rows = [row(i, i, "public.orders", i) for i in range(1, 8)] + [row(8, 8, key=1)]
    lanes = plan_lanes(group(rows, FKS, 100), lanes=2, per_lane=3)
    # Seven transactions of linked tables are tied to one lane: 6 fit (2 lanes x 3), the
    # seventh waits. A record of its own still starts the empty lane.
    assert ids(lanes) == [[1, 2, 3, 4, 5, 6], [8]]
