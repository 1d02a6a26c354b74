"""`skip` and `park`: an operator's decisions about one change, each audited in `skips`.

`skip` gives up on a failed or still-pending change: it moves to `delivered` as
'skipped', and its key's later changes flow. `park` holds a pending change back: it moves
to `failed`, so its key (and its transaction) wait until it is replayed or skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cdc_bridge import outbox
from cdc_bridge import sql as queries
from cdc_bridge.db import dict_cursor
from cdc_bridge.errors import UserError
from cdc_bridge.ops.common import Target, os_user

_SKIP_ELSE = {
    "delivered": "it was already delivered (or skipped); nothing to skip",
}
_PARK_ELSE = {
    "delivered": "it was already delivered (or skipped); nothing to park",
    "failed": "it is failed, so its key is parked already; `skip` or `replay` it",
}


Step = Callable[[Any, str, dict[str, Any]], Any]  # (cursor, schema, params) -> row or None


def skip_change(target: Target, change_id: int, reason: str) -> dict[str, Any]:
    """Move failed or pending change `change_id` to `delivered` as 'skipped'; audit it."""
    return _decide(target, change_id, reason, (outbox.skip,), _SKIP_ELSE)


def park_change(target: Target, change_id: int, reason: str) -> dict[str, Any]:
    """Move pending change `change_id` to `failed`, parking its key; audit it."""
    return _decide(target, change_id, reason, (outbox.park_pending,), _PARK_ELSE)


def _decide(
    target: Target,
    change_id: int,
    reason: str,
    steps: tuple[Step, ...],
    refusals: dict[str, str],
) -> dict[str, Any]:
    if not reason.strip():
        raise UserError("--reason is empty; fix: say why (it is kept in the audit)")
    params = {"id": change_id, "os_user": os_user(), "reason": reason}
    with target.connect() as conn, dict_cursor(conn) as cur:
        for step in steps:
            done = step(cur, target.schema, params)
            if done is not None:
                return dict(done)
        cur.execute(queries.query("ops_find_change", schema=target.schema), {"id": change_id})
        found = cur.fetchone()
    if found is None:
        raise UserError(
            f"no change {change_id}; fix: pick a change id from `cdc-bridge batches show`"
        )
    raise UserError(f"change {change_id} cannot be changed so: {refusals[found['place']]}")
