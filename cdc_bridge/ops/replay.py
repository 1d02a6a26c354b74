"""`replay`: put failed or delivered changes back into the outbox for the relay to ship.

A change goes back under its original outbox id, so it keeps its place in per-key order,
and the running relay ships it like any other change. A change the peer acknowledged
keeps its txid too, so its idempotency key (`system:txid:id`): the peer recognizes it and
answers `duplicate`. A failed or skipped change, which the peer never applied, takes the
replay's txid, so the peer applies it (its old key lies below the sender's watermark).
Replaying an old change over a newer one already at the peer would move the peer back in
time: that is refused unless forced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from cdc_bridge import outbox
from cdc_bridge import sql as queries
from cdc_bridge.config import TableSpec
from cdc_bridge.db import dict_cursor
from cdc_bridge.errors import CodecError, ProblemsFound, UserError
from cdc_bridge.ops.common import Target, os_user
from cdc_bridge.peer import codec

SHIPPED_BY = "a running `cdc-bridge run` ships them to the peer"


@dataclass(frozen=True)
class Selection:
    """Which changes to replay: ids / batch ids, every failed change, or a table slice."""

    ids: tuple[int, ...] = ()
    batch_ids: tuple[str, ...] = ()
    all_failed: bool = False
    table: str | None = None
    key: dict[str, Any] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def check(self) -> None:
        ways = sum([bool(self.ids or self.batch_ids), self.all_failed, self.table is not None])
        if ways != 1:
            raise UserError(
                "say what to replay; fix: give change or batch IDs, or --failed, or --table T"
            )
        if self.table is None and (self.key or self.since or self.until):
            raise UserError("--key, --since and --until narrow --table; fix: add --table T")

    def describe(self) -> str:
        if self.all_failed:
            return "--failed"
        if self.table is not None:
            parts = [f"--table {self.table}"]
            if self.key is not None:
                parts.append(f"--key {codec.dumps_text(self.key, sort_keys=True)}")
            parts += [f"--since {self.since.isoformat()}"] if self.since else []
            parts += [f"--until {self.until.isoformat()}"] if self.until else []
            return " ".join(parts)
        return " ".join([*map(str, self.ids), *self.batch_ids])

    def params(self) -> dict[str, Any]:
        return {
            "ids": list(self.ids),
            "batch_ids": list(self.batch_ids),
            "all_failed": self.all_failed,
            "table": self.table,
            "key": Jsonb(self.key) if self.key is not None else None,
            "since": self.since,
            "until": self.until,
        }


@dataclass
class ReplayResult:
    changes: list[dict[str, Any]]
    dry_run: bool
    replay_id: int | None = None
    newer: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [c["id"] for c in self.changes]


def split_ids(args: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Numbers are change (outbox) ids; anything else is a batch id."""
    change_ids = tuple(int(a) for a in args if a.isdigit())
    batch_ids = tuple(a for a in args if not a.isdigit())
    return change_ids, batch_ids


def parse_key(spec: TableSpec, text: str) -> dict[str, Any]:
    """`--key 42`, `--key P1` for one key column, or a JSON object for any key."""
    try:
        value: Any = codec.loads(text)
    except CodecError:
        value = text
    if isinstance(value, dict):
        if sorted(value) != sorted(spec.key):
            raise UserError(
                f"--key {text} names {sorted(value)}; {spec.label}'s key is {list(spec.key)}; "
                "fix: give exactly those columns"
            )
        return value
    if len(spec.key) != 1:
        raise UserError(
            f"{spec.label} has a key of {len(spec.key)} columns; fix: give --key as a JSON "
            f"object such as {codec.dumps_text(dict.fromkeys(spec.key, '...'))}"
        )
    return {spec.key[0]: value}


def replay(
    target: Target,
    selection: Selection,
    *,
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
) -> ReplayResult:
    selection.check()
    with target.connect() as conn, dict_cursor(conn) as cur:
        changes = _select(cur, target, selection)
        result = ReplayResult(changes=changes, dry_run=dry_run)
        if not changes:
            return result
        result.newer = _newer_delivered(cur, target, result.ids)
        if result.newer and not force:
            raise ProblemsFound(_refusal(result.newer))
        if not dry_run:
            outbox.requeue(cur, target.schema, result.ids)
        result.replay_id = _audit(cur, target, selection, result, force, reason)
    return result


def _select(cur: Any, target: Target, selection: Selection) -> list[dict[str, Any]]:
    cur.execute(queries.query("ops_select_changes", schema=target.schema), selection.params())
    changes: list[dict[str, Any]] = cur.fetchall()
    found = {c["id"] for c in changes}
    missing = [i for i in selection.ids if i not in found]
    if missing:
        raise UserError(_explain_missing(cur, target, missing))
    batches = {c["batch_id"] for c in changes}
    unknown = [b for b in selection.batch_ids if b not in batches]
    if unknown:
        raise UserError(
            f"batch(es) {', '.join(unknown)} have no failed or delivered change; "
            "fix: pick ids from `cdc-bridge batches list`"
        )
    return changes


def _explain_missing(cur: Any, target: Target, missing: list[int]) -> str:
    cur.execute(queries.query("ops_still_queued", schema=target.schema), {"ids": missing})
    pending = cur.fetchone()["count"]
    return (
        f"change(s) {', '.join(map(str, missing))} are neither failed nor delivered "
        f"({pending} of them still pending in the outbox); "
        "fix: pick ids from `cdc-bridge batches show`"
    )


def _newer_delivered(cur: Any, target: Target, ids: list[int]) -> list[dict[str, Any]]:
    cur.execute(queries.query("ops_newer_delivered", schema=target.schema), {"ids": ids})
    rows: list[dict[str, Any]] = cur.fetchall()
    return rows


def _refusal(newer: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"change {n['id']} of {n['table_name']} {codec.dumps_text(n['key'], sort_keys=True)}: "
        f"a later change ({n['newer_id']}) of the same key already reached the peer"
        for n in newer
    ]
    lines.append(
        "replaying would put older state back at the peer; refused. fix: also replay the later "
        "change(s) (e.g. --table T --key K), or pass --force if the older state is wanted"
    )
    return lines


def _audit(
    cur: Any,
    target: Target,
    selection: Selection,
    result: ReplayResult,
    force: bool,
    reason: str | None,
) -> int:
    cur.execute(
        queries.query("ops_record_replay", schema=target.schema),
        {
            "os_user": os_user(),
            "selection": selection.describe(),
            "ids": result.ids,
            "reason": reason,
            "dry_run": result.dry_run,
            "force": force,
        },
    )
    replay_id: int = cur.fetchone()["replay_id"]
    return replay_id


def history(target: Target, limit: int = 50) -> list[dict[str, Any]]:
    with target.connect() as conn, dict_cursor(conn) as cur:
        cur.execute(queries.query("ops_replay_history", schema=target.schema), {"limit": limit})
        rows: list[dict[str, Any]] = cur.fetchall()
        return rows


def wait_until_shipped(
    target: Target,
    ids: list[int],
    on_progress: Callable[[int, int], None],
    *,
    timeout_s: float | None = None,
    interval_s: float = 0.5,
) -> bool:
    """Poll until the requeued ids have left the outbox (the relay got the peer's ack).

    Calls on_progress(shipped, total) after each poll; False when timeout_s ran out first.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with target.connect(autocommit=True) as conn:
        while True:
            left = _still_queued(conn, target, ids)
            on_progress(len(ids) - left, len(ids))
            if left == 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(interval_s)


def _still_queued(conn: psycopg.Connection[Any], target: Target, ids: list[int]) -> int:
    row = conn.execute(
        queries.query("ops_still_queued", schema=target.schema), {"ids": ids}
    ).fetchone()
    return int(row[0]) if row else 0
