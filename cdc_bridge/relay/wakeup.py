"""The relay's side of the wake-up handshake with the capture triggers.

A transaction that sends NOTIFY takes a cluster-wide lock from pre-commit through its
commit flush, so busy writers that all notify commit one at a time. The triggers therefore
notify only while the sequence `relay_listening` holds 1, and the relay sets it to 0 while
it has batches in flight (it reads the outbox again by itself when they finish).

Turning it back on has a race: a writer that read "busy" may still be running, and its
rows would then arrive with no NOTIFY. So the relay notes which transactions were running
when it started listening, and keeps reading the outbox until every one of them has
ended; only then does it rely on NOTIFY alone (plus the poll interval).
"""

from __future__ import annotations

from typing import Any

import psycopg

from cdc_bridge import sql as queries
from cdc_bridge.capture.render import listening_sequence

IN_DOUBT_RECHECK_S = 0.02


class Wakeup:
    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.listening: bool | None = None  # unknown until first set
        self._running_at_flip: str | None = None

    async def busy(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Batches are in flight: writers need not notify."""
        if self.listening is not False:
            await self._set(conn, False)

    async def idle(self, conn: psycopg.AsyncConnection[Any]) -> float | None:
        """Caught up with nothing in flight.

        Returns None when waiting for a NOTIFY is safe, else how long to wait before
        reading the outbox again.
        """
        if self.listening is not True:
            await self._set(conn, True)
            cursor = await conn.execute(queries.query("relay_snapshot_now"))
            row = await cursor.fetchone()
            self._running_at_flip = None if row is None else str(row[0])
            return 0.0  # read once more: a commit may have landed before the flag flipped
        if self._running_at_flip is None:
            return None
        cursor = await conn.execute(
            queries.query("relay_writers_in_doubt", schema=self.schema),
            {"snapshot": self._running_at_flip},
        )
        row = await cursor.fetchone()
        if row is not None and row[0] > 0:
            return IN_DOUBT_RECHECK_S
        self._running_at_flip = None
        return 0.0  # they have all ended: one last read picks up what they wrote

    async def _set(self, conn: psycopg.AsyncConnection[Any], listening: bool) -> None:
        await conn.execute(
            queries.query("relay_set_listening"),
            {"sequence": listening_sequence(self.schema), "listening": listening},
        )
        self.listening = listening
