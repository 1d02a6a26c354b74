"""The system-of-record filter: a pure function over one outbox row and the config.

It decides what of a captured change this side may ship. It drops echoes (changes the
bridge applied for the peer) and fields this side does not own (the config may have been
narrowed after the triggers were installed).

Handed-off rows need no rule here. The guard decided, in the writing transaction's own
snapshot, whether this side still owned the row: it refuses every local write made once
the handoff was visible. So a local change that reached the outbox was allowed, was made
before the handoff, and ships. Deciding again at read time, by comparing clocks with the
handoff record, dropped edits the guard had allowed: a handoff recorded by a transaction
that began before the edit and committed after it looked older than the edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cdc_bridge.config import TableSpec
from cdc_bridge.outbox import OutboxRow


@dataclass(frozen=True, slots=True)
class Ship:
    """Send this change, with only the fields this side owns."""

    fields: dict[str, Any] | None
    old: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Drop:
    """Do not send: record the change as filtered, for this reason.

    `diverges`: the change is this side's own, so the peer may now hold something else
    (an echo never diverges: it is the peer's own value coming back).
    """

    reason: str
    diverges: bool = True


Decision = Ship | Drop


def decide(row: OutboxRow, spec: TableSpec | None, system: str) -> Decision:
    if row.origin != system:
        return Drop(f"echo of a change made by {row.origin}", diverges=False)
    if spec is None:
        return Drop(f"table {row.table_name} is no longer configured")
    whole = spec.ships_whole_rows  # (once: this runs for every change)
    if not (whole or spec.shipped_fields):
        return Drop(f"{spec.label} is not shipped by this side (sor: {spec.mode.value})")
    if row.op == "D" and spec.part_of is not None:
        return Drop(
            f"a delete of a row of a 1:1 side table of {spec.part_of} is not shipped: the "
            f"record is deleted through {spec.part_of}; a row deleted alone keeps its fields "
            "at the peer"
        )
    if whole or row.op == "D":
        return Ship(fields=row.fields, old=row.old)
    return _owned_fields_only(row, spec)


def _owned_fields_only(row: OutboxRow, spec: TableSpec) -> Decision:
    owned = set(spec.key) | set(spec.shipped_fields)
    if row.op == "U" and row.changed is not None and not owned.intersection(row.changed):
        return Drop(f"only fields this side does not own changed ({', '.join(row.changed)})")
    fields = None if row.fields is None else {k: v for k, v in row.fields.items() if k in owned}
    both = set(spec.both_fields)
    old = None if row.old is None else {k: v for k, v in row.old.items() if k in both}
    return Ship(fields=fields, old=old or None)
