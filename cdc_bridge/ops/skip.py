"""`skip`: give up on a failed change on purpose, which unblocks its key."""

from __future__ import annotations

from typing import Any

from cdc_bridge import sql as queries
from cdc_bridge.db import dict_cursor
from cdc_bridge.errors import UserError
from cdc_bridge.ops.common import Target, os_user

_WHERE_ELSE = {
    "delivered": "it was already delivered (or skipped); nothing to skip",
    "outbox": "it is still pending in the outbox; only a failed change can be skipped",
}


def skip_change(target: Target, change_id: int, reason: str) -> dict[str, Any]:
    """Move failed change `change_id` to `delivered` as 'skipped' and audit it in `skips`."""
    if not reason.strip():
        raise UserError("--reason is empty; fix: say why this change is given up")
    with target.connect() as conn, dict_cursor(conn) as cur:
        cur.execute(
            queries.query("ops_skip_failed", schema=target.schema),
            {"id": change_id, "os_user": os_user(), "reason": reason},
        )
        done = cur.fetchone()
        if done is not None:
            return done
        cur.execute(queries.query("ops_find_change", schema=target.schema), {"id": change_id})
        found = cur.fetchone()
    if found is None:
        raise UserError(
            f"no change {change_id}; fix: pick a failed change id from `cdc-bridge batches show`"
        )
    raise UserError(f"change {change_id} is not failed: {_WHERE_ELSE[found['place']]}")
