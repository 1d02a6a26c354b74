"""The system-of-record filter: a pure function over one outbox row and the config.

It decides what of a captured change this side may ship. It drops echoes (changes the
bridge applied for the peer), fields this side does not own (the config may have been
narrowed after the triggers were installed), and changes to handed-off rows made after
their handoff (the peer is their system of record now).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cdc_bridge.config import TableMode, TableSpec
from cdc_bridge.outbox import OutboxRow


@dataclass(frozen=True, slots=True)
class Ship:
    """Send this change, with only the fields this side owns."""

    fields: dict[str, Any] | None
    old: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Drop:
    """Do not send: record the change as filtered, for this reason."""

    reason: str


Decision = Ship | Drop


def decide(row: OutboxRow, spec: TableSpec | None, system: str) -> Decision:
    if row.origin != system:
        return Drop(f"echo of a change made by {row.origin}")
    if spec is None:
        return Drop(f"table {row.table_name} is no longer configured")
    whole = spec.ships_whole_rows  # (once: this runs for every change)
    if not (whole or spec.shipped_fields):
        return Drop(f"{spec.label} is not shipped by this side (sor: {spec.mode.value})")
    if _after_handoff(row, spec):
        return Drop(f"{spec.label} row {row.key_text} was handed off to the peer")
    if whole or row.op == "D":
        return Ship(fields=row.fields, old=row.old)
    return _owned_fields_only(row, spec)


def _after_handoff(row: OutboxRow, spec: TableSpec) -> bool:
    # Changes captured before the handoff was recorded were made while this side still
    # owned the row, so they ship; the guard refuses local writes after it.
    return (
        spec.mode is TableMode.HANDOFF
        and row.handed_at is not None
        and row.captured_at > row.handed_at
    )


def _owned_fields_only(row: OutboxRow, spec: TableSpec) -> Decision:
    owned = set(spec.key) | set(spec.shipped_fields)
    if row.op == "U" and row.changed is not None and not owned.intersection(row.changed):
        return Drop(f"only fields this side does not own changed ({', '.join(row.changed)})")
    fields = None if row.fields is None else {k: v for k, v in row.fields.items() if k in owned}
    both = set(spec.both_fields)
    old = None if row.old is None else {k: v for k, v in row.old.items() if k in both}
    return Ship(fields=fields, old=old or None)
