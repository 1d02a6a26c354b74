"""The conflict rules: detection, winners, and that mirrored sides pick the same value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cdc_bridge.config import ConflictPolicy
from cdc_bridge.inbound.conflicts import Conflict, Winner, decide, find_conflict, newer_winner

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(microseconds=1)


def test_no_conflict_when_our_value_is_what_the_peer_last_saw() -> None:
    assert find_conflict("name", current="A", old="A", incoming="B") is None


def test_no_conflict_when_both_sides_already_agree() -> None:
    assert find_conflict("name", current="B", old="A", incoming="B") is None


def test_conflict_when_our_value_moved_away_from_old() -> None:
    assert find_conflict("name", current="C", old="A", incoming="B") == Conflict("name", "C", "B")


def test_null_is_a_value_like_any_other() -> None:
    assert find_conflict("name", current=None, old="A", incoming="B") == Conflict("name", None, "B")


def test_newer_change_wins_either_way() -> None:
    assert newer_winner(T1, T0, "erp", "shop") is Winner.PEER
    assert newer_winner(T0, T1, "erp", "shop") is Winner.LOCAL


def test_without_a_local_change_record_the_incoming_change_wins() -> None:
    assert newer_winner(T0, None, "erp", "shop") is Winner.PEER


def test_a_tie_goes_to_the_same_system_on_both_sides() -> None:
    # erp sees shop's change as incoming, shop sees erp's: both must pick shop's value.
    at_erp = newer_winner(T0, T0, system="erp", peer="shop")
    at_shop = newer_winner(T0, T0, system="shop", peer="erp")
    assert (at_erp, at_shop) == (Winner.PEER, Winner.LOCAL)


def _value_after(
    policy: ConflictPolicy,
    local: str,
    incoming: str,
    at_peer: datetime,
    at_local: datetime,
    system: str,
    peer: str,
) -> str:
    decision = decide(
        Conflict("f", local, incoming),
        policy,
        peer_changed_at=at_peer,
        local_changed_at=at_local,
        system=system,
        peer=peer,
    )
    return incoming if decision.winner is Winner.PEER else local


@pytest.mark.parametrize(
    ("erp_policy", "shop_policy"),
    [
        (ConflictPolicy.LOCAL_WINS, ConflictPolicy.PEER_WINS),
        (ConflictPolicy.PEER_WINS, ConflictPolicy.LOCAL_WINS),
        (ConflictPolicy.NEWER_WINS, ConflictPolicy.NEWER_WINS),
    ],
)
@pytest.mark.parametrize(("erp_at", "shop_at"), [(T0, T1), (T1, T0), (T0, T0)])
def test_mirrored_policies_pick_the_same_value_on_both_sides(
    erp_policy: ConflictPolicy, shop_policy: ConflictPolicy, erp_at: datetime, shop_at: datetime
) -> None:
    at_erp = _value_after(erp_policy, "E", "S", shop_at, erp_at, "erp", "shop")
    at_shop = _value_after(shop_policy, "S", "E", erp_at, shop_at, "shop", "erp")
    assert at_erp == at_shop


def test_manual_keeps_the_local_value_and_parks_the_conflict() -> None:
    decision = decide(
        Conflict("f", "E", "S"),
        ConflictPolicy.MANUAL,
        peer_changed_at=T1,
        local_changed_at=T0,
        system="erp",
        peer="shop",
    )
    assert (decision.winner, decision.parked) == (Winner.LOCAL, True)
    assert decision.describe() == {
        "policy": "manual",
        "winner": "local",
        "local_value": "E",
        "peer_value": "S",
        "status": "open",
    }
