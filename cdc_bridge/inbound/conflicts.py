"""Concurrent edits of fields owned by both sides: detection and the winner, as pure rules.

Both bridges run these rules on their own, each seeing the other's change as the incoming
one. With mirrored configs (`local_wins` here, `peer_wins` there; or `newer_wins` on both)
they pick the same value, so the two databases converge without talking about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cdc_bridge.config import ConflictPolicy


class Winner(StrEnum):
    LOCAL = "local"
    PEER = "peer"


@dataclass(frozen=True)
class Conflict:
    """One field both sides changed since the peer last saw it."""

    field: str
    local_value: Any
    peer_value: Any


@dataclass(frozen=True)
class Decision:
    conflict: Conflict
    policy: ConflictPolicy
    winner: Winner

    @property
    def parked(self) -> bool:
        """Manual conflicts keep the local value until a person resolves them."""
        return self.policy is ConflictPolicy.MANUAL

    def describe(self) -> dict[str, Any]:
        return {
            "policy": self.policy.value,
            "winner": self.winner.value,
            "local_value": self.conflict.local_value,
            "peer_value": self.conflict.peer_value,
            "status": "open" if self.parked else "resolved",
        }


def find_conflict(field: str, current: Any, old: Any, incoming: Any) -> Conflict | None:
    """A conflict when our value moved away from what the peer last saw.

    Equal current and incoming values are no conflict: both sides already agree.
    """
    if current in (old, incoming):
        return None
    return Conflict(field=field, local_value=current, peer_value=incoming)


def newer_winner(
    peer_changed_at: datetime, local_changed_at: datetime | None, system: str, peer: str
) -> Winner:
    """The later change wins; a tie goes to the greater system name on both sides."""
    if local_changed_at is None or peer_changed_at > local_changed_at:
        return Winner.PEER
    if peer_changed_at < local_changed_at:
        return Winner.LOCAL
    return Winner.PEER if peer > system else Winner.LOCAL


def decide(
    conflict: Conflict,
    policy: ConflictPolicy,
    *,
    peer_changed_at: datetime,
    local_changed_at: datetime | None,
    system: str,
    peer: str,
) -> Decision:
    if policy is ConflictPolicy.PEER_WINS:
        winner = Winner.PEER
    elif policy is ConflictPolicy.NEWER_WINS:
        winner = newer_winner(peer_changed_at, local_changed_at, system, peer)
    else:  # local_wins, and manual until a person decides
        winner = Winner.LOCAL
    return Decision(conflict=conflict, policy=policy, winner=winner)
